"""`speakerverify prepare trials` / `prepare split` and `score --enroll`: trial lists for any data
dir (checked against brute-force pair counts), speaker splits, multi-utterance enrollment."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from speakerverify.backend.embedding_dir import save_embeddings
from speakerverify.cli import main
from speakerverify.data import DataDir, TrialsError, read_trials
from speakerverify.data.trial_making import TrialOptions, make_trials
from speakerverify.data.trials import read_enroll_map


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_data(num_speakers: int = 6, sessions: int = 2, utts: int = 3) -> tuple[DataDir, dict]:
    wav, utt2spk, utt2sess = {}, {}, {}
    for s, x, u in itertools.product(range(num_speakers), range(sessions), range(utts)):
        utt = f"spk{s}/ses{x}/{u:05d}"
        wav[utt], utt2spk[utt], utt2sess[utt] = f"/audio/{utt}.flac", f"spk{s}", f"ses{x}"
    return DataDir(wav=wav, utt2spk=utt2spk), utt2sess


def prefixed_data(prefix: str, num_speakers: int = 2) -> DataDir:
    """`make_data` with every utterance and speaker id prefixed, to sit beside the fixture's."""
    data, _ = make_data(num_speakers=num_speakers)
    return DataDir(
        wav={f"{prefix}/{u}": p for u, p in data.wav.items()},
        utt2spk={f"{prefix}/{u}": f"{prefix}{s}" for u, s in data.utt2spk.items()},
    )


@pytest.fixture
def data_dir(tmp_path) -> Path:
    data, sessions = make_data()
    data.save(tmp_path / "data")
    (tmp_path / "data" / "utt2sess").write_text("".join(f"{u} {s}\n" for u, s in sessions.items()))
    genders = {f"spk{s}": "f" if s % 2 else "m" for s in range(6)}
    (tmp_path / "data" / "spk2gender").write_text("".join(f"{k} {v}\n" for k, v in genders.items()))
    return tmp_path / "data"


def check_labels(trials, data: DataDir) -> None:
    for enroll, test, label in zip(trials.enroll, trials.test, trials.labels, strict=True):
        assert label == (data.utt2spk[enroll] == data.utt2spk[test])


def test_sampled_lists_are_valid_distinct_and_seeded():
    data, sessions = make_data()
    options = TrialOptions(num_targets=20, num_nontargets=30, seed=3)
    trials, models = make_trials(data, options, sessions=sessions)
    assert models is None
    assert len(trials) == 50 and int(trials.labels.sum()) == 20
    check_labels(trials, data)
    pairs = [frozenset(p) for p in zip(trials.enroll, trials.test, strict=True)]
    assert len(set(pairs)) == 50 and all(len(p) == 2 for p in pairs)
    for enroll, test, label in zip(trials.enroll, trials.test, trials.labels, strict=True):
        if label:
            assert sessions[enroll] != sessions[test]
    again, _ = make_trials(data, options, sessions=sessions)
    assert again.enroll == trials.enroll and again.test == trials.test
    other, _ = make_trials(data, TrialOptions(20, 30, seed=4), sessions=sessions)
    assert (other.enroll, other.test) != (trials.enroll, trials.test)


def test_all_pairs_match_a_brute_force_count():
    data, sessions = make_data(num_speakers=4, sessions=2, utts=2)
    trials, _ = make_trials(data, TrialOptions(all_pairs=True), sessions=sessions)
    targets = nontargets = 0
    for a, b in itertools.combinations(data.utt_ids, 2):
        if data.utt2spk[a] != data.utt2spk[b]:
            nontargets += 1
        elif sessions[a] != sessions[b]:
            targets += 1
    assert int(trials.labels.sum()) == targets == 16
    assert len(trials) - targets == nontargets == 96
    with pytest.raises(TrialsError, match="112 pairs exist, more than the cap of 100"):
        make_trials(data, TrialOptions(all_pairs=True, max_trials=100), sessions=sessions)
    with pytest.raises(TrialsError, match="over 10 pairs exist, more than the cap of 10"):
        make_trials(data, TrialOptions(all_pairs=True, max_trials=10), sessions=sessions)


def test_dense_request_and_too_many_requested():
    data, sessions = make_data(num_speakers=4, sessions=2, utts=2)
    trials, _ = make_trials(data, TrialOptions(num_targets=16, num_nontargets=5), sessions=sessions)
    assert int(trials.labels.sum()) == 16  # every cross-session target pair
    with pytest.raises(TrialsError, match="asked for 17 target trials, but only 16 exist"):
        make_trials(data, TrialOptions(num_targets=17), sessions=sessions)


def test_enrollment_models_cross_sessions_and_exclude_their_utterances():
    data, sessions = make_data(num_speakers=5, sessions=3, utts=2)
    trials, models = make_trials(
        data, TrialOptions(num_targets=10, num_nontargets=10, enroll_utts=2), sessions=sessions
    )
    assert models is not None and len(models) == 5
    enrolled = {u for utts in models.values() for u in utts}
    for model, utts in models.items():
        assert len(utts) == 2 and {data.utt2spk[u] for u in utts} == {model[: -len("-enroll")]}
    for model, test, label in zip(trials.enroll, trials.test, trials.labels, strict=True):
        assert test not in enrolled
        speaker = model[: -len("-enroll")]
        assert label == (data.utt2spk[test] == speaker)
        if label:
            assert sessions[test] not in {sessions[u] for u in models[model]}


def test_cli_trials_read_back_against_the_data_dir(data_dir, tmp_path):
    out = tmp_path / "lists" / "trials.txt"
    result = invoke("prepare", "trials", data_dir, out, "--num-targets", 12, "--num-nontargets",
                    8, "--same", "gender")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "20 trials (12 target, 8 non-target)" in result.output
    assert out.read_text().startswith(("0 spk", "1 spk"))
    data = DataDir.load(data_dir)
    trials = read_trials(out, data)  # every utt id maps back to the data dir
    check_labels(trials, data)
    gender = {f"spk{s}": s % 2 for s in range(6)}
    for enroll, test in zip(trials.enroll, trials.test, strict=True):
        assert gender[data.utt2spk[enroll]] == gender[data.utt2spk[test]]


def test_cli_trials_share_every_attribute_given(data_dir, tmp_path):
    # two attributes: gender by speaker parity, language split across genders, so only the
    # pairs (spk0, spk4) and (spk1, spk5) share both, and the exhaustive list holds exactly their
    # 2 x 6 x 6 = 72 non-target pairs (one order each)
    languages = {f"spk{s}": "de" if s in (0, 1, 4, 5) else "fr" for s in range(6)}
    (data_dir / "spk2language").write_text("".join(f"{k} {v}\n" for k, v in languages.items()))
    out = tmp_path / "trials.txt"
    result = invoke("prepare", "trials", data_dir, out, "--all", "--same", "gender",
                    "--same", "language")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = DataDir.load(data_dir)
    trials = read_trials(out, data)
    pairs = {
        frozenset((data.utt2spk[e], data.utt2spk[t]))
        for e, t, label in zip(trials.enroll, trials.test, trials.labels, strict=True)
        if not label
    }
    assert pairs == {frozenset(("spk0", "spk4")), frozenset(("spk1", "spk5"))}
    assert int((trials.labels == 0).sum()) == 72
    # one attribute alone pairs more speakers
    invoke("prepare", "trials", data_dir, out, "--all", "--same", "language")
    alone = read_trials(out, data)
    assert int((alone.labels == 0).sum()) > 72


def test_cli_multi_utterance_list_and_enroll_map(data_dir, tmp_path):
    out = tmp_path / "trials.txt"
    result = invoke("prepare", "trials", data_dir, out, "--enroll-utts", 3, "--num-targets", 6,
                    "--num-nontargets", 6)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "6 enrollment models of 3 utterances" in result.output
    models = read_enroll_map(tmp_path / "enroll")
    trials = read_trials(out)
    assert set(trials.enroll) <= set(models) and all(len(u) == 3 for u in models.values())
    assert out.read_text().split("\n")[0].split()[2] in ("target", "nontarget")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--num-targets", 1000], "asked for 1000 target trials, but only 54 exist"),
        (["--same", "language"], "no utt2language or spk2language file"),
        (["--enroll-utts", 7], "no speaker has 7 utterances to enroll"),
        (["--enroll-utts", 2, "--format", "voxceleb"], "Kaldi format only"),
    ],
)
def test_cli_trials_errors_are_one_line(data_dir, tmp_path, args, needle):
    result = invoke("prepare", "trials", data_dir, tmp_path / "t.txt", *args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and needle in result.output
    assert result.output.count("\n") == 1


def test_cli_split_merges_and_carries_attributes(data_dir, tmp_path):
    prefixed_data("b").save(tmp_path / "other")
    result = invoke("prepare", "split", data_dir, tmp_path / "other", "--hold-out-speakers", 3,
                    "--train-out", tmp_path / "train",
                    "--heldout-out", tmp_path / "held")  # fmt: skip
    assert result.exit_code == 0, result.output
    train, held = DataDir.load(tmp_path / "train"), DataDir.load(tmp_path / "held")
    assert len(held.speakers) == 3 and len(train.speakers) == 5
    assert not set(train.speakers) & set(held.speakers)
    assert len(train) + len(held) == 36 + 12
    # only attributes every input has are carried over: neither has both utt2sess and spk2gender
    assert not (tmp_path / "train" / "utt2sess").exists()
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 2,
                    "--train-out", tmp_path / "t2", "--heldout-out", tmp_path / "h2")  # fmt: skip
    assert result.exit_code == 0, result.output
    sessions = (tmp_path / "h2" / "utt2sess").read_text().split()[::2]
    assert sessions == DataDir.load(tmp_path / "h2").utt_ids
    genders = (tmp_path / "h2" / "spk2gender").read_text().split()[::2]
    assert genders == DataDir.load(tmp_path / "h2").speakers


def test_cli_split_error_and_clash(data_dir, tmp_path):
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 5,
                    "--train-out", tmp_path / "t", "--heldout-out", tmp_path / "h")  # fmt: skip
    assert result.exit_code == 2 and "cannot spare 5" in result.output
    result = invoke("prepare", "split", data_dir, data_dir, "--hold-out-speakers", 1,
                    "--train-out", tmp_path / "t", "--heldout-out", tmp_path / "h")  # fmt: skip
    assert result.exit_code == 2 and "36 utterance ids also in" in result.output


def test_cli_split_add_heldout_keeps_the_draw_and_joins_whole(data_dir, tmp_path):
    # a calibration set made apart from the pool: all its speakers are held out, and the draw
    # from the pool is the one made without it, so the held-out side does not move with it
    prefixed_data("c").save(tmp_path / "calib")
    plain = ["prepare", "split", data_dir, "--hold-out-speakers", 2]
    assert invoke(*plain, "--train-out", tmp_path / "t1", "--heldout-out", tmp_path / "h1",
                  ).exit_code == 0  # fmt: skip
    result = invoke(*plain, "--add-heldout", tmp_path / "calib",
                    "--train-out", tmp_path / "t2", "--heldout-out", tmp_path / "h2")  # fmt: skip
    assert result.exit_code == 0, result.output
    drawn = DataDir.load(tmp_path / "h1").speakers
    held = DataDir.load(tmp_path / "h2")
    assert sorted(held.speakers) == sorted([*drawn, "cspk0", "cspk1"])
    assert DataDir.load(tmp_path / "t2").wav == DataDir.load(tmp_path / "t1").wav
    assert len(held) == 2 * 6 + 2 * 6
    # none drawn: the training side is the whole pool
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 0,
                    "--add-heldout", tmp_path / "calib",
                    "--train-out", tmp_path / "t3", "--heldout-out", tmp_path / "h3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(DataDir.load(tmp_path / "t3")) == 36
    assert DataDir.load(tmp_path / "h3").speakers == ["cspk0", "cspk1"]


def test_cli_split_add_heldout_errors(data_dir, tmp_path):
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 0,
                    "--train-out", tmp_path / "t", "--heldout-out", tmp_path / "h")  # fmt: skip
    assert result.exit_code == 2 and "needs --add-heldout" in result.output
    # a held-out dir that shares speakers with the pool would leak them into training
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 1,
                    "--add-heldout", data_dir,
                    "--train-out", tmp_path / "t", "--heldout-out", tmp_path / "h")  # fmt: skip
    assert result.exit_code == 2 and "6 speakers also in" in result.output
    assert not (tmp_path / "t").exists() and not (tmp_path / "h").exists()
    assert len(result.output.strip().splitlines()) == 1
    # --add-train joins the training side whole; it may not share speakers with --add-heldout
    calib = tmp_path / "calib"
    extra = DataDir(wav={"x/1": "/a/1.wav", "x/2": "/a/2.wav"}, utt2spk={"x/1": "x", "x/2": "x"})
    extra.save(calib)
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 1,
                    "--add-train", calib, "--add-heldout", calib,
                    "--train-out", tmp_path / "t", "--heldout-out", tmp_path / "h")  # fmt: skip
    assert result.exit_code == 2 and "1 speakers also in" in result.output
    result = invoke("prepare", "split", data_dir, "--hold-out-speakers", 1, "--add-train", calib,
                    "--train-out", tmp_path / "t", "--heldout-out", tmp_path / "h")  # fmt: skip
    assert result.exit_code == 0, result.output
    train = DataDir.load(tmp_path / "t")
    assert "x" in train.speakers and len(train) == 30 + 2


def test_score_with_enroll_map_averages_normalised_utterances(tmp_path):
    vectors = {"a1": [3.0, 0.0], "a2": [0.0, 1.0], "t1": [1.0, 1.0], "t2": [1.0, -1.0]}
    save_embeddings(tmp_path / "emb", list(vectors), np.asarray(list(vectors.values())))
    (tmp_path / "enroll").write_text("A a1.wav a2\n")
    (tmp_path / "trials").write_text("A t1 target\nA t2 nontarget\n")
    out = tmp_path / "scores.txt"
    result = invoke("score", tmp_path / "trials", tmp_path / "emb", "--enroll",
                    tmp_path / "enroll", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = [float(line.split()[2]) for line in out.read_text().splitlines()]
    # model = mean of (1, 0) and (0, 1): along (1, 1), orthogonal to (1, -1)
    assert scores == pytest.approx([1.0, 0.0], abs=1e-6)
    (tmp_path / "enroll").write_text("A a1 missing\n")
    result = invoke("score", tmp_path / "trials", tmp_path / "emb", "--enroll",
                    tmp_path / "enroll", "--out", out)  # fmt: skip
    assert result.exit_code == 2 and "missing" in result.output
