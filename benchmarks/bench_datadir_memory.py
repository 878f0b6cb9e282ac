"""Host memory of the training index at VoxCeleb2 size, and what forked loader workers add to it.

A VoxCeleb2-dev-sized data dir (1,092,009 utterances, 5,994 speakers; ids, paths and durations
shaped like the real ones, no audio) is written to a temp dir and loaded, in a fresh process per
representation, into:
- `columns`: `DataDir.load` + `CropDataset(speed_perturb=True)` as they are now (one byte buffer
  with offsets for ids and paths, numpy arrays for labels and durations);
- `dicts` (the peer: the representation before issue 23): the same files parsed by the same
  parser into dicts of `str`, and the crop index as lists of `str` / `int` built from them.
Reported: Python heap retained after loading (tracemalloc, numpy included) per utterance and its
peak while loading, the main process RSS growth, and the private (copied) memory of 8 forked
workers after each has read the index entries of 1/8 of the items, drawn at random, as
`CropDataset.__getitem__` does (path, label, duration), then run the garbage collector; minus
that of a forked worker that read nothing, it is what the index costs per worker.

Run: python benchmarks/bench_datadir_memory.py [--num-utts N] [--workers W]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def write_data_dir(root: Path, num_utts: int, num_speakers: int, seed: int = 0) -> None:
    """wav.scp / utt2spk / utt2dur with VoxCeleb2-shaped ids and paths."""
    rng = np.random.default_rng(seed)
    speaker = np.sort(rng.integers(0, num_speakers, num_utts))
    letters = np.frombuffer(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", "S1"
    )
    videos = [
        "".join(x.decode() for x in rng.choice(letters, 11)) for _ in range(num_utts // 8 + 1)
    ]
    durations = rng.uniform(4.0, 20.0, num_utts)
    root.mkdir(parents=True, exist_ok=True)
    with (
        open(root / "wav.scp", "w") as wav,
        open(root / "utt2spk", "w") as utt2spk,
        open(root / "utt2dur", "w") as utt2dur,
    ):
        for i in range(num_utts):
            spk = f"id{speaker[i]:05d}"
            utt = f"{spk}/{videos[i // 8]}/{i % 8 + 1:05d}"
            wav.write(f"{utt} /data/voxceleb2/dev/wav/{utt}.wav\n")
            utt2spk.write(f"{utt} {spk}\n")
            utt2dur.write(f"{utt} {durations[i]:.3f}\n")


def load_columns(path: Path):
    from speakerverify.data import CropDataset, DataDir

    data = DataDir.load(path)
    dataset = CropDataset(data, speed_perturb=True)
    base = len(data)

    def touch(index: int) -> None:  # what __getitem__ reads of the index
        b = index % base
        _ = (dataset.paths[b], int(dataset.labels[index]), int(dataset.total_samples[b]))

    return (data, dataset), len(dataset), touch


def load_dicts(path: Path):
    """The pre-issue-23 representation, rebuilt from the same parser (peer)."""
    from speakerverify.data.datadir import _read_table

    wav = _read_table(path / "wav.scp", rest_of_line=True)
    utt2spk = _read_table(path / "utt2spk")
    utt2dur = {u: float(v) for u, v in _read_table(path / "utt2dur").items()}
    utt_ids = list(wav)
    paths = [wav[u] for u in utt_ids]
    speakers = sorted(set(utt2spk.values()))
    label_of = {s: i for i, s in enumerate(speakers)}
    base_labels = [label_of[utt2spk[u]] for u in utt_ids]
    labels = [label + copy * len(speakers) for copy in range(3) for label in base_labels]
    total_samples = [int(utt2dur[u] * 16000) for u in utt_ids]
    base = len(utt_ids)

    def touch(index: int) -> None:
        b = index % base
        _ = (paths[b], labels[index], total_samples[b])

    kept = (wav, utt2spk, utt2dur, utt_ids, paths, speakers, labels, total_samples)
    return kept, len(labels), touch


def _status_kb(field: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _private_kb(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def measure(kind: str, path: Path, workers: int) -> dict:
    """In this (fresh) process: load, measure, fork the workers, measure them."""
    # imports (torch, ...) are not the index's memory: speakerverify.data loads lazily
    from speakerverify.data import CropDataset, DataDir  # noqa: F401
    from speakerverify.data.datadir import _read_table  # noqa: F401

    gc.collect()
    rss_before = _status_kb("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    kept, num_items, touch = (load_columns if kind == "columns" else load_dicts)(path)
    seconds = time.perf_counter() - start
    gc.collect()
    heap, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    num_utts = num_items // 3
    rss = _status_kb("VmRSS")
    children = []
    for worker in range(-1, workers):  # worker -1 reads nothing: what any forked worker costs
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a loader worker: read the index of 1/workers of the items at random
            try:
                os.close(read)
                # the same small allocations in every worker; only the index reads differ
                rng = np.random.default_rng(worker + 1)
                for index in rng.integers(0, num_items, num_items // workers).tolist():
                    if worker >= 0:
                        touch(index)
                gc.collect()  # the collector a worker runs sooner or later
                os.write(write, b"x")
                time.sleep(600)
            finally:
                os._exit(0)
        os.close(write)
        children.append((pid, read))
    private = []
    for pid, read in children:
        os.read(read, 1)
        private.append(_private_kb(pid))
    for pid, _ in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    del kept
    baseline, private = private[0], private[1:]
    return {
        "kind": kind,
        "num_utts": num_utts,
        "load_seconds": round(seconds, 1),
        "heap_bytes_per_utt": round(heap / num_utts, 1),
        "peak_heap_bytes_per_utt": round(peak / num_utts, 1),
        "main_rss_mb": round((rss - rss_before) / 1024, 1),
        "idle_worker_private_mb": round(baseline / 1024, 1),
        "worker_private_mb": [round(kb / 1024, 1) for kb in private],
        "workers_private_total_mb": round(sum(private) / 1024, 1),
        "workers_index_copies_mb": round(sum(kb - baseline for kb in private) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-utts", type=int, default=1_092_009)
    parser.add_argument("--num-speakers", type=int, default=5_994)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--measure", choices=["columns", "dicts"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train"
        write_data_dir(data, args.num_utts, args.num_speakers)
        print(
            f"{args.num_utts:,} utterances, {args.num_speakers:,} speakers, load {os.getloadavg()}"
        )
        for kind in ("columns", "dicts"):
            command = [sys.executable, __file__, "--measure", kind, "--data", str(data),
                       "--workers", str(args.workers)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            print(done.stdout.strip())


if __name__ == "__main__":
    main()
