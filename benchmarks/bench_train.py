"""End-to-end training throughput vs the bare model step, at batch 64 × 2 s (P=32, K=2).

End to end = `speakerverify.training.loop.fit` as users run it: DataLoader workers reading and
cropping wavs, Fbank + CMN on the training device, the encoder, triplet mining + loss, backward,
gradient clipping, Adam, LR schedule, logging, per-epoch checkpoints. Peer: the bare model step on
pre-made features (encoder forward + backward + Adam on a (64, 198, 80) tensor), measured in the
same run with the same threads. Goal: end-to-end >= 0.8 × bare step.

The step includes the Fbank front-end, which the bare step does not, so the script also times the
front-end alone and prints the rate of "bare step + front-end" as the tighter reference.

Run: python benchmarks/bench_train.py [--models xvector ecapa_tdnn] [--steps 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from speakerverify.data import DataDir
from speakerverify.frontend.features import Fbank
from speakerverify.models import build_model
from speakerverify.testing import make_voxceleb_corpus
from speakerverify.training.experiment_config import Config
from speakerverify.training.loop import fit

BATCH, CHUNK_SECONDS, NUM_FRAMES, WARMUP_STEPS = 64, 2.0, 198, 2


def make_train_dir(root: Path) -> Path:
    """48 speakers × 8 utterances of 2.5 s: 6 P×K batches of 64 per epoch."""
    utts = make_voxceleb_corpus(root, num_speakers=48, sessions_per_speaker=2, utts_per_session=4,
                                seconds=2.5, seed=0)  # fmt: skip
    wav = {u: str(root / "wav" / f"{u}.wav") for u in utts}
    DataDir(wav=wav, utt2spk={u: u.split("/")[0] for u in utts},
            utt2dur={u: 2.5 for u in utts}).save(root / "train")  # fmt: skip
    return root / "train"


def bare_step_rate(model_name: str, steps: int) -> float:
    """Utterances/s of encoder forward + backward + Adam on pre-made (64, 198, 80) features."""
    torch.manual_seed(0)
    model = build_model(model_name, feat_dim=80).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    feats = torch.randn(BATCH, NUM_FRAMES, 80)
    elapsed = 0.0
    for step in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(feats).pow(2).mean().backward()
        optimizer.step()
        if step >= WARMUP_STEPS:
            elapsed += time.perf_counter() - start
    return steps * BATCH / elapsed


def frontend_rate(steps: int) -> float:
    """Utterances/s of the Fbank front-end alone on (64, 32000) waves (part of every step)."""
    frontend = Fbank()
    waves = torch.randn(BATCH, round(CHUNK_SECONDS * 16000))
    with torch.no_grad():
        frontend(waves)
        start = time.perf_counter()
        for _ in range(steps):
            frontend(waves)
    return steps * BATCH / (time.perf_counter() - start)


def end_to_end_rate(
    model_name: str, train_dir: Path, exp_dir: Path, steps: int, workers: int
) -> float:
    """Utterances/s of `fit` between the end of warm-up step 2 and the last step (wall clock)."""
    config = Config.from_dict({
        "data": {"train_dir": str(train_dir), "chunk_seconds": CHUNK_SECONDS, "num_speakers": 32,
                 "num_utts": 2, "num_workers": workers},
        "model": {"name": model_name},
        "loss": {"mining": "batch_hard"},
        "train": {"epochs": 100, "max_steps": WARMUP_STEPS + steps, "log_every": 1,
                  "device": "cpu", "tensorboard": False},
    })  # fmt: skip
    fit(config, exp_dir)
    records = [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]
    times = {r["step"]: r["time"] for r in records if r["kind"] == "step"}
    return steps * BATCH / (times[WARMUP_STEPS + steps] - times[WARMUP_STEPS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["xvector", "ecapa_tdnn"])
    parser.add_argument("--steps", type=int, default=12, help="measured steps per figure")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (end to end)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {BATCH} × {CHUNK_SECONDS:g} s, "
          f"{args.workers} loader workers, {args.steps} measured steps")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        train_dir = make_train_dir(Path(tmp) / "corpus")
        for model_name in args.models:
            # The bare step is timed before and after the end-to-end run and averaged, so a change
            # in background load (a shared machine) biases the ratio less.
            before = bare_step_rate(model_name, args.steps)
            e2e = end_to_end_rate(model_name, train_dir, Path(tmp) / f"exp_{model_name}",
                                  args.steps, args.workers)  # fmt: skip
            after = bare_step_rate(model_name, args.steps)
            bare = (before + after) / 2
            fbank = frontend_rate(args.steps)
            bound = 1 / (1 / bare + 1 / fbank)  # bare step + front-end, nothing else
            print(f"{model_name:>11}: bare model step {bare:6.1f} utt/s (before {before:.1f}, "
                  f"after {after:.1f}) | end to end {e2e:6.1f} utt/s | ratio {e2e / bare:.2f} "
                  "(goal >= 0.8)")  # fmt: skip
            print(f"{'':>11}  front-end alone {fbank:6.1f} utt/s -> bare step + front-end "
                  f"{bound:6.1f} utt/s; end to end / that {e2e / bound:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
