"""Embedding extraction (batched, long-file windowing, sharded, resumable) into embedding dirs.

The directory format itself (`EmbeddingStore`, `save_embeddings`, `load_embeddings`) lives in
`speakerverify.backend.embedding_dir`. torch is imported only by the extractor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speakerverify.backend.embedding_dir import (
    META_FILE,
    EmbeddingStore,
    EmbeddingStoreError,
    load_embeddings,
    save_embeddings,
)
from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import write_atomic

if TYPE_CHECKING:
    import torch

    from speakerverify.data import DataDir

logger = logging.getLogger(__name__)

__all__ = [
    "EmbedError",
    "Embedder",
    "extract_embeddings",
    "plan_batches",
]


# -- the embedder -----------------------------------------------------------------------------


class EmbedError(SpeakerVerifyError, ValueError):
    """An utterance cannot be embedded (e.g. shorter than one frame); the message names it."""


class Embedder:
    """Front-end + encoder in eval mode, no dither: the same input always gives the same vector.

    Inputs longer than `max_seconds` are embedded in overlapping windows of `window_seconds`
    every `hop_seconds` (the last window ends at the end), and the window embeddings are
    averaged weighted by window length, so memory is bounded whatever the length; files are then
    read window by window.

    Args:
        frontend: `Fbank`-like module, `(B, S), (B,) -> (B, T, F), (B,)`.
        encoder: `(B, T, F), (B,) -> (B, D)` with `.embed_dim`.
        fingerprint: model fingerprint recorded in stores.
        device: torch device string.
        max_seconds: longest input embedded in one pass.
        window_seconds: window length for longer inputs (default min(30, max_seconds)).
        hop_seconds: window hop (default half a window).
    """

    def __init__(
        self,
        frontend: torch.nn.Module,
        encoder: torch.nn.Module,
        *,
        fingerprint: str = "",
        device: str = "cpu",
        max_seconds: float = 60.0,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.frontend = frontend.to(self.device).eval()
        self.encoder = encoder.to(self.device).eval()
        self.fingerprint = fingerprint
        config = getattr(frontend, "config", None)
        self.sample_rate = int(getattr(config, "sample_rate", 16000))
        self.max_seconds = float(max_seconds)
        self.window_seconds = float(window_seconds or min(30.0, self.max_seconds))
        self.hop_seconds = float(hop_seconds or self.window_seconds / 2)
        if not 0 < self.hop_seconds <= self.window_seconds <= self.max_seconds:
            raise ValueError(
                "need 0 < hop_seconds <= window_seconds <= max_seconds, got "
                f"{self.hop_seconds}, {self.window_seconds}, {self.max_seconds}"
            )

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str = "cpu", **options: Any
    ) -> Embedder:
        """Load a checkpoint (`checkpoint.load_model`) into an embedder."""
        from speakerverify.checkpoint import load_model

        loaded = load_model(path, device=device)
        return cls(
            loaded.frontend,
            loaded.encoder,
            fingerprint=loaded.fingerprint,
            device=device,
            **options,
        )

    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    def meta(self) -> dict[str, Any]:
        """What a store records about the model that made it."""
        config = getattr(self.frontend, "config", None)
        return {
            "model_fingerprint": self.fingerprint,
            "embed_dim": self.embed_dim,
            "frontend": config.to_dict() if hasattr(config, "to_dict") else {},
            "max_seconds": self.max_seconds,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
        }

    def windows(self, num_samples: int) -> list[tuple[int, int]]:
        """`(start, length)` sample windows covering `num_samples` (one window when short)."""
        if num_samples <= round(self.max_seconds * self.sample_rate):
            return [(0, num_samples)]
        window = round(self.window_seconds * self.sample_rate)
        hop = round(self.hop_seconds * self.sample_rate)
        starts = [*range(0, num_samples - window, hop), num_samples - window]
        return [(start, window) for start in starts]

    def _forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats, feat_lengths = self.frontend(waves.to(self.device), lengths.to(self.device))
            if int(feat_lengths.min()) < 1:
                raise EmbedError(f"input of {int(lengths.min())} samples is shorter than a frame")
            embeddings = self.encoder(feats, feat_lengths)
        return embeddings.float().cpu().numpy()

    def embed_waveform(self, wave: torch.Tensor | np.ndarray) -> np.ndarray:
        """Embedding `(D,)` float32 of one waveform `(S,)` at the front-end's sample rate."""
        import torch

        wave = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
        windows = self.windows(wave.shape[0])
        if len(windows) == 1:
            return self._forward(wave[None], torch.tensor([wave.shape[0]]))[0].astype(np.float32)
        total = np.zeros(self.embed_dim, np.float64)
        for start, length in windows:
            chunk = wave[start : start + length][None]
            total += length * self._forward(chunk, torch.tensor([length]))[0]
        return (total / sum(length for _, length in windows)).astype(np.float32)

    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        """Embedding `(D,)` of an audio file; long files are read window by window."""
        from speakerverify.frontend.audio import audio_info, load_audio

        info = audio_info(path)
        if info.duration_seconds <= self.max_seconds:
            return self.embed_waveform(load_audio(path, self.sample_rate))
        num_samples = round(info.duration_seconds * self.sample_rate)
        windows = self.windows(num_samples)
        total = np.zeros(self.embed_dim, np.float64)
        weight = 0
        for start, length in windows:
            wave = load_audio(
                path,
                self.sample_rate,
                offset_seconds=start / self.sample_rate,
                duration_seconds=length / self.sample_rate,
            )
            total += wave.shape[0] * self.embed_waveform(wave)
            weight += wave.shape[0]
        return (total / weight).astype(np.float32)

    def embed_waveforms(
        self, waves: Sequence[torch.Tensor | np.ndarray], batch_size: int = 32
    ) -> np.ndarray:
        """Embeddings `(N, D)` of several waveforms, batched by similar length (zero padding)."""
        import torch

        tensors = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waves]
        out = np.empty((len(tensors), self.embed_dim), np.float32)
        for batch in plan_batches([t.shape[0] for t in tensors], self.max_samples, batch_size):
            out[batch] = self._embed_batch([tensors[i] for i in batch])
        return out

    @property
    def max_samples(self) -> int:
        return round(self.max_seconds * self.sample_rate)

    def _embed_batch(self, waves: list[torch.Tensor]) -> np.ndarray:
        import torch

        if len(waves) == 1:
            return self.embed_waveform(waves[0])[None]
        lengths = torch.tensor([w.shape[0] for w in waves])
        padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        return self._forward(padded, lengths).astype(np.float32)


def plan_batches(
    lengths: Sequence[int], max_samples: int, batch_size: int = 32, max_batch_samples: int = 0
) -> list[list[int]]:
    """Group indices into batches of similar length (longest first); long inputs go alone.

    A batch is closed when full, over the padded-samples budget, or when the next input is
    shorter than half the batch's longest (so padding stays under half of each row).

    Deterministic in `lengths` only, so every process computes the same plan.

    Args:
        lengths: (N,) samples per input.
        max_samples: inputs longer than this form a batch of one (windowed).
        batch_size: at most this many inputs per batch.
        max_batch_samples: at most this many padded samples per batch (0: 4 * max_samples).

    >>> plan_batches([5, 100, 7, 6, 300], max_samples=200, batch_size=2)
    [[4], [1], [2, 3], [0]]
    """
    budget = max_batch_samples or 4 * max_samples
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if lengths[i] > max_samples:
            batches.append([i])
            continue
        # sorted longest first: the first item sets the padded width
        width = lengths[current[0]] if current else lengths[i]
        full = len(current) >= batch_size or width * (len(current) + 1) > budget
        if current and (full or 2 * lengths[i] < width):  # > half padding: new batch
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


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

    durations = data_dir.utt2dur or {}
    samples = []
    for utt, path in data_dir.wav.items():
        seconds = durations.get(utt)
        if seconds is None:
            seconds = audio_info(path).duration_seconds
        samples.append(max(1, round(seconds * sample_rate)))
    return samples


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

    paths = list(data_dir.wav.values())
    utt_ids = data_dir.utt_ids

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
) -> None:
    import torch
    from tqdm import tqdm

    if num_threads:
        torch.set_num_threads(num_threads)
    mine = [k for k in range(len(plan.shards)) if k % world_size == rank]
    total = sum(len(b) for k in mine for b in plan.shards[k])
    disable = not progress or rank != 0 or not sys.stderr.isatty()
    utt_ids = data_dir.utt_ids
    with tqdm(total=total, desc="embed", unit="utt", disable=disable) as bar:
        for k in mine:
            path = plan.shard_path(out_dir, k)
            indices = [i for batch in plan.shards[k] for i in batch]
            if resume and path.is_file():
                bar.update(len(indices))
                continue
            embeddings = _embed_shard(embedder, data_dir, plan.shards[k])
            ids = np.asarray([utt_ids[i] for i in indices])
            write_atomic(
                path,
                lambda f, e=embeddings, ids=ids, ix=indices: np.savez(
                    f, embeddings=e, utt_ids=ids, indices=np.asarray(ix, np.int64)
                ),
            )
            bar.update(len(indices))
    logger.info("rank %d/%d embedded %d shard(s)", rank, world_size, len(mine))


def _job_main(args: tuple) -> None:  # pragma: no cover - runs in a spawned process
    _run_shards(*args)


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
        shard_size: utterances per shard file.
        progress: tqdm bar on rank 0 when stderr is a terminal.
        wait_seconds: how long rank 0 waits for other ranks' shards.

    Returns:
        The store (memory-mapped).
    """
    out = Path(out_dir)
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not len(data_dir.wav):
        raise EmbeddingStoreError(f"{out}: the data dir has no utterances")
    plan, _ = _make_plan(data_dir, embedder, batch_size, shard_size)
    if resume and (out / META_FILE).is_file():
        try:
            store = load_embeddings(out)
        except EmbeddingStoreError:
            store = None
        if store is not None and store.meta.get("plan") == plan.signature:
            logger.info("%s: already complete", out)
            return store
    try:
        (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EmbeddingStoreError(f"{out}: cannot write ({error.strerror or error})") from None
    if world_size > 1:
        _run_shards(embedder, data_dir, out, plan, rank, world_size, resume, progress)
        if rank == 0:
            return _merge_shards(data_dir, out, plan, embedder, wait_seconds)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if (out / META_FILE).is_file():
                store = load_embeddings(out)
                if store.meta.get("plan") == plan.signature:
                    return store
            time.sleep(1.0)
        raise EmbeddingStoreError(f"{out}: rank 0 did not write the merged store in time")
    if num_jobs > 1:
        import torch.multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // num_jobs)
        jobs = [
            (embedder, data_dir, out, plan, job, num_jobs, resume, progress, threads)
            for job in range(num_jobs)
        ]
        # this process is job 0; the others are spawned (fork is unsafe once torch has threads)
        with mp.get_context("spawn").Pool(num_jobs - 1) as pool:
            pending = pool.map_async(_job_main, jobs[1:])
            _run_shards(embedder, data_dir, out, plan, 0, num_jobs, resume, progress)
            pending.get()
    else:
        _run_shards(embedder, data_dir, out, plan, 0, 1, resume, progress)
    return _merge_shards(data_dir, out, plan, embedder, wait_seconds)
