"""Two-process DDP (gloo, CPU) through `torchrun` and the `speakerverify train` command: ranks end
with identical parameters, mining sees the global batch, the loss stays finite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training_loop import TINY, make_corpus

from speakerverify.checkpoint import load_checkpoint, load_model


@pytest.mark.slow
def test_torchrun_two_gloo_ranks(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    exp_dir = tmp_path / "exp"
    script = Path(sys.executable).parent / "speakerverify"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(script), "train", str(TINY), "--exp-dir", str(exp_dir),
               "--set", f"data.train_dir={corpus / 'train'}", "data.num_speakers=4",
               "train.epochs=2", "train.log_every=1", "loss.gather_distributed=true"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

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
    assert load_model(exp_dir / "checkpoints" / "epoch_0002.pt").embed_dim == 32
