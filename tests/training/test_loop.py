"""Training end to end on a tiny generated corpus (CPU, seconds): it learns, resume equals an
uninterrupted run, SIGTERM leaves a loadable checkpoint, the CLI reports errors in one line."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from speakerverify.checkpoint import CheckpointError, load_checkpoint, load_encoder
from speakerverify.cli import main
from speakerverify.config import ConfigError, LossConfig, OptimConfig
from speakerverify.data import DataDir, Trials, write_trials
from speakerverify.losses import LOSSES
from speakerverify.models import build_model
from speakerverify.testing import make_voxceleb_corpus
from speakerverify.training.experiment import find_checkpoint
from speakerverify.training.experiment_config import load_config
from speakerverify.training.loop import fit
from speakerverify.training.schedules import LrSchedule, margin_at, mining_at, warmup_steps_of
from speakerverify.training.validation import validate

TINY = Path(__file__).parents[1] / "conf" / "tiny.yaml"


def make_corpus(root: Path) -> Path:
    """8 speakers × 3 sessions × 3 utts of 2 s; sessions 1-2 train, session 3 is the trial set."""
    utts = make_voxceleb_corpus(root, num_speakers=8, sessions_per_speaker=3, utts_per_session=3,
                                seconds=2.0, seed=0)  # fmt: skip
    speaker = {u: u.split("/")[0] for u in utts}
    wav = {u: str(root / "wav" / f"{u}.wav") for u in utts}
    valid = utts[6::9] + utts[7::9] + utts[8::9]  # the third session of every speaker
    train = [u for u in utts if u not in set(valid)]
    for name, subset in (("train", train), ("valid", valid)):
        DataDir(wav={u: wav[u] for u in subset}, utt2spk={u: speaker[u] for u in subset},
                utt2dur=None).save(root / name)  # fmt: skip
    pairs = list(itertools.combinations(sorted(valid), 2))
    labels = np.array([speaker[a] == speaker[b] for a, b in pairs], dtype=np.int8)
    trials = Trials(enroll=[a for a, _ in pairs], test=[b for _, b in pairs], labels=labels,
                    name="tiny")  # fmt: skip
    write_trials(root / "trials.txt", trials)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def overrides(corpus: Path, validation: bool = False) -> list[str]:
    items = [f"data.train_dir={corpus / 'train'}"]
    if validation:
        items += [
            f"data.valid_dir={corpus / 'valid'}",
            f"data.valid_trials={corpus / 'trials.txt'}",
        ]
    return items


def read_log(exp_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]


def test_tiny_model_learns_and_beats_untrained(corpus, tmp_path):
    cfg = load_config(TINY, overrides(corpus, validation=True))
    torch.manual_seed(cfg.train.seed)
    untrained = build_model("xvector", feat_dim=24, **cfg.model.args)
    fbank = cfg.features.fbank_dict()
    untrained_eer = validate(untrained, fbank, corpus / "valid", corpus / "trials.txt")["eer"]

    exp_dir = tmp_path / "exp"
    result = fit(cfg, exp_dir)

    assert load_config(exp_dir / "config.yaml") == cfg  # resolved config written, unchanged
    log = read_log(exp_dir)
    steps = [r for r in log if r["kind"] == "step"]
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == list(range(1, cfg.train.epochs + 1))
    for key in ("loss", "num_active", "active_fraction", "mean_d_ap", "mean_d_an", "frac_hard",
                "embedding_spread", "lr", "utt_per_second", "grad_norm", "margin"):  # fmt: skip
        assert all(math.isfinite(r[key]) for r in steps), key
    assert epochs[-1]["loss"] < 0.5 * epochs[0]["loss"]  # the loss falls
    assert all(r["embedding_spread"] > 0.5 for r in steps)  # no collapse to one point
    trained_eer = min(r["eer"] for r in epochs)
    assert epochs[-1]["eer"] < untrained_eer and trained_eer < untrained_eer
    assert {"eer", "min_dcf"} <= set(epochs[-1])
    # LR: warm-up then cosine down to final_lr at the last step.
    assert steps[0]["lr"] < cfg.optim.lr
    assert steps[-1]["lr"] < 0.05 * cfg.optim.lr
    last = load_checkpoint(exp_dir / "checkpoints" / "epoch_0010.pt")["train_state"]
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.final_lr)

    checkpoints = sorted(p.name for p in (exp_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.pt", "epoch_0009.pt", "epoch_0010.pt"]  # keep_last 2 + best
    assert result == exp_dir / "checkpoints" / "best.pt"
    best = load_checkpoint(result)
    assert best["train_state"]["best_eer"] == trained_eer
    assert best["config"] == cfg.to_dict()
    loaded = load_encoder(result)
    assert loaded.embed_dim == 32 and loaded.model_name == "xvector"
    again = validate(loaded.encoder, best["features"], corpus / "valid", corpus / "trials.txt")
    assert again["eer"] == trained_eer


RESUME_SETTINGS = [
    "train.epochs=3",
    "features.spec_augment=true",
    "features.dither=0.1",
    "features.spec_augment_args={max_freq_mask_bins: 4}",
    "loss.margin_start=0.05",
    "loss.margin_warmup_epochs=1.5",
    "loss.mining_warmup=semi_hard",
    "loss.mining_warmup_epochs=1",
]


def test_resume_equals_uninterrupted(corpus, tmp_path):
    cfg = load_config(TINY, overrides(corpus) + RESUME_SETTINGS)
    straight = fit(cfg, tmp_path / "straight")
    total = load_checkpoint(straight)["train_state"]["global_step"]
    assert total == 9  # 3 batches per epoch

    half = fit(cfg.replace(["train.max_steps=4"]), tmp_path / "resumed")
    assert half.name == "epoch_0002_step_00000004.pt"
    assert load_checkpoint(half)["train_state"]["batch_in_epoch"] == 1
    resumed = fit(cfg, tmp_path / "resumed", resume=True)

    a = load_checkpoint(straight)
    b = load_checkpoint(resumed)
    assert b["train_state"]["global_step"] == total
    max_diff = max(
        (a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item()
        for k in a["state_dict"]
    )
    assert max_diff <= 1e-6
    assert (
        a["train_state"]["optimizer"]["state"].keys()
        == b["train_state"]["optimizer"]["state"].keys()
    )
    # The step records after the resume repeat the uninterrupted ones (same losses, LR, margin).
    tail = [r for r in read_log(tmp_path / "straight") if r["kind"] == "step" and r["step"] > 4]
    tail_resumed = [
        r for r in read_log(tmp_path / "resumed") if r["kind"] == "step" and r["step"] > 4
    ]
    assert [(r["loss"], r["lr"], r["margin"]) for r in tail] == [
        (r["loss"], r["lr"], r["margin"]) for r in tail_resumed
    ]
    mining = {
        r["epoch"]: r["mining"] for r in read_log(tmp_path / "straight") if r["kind"] == "step"
    }
    assert mining == {1: "semi_hard", 2: "batch_hard", 3: "batch_hard"}
    # The superseded mid-epoch checkpoint is pruned once its epoch ends.
    names = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert names == ["epoch_0002.pt", "epoch_0003.pt"]


def test_fresh_run_refuses_a_used_exp_dir_and_resume_needs_a_checkpoint(corpus, tmp_path):
    cfg = load_config(TINY, [*overrides(corpus), "train.max_steps=1"])
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        fit(cfg, tmp_path / "exp", resume=True)
    fit(cfg, tmp_path / "exp")
    with pytest.raises(CheckpointError, match="already has checkpoints"):
        fit(cfg, tmp_path / "exp")
    other = load_config(TINY, [*overrides(corpus), "model.args.embed_dim=16"])
    with pytest.raises(CheckpointError, match="but the config asks for"):
        fit(other, tmp_path / "exp", resume=True)


@pytest.mark.parametrize(
    ("signum", "workers", "whole_group"),
    [(signal.SIGTERM, 0, False), (signal.SIGINT, 2, True)],  # kill; Ctrl-C reaches the workers too
)
def test_signal_saves_a_loadable_checkpoint(corpus, tmp_path, signum, workers, whole_group):
    exp_dir = tmp_path / "exp"
    command = [sys.executable, "-c", "from speakerverify.cli import main; main()", "train",
               str(TINY), "--exp-dir", str(exp_dir), "--set", *overrides(corpus),
               "train.epochs=1000", "train.log_every=1", f"data.num_workers={workers}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               start_new_session=True)  # fmt: skip
    log = exp_dir / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training never logged a step"
        time.sleep(0.2)
    if whole_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err.decode()
    assert b"interrupted: checkpoint saved to" in err
    assert b"Traceback" not in err
    found = find_checkpoint(exp_dir / "checkpoints")
    assert found is not None and found.name.startswith("epoch_")
    state = load_checkpoint(found)["train_state"]
    assert state["global_step"] >= 2
    assert load_encoder(found).embed_dim == 32
    if whole_group:
        return
    # ... and training continues from it.
    steps = state["global_step"] + 2
    result = CliRunner().invoke(main, ["train", str(TINY), "--exp-dir", str(exp_dir), "--resume",
                                       "--set", *overrides(corpus), "train.epochs=1000",
                                       f"train.max_steps={steps}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        load_checkpoint(find_checkpoint(exp_dir / "checkpoints"))["train_state"]["global_step"]
        == steps
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "optim.learning_rate=1"], "unknown keys in optim: ['learning_rate']"),
        (["--set", "model.name=wav2vec"], "model.name: unknown value 'wav2vec'"),
        (["oops"], "unexpected argument 'oops'"),
        (["--set", "data.train_dir=/nonexistent/dir"], "/nonexistent/dir"),
    ],
)
def test_cli_train_errors_are_one_line(tmp_path, args, needle):
    result = CliRunner().invoke(main, ["train", str(TINY), "--exp-dir", str(tmp_path / "e"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and needle in lines[0], result.output


def test_cli_average(corpus, tmp_path):
    cfg = load_config(TINY, [*overrides(corpus), "train.epochs=2", "train.keep_last=3"])
    fit(cfg, tmp_path / "exp")
    paths = sorted(str(p) for p in (tmp_path / "exp" / "checkpoints").glob("epoch_*.pt"))
    out = tmp_path / "avg.pt"
    result = CliRunner().invoke(main, ["average", *paths, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)["fingerprint"] in result.output
    bad = CliRunner().invoke(main, ["average", str(tmp_path / "missing.pt"), "--out", str(out)])
    assert bad.exit_code == 2 and "error: " in bad.output and "missing.pt" in bad.output


def test_lr_schedule_shapes():
    cosine = LrSchedule(total_steps=100, warmup_steps=10, scheduler="cosine", final_ratio=0.01)
    assert [cosine(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cosine(10) == 1.0 and cosine(55) == pytest.approx(0.505)
    assert cosine(100) == pytest.approx(0.01) and cosine(500) == pytest.approx(0.01)
    values = [cosine(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    exponential = LrSchedule(
        total_steps=20, warmup_steps=0, scheduler="exponential", final_ratio=0.01
    )
    assert [exponential(s) for s in (0, 10, 20)] == pytest.approx([1.0, 0.1, 0.01])
    constant = LrSchedule(total_steps=20, warmup_steps=2, scheduler="constant", final_ratio=0.01)
    assert [constant(s) for s in (0, 1, 2, 19)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    assert warmup_steps_of(OptimConfig(warmup_epochs=1.5), 10) == 15
    assert warmup_steps_of(OptimConfig(warmup_steps=7), 10) == 7


def test_margin_and_mining_schedules():
    loss = LossConfig(args={"margin": 0.3, "mining": "batch_hard"}, margin_start=0.1,
                      margin_warmup_epochs=2, mining_warmup="semi_hard",
                      mining_warmup_epochs=1)  # fmt: skip
    assert [margin_at(loss, e) for e in (0, 0.5, 2, 9)] == pytest.approx([0.1, 0.15, 0.3, 0.3])
    assert [mining_at(loss, e) for e in (0, 1, 5)] == ["semi_hard", "batch_hard", "batch_hard"]
    plain = LossConfig(args={"margin": 0.2})
    assert margin_at(plain, 0) == 0.2 and mining_at(plain, 0) == "semi_hard"


OPTIMIZERS = [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]


@pytest.mark.parametrize(("name", "kind"), OPTIMIZERS)
def test_build_optimizer(name, kind):
    from speakerverify.training.setup import build_optimizer

    cfg = load_config(TINY, [f"optim.name={name}", "optim.lr=0.3", "optim.weight_decay=0.01"])
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2).parameters())
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.3 and group["weight_decay"] == 0.01
    if name == "sgd":
        assert group["momentum"] == 0.9 and group["nesterov"]


def test_too_few_speakers_for_a_batch_is_a_config_error(corpus, tmp_path):
    # Regression: the sampler's ValueError escaped as a traceback instead of a one-line error.
    args = ["--set", *overrides(corpus), "data.num_speakers=9"]
    result = CliRunner().invoke(main, ["train", str(TINY), "--exp-dir", str(tmp_path / "e"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "8 eligible speakers" in lines[0], result.output
    assert str(corpus / "train") in lines[0]


# Regression (issue 14): the trainer set `loss_fn.margin = config.loss.margin` (0.2 by default)
# before every step, so the contrastive loss trained with 0.2 instead of its own 1.0, and
# info_nce / angular_prototypical got a stray attribute and logged a margin that meant nothing.
# One short run per registered loss; the logged margin is the one the loss used.
def train_briefly(corpus: Path, exp_dir: Path, settings: list[str]) -> list[dict]:
    cfg = load_config(TINY, [*overrides(corpus), "train.max_steps=2", "train.log_every=1",
                             "loss.margin=null", *settings])  # fmt: skip
    fit(cfg, exp_dir)
    steps = [r for r in read_log(exp_dir) if r["kind"] == "step"]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) for r in steps)
    return steps


def test_margin_not_overwritten_for_triplet(corpus, tmp_path):
    steps = train_briefly(corpus, tmp_path / "default", [])
    assert [r["margin"] for r in steps] == [0.2, 0.2]  # TripletLoss's own default
    assert {r["mining"] for r in steps} == {"batch_hard"}
    steps = train_briefly(corpus, tmp_path / "set", ["loss.margin=0.3"])
    assert [r["margin"] for r in steps] == [0.3, 0.3]


def test_margin_not_overwritten_for_contrastive(corpus, tmp_path):
    steps = train_briefly(corpus, tmp_path / "default", ["loss.name=contrastive"])
    assert [r["margin"] for r in steps] == [1.0, 1.0]  # ContrastiveLoss's own default
    assert {r["mining"] for r in steps} == {None}
    steps = train_briefly(
        corpus, tmp_path / "args", ["loss.name=contrastive", "loss.args={margin: 1.5}"]
    )
    assert [r["margin"] for r in steps] == [1.5, 1.5]
    steps = train_briefly(corpus, tmp_path / "set", ["loss.name=contrastive", "loss.margin=0.7"])
    assert [r["margin"] for r in steps] == [0.7, 0.7]


def check_loss_without_margin(corpus, tmp_path, name):
    steps = train_briefly(corpus, tmp_path / "exp", [f"loss.name={name}"])
    assert all("margin" not in r and r["mining"] is None for r in steps)
    with pytest.raises(ConfigError, match=f"loss.margin: loss '{name}' has no margin"):
        load_config(TINY, [*overrides(corpus), f"loss.name={name}", "loss.margin=0.2"])


def test_margin_not_overwritten_for_info_nce(corpus, tmp_path):
    check_loss_without_margin(corpus, tmp_path, "info_nce")


def test_margin_not_overwritten_for_angular_prototypical(corpus, tmp_path):
    check_loss_without_margin(corpus, tmp_path, "angular_prototypical")


def test_every_registered_loss_has_a_margin_regression_test():
    tested = {name.removeprefix("test_margin_not_overwritten_for_") for name in globals()
              if name.startswith("test_margin_not_overwritten_for_")}  # fmt: skip
    assert tested == set(LOSSES)
