"""`speakerverify embed | score | calibrate | evaluate` through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import speakerverify.cli
from speakerverify.backend.calibration import Calibration
from speakerverify.backend.embedding_dir import load_embeddings, save_embeddings
from speakerverify.backend.metrics import compute_metrics
from speakerverify.backend.score_files import read_scores
from speakerverify.checkpoint import save_checkpoint
from speakerverify.data import DataDir, Trials, write_trials
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.testing import random_speaker, speech_like


def run(*args: str):
    return CliRunner().invoke(speakerverify.cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A synthetic store (3 speakers' clusters in 16-D), a trial list, a cohort store, and the
    checkpoint they are said to come from (a calibration names its model)."""
    root = tmp_path_factory.mktemp("scored")
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    fingerprint = save_checkpoint(
        root / "model.pt", model_name="xvector", model_args=args,
        model=build_model("xvector", **args).eval(), features=FbankConfig().to_dict(),
    )  # fmt: skip
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((12, 16))
    ids, rows = [], []
    for s in range(12):
        for u in range(6):
            ids.append(f"id{s:05d}/x/{u:05d}")
            rows.append(centres[s] + 0.8 * rng.standard_normal(16))
    save_embeddings(root / "store", ids, np.asarray(rows), {"model_fingerprint": fingerprint})
    cohort_ids = [f"id9{s:04d}/c/{u:05d}" for s in range(10) for u in range(3)]
    save_embeddings(
        root / "cohort",
        cohort_ids,
        rng.standard_normal((30, 16)),
        {"model_fingerprint": fingerprint},
    )
    pairs = rng.integers(0, len(ids), (600, 2))
    labels = np.array([ids[a][:7] == ids[b][:7] for a, b in pairs], np.int8)
    pairs[:40, 1] = pairs[:40, 0] // 6 * 6 + (pairs[:40, 0] + 1) % 6  # more targets
    labels[:40] = 1
    first = np.unique(pairs[:, 0] * len(ids) + pairs[:, 1], return_index=True)[1]
    keep = np.sort(first)[:400]  # 400 trials, each pair once, as a trial list must
    pairs, labels = pairs[keep], labels[keep]
    trials = Trials([ids[a] for a, _ in pairs], [ids[b] for _, b in pairs], labels, "t")
    write_trials(root / "trials.txt", trials)
    return root


def test_score_evaluate_calibrate_round_trip(scored, tmp_path):
    scores = tmp_path / "scores.txt"
    result = run("score", scored / "trials.txt", scored / "store", "--out", scores)
    assert result.exit_code == 0, result.output
    enroll, _, values = read_scores(scores)
    assert len(enroll) == 400 and np.all(np.abs(values) <= 1.0 + 1e-6)

    result = run("evaluate", scored / "trials.txt", scores, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    labels = np.loadtxt(scored / "trials.txt", usecols=0)
    expected = compute_metrics(values, labels.astype(np.int8))
    assert report["eer"] == pytest.approx(expected["eer"])
    assert report["min_dcf_0.01"] == pytest.approx(expected["min_dcf_0.01"])
    assert 0 < report["eer"] < 0.3 and report["num_trials"] == 400

    calibration = tmp_path / "calib.json"
    unbound = run("calibrate", scored / "trials.txt", scores, "--out", calibration)
    assert unbound.exit_code == 2 and "give --model CKPT" in unbound.output
    assert not calibration.exists()
    result = run(
        "calibrate", scored / "trials.txt", scores, "--out", calibration,
        "--model", scored / "model.pt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Cllr" in result.output
    assert Calibration.load(calibration).slope > 0
    assert Calibration.load(calibration).default_p_target is None

    # --false-accept: the default operating point accepts that share of the non-targets
    pointed = tmp_path / "pointed.json"
    result = run(
        "calibrate", scored / "trials.txt", scores, "--out", pointed, "--false-accept", "0.05",
        "--model", scored / "model.pt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "default operating point: p_target=" in result.output
    loaded = Calibration.load(pointed)
    threshold = loaded.score_threshold(loaded.default_p_target)
    nontargets = values[labels == 0]
    assert np.mean(nontargets >= threshold) == pytest.approx(0.05, abs=0.006)
    count = int(np.sum(labels == 0))
    assert f"at most 0.05 of {count} non-target trials of trials.txt" in loaded.operating_point

    llrs = tmp_path / "llrs.txt"
    result = run(
        "score", scored / "trials.txt", scored / "store", "--out", llrs, "--calibration",
        calibration,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("evaluate", scored / "trials.txt", llrs, "--llr", "--plot", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    assert "Cllr" in result.output and "actDCF(0.01)" in result.output
    for name in ("det.png", "hist.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # calibration is monotone: EER unchanged
    again = json.loads(run("evaluate", scored / "trials.txt", llrs, "--json").output)
    assert again["eer"] == pytest.approx(report["eer"], abs=1e-9)


def test_score_with_mean_and_asnorm(scored, tmp_path):
    plain, normed = tmp_path / "plain.txt", tmp_path / "asnorm.txt"
    assert run("score", scored / "trials.txt", scored / "store", "--out", plain).exit_code == 0
    result = run(
        "score", scored / "trials.txt", scored / "store", "--out", normed,
        "--mean-store", scored / "store", "--cohort-store", scored / "cohort", "--top-n", "5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "asnorm" in result.output
    a, b = read_scores(plain)[2], read_scores(normed)[2]
    assert not np.allclose(a, b) and np.corrcoef(a, b)[0, 1] > 0.8


def test_input_errors_exit_2_with_one_line(scored, tmp_path):
    store = load_embeddings(scored / "store")
    save_embeddings(tmp_path / "other", store.utt_ids, store.embeddings, {"model_fingerprint": "z"})
    cases = [
        ("score", scored / "trials.txt", tmp_path / "nope", "--out", tmp_path / "s.txt"),
        ("score", scored / "trials.txt", scored / "store", "--out", tmp_path / "s.txt",
         "--norm", "snorm"),
        ("score", scored / "trials.txt", scored / "store", "--out", tmp_path / "s.txt",
         "--cohort-store", tmp_path / "other"),
        ("evaluate", scored / "trials.txt", tmp_path / "missing.txt"),
    ]  # fmt: skip
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    bad = tmp_path / "bad.txt"
    bad.write_text("a b 0.1\nc d zero\n")
    result = run("evaluate", scored / "trials.txt", bad)
    assert result.exit_code == 2 and "bad.txt:2" in result.output


def test_embed_command_writes_a_store(tmp_path):
    torch.manual_seed(0)
    model = build_model("xvector", feat_dim=80, embed_dim=8, channels=16, stats_channels=24)
    checkpoint = tmp_path / "model.pt"
    fingerprint = save_checkpoint(
        checkpoint, model_name="xvector",
        model_args={"feat_dim": 80, "embed_dim": 8, "channels": 16, "stats_channels": 24},
        model=model, features=FbankConfig().to_dict(),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    speaker = random_speaker(rng)
    wav, utt2spk = {}, {}
    for i in range(3):
        path = tmp_path / "wav" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, speech_like(0.6 + 0.3 * i, 16000, speaker, seed=i), 16000)
        wav[f"spk/u{i}"] = str(path)
        utt2spk[f"spk/u{i}"] = "spk"
    DataDir(wav, utt2spk).save(tmp_path / "data")
    result = run("embed", "--model", checkpoint, tmp_path / "data", tmp_path / "emb")
    assert result.exit_code == 0, result.output
    store = load_embeddings(tmp_path / "emb")
    assert store.utt_ids == list(wav) and store.embeddings.shape == (3, 8)
    assert store.meta["model_fingerprint"] == fingerprint
    result = run("embed", "--model", tmp_path / "nope.pt", tmp_path / "data", tmp_path / "e2")
    assert result.exit_code == 2 and result.output.startswith("error: ")


NO_TORCH = """
import sys
from speakerverify.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    assert not done.code, done.code
assert "torch" not in sys.modules, "torch was imported"
"""


def test_score_and_evaluate_start_without_torch(scored, tmp_path):
    """Scoring and metrics need numpy only: importing torch would add seconds to every call."""
    import subprocess
    import sys

    scores = tmp_path / "scores.txt"
    for command in (
        ["score", scored / "trials.txt", scored / "store", "--out", scores],
        ["evaluate", scored / "trials.txt", scores, "--json"],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", NO_TORCH, *map(str, command)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert len(read_scores(scores)[2]) == 400


def test_embed_help_calls_its_output_an_embedding_directory():
    """Regression (issue 24): it said "store", the word for the speaker database of enroll."""
    result = CliRunner().invoke(speakerverify.cli.main, ["embed", "--help"])
    text = " ".join(result.output.split())  # click rewraps the first paragraph
    assert result.exit_code == 0
    assert "into the embedding directory OUT." in text
    assert "store" not in text.lower()
