"""VoxCeleb scanning on tiny trees in the published layouts (VoxCeleb1 wav/, VoxCeleb2 dev/aac/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from speakerverify.data import DataDir, DataDirError, prepare_voxceleb, read_trials, scan_voxceleb
from speakerverify.testing import make_voxceleb_corpus


@pytest.fixture(scope="module")
def vox1(tmp_path_factory):
    """Speakers id10268-id10271: two dev speakers, then the first two Vox1-O test speakers."""
    root = tmp_path_factory.mktemp("vox1")
    ids = make_voxceleb_corpus(root, num_speakers=4, seconds=0.5, first_id=10268, seed=3)
    (root / "wav" / ".DS_Store").write_bytes(b"")  # stray files are skipped
    (root / "wav" / "id10268" / "README.txt").write_text("not audio")
    return root, ids


def test_vox1_utt_ids_are_paths_relative_to_the_corpus_root(vox1, tmp_path):
    root, ids = vox1
    data = prepare_voxceleb(root, tmp_path / "data")
    assert data.utt_ids == sorted(ids)
    assert data.speakers == ["id10268", "id10269", "id10270", "id10271"]
    for utt in data.utt_ids:
        assert data.utt2spk[utt] == utt.split("/")[0]
        assert Path(data.wav[utt]) == (root / "wav" / f"{utt}.wav").resolve()
        assert data.utt2dur[utt] == pytest.approx(0.5)
    assert DataDir.load(tmp_path / "data", check_files=True) == data


def test_official_trial_lines_map_to_utt_ids(vox1, tmp_path):
    root, ids = vox1
    data = scan_voxceleb(root, with_durations=False)
    trials = tmp_path / "trials.txt"
    trials.write_text(f"1 {ids[0]}.wav {ids[1]}.wav\n0 {ids[0]}.wav {ids[-1]}.wav\n")
    assert read_trials(trials, data).enroll == [ids[0], ids[0]]


def test_splits_by_vox1_test_speakers(vox1):
    root, _ = vox1
    assert scan_voxceleb(root, split="dev").speakers == ["id10268", "id10269"]
    assert scan_voxceleb(root, split="test").speakers == ["id10270", "id10271"]
    with pytest.raises(ValueError, match="valid: all, dev, test"):
        scan_voxceleb(root, split="train")


def test_scan_accepts_the_wav_dir_itself(vox1):
    root, ids = vox1
    assert scan_voxceleb(root / "wav", with_durations=False).utt_ids == sorted(ids)


def test_vox2_aac_layout_and_converted_tree(tmp_path):
    root = tmp_path / "vox2"
    utts = ["id00012/21Uxsk56VDQ/00001", "id00012/21Uxsk56VDQ/00002", "id09272/u7VNkYraCw0/00027"]
    for utt in utts:
        path = root / "dev" / "aac" / f"{utt}.m4a"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded while scanning")
    data = scan_voxceleb(root)
    assert data.utt_ids == utts
    assert data.speakers == ["id00012", "id09272"]
    assert data.utt2dur is None  # m4a would need a full decode per file
    assert data.wav[utts[2]].endswith("dev/aac/id09272/u7VNkYraCw0/00027.m4a")
    converted = tmp_path / "vox2wav"
    for utt in utts:
        path = converted / "dev" / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, [0.1] * 800, 16000)
    data = scan_voxceleb(converted)
    assert data.utt_ids == utts and data.utt2dur[utts[0]] == pytest.approx(0.05)


def test_vox1_and_vox2_under_one_root(tmp_path):
    ids1 = make_voxceleb_corpus(tmp_path / "dev", 2, 1, 1, seconds=0.1, first_id=10001)
    ids2 = make_voxceleb_corpus(tmp_path / "test", 2, 1, 1, seconds=0.1, first_id=10270)
    assert scan_voxceleb(tmp_path, with_durations=False).utt_ids == sorted(ids1 + ids2)


def test_duplicate_utterance_across_trees_is_an_error(tmp_path):
    make_voxceleb_corpus(tmp_path / "dev", 1, 1, 1, seconds=0.1, seed=1)
    make_voxceleb_corpus(tmp_path / "test", 1, 1, 1, seconds=0.1, seed=1)
    with pytest.raises(DataDirError, match="also exists as"):
        scan_voxceleb(tmp_path, with_durations=False)


def test_no_tree_and_empty_tree_are_errors(tmp_path):
    with pytest.raises(DataDirError, match="no VoxCeleb audio tree found"):
        scan_voxceleb(tmp_path)
    (tmp_path / "wav" / "notaspeaker").mkdir(parents=True)
    with pytest.raises(DataDirError, match="no VoxCeleb utterances found"):
        scan_voxceleb(tmp_path)


def test_corrupt_wav_header_is_named(tmp_path):
    path = tmp_path / "wav" / "id10001" / "abc" / "00001.wav"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"RIFF garbage")
    with pytest.raises(DataDirError, match=r"00001\.wav: unreadable or corrupt audio header"):
        scan_voxceleb(tmp_path)
