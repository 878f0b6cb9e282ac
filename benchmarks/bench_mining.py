"""Triplet mining + loss, forward + backward, against pytorch-metric-learning at 1 thread.

Run: python benchmarks/bench_mining.py [--sizes 128 512 2048] [--budget-seconds 2]

For each batch size B, utterances per speaker K and strategy, both implementations see the same
embeddings (D = 256) and labels. The script first checks in float64 that both mine the same
number of triplets and give the same loss and gradients, then times fwd+bwd in float32 at one
thread as process CPU time (`time.process_time`: on a machine shared with other jobs, wall
time mostly measures waiting for a core), the two implementations interleaved; it prints the
minimum and the median over repeats. Peak memory is the maximum of the running sum of
allocations and frees during one fwd+bwd (torch profiler memory events). Ratios are PML / ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402

from speakerverify.losses import TripletLoss  # noqa: E402

MARGIN = 0.2
EMBED_DIM = 256


def make_ours(strategy: str):
    loss_fn = TripletLoss(margin=MARGIN, mining=strategy, reduction="mean_active")

    def run(embeddings, labels):
        value, stats = loss_fn(embeddings, labels)
        return value, stats["num_valid"]

    return run


def make_pml(strategy: str):
    distance = pml_distances.CosineSimilarity()
    loss_fn = pml_losses.TripletMarginLoss(margin=MARGIN, distance=distance)
    miner = {
        "batch_hard": pml_miners.BatchHardMiner(distance=distance),
        "semi_hard_all": pml_miners.TripletMarginMiner(
            margin=MARGIN, type_of_triplets="semihard", distance=distance
        ),
        "batch_all": None,
    }[strategy]

    def run(embeddings, labels):
        if miner is None:
            return loss_fn(embeddings, labels), None
        indices = miner(embeddings, labels)
        return loss_fn(embeddings, labels, indices), len(indices[0])

    return run


def forward_backward(run, embeddings, labels):
    embeddings.grad = None
    loss, count = run(embeddings, labels)
    loss.backward()
    return loss.item(), count, embeddings.grad.clone()


def peak_bytes(run, embeddings, labels) -> int:
    """Peak of the running sum of CPU allocations during one fwd+bwd."""
    from torch.profiler import ProfilerActivity, profile

    embeddings.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss, _ = run(embeddings, labels)
        loss.backward()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    memory = sorted(
        (event["ts"], event["args"]["Bytes"]) for event in events if event["name"] == "[memory]"
    )
    total = peak = 0
    for _, size in memory:
        total += size
        peak = max(peak, total)
    return peak


def time_runs(runs, embeddings, labels, budget_seconds: float) -> list[list[float]]:
    """Interleave the implementations so CPU contention hits them alike; all times per runner."""
    times = [[] for _ in runs]
    start = time.perf_counter()
    while len(times[0]) < 3 or (
        time.perf_counter() - start < budget_seconds and len(times[0]) < 100
    ):
        for index, run in enumerate(runs):
            begin = time.process_time()
            forward_backward(run, embeddings, labels)
            times[index].append(time.process_time() - begin)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--per-speaker", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--strategies", nargs="+", default=["batch_hard", "semi_hard_all", "batch_all"]
    )
    parser.add_argument("--budget-seconds", type=float, default=2.0)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, D = {EMBED_DIM}")
    header = (
        "| strategy | B | K | triplets | ours ms min (median) | PML ms min (median) | speed-up "
        "| ours MiB | PML MiB | PML/ours mem | max abs diff (f64) |"
    )
    print(header)
    print("|" + "---|" * 11)
    for strategy in args.strategies:
        for batch in args.sizes:
            for per_speaker in args.per_speaker:
                generator = torch.Generator().manual_seed(batch + per_speaker)
                labels = torch.arange(batch // per_speaker).repeat_interleave(per_speaker)
                embeddings = torch.randn(batch, EMBED_DIM, generator=generator)
                ours, pml = make_ours(strategy), make_pml(strategy)
                exact = embeddings.double().requires_grad_(True)
                ours_loss, ours_count, ours_grad = forward_backward(ours, exact, labels)
                pml_loss, pml_count, pml_grad = forward_backward(pml, exact, labels)
                if pml_count is not None and pml_count != ours_count:
                    raise SystemExit(f"{strategy} B={batch}: {ours_count} vs {pml_count} triplets")
                diff = max(abs(ours_loss - pml_loss), (ours_grad - pml_grad).abs().max().item())
                if diff > 1e-9:
                    raise SystemExit(f"{strategy} B={batch} K={per_speaker}: differ by {diff}")
                embeddings.requires_grad_(True)
                ours_times, pml_times = time_runs(
                    [ours, pml], embeddings, labels, args.budget_seconds
                )
                ours_bytes = peak_bytes(ours, embeddings, labels)
                pml_bytes = peak_bytes(pml, embeddings, labels)
                print(
                    f"| {strategy} | {batch} | {per_speaker} | {int(ours_count)} "
                    f"| {1e3 * min(ours_times):.2f} ({1e3 * statistics.median(ours_times):.2f}) "
                    f"| {1e3 * min(pml_times):.2f} ({1e3 * statistics.median(pml_times):.2f}) "
                    f"| {min(pml_times) / min(ours_times):.1f}x "
                    f"| {ours_bytes / 2**20:.1f} | {pml_bytes / 2**20:.1f} "
                    f"| {pml_bytes / max(ours_bytes, 1):.1f}x | {diff:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
