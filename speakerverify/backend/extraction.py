"""Embedding extraction over a data dir (batched, sharded across processes, resumable) into an
embedding dir.

The embedder is `speakerverify.backend.embedder`; the directory format (`EmbeddingStore`,
`save_embeddings`, `load_embeddings`) lives in `speakerverify.backend.embedding_dir`. torch is
imported only by the extractor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerverify.backend.embedder import Embedder, EmbedError, plan_batches
from speakerverify.backend.embedding_dir import (
    META_FILE,
    EmbeddingStore,
    EmbeddingStoreError,
    load_embeddings,
    save_embeddings,
)
from speakerverify.files import write_atomic

if TYPE_CHECKING:
    import torch

    from speakerverify.data import DataDir

logger = logging.getLogger(__name__)

__all__ = [
    "embed_data_dir",
    "extract_embeddings",
    "job_devices",
    "rank_device",
]


# -- extraction over a data dir ---------------------------------------------------------------

SHARD_DIR = ".shards"


def _model_signature(embedder: Embedder) -> str:
    if embedder.fingerprint:
        return embedder.fingerprint
    digest = hashlib.sha1()
    for module in (embedder.frontend, embedder.encoder):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _utterance_samples(data_dir: DataDir, sample_rate: int) -> list[int]:
    """Samples per utterance at `sample_rate`, from utt2dur when present, else file headers."""
    from speakerverify.frontend.audio import audio_info

    if data_dir.durations is not None:
        samples = np.round(data_dir.durations * sample_rate).astype(np.int64)
        return np.maximum(samples, 1).tolist()
    return [
        max(1, round(audio_info(path).duration_seconds * sample_rate))
        for path in data_dir.path_column
    ]


@dataclass(frozen=True)
class _Plan:
    signature: str
    shards: list[list[list[int]]]  # shard -> batches -> utterance indices (DataDir order)

    def shard_path(self, out_dir: Path, shard: int) -> Path:
        return out_dir / SHARD_DIR / f"{self.signature}-{shard:06d}.npz"


def _make_plan(
    data_dir: DataDir, embedder: Embedder, batch_size: int, shard_size: int
) -> tuple[_Plan, list[int]]:
    lengths = _utterance_samples(data_dir, embedder.sample_rate)
    batches = plan_batches(lengths, embedder.max_samples, batch_size)
    shards: list[list[list[int]]] = [[]]
    count = 0
    for batch in batches:
        if count >= shard_size:
            shards.append([])
            count = 0
        shards[-1].append(batch)
        count += len(batch)
    digest = hashlib.sha1()
    key = [_model_signature(embedder), embedder.meta(), batch_size, shard_size]
    digest.update(json.dumps(key, sort_keys=True).encode())
    digest.update("\n".join(data_dir.wav).encode())
    digest.update(np.asarray(lengths, np.int64).tobytes())
    return _Plan(digest.hexdigest()[:12], shards), lengths


def _embed_shard(embedder: Embedder, data_dir: DataDir, batches: list[list[int]]) -> np.ndarray:

    from speakerverify.frontend.audio import load_audio

    # the columns, indexed: no per-shard list of every path of the data dir
    paths, utt_ids = data_dir.path_column, data_dir.utt_id_column

    def read(batch: list[int]) -> list[torch.Tensor] | None:
        if len(batch) == 1:  # alone: possibly long, read window by window by embed_file
            return None
        return [load_audio(paths[i], embedder.sample_rate) for i in batch]

    rows = []
    # decoding the next batch (a thread: file reads and resampling release the GIL) overlaps
    # the forward pass of the current one
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, batches[0]) if batches else None
        for number, batch in enumerate(batches):
            waves = pending.result()
            if number + 1 < len(batches):
                pending = reader.submit(read, batches[number + 1])
            if waves is None:
                try:
                    rows.append(embedder.embed_file(paths[batch[0]])[None])
                except EmbedError as error:
                    raise EmbedError(f"{paths[batch[0]]} ({utt_ids[batch[0]]}): {error}") from None
                continue
            lengths = [w.shape[0] for w in waves]
            if min(lengths) < 1:
                short = batch[int(np.argmin(lengths))]
                raise EmbedError(f"{paths[short]} ({utt_ids[short]}): empty audio")
            try:
                rows.append(embedder._embed_batch(waves))
            except EmbedError:  # name the offending file
                for i, wave in zip(batch, waves, strict=True):
                    try:
                        embedder.embed_waveform(wave)
                    except EmbedError as error:
                        raise EmbedError(f"{paths[i]} ({utt_ids[i]}): {error}") from None
                raise
    return np.concatenate(rows).astype(np.float32)


def embed_data_dir(data_dir: DataDir, embedder: Embedder, batch_size: int = 32) -> np.ndarray:
    """Embeddings `(N, D)` float32 of every utterance of a data dir (rows in DataDir order), in
    memory: batched by similar length as `extract_embeddings` batches them, one process, no
    shard files (what per-epoch validation needs).
    """
    lengths = _utterance_samples(data_dir, embedder.sample_rate)
    batches = plan_batches(lengths, embedder.max_samples, batch_size)
    rows = _embed_shard(embedder, data_dir, batches)
    out = np.empty((len(lengths), embedder.embed_dim), np.float32)
    out[[i for batch in batches for i in batch]] = rows
    return out


def _run_shards(
    embedder: Embedder,
    data_dir: DataDir,
    out_dir: Path,
    plan: _Plan,
    rank: int,
    world_size: int,
    resume: bool,
    progress: bool,
    num_threads: int = 0,
    rows: np.ndarray | None = None,
) -> None:
    """Embed this rank's shards of `plan`; with `rows`, `data_dir` is a slice and `rows[i]` the
    data-dir row of its item i (what shard files record, so the merge sees one numbering)."""
    import torch
    from tqdm import tqdm

    if num_threads:
        torch.set_num_threads(num_threads)
    mine = [k for k in range(len(plan.shards)) if k % world_size == rank]
    total = sum(len(b) for k in mine for b in plan.shards[k])
    disable = not progress or rank != 0 or not sys.stderr.isatty()
    utt_ids = data_dir.utt_id_column
    with tqdm(total=total, desc="embed", unit="utt", disable=disable) as bar:
        for k in mine:
            path = plan.shard_path(out_dir, k)
            indices = [i for batch in plan.shards[k] for i in batch]
            if resume and path.is_file():
                bar.update(len(indices))
                continue
            embeddings = _embed_shard(embedder, data_dir, plan.shards[k])
            ids = np.asarray([utt_ids[i] for i in indices])
            rows_of = np.asarray(indices, np.int64) if rows is None else rows[indices]
            write_atomic(
                path,
                lambda f, e=embeddings, ids=ids, ix=rows_of: np.savez(
                    f, embeddings=e, utt_ids=ids, indices=ix
                ),
            )
            bar.update(len(indices))
    logger.info("rank %d/%d embedded %d shard(s)", rank, world_size, len(mine))


def _job_main(args: tuple) -> None:  # pragma: no cover - runs in a spawned process
    *shard_args, device = args
    embedder = shard_args[0]
    if embedder.device != _torch_device(device):
        embedder.to(device)  # this process's own copy: its job's GPU, one context per device
    _run_shards(*shard_args)


def _torch_device(device: str) -> torch.device:
    import torch

    return torch.device(device)


def job_devices(device: str, num_jobs: int = 1) -> list[str]:
    """The device of each local extraction job.

    "cpu": `num_jobs` jobs. "cuda" without an index: one job per visible GPU
    (`torch.cuda.device_count()`, which follows `CUDA_VISIBLE_DEVICES`), whatever `num_jobs`
    says: several jobs on one GPU would each open a CUDA context there while the other GPUs
    idle. An explicit device ("cuda:1"): one job on it.

    Raises:
        EmbedError: "cuda" with no visible GPU.

    >>> job_devices("cpu", 3)
    ['cpu', 'cpu', 'cpu']
    """
    kind = _torch_device(device)
    if kind.type == "cpu":
        return ["cpu"] * max(1, num_jobs)
    if kind.type == "cuda" and kind.index is None:
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise EmbedError(f"device {device!r}: no CUDA device is visible")
        if num_jobs not in (1, count):
            logger.warning("%d jobs asked for, starting one per visible GPU (%d)", num_jobs, count)
        return [f"cuda:{index}" for index in range(count)]
    if num_jobs > 1:
        logger.warning("device %s: one job (several would share the device)", device)
    return [str(kind)]


def rank_device(device: str, local_rank: int) -> str:
    """The device of torchrun rank `local_rank`: its own GPU for "cuda", else `device`."""
    kind = _torch_device(device)
    if kind.type == "cuda" and kind.index is None:
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise EmbedError(f"device {device!r}: no CUDA device is visible")
        return f"cuda:{local_rank % count}"
    return device


def _merge_shards(
    data_dir: DataDir, out_dir: Path, plan: _Plan, embedder: Embedder, wait_seconds: float
) -> EmbeddingStore:
    deadline = time.monotonic() + wait_seconds
    paths = [plan.shard_path(out_dir, k) for k in range(len(plan.shards))]
    while not all(p.is_file() for p in paths):
        if time.monotonic() > deadline:
            missing = sum(not p.is_file() for p in paths)
            raise EmbeddingStoreError(f"{out_dir}: {missing} shard(s) never appeared")
        time.sleep(1.0)
    embeddings = np.empty((len(data_dir.wav), embedder.embed_dim), np.float32)
    done = np.zeros(len(data_dir.wav), bool)
    for path in paths:
        with np.load(path) as shard:
            embeddings[shard["indices"]] = shard["embeddings"]
            done[shard["indices"]] = True
    if not done.all():
        raise EmbeddingStoreError(f"{out_dir}: shards cover {done.sum()} of {done.size} utts")
    store = save_embeddings(
        out_dir, data_dir.utt_ids, embeddings, {**embedder.meta(), "plan": plan.signature}
    )
    shutil.rmtree(out_dir / SHARD_DIR, ignore_errors=True)
    return store


def extract_embeddings(
    data_dir: DataDir,
    out_dir: str | os.PathLike,
    embedder: Embedder,
    *,
    batch_size: int = 32,
    resume: bool = True,
    num_jobs: int = 1,
    devices: list[str] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    shard_size: int = 256,
    progress: bool = True,
    wait_seconds: float = 7 * 24 * 3600.0,
) -> EmbeddingStore:
    """Embed every utterance of a data dir into a store at `out_dir` (rows in DataDir order).

    Utterances are batched by similar length (a plan that depends only on the data and the
    model, so results do not depend on how the work is split), grouped into shards of about
    `shard_size` utterances, and each shard is written atomically under `out_dir/.shards/`.
    With `resume`, existing shards (and a finished store from the same model) are reused. Work
    is split over `num_jobs` local processes (torch.multiprocessing, spawn) or over torchrun
    ranks (`RANK`/`WORLD_SIZE` env vars, or `rank`/`world_size`): every rank embeds its shards,
    rank 0 merges once all shard files exist, the others wait for the merged store.

    Args:
        data_dir: utterances (`wav`, optional `utt2dur` for planning without reading headers).
        out_dir: store directory.
        embedder: the model.
        batch_size: utterances per forward pass (fewer when long).
        resume: reuse finished shards/store; False recomputes this process's shards.
        num_jobs: local worker processes (ignored under torchrun).
        devices: the device of each local job (`job_devices`), overriding `num_jobs`; each
            job moves its copy of the embedder there. None: every job on the embedder's device.
        shard_size: utterances per shard file.
        progress: tqdm bar on rank 0 when stderr is a terminal.
        wait_seconds: how long rank 0 waits for other ranks' shards.

    Returns:
        The store (memory-mapped).
    """
    out = Path(out_dir)
    rank, world_size = _torchrun_rank(rank, world_size)
    if not len(data_dir.wav):
        raise EmbeddingStoreError(f"{out}: the data dir has no utterances")
    plan, _ = _make_plan(data_dir, embedder, batch_size, shard_size)
    store = _finished_store(out, plan) if resume else None
    if store is not None:
        logger.info("%s: already complete", out)
        return store
    _make_shard_dir(out)
    if world_size > 1:
        _run_shards(embedder, data_dir, out, plan, rank, world_size, resume, progress)
        if rank == 0:
            return _merge_shards(data_dir, out, plan, embedder, wait_seconds)
        return _wait_for_merged_store(out, plan, wait_seconds)
    if devices is None:
        devices = [str(embedder.device)] * num_jobs
    if len(devices) > 1:
        _run_local_jobs(embedder, data_dir, out, plan, devices, resume, progress)
    elif _torch_device(devices[0]) != embedder.device:
        _run_shards(embedder.to(devices[0]), data_dir, out, plan, 0, 1, resume, progress)
    else:
        _run_shards(embedder, data_dir, out, plan, 0, 1, resume, progress)
    return _merge_shards(data_dir, out, plan, embedder, wait_seconds)


def _torchrun_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """`rank` and `world_size`, or torchrun's `RANK`/`WORLD_SIZE` where None (0 and 1 without)."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return rank, world_size


def _make_shard_dir(out: Path) -> None:
    """Create `out/.shards` (and `out`); an unwritable place is an EmbeddingStoreError."""
    try:
        (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EmbeddingStoreError(f"{out}: cannot write ({error.strerror or error})") from None


def _finished_store(out: Path, plan: _Plan) -> EmbeddingStore | None:
    """The store at `out` if it is complete and made with `plan` (same data and model)."""
    if not (out / META_FILE).is_file():
        return None
    try:
        store = load_embeddings(out)
    except EmbeddingStoreError:
        return None
    return store if store.meta.get("plan") == plan.signature else None


def _wait_for_merged_store(out: Path, plan: _Plan, wait_seconds: float) -> EmbeddingStore:
    """On a rank other than 0: the store once rank 0 has merged it (an error after the wait)."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if (out / META_FILE).is_file():
            store = load_embeddings(out)
            if store.meta.get("plan") == plan.signature:
                return store
        time.sleep(1.0)
    raise EmbeddingStoreError(f"{out}: rank 0 did not write the merged store in time")


def _job_slice(
    data_dir: DataDir, plan: _Plan, job: int, num_jobs: int
) -> tuple[DataDir, _Plan, np.ndarray]:
    """What job `job` of `num_jobs` needs: the data dir of its shards' utterances only, the plan
    with its shards renumbered into that slice (the other shards empty) and the slice's rows in
    `data_dir` (so a spawned job is not sent every path of a million-utterance data dir)."""
    from speakerverify.data import DataDir as DataDirClass

    mine = range(job, len(plan.shards), num_jobs)
    rows = np.unique(
        np.fromiter((i for k in mine for batch in plan.shards[k] for i in batch), np.int64)
    )
    local = {row: i for i, row in enumerate(rows.tolist())}
    shards: list[list[list[int]]] = [[] for _ in plan.shards]
    for k in mine:
        shards[k] = [[local[i] for i in batch] for batch in plan.shards[k]]
    durations = None if data_dir.durations is None else data_dir.durations[rows]
    part = DataDirClass.from_columns(
        data_dir.utt_id_column.take(rows),
        data_dir.path_column.take(rows),
        data_dir.speakers,
        data_dir.speaker_labels[rows],
        durations,
    )
    return part, _Plan(plan.signature, shards), rows


def _run_local_jobs(
    embedder: Embedder,
    data_dir: DataDir,
    out: Path,
    plan: _Plan,
    devices: list[str],
    resume: bool,
    progress: bool,
) -> None:
    """Embed the shards in one local process per entry of `devices`, this one included (job 0),
    sharing the CPUs; each job embeds on its own device."""
    import copy

    import torch.multiprocessing as mp

    num_jobs = len(devices)
    threads = max(1, (os.cpu_count() or 1) // num_jobs)
    jobs = []
    for job in range(1, num_jobs):  # each spawned job receives its slice of the data dir only
        part, job_plan, rows = _job_slice(data_dir, plan, job, num_jobs)
        args = (embedder, part, out, job_plan, job, num_jobs, resume, progress, threads, rows)
        jobs.append((*args, devices[job]))
    # Pickling a CPU tensor for a worker moves its storage into shared memory in place, and the
    # pool pickles the jobs on a background thread while this process already embeds with the
    # same tensors: move them first, so that no forward pass reads a storage being swapped out.
    embedder.frontend.share_memory()
    embedder.encoder.share_memory()
    local = embedder
    if _torch_device(devices[0]) != embedder.device:
        # job 0's own copy: moving the shared one would swap storages the pool is pickling
        local = copy.deepcopy(embedder).to(devices[0])
    # this process is job 0; the others are spawned (fork is unsafe once torch has threads)
    with mp.get_context("spawn").Pool(num_jobs - 1) as pool:
        pending = pool.map_async(_job_main, jobs)
        _run_shards(local, data_dir, out, plan, 0, num_jobs, resume, progress)
        pending.get()
        # let the workers exit on their own: the context manager's terminate() kills them and
        # leaves their semaphores to the resource tracker's "leaked semaphore" warning
        pool.close()
        pool.join()
