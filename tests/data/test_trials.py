"""Trial lists: both formats, round trips, published-list checks, missing utterances."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from speakerverify.data import DataDir, Trials, TrialsError, read_trials, write_trials

VOX_LINES = (
    "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
    "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav\n"
    "\n"
    "1 id10300/ize_eiCFEg0/00003.wav id10300/a/00001.wav\n"
)


def test_read_voxceleb_strips_extension(tmp_path):
    path = tmp_path / "my_trials.txt"
    path.write_text(VOX_LINES)
    trials = read_trials(path)
    assert trials.name == "my_trials"
    assert trials.enroll == [
        "id10270/x6uYqmx31kE/00001",
        "id10270/x6uYqmx31kE/00001",
        "id10300/ize_eiCFEg0/00003",
    ]
    assert trials.test[1] == "id10300/ize_eiCFEg0/00003"
    assert trials.labels.dtype == np.int8
    assert trials.labels.tolist() == [1, 0, 1]
    assert len(trials) == 3
    assert trials.utt_ids == [
        "id10270/x6uYqmx31kE/00001",
        "id10270/8jEAjG6SegY/00008",
        "id10300/ize_eiCFEg0/00003",
        "id10300/a/00001",
    ]


def test_read_kaldi(tmp_path):
    path = tmp_path / "trials"
    path.write_text("a b target\na c nontarget\n")
    trials = read_trials(path)
    assert (trials.enroll, trials.test, trials.labels.tolist()) == (["a", "a"], ["b", "c"], [1, 0])


@pytest.mark.parametrize("fmt", ["voxceleb", "kaldi"])
def test_write_read_round_trip(tmp_path, fmt):
    trials = Trials(
        enroll=["id1/s/00001", "id2/t/00002"],
        test=["id1/u/00003", "id3/v/00004"],
        labels=np.array([1, 0], dtype=np.int8),
        name="x",
    )
    write_trials(tmp_path / "out.txt", trials, format=fmt)
    back = read_trials(tmp_path / "out.txt")
    assert back.enroll == trials.enroll and back.test == trials.test
    np.testing.assert_array_equal(back.labels, trials.labels)
    first = (tmp_path / "out.txt").read_text().splitlines()[0]
    expected = {
        "voxceleb": "1 id1/s/00001.wav id1/u/00003.wav",
        "kaldi": "id1/s/00001 id1/u/00003 target",
    }
    assert first == expected[fmt]
    with pytest.raises(ValueError, match="valid: voxceleb, kaldi"):
        write_trials(tmp_path / "o2.txt", trials, format="csv")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("1 a.wav b.wav\n0 a.wav\n", r"t\.txt:2: expected 3 fields, got 2"),
        ("1 a.wav b.wav\n2 a.wav b.wav\n", r"t\.txt:2: neither VoxCeleb"),
        ("1 a.wav b.wav\na b target\n", r"t\.txt:2: kaldi line in a voxceleb trial list"),
        ("a b maybe\n", r"t\.txt:1: neither VoxCeleb"),
        ("\n\n", r"t\.txt: no trials"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, pattern):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(TrialsError, match=pattern):
        read_trials(path)


def _published(tmp_path, name, count):
    line = "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
    path = tmp_path / name
    path.write_text(line * count)
    return path


def test_published_lists_recognised_and_counted(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        trials = read_trials(_published(tmp_path, "veri_test2.txt", 37611))
    assert trials.name == "vox1_o" and len(trials) == 37611
    assert not caplog.records
    with pytest.raises(
        TrialsError, match=r"veri_test2\.txt: 100 trials, but the published .* 37611"
    ):
        read_trials(_published(tmp_path, "veri_test2.txt", 100))
    assert read_trials(tmp_path / "veri_test2.txt", check_known=False).name == "vox1_o"
    with pytest.raises(TrialsError, match="579818"):
        read_trials(_published(tmp_path, "list_test_all2.txt", 5))
    with pytest.raises(TrialsError, match="550894"):
        read_trials(_published(tmp_path, "list_test_hard2.txt", 5))


def test_uncleaned_vox1_o_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="speakerverify.data.trials"):
        trials = read_trials(_published(tmp_path, "veri_test.txt", 37720))
    assert trials.name == "vox1_o_uncleaned"
    assert len(caplog.records) == 1
    assert "veri_test2.txt" in caplog.records[0].getMessage()


def test_missing_utterances_reported_with_count_and_first_few(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(VOX_LINES)
    known = ["id10270/x6uYqmx31kE/00001", "id10270/8jEAjG6SegY/00008"]
    data = DataDir(wav={u: f"/{u}.wav" for u in known}, utt2spk={u: "id10270" for u in known})
    with pytest.raises(TrialsError) as info:
        read_trials(path, data)
    message = str(info.value)
    assert "2 utterances are not in the data dir" in message
    assert "id10300/ize_eiCFEg0/00003" in message and str(path) in message
    more = {"id10300/ize_eiCFEg0/00003": "/x", "id10300/a/00001": "/y"}
    data = DataDir(
        wav={**data.wav, **more},
        utt2spk={**data.utt2spk, **dict.fromkeys(more, "id10300")},
    )  # (a DataDir's mappings are read-only views: a new one)
    assert len(read_trials(path, data)) == 3
