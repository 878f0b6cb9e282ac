"""Kaldi-style data dirs: round trips, derived spk2utt, and errors that name file and line."""

from __future__ import annotations

import pytest

from speakerverify.data import DataDir, DataDirError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def data_dir(tmp_path):
    audio = tmp_path / "audio dir"  # a space in the path must survive wav.scp
    audio.mkdir()
    wav, utt2spk, utt2dur = {}, {}, {}
    # deliberately not sorted: insertion order is kept
    for utt, spk, dur in [("b-2", "spkB", 1.5), ("a-1", "spkA", 2.25), ("a-2", "spkA", 0.5)]:
        path = audio / f"{utt}.wav"
        path.write_bytes(b"")
        wav[utt], utt2spk[utt], utt2dur[utt] = str(path), spk, dur
    return DataDir(wav=wav, utt2spk=utt2spk, utt2dur=utt2dur)


def test_save_load_round_trip_keeps_order_paths_and_durations(tmp_path, data_dir):
    data_dir.save(tmp_path / "data")
    loaded = DataDir.load(tmp_path / "data", check_files=True)
    assert loaded == data_dir
    assert loaded.utt_ids == ["b-2", "a-1", "a-2"]
    assert loaded.speakers == ["spkA", "spkB"]
    assert loaded.spk2utt == {"spkA": ["a-1", "a-2"], "spkB": ["b-2"]}
    assert (tmp_path / "data" / "spk2utt").read_text() == "spkA a-1 a-2\nspkB b-2\n"
    assert " " in loaded.wav["a-1"]
    assert not list((tmp_path / "data").glob(".*tmp"))  # atomic writes leave no temp files


def test_without_utt2dur_and_stale_utt2dur_removed(tmp_path, data_dir):
    data_dir.save(tmp_path / "data")
    DataDir(wav=data_dir.wav, utt2spk=data_dir.utt2spk).save(tmp_path / "data")
    assert not (tmp_path / "data" / "utt2dur").exists()
    assert DataDir.load(tmp_path / "data").utt2dur is None


def test_subset(data_dir):
    sub = data_dir.subset(["a-2", "b-2"])
    assert sub.utt_ids == ["a-2", "b-2"]
    assert sub.utt2dur == {"a-2": 0.5, "b-2": 1.5}
    with pytest.raises(DataDirError, match="1 utterances not in the data dir"):
        data_dir.subset(["zzz"])


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("wav.scp", "u1 /a.wav\nu2 /b.wav\nu1 /c.wav\n", r"wav\.scp:3: duplicate utterance id u1"),
        ("wav.scp", "u1 /a.wav\nu2\n", r"wav\.scp:2: expected 2 fields"),
        ("utt2spk", "u1 s1\nu2 s1 extra\n", r"utt2spk:2: expected 2 fields"),
        ("utt2spk", "u1 s1\nu2 s2\nu3 s3\n", r"utt2spk:3: utterance u3 is not in wav\.scp"),
        ("utt2spk", "u1 s1\n", r"utt2spk: 1 utterances of wav\.scp are missing \(e\.g\. u2\)"),
        ("utt2dur", "u1 1.0\nu2 abc\n", r"utt2dur:2: duration 'abc' is not a number"),
        ("spk2utt", "s1 u1\ns9 u2\n", r"spk2utt:2: unknown speaker s9"),
        (
            "spk2utt",
            "s1 u1 u2\n",
            r"spk2utt:1: utterance u2 is listed under s1 but utt2spk says s2",
        ),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, name, text, pattern):
    root = tmp_path / "data"
    write(root / "wav.scp", "u1 /a.wav\nu2 /b.wav\n")
    write(root / "utt2spk", "u1 s1\nu2 s2\n")
    write(root / name, text)
    with pytest.raises(DataDirError, match=pattern) as info:
        DataDir.load(root)
    assert str(root / name) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_files_checked_only_on_request(tmp_path):
    root = tmp_path / "data"
    real = tmp_path / "real.wav"
    real.write_bytes(b"")
    write(root / "wav.scp", f"u1 {real}\nu2 {tmp_path / 'gone.wav'}\n")
    write(root / "utt2spk", "u1 s1\nu2 s1\n")
    assert len(DataDir.load(root)) == 2
    with pytest.raises(
        DataDirError, match=r"wav\.scp:2: u2: audio file .*gone\.wav does not exist"
    ):
        DataDir.load(root, check_files=True)


def test_not_a_data_dir_and_pipes(tmp_path):
    with pytest.raises(DataDirError, match=r"no wav\.scp"):
        DataDir.load(tmp_path)
    write(tmp_path / "wav.scp", "u1 sox a.wav -t wav - |\n")
    write(tmp_path / "utt2spk", "u1 s1\n")
    with pytest.raises(DataDirError, match="pipe commands are not supported"):
        DataDir.load(tmp_path)


def test_constructor_rejects_inconsistent_tables():
    with pytest.raises(DataDirError, match="have no speaker"):
        DataDir(wav={"u1": "/a.wav"}, utt2spk={})
    with pytest.raises(DataDirError, match="have no audio"):
        DataDir(wav={}, utt2spk={"u1": "s1"})
    with pytest.raises(DataDirError, match="have no duration"):
        DataDir(wav={"u1": "/a.wav"}, utt2spk={"u1": "s1"}, utt2dur={})


def test_a_large_data_dir_holds_under_200_bytes_per_utterance(tmp_path):
    """The columns (ids, paths, speaker labels, durations) of a VoxCeleb2-shaped data dir, as
    measured at 1.09 M utterances in benchmarks/RESULTS.md; dicts of str took ~700."""
    import gc
    import tracemalloc

    num_utts = 20_000
    root = tmp_path / "big"
    root.mkdir()
    utts = [f"id{i // 180:05d}/{i // 8:011d}/{i % 8 + 1:05d}" for i in range(num_utts)]
    (root / "wav.scp").write_text("".join(f"{u} /data/voxceleb2/dev/wav/{u}.wav\n" for u in utts))
    (root / "utt2spk").write_text("".join(f"{u} {u[:7]}\n" for u in utts))
    (root / "utt2dur").write_text("".join(f"{u} 8.125\n" for u in utts))
    gc.collect()
    tracemalloc.start()
    data = DataDir.load(root)
    # a lookup by id builds the hash index (16 bytes an utterance): counted too
    assert len(data) == num_utts and data.wav[utts[123]].endswith(f"{utts[123]}.wav")
    gc.collect()
    retained, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert retained / num_utts <= 200
