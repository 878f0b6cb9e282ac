"""Hostile inputs to `prepare` (issue 22, prepare surface): text files that are not UTF-8, an
empty data dir: one line naming the file (and line), exit 2, no traceback."""

from __future__ import annotations

from hostile_helpers import assert_one_line_error, run


def _data_dir(root, wav_scp: bytes):
    root.mkdir()
    (root / "wav.scp").write_bytes(wav_scp)
    (root / "utt2spk").write_text("u1 s1\nu2 s2\nu3 s1\nu4 s2\n")
    return root


def test_prepare_trials_on_a_wav_scp_that_is_not_utf8(tmp_path):
    data = _data_dir(tmp_path / "d", b"u1 /a/1.wav\nu2 /a/\xff.wav\nu3 /a/3.wav\nu4 /a/4.wav\n")
    result = run(["prepare", "trials", data, tmp_path / "t.txt"])
    assert_one_line_error(result, "wav.scp:2: not UTF-8 text (byte 0xff at column 7)")
    assert not (tmp_path / "t.txt").exists()


def test_prepare_trials_on_an_empty_data_dir(tmp_path):
    data = _data_dir(tmp_path / "d", b"")
    (data / "utt2spk").write_text("")
    result = run(["prepare", "trials", data, tmp_path / "t.txt"])
    assert_one_line_error(result, f"{data}: empty data dir")
    assert not (tmp_path / "t.txt").exists()


def test_prepare_dir_list_that_is_not_utf8(tmp_path):
    (tmp_path / "audio").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.wav ann\n\xe9t\xe9.wav bo\n")
    result = run(["prepare", "dir", tmp_path / "audio", tmp_path / "out", "--list", listing])
    assert_one_line_error(result, "list.txt:2: not UTF-8 text (byte 0xe9 at column 1)")


def test_prepare_dir_speaker_list_that_is_not_utf8(tmp_path):
    speakers = tmp_path / "speakers.txt"
    speakers.write_bytes(b"s1\n\xff\n")
    result = run(["prepare", "dir", tmp_path, tmp_path / "out", "--speakers", speakers])
    assert_one_line_error(result, "speakers.txt:2: not UTF-8 text")


def _four_speakers(root):
    root.mkdir()
    ids = [f"s{s}-{u}" for s in range(4) for u in range(3)]
    (root / "wav.scp").write_text("".join(f"{u} /a/{u}.wav\n" for u in ids))
    (root / "utt2spk").write_text("".join(f"{u} {u[:2]}\n" for u in ids))
    return root


def test_prepare_split_with_one_directory_for_both_sides(tmp_path):
    data = _four_speakers(tmp_path / "d")
    out = tmp_path / "out"
    args = ["prepare", "split", data, "--hold-out-speakers", "1"]
    result = run([*args, "--train-out", out, "--heldout-out", out])
    assert_one_line_error(result, "--train-out and --heldout-out are one directory")
    assert not out.exists()


def test_prepare_split_onto_its_input(tmp_path):
    data = _four_speakers(tmp_path / "d")
    before = (data / "wav.scp").read_bytes()
    args = ["prepare", "split", data, "--hold-out-speakers", "1"]
    result = run([*args, "--train-out", tmp_path / "d", "--heldout-out", tmp_path / "h"])
    assert_one_line_error(result, "is the input data dir")
    assert (data / "wav.scp").read_bytes() == before and not (tmp_path / "h").exists()


def _voice(path):
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(0).standard_normal(1600).astype(np.float32) * 0.1, 16000)


def test_prepare_dir_refuses_a_speaker_folder_linked_inside_another(tmp_path):
    import os

    root = tmp_path / "corpus"
    _voice(root / "alice" / "a1.wav")
    _voice(root / "bob" / "b1.wav")
    os.symlink(root / "bob", root / "alice" / "bob_too")  # used to label b1 as alice's
    result = run(["prepare", "dir", root, tmp_path / "out"])
    assert_one_line_error(result, "bob: is ", "alice/bob_too again (through a symlink)")
    assert not (tmp_path / "out").exists()


def test_prepare_dir_refuses_a_file_reached_twice(tmp_path):
    import os

    root = tmp_path / "corpus"
    _voice(root / "alice" / "a1.wav")
    _voice(root / "bob" / "b1.wav")
    os.symlink(root / "bob" / "b1.wav", root / "alice" / "b1.wav")
    result = run(["prepare", "dir", root, tmp_path / "out"])
    assert_one_line_error(result, "again (through a symlink)")


def test_prepare_dir_still_follows_a_root_made_of_links(tmp_path):
    import os

    _voice(tmp_path / "store" / "x" / "a1.wav")
    (tmp_path / "corpus").mkdir()
    os.symlink(tmp_path / "store" / "x", tmp_path / "corpus" / "alice")
    result = run(["prepare", "dir", tmp_path / "corpus", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "utt2spk").read_text() == "alice/a1 alice\n"
