"""`speakerverify prepare dir`: any audio tree -> a data dir (layouts, regexes, list files), and
its one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from speakerverify.cli import main
from speakerverify.data import DataDir, DataDirError
from speakerverify.data.layout import layout_regex, scan_tree


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_audio(path: Path, seconds: float = 0.25, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.sin(np.arange(int(seconds * 16000)) / 7.0)
    sf.write(path, wave.astype(np.float32), 16000, format=fmt)


@pytest.fixture
def librispeech(tmp_path) -> Path:
    """`{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac` plus the transcript files."""
    root = tmp_path / "LibriSpeech" / "dev-clean"
    for speaker, chapter, utt in [("103", "1240", 0), ("103", "1240", 1), ("103", "1241", 0),
                                  ("19", "198", 0)]:  # fmt: skip
        write_audio(root / speaker / chapter / f"{speaker}-{chapter}-{utt:04d}.flac")
        (root / speaker / chapter / f"{speaker}-{chapter}.trans.txt").write_text("text\n")
    return root


@pytest.fixture
def cnceleb(tmp_path) -> Path:
    """CN-Celeb_flac/data/idNNNNN/<genre>-<session>-<utt>.flac"""
    root = tmp_path / "CN-Celeb_flac" / "data"
    for name in ["id00000/singing-01-001", "id00000/singing-01-002", "id00000/speech-02-001",
                 "id00001/live_broadcast-01-001"]:  # fmt: skip
        write_audio(root / f"{name}.flac")
    return root


def test_layout_regex_fields_and_repeats():
    regex = layout_regex("{speaker}/**/{utt}")
    assert regex.fullmatch("id1/a/b/00001").group("speaker") == "id1"
    assert regex.fullmatch("id1/00001").group("speaker") == "id1"
    assert regex.fullmatch("id1") is None
    libri = layout_regex("{speaker}/{session}/{speaker}-{session}-{utt}")
    assert libri.fullmatch("103/1240/103-1240-0001").group("speaker", "session") == ("103", "1240")
    assert libri.fullmatch("103/1240/19-1240-0001") is None  # a repeated name must agree
    with pytest.raises(ValueError, match=r"no \{speaker\}"):
        layout_regex("{session}/{utt}")


def test_librispeech_layout_gives_speakers_sessions_and_sorted_ids(librispeech):
    corpus = scan_tree(librispeech, layout="{speaker}/{session}/{speaker}-{session}-{utt}")
    data = corpus.data
    assert data.utt_ids == ["103/1240/103-1240-0000", "103/1240/103-1240-0001",
                            "103/1241/103-1241-0000", "19/198/19-198-0000"]  # fmt: skip
    assert data.speakers == ["103", "19"]
    assert corpus.attributes["sess"]["103/1241/103-1241-0000"] == "1241"
    assert corpus.num_sessions == 3
    assert data.utt2dur["19/198/19-198-0000"] == pytest.approx(0.25)
    assert Path(data.wav["19/198/19-198-0000"]).is_absolute()


def test_cnceleb_layout_keeps_genre_with_the_session(cnceleb):
    corpus = scan_tree(cnceleb, layout="{speaker}/{session}-{utt}")
    sessions = corpus.attributes["sess"]
    assert sessions["id00000/singing-01-002"] == "singing-01"
    assert sessions["id00001/live_broadcast-01-001"] == "live_broadcast-01"
    assert corpus.num_sessions == 3


def test_pattern_with_attribute_group_and_speaker_filter(cnceleb):
    corpus = scan_tree(
        cnceleb,
        pattern=r"(?P<speaker>id\d+)/(?P<genre>[a-z_]+)-(?P<session>\d+)-\d+$",
        speakers={"id00000"},
    )
    assert corpus.data.speakers == ["id00000"] and len(corpus.data) == 3
    assert corpus.attributes["genre"]["id00000/speech-02-001"] == "speech"


def test_list_file_for_names_that_carry_nothing(tmp_path):
    for name in ("a.wav", "sub/b.ogg"):
        write_audio(tmp_path / "root" / name, fmt="OGG" if name.endswith("ogg") else None)
    listing = tmp_path / "list.txt"
    listing.write_text(f"sub/b.ogg bob\n{tmp_path / 'root' / 'a.wav'} alice\n")
    data = scan_tree(tmp_path / "root", list_file=listing).data
    assert data.utt2spk == {"a": "alice", "sub/b": "bob"}


def test_symlinks_are_followed_once_and_extensions_chosen(tmp_path):
    write_audio(tmp_path / "real" / "spk1" / "x.wav")
    write_audio(tmp_path / "real" / "spk1" / "y.flac")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "real" / "spk1", tmp_path / "root" / "spk1")
    os.symlink(tmp_path / "root", tmp_path / "real" / "spk1" / "loop")  # a cycle
    data = scan_tree(tmp_path / "root", extensions=("wav",), with_durations=False).data
    assert data.utt_ids == ["spk1/x"]
    assert data.utt2dur is None


def test_prepare_dir_and_the_speaker_commands_find_the_same_files(tmp_path):
    # They had three extension lists and two walkers: an .opus file counted for `adapt` and
    # not for `prepare dir`, and a file linked twice was refused by one and counted twice by
    # the other.
    from speakerverify.backend.speaker_model import find_audio_files

    root = tmp_path / "root"
    write_audio(root / "spk1" / "a.wav")
    write_audio(root / "spk1" / "b.ogg", fmt="OGG")
    (root / "spk2").mkdir()
    (root / "spk2" / "c.opus").write_bytes(b"")  # found by extension, not read here
    (root / "spk2" / "notes.txt").write_text("not audio\n")
    data = scan_tree(root, with_durations=False).data
    found = find_audio_files(root)
    assert [p.relative_to(root).as_posix() for p in found] == ["spk1/a.wav", "spk1/b.ogg",
                                                               "spk2/c.opus"]  # fmt: skip
    assert sorted(data.wav.values()) == [str(p.resolve()) for p in found]
    os.symlink(root / "spk1" / "a.wav", root / "spk2" / "a.wav")
    for walk in (find_audio_files, scan_tree):
        with pytest.raises(DataDirError, match="again \\(through a symlink\\)"):
            walk(root)


def test_cli_writes_data_dir_and_summary(librispeech, tmp_path):
    out = tmp_path / "data"
    result = invoke("prepare", "dir", librispeech, out, "--layout",
                    "{speaker}/{session}/{utt}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 speakers, 4 utterances, 0.00 hours, 3 sessions" in result.output
    data = DataDir.load(out, check_files=True)
    assert len(data) == 4
    assert (out / "utt2sess").read_text().splitlines()[0] == "103/1240/103-1240-0000 1240"


def test_skip_unmatched_says_how_many_it_skipped(librispeech, tmp_path):
    """Regression (issue 24): --skip-unmatched left files out without a word."""
    layout = "{speaker}/{session}/{utt}"
    assert scan_tree(librispeech, layout=layout, skip_unmatched=True).num_skipped == 0
    write_audio(librispeech / "loose.wav")
    write_audio(librispeech / "103" / "stray.wav")
    assert scan_tree(librispeech, layout=layout, skip_unmatched=True).num_skipped == 2
    result = invoke("prepare", "dir", librispeech, tmp_path / "data", "--layout", layout,
                    "--skip-unmatched")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(
        "2 speakers, 4 utterances, 0.00 hours, 3 sessions; "
        "skipped 2 audio files the layout does not match"
    )


@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        (lambda root: (root / "empty").mkdir(parents=True), [], "no audio files"),
        (lambda root: write_audio(root / "loose.wav"), ["--layout", "{speaker}/{utt}"],
         "does not match '{speaker}/{utt}'"),
        (lambda root: [write_audio(root / "s" / "a.wav"), write_audio(root / "s" / "a.flac")],
         [], "utterance id s/a also comes from"),
        (lambda root: write_audio(root / "s" / "a.wav"), ["--pattern", "(?P<spk>x)"],
         "has no (?P<speaker>...) group"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_exit_2(tmp_path, make, args, needle):
    root = tmp_path / "root"
    root.mkdir()
    make(root)
    result = invoke("prepare", "dir", root, tmp_path / "out", *args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and needle in result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_bad_list_line_names_the_line(tmp_path):
    write_audio(tmp_path / "root" / "a.wav")
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav alice\n\na.wav alice extra\n")
    result = invoke("prepare", "dir", tmp_path / "root", tmp_path / "out", "--list", listing)
    assert result.exit_code == 2
    assert f"error: {listing}:3: expected 'path speaker', got 3 fields" in result.output
    listing.write_text("missing.wav alice\n")
    result = invoke("prepare", "dir", tmp_path / "root", tmp_path / "out", "--list", listing)
    assert f"{listing}:1:" in result.output and "does not exist" in result.output


def test_scan_errors_are_data_dir_errors(tmp_path):
    write_audio(tmp_path / "s" / "a b.wav")
    with pytest.raises(DataDirError, match="whitespace"):
        scan_tree(tmp_path)
