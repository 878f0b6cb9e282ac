"""Ready for the first GPU: train-step and extraction throughput of the VoxCeleb configs on CUDA.

For each of `recipes/voxceleb/conf/{xvector,resnet34,ecapa}_triplet.yaml` (their P x K, bf16,
the main phase's hard-negative mining): the bare training step (one batch already on the GPU,
`training.loop._train_step`, what `speakerverify train` runs) against the loader feeding the same
step (CropDataset crops of a synthetic corpus, the config's workers), in steps/s and utterances/s;
then extraction throughput of each encoder (`embed_data_dir`, batches of 32 by length) in
utterances/s and seconds of audio per second. The corpus is noise, not speech: speed does not
depend on content. MUSAN/RIR augmentation is off (no corpora here), so the loader figure is an
upper bound for an augmented run.

Without CUDA it says so and exits 0 (nothing to measure). `--smoke` runs the same code on the
CPU with tiny models and a few steps, so the script cannot rot before a GPU shows up
(tests/test_bench_gpu.py).

Run: python benchmarks/bench_gpu.py [--steps 30] [--workers 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("xvector_triplet", "resnet34_triplet", "ecapa_triplet")
SMOKE_MODELS = {
    "xvector": "{embed_dim: 16, channels: 32, stats_channels: 64}",
    "resnet34": "{embed_dim: 16, base_channels: 4}",
    "ecapa_tdnn": "{embed_dim: 16, channels: 32, aggregate_channels: 96}",
}


def make_corpus(root: Path, num_speakers: int, utts_per_speaker: int, seconds: float) -> Path:
    """Noise wavs of a data dir (16 kHz, 16 bit)."""
    import soundfile as sf

    from speakerverify.data import DataDir

    rng = np.random.default_rng(0)
    wav, utt2spk, utt2dur = {}, {}, {}
    for spk in range(num_speakers):
        for utt in range(utts_per_speaker):
            utt_id = f"id{spk:05d}/v/{utt:05d}"
            path = root / "wav" / f"{utt_id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * rng.standard_normal(int(seconds * 16000)), 16000, "PCM_16")
            wav[utt_id], utt2spk[utt_id], utt2dur[utt_id] = str(path), f"id{spk:05d}", seconds
    DataDir(wav=wav, utt2spk=utt2spk, utt2dur=utt2dur).save(root / "train")
    return root / "train"


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(parts, loss_fn, batches, config, num_steps: int) -> float:
    """Steps per second over `num_steps` steps after 3 warm-up steps (compilation, cuDNN search)."""
    from speakerverify.training.loop import _train_step

    clip = config.optim.grad_clip
    for _ in range(3):
        _train_step(parts, next(batches), loss_fn, {}, clip)
    synchronize(parts.env.device)
    start = time.perf_counter()
    for _ in range(num_steps):
        _train_step(parts, next(batches), loss_fn, {}, clip)
    synchronize(parts.env.device)
    return num_steps / (time.perf_counter() - start)


def bench_config(name: str, train_dir: Path, args: argparse.Namespace, device) -> dict:
    import itertools

    from speakerverify.training.distributed import DistEnv
    from speakerverify.training.experiment_config import load_config
    from speakerverify.training.setup import build_loader, build_parts

    overrides = [f"data.train_dir={train_dir}", f"data.num_workers={args.workers}",
                 f"train.device={device.type}"]  # fmt: skip
    if args.smoke:
        model = load_config(REPO / "recipes" / "voxceleb" / "conf" / f"{name}.yaml").model.name
        overrides += ["data.num_speakers=4", "data.chunk_seconds=1.0", "train.amp=none",
                      f"model.args={SMOKE_MODELS[model]}"]  # fmt: skip
    config = load_config(REPO / "recipes" / "voxceleb" / "conf" / f"{name}.yaml", overrides)
    env = DistEnv(0, 1, 0, device, owns_group=False)
    parts = build_parts(config, env)
    loss_fn = parts.loss  # a call without `mining=` mines with the main phase's strategy
    parts.sampler.set_epoch(0)
    loader = build_loader(parts.dataset, parts.sampler, 0, config, env)
    batch = next(iter(loader))
    bare = time_steps(parts, loss_fn, itertools.repeat(batch), config, args.steps)
    fed = time_steps(parts, loss_fn, itertools.cycle(loader), config, args.steps)
    batch_size = len(batch["labels"])
    return {
        "config": name,
        "batch": batch_size,
        "bare_steps_s": bare,
        "fed_steps_s": fed,
        "bare_utts_s": bare * batch_size,
        "fed_utts_s": fed * batch_size,
        "encoder": parts.encoder,
        "frontend": parts.frontend,
    }


def bench_extraction(result: dict, train_dir: Path, device) -> tuple[float, float]:
    from speakerverify.backend.embedder import Embedder
    from speakerverify.backend.extraction import embed_data_dir
    from speakerverify.data import DataDir

    data = DataDir.load(train_dir)
    embedder = Embedder(result["frontend"], result["encoder"], device=str(device))
    embed_data_dir(data.subset(data.utt_ids[:32]), embedder)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    embed_data_dir(data, embedder)
    synchronize(device)
    elapsed = time.perf_counter() - start
    return len(data) / elapsed, float(data.durations.sum()) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per figure")
    parser.add_argument("--workers", type=int, default=8, help="loader workers")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU (tests)")
    args = parser.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device visible: nothing to measure (run it on a GPU machine).")
        return 0
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:
        args.steps, args.workers = 2, 0
    with tempfile.TemporaryDirectory() as tmp:
        num_speakers, utts, seconds = (8, 2, 1.5) if args.smoke else (512, 4, 8.0)
        train_dir = make_corpus(Path(tmp), num_speakers, utts, seconds)
        name = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(device)
        print(f"device: {name}; torch {torch.__version__}; {args.steps} timed steps")
        print("| config | batch | bare step/s | utts/s | loader + step/s | utts/s | fed/bare |"
              " extraction utts/s | audio s/s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for name in CONFIGS:
            result = bench_config(name, train_dir, args, device)
            utts_s, audio_s = bench_extraction(result, train_dir, device)
            print(
                f"| {result['config']} | {result['batch']} | {result['bare_steps_s']:.2f} | "
                f"{result['bare_utts_s']:,.0f} | {result['fed_steps_s']:.2f} | "
                f"{result['fed_utts_s']:,.0f} | "
                f"{result['fed_steps_s'] / result['bare_steps_s']:.2f} | {utts_s:,.0f} | "
                f"{audio_s:,.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
