"""Is the training loader fast enough? DataLoader batches/s (2 workers, augmentation on) versus the
x-vector's own forward+backward step rate on the same batch shape (64 x 2 s), plus both together.

Run: python benchmarks/bench_loader.py   (builds a small synthetic corpus, MUSAN and RIR trees in a
temp dir, in their published layouts; a few minutes on a busy 2-core machine)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speakerverify.data import CropDataset, PKSampler, collate_crops, prepare_voxceleb
from speakerverify.data.augment import Augmenter
from speakerverify.data.noise import prepare_musan, prepare_rirs
from speakerverify.frontend.features import Fbank
from speakerverify.models import build_model
from speakerverify.testing import make_voxceleb_corpus, speech_like

SR = 16000


def make_sources(root: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """5 s MUSAN-like files and 0.6 s RIRs in the musan/ and RIRS_NOISES/ layouts."""
    for kind, subset in [("noise", "free-sound"), ("music", "fma"), ("speech", "librivox")]:
        folder = root / "musan" / kind / subset
        folder.mkdir(parents=True)
        for i in range(8):
            if kind == "speech":
                wave = speech_like(5.0, seed=1000 + i)
            else:
                wave = (0.1 * rng.standard_normal(5 * SR)).astype(np.float32)
            sf.write(folder / f"{kind}-{subset}-{i:04d}.wav", wave, SR, subtype="PCM_16")
    for size in ("smallroom", "mediumroom"):
        folder = root / "RIRS_NOISES" / "simulated_rirs" / size / "Room001"
        folder.mkdir(parents=True)
        for i in range(8):
            taps = int(0.6 * SR)
            rir = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.05 * SR)) * 0.1
            rir[20] = 1.0
            sf.write(folder / f"Room001-{i + 1:05d}.wav", rir.astype(np.float32), SR)
    prepare_musan(root, root / "musan.txt")
    prepare_rirs(root, root / "rirs.txt")
    return root / "musan.txt", root / "rirs.txt"


def loader_for(dataset: CropDataset, sampler: PKSampler, workers: int):
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_crops,
        prefetch_factor=4 if workers else None,
    )


def time_loader(loader, num_batches: int) -> float:
    """Batches/s after the first batch (worker start-up excluded)."""
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return num_batches / (time.perf_counter() - start)


def train_step(frontend, model, optimizer, waves: torch.Tensor) -> None:
    feats, lengths = frontend(waves)
    embeddings = model(feats, lengths)
    loss = embeddings.pow(2).mean()  # the loss itself is negligible next to the encoder
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    p, k, chunk_seconds = 32, 2, 2.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_voxceleb_corpus(root / "vox", 48, 2, 2, seconds=8.0, seed=0)
        data = prepare_voxceleb(root / "vox", root / "data")
        musan_index, rir_index = make_sources(root, rng)
        print(f"corpus: {len(data)} utts x 8 s, {len(data.speakers)} speakers "
              f"(built in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        augmenter = Augmenter(musan_index, rir_index, aug_prob=0.6)
        num_batches = args.batches + 1 + args.steps + 2
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
              f"torch threads; batch {p}x{k} = {p * k} crops of {chunk_seconds} s")  # fmt: skip

        results = {}
        for name, speed in [("loader", False), ("loader+speed_perturb", True)]:
            dataset = CropDataset(data, chunk_seconds, augmenter=augmenter, speed_perturb=speed)
            sampler = PKSampler(dataset.labels, p, k, seed=0, num_batches=num_batches)
            rate = time_loader(loader_for(dataset, sampler, args.workers), args.batches)
            results[name] = rate
            print(f"{name:24s} {rate:7.2f} batches/s  ({rate * p * k:6.0f} crops/s, "
                  f"{args.workers} workers, aug_prob 0.6)")  # fmt: skip

        frontend = Fbank()
        model = build_model("xvector", feat_dim=80)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        waves = torch.randn(p * k, round(chunk_seconds * SR)) * 0.1
        for _ in range(2):
            train_step(frontend, model, optimizer, waves)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(frontend, model, optimizer, waves)
        model_rate = args.steps / (time.perf_counter() - start)
        print(f"{'xvector fwd+bwd step':24s} {model_rate:7.2f} steps/s   (fbank + x-vector + SGD)")

        # Both together, as in training: workers compete with the step for the same 2 cores.
        dataset = CropDataset(data, chunk_seconds, augmenter=augmenter)
        sampler = PKSampler(dataset.labels, p, k, seed=1, num_batches=num_batches)
        iterator = iter(loader_for(dataset, sampler, args.workers))
        for _ in range(2):
            train_step(frontend, model, optimizer, next(iterator)["waves"])
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(frontend, model, optimizer, next(iterator)["waves"])
        joint_rate = args.steps / (time.perf_counter() - start)
        print(f"{'train loop (both)':24s} {joint_rate:7.2f} steps/s")

    print()
    ratio = results["loader"] / model_rate
    print(f"ratio loader / x-vector step rate:              {ratio:5.2f}  (goal >= 1.0)")
    print(f"ratio loader+speed_perturb / x-vector step rate: "
          f"{results['loader+speed_perturb'] / model_rate:5.2f}")  # fmt: skip
    print(f"train loop / x-vector step alone:               {joint_rate / model_rate:5.2f}  "
          "(1.0 = loader costs nothing)")  # fmt: skip


if __name__ == "__main__":
    main()
