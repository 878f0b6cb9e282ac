"""Two-process DDP (gloo, CPU) through `torchrun` and the `speakerverify train` command: ranks end
with identical parameters (the loss's own ones too), mining sees the global batch, the loss
stays finite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_loop import TINY, make_corpus

from speakerverify.checkpoint import load_checkpoint, load_encoder


def train_on_two_ranks(corpus: Path, exp_dir: Path, *settings: str) -> None:
    script = Path(sys.executable).parent / "speakerverify"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(script), "train", str(TINY), "--exp-dir", str(exp_dir),
               "--set", f"data.train_dir={corpus / 'train'}", "data.num_speakers=4",
               "train.epochs=2", "train.log_every=1", *settings]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


@pytest.mark.slow
def test_torchrun_two_gloo_ranks(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    exp_dir = tmp_path / "exp"
    train_on_two_ranks(corpus, exp_dir, "loss.gather_distributed=true")

    records = [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    # 24 K-groups / (P=4 per rank × 2 ranks) = 3 steps per epoch, logged by rank 0 only.
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in steps)
    # Global mining: batch_hard mines one triplet per anchor of the gathered 2 × 8 batch.
    assert all(r["num_valid"] == 16 for r in steps)
    assert [r["ranks_in_sync"] for r in epochs] == [True, True]
    checkpoint = load_checkpoint(exp_dir / "checkpoints" / "epoch_0002.pt")
    assert checkpoint["train_state"]["world_size"] == 2
    assert checkpoint["train_state"]["global_step"] == 6
    assert load_encoder(exp_dir / "checkpoints" / "epoch_0002.pt").embed_dim == 32


@pytest.mark.slow
def test_torchrun_keeps_the_loss_parameters_in_sync(tmp_path):
    """Regression (issue 25): the angular prototypical loss's scale and bias train, and their
    gradients, which DDP's encoder wrapper does not see, are averaged over the ranks (each rank
    computes the loss on its own batch, so unaveraged they would drift apart)."""
    import torch

    from speakerverify.losses import build_loss

    corpus = make_corpus(tmp_path / "corpus")
    exp_dir = tmp_path / "exp"
    train_on_two_ranks(corpus, exp_dir, "loss.name=angular_prototypical", "loss.margin=null")
    records = [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["ranks_in_sync"] for r in epochs] == [True, True]
    state = load_checkpoint(exp_dir / "checkpoints" / "epoch_0002.pt")["train_state"]
    assert state["global_step"] == 6 and state["world_size"] == 2
    initial = build_loss("angular_prototypical").state_dict()
    assert state["loss"].keys() == initial.keys() == {"scale", "bias"}
    for key, value in initial.items():
        assert torch.isfinite(state["loss"][key]) and not torch.equal(state["loss"][key], value)
