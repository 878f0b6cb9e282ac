"""On-disk embedding stores: a directory with `embeddings.npy` (float32 `(N, D)`,
memory-mappable), `utt_ids.txt` and `meta.json` (model fingerprint, dim, front-end config).

numpy only; written atomically file by file, `meta.json` last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import write_atomic

__all__ = [
    "EMBEDDINGS_FILE",
    "META_FILE",
    "UTT_IDS_FILE",
    "EmbeddingStore",
    "EmbeddingStoreError",
    "load_embeddings",
    "save_embeddings",
    "with_enrollment_models",
]

EMBEDDINGS_FILE = "embeddings.npy"
UTT_IDS_FILE = "utt_ids.txt"
META_FILE = "meta.json"


class EmbeddingStoreError(SpeakerVerifyError, ValueError):
    """A store directory is missing, incomplete or inconsistent; the message names the path."""


class UnknownUtteranceError(EmbeddingStoreError, KeyError):
    """Utterances asked for are not in the store (also a KeyError, as a lookup failure)."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class EmbeddingStore:
    """Embeddings with their utterance ids.

    Attributes:
        utt_ids: (N,) utterance ids, unique.
        embeddings: (N, D) float32 (possibly a read-only memory map).
        meta: model_fingerprint, embed_dim, frontend config, ...
    """

    utt_ids: list[str]
    embeddings: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.utt_ids):
            raise EmbeddingStoreError(
                f"embeddings {self.embeddings.shape} do not match {len(self.utt_ids)} utt ids"
            )

    def __len__(self) -> int:
        return len(self.utt_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def index(self) -> dict[str, int]:
        """utt_id -> row."""
        if self._index is None:
            self._index = {utt: row for row, utt in enumerate(self.utt_ids)}
            if len(self._index) != len(self.utt_ids):
                raise EmbeddingStoreError("duplicate utt ids in the embedding store")
        return self._index

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers `(n,)` int64 of `ids`.

        Raises:
            UnknownUtteranceError: naming how many ids are missing and the first few.
        """
        index = self.index
        try:
            return np.fromiter(map(index.__getitem__, ids), dtype=np.int64, count=len(ids))
        except KeyError:
            missing = [u for u in dict.fromkeys(ids) if u not in index]
            where = self.meta.get("path", "the embedding store")
            raise UnknownUtteranceError(
                f"{len(missing)} utterance(s) not in {where}, e.g. {', '.join(missing[:3])}"
            ) from None

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Embeddings `(n, D)` float32 of `ids`, in that order."""
        return np.asarray(self.embeddings[self.rows(ids)], dtype=np.float32)


def save_embeddings(
    out_dir: str | os.PathLike,
    utt_ids: Sequence[str],
    embeddings: np.ndarray,
    meta: dict[str, Any] | None = None,
) -> EmbeddingStore:
    """Write a store atomically file by file; `meta.json` goes last and marks it complete.

    Args:
        out_dir: the store directory (created).
        utt_ids: (N,) ids; must not contain whitespace.
        embeddings: (N, D) array, saved as float32.
        meta: JSON-able dict; `embed_dim` and `num_utts` are filled in.
    """
    out = Path(out_dir)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    store = EmbeddingStore(list(utt_ids), embeddings, dict(meta or {}))
    if any(not u or any(c.isspace() for c in u) for u in store.utt_ids):
        raise EmbeddingStoreError(f"{out}: utt ids must be non-empty and contain no whitespace")
    store.index  # noqa: B018  (raises on duplicates before anything is written)
    meta_out = {**store.meta, "embed_dim": store.dim, "num_utts": len(store)}
    meta_out.pop("path", None)
    text = "".join(f"{u}\n" for u in store.utt_ids).encode()
    payload = json.dumps(meta_out, indent=2, sort_keys=True).encode()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if (out / META_FILE).exists():
            os.unlink(out / META_FILE)  # an interrupted rewrite must not look complete
        write_atomic(out / EMBEDDINGS_FILE, lambda f: np.save(f, embeddings))
        write_atomic(out / UTT_IDS_FILE, lambda f: f.write(text))
        write_atomic(out / META_FILE, lambda f: f.write(payload))
    except OSError as error:
        raise EmbeddingStoreError(f"{out}: cannot write ({error.strerror or error})") from None
    store.meta = {**meta_out, "path": str(out)}
    return store


def load_embeddings(path: str | os.PathLike, mmap: bool = True) -> EmbeddingStore:
    """Open a store written by `save_embeddings` (memory-mapped read-only by default).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = save_embeddings(d, ["a", "b"], np.eye(2), {"model_fingerprint": "x"})
    >>> store = load_embeddings(d)
    >>> store.lookup(["b"]).tolist(), store.meta["embed_dim"]
    ([[0.0, 1.0]], 2)
    """
    root = Path(path)
    for name in (META_FILE, EMBEDDINGS_FILE, UTT_IDS_FILE):
        if not (root / name).is_file():
            raise EmbeddingStoreError(f"{root}: not an embedding store ({name} missing)")
    try:
        meta = json.loads((root / META_FILE).read_text())
    except json.JSONDecodeError as error:
        raise EmbeddingStoreError(f"{root / META_FILE}: invalid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise EmbeddingStoreError(f"{root / META_FILE}: expected a JSON object")
    try:
        embeddings = np.load(root / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
    except ValueError as error:
        raise EmbeddingStoreError(f"{root / EMBEDDINGS_FILE}: unreadable ({error})") from None
    utt_ids = (root / UTT_IDS_FILE).read_text().split("\n")[:-1]
    if embeddings.ndim != 2 or embeddings.shape[0] != len(utt_ids):
        raise EmbeddingStoreError(
            f"{root}: {EMBEDDINGS_FILE} has shape {embeddings.shape} but {UTT_IDS_FILE} has "
            f"{len(utt_ids)} ids"
        )
    if embeddings.dtype != np.float32:
        raise EmbeddingStoreError(
            f"{root / EMBEDDINGS_FILE}: dtype {embeddings.dtype}, not float32"
        )
    return EmbeddingStore(utt_ids, embeddings, {**meta, "path": str(root)})


def with_enrollment_models(
    store: EmbeddingStore, models: Mapping[str, Sequence[str]], keep: Sequence[str] = ()
) -> EmbeddingStore:
    """An in-memory store of multi-utterance enrollment models plus the utterances `keep`.

    A model's embedding is the mean of its utterances' L2-normalised embeddings (each utterance
    counts once, whatever its norm), as the enrollment store averages; scoring then centres and
    normalises it like any embedding.

    Args:
        store: embeddings of the utterances.
        models: model id -> its utt ids (e.g. read from an enroll map).
        keep: utt ids to carry over (the test side of the trials).

    Raises:
        KeyError: a model utterance or a kept id missing from `store`.
        EmbeddingStoreError: a model id that is also an utterance id in `keep`, or a model
            without utterances.
    """
    clash = [m for m in models if m in set(keep)]
    empty = [m for m, utts in models.items() if not utts]
    if clash or empty:
        what = (
            f"model id {clash[0]} is also an utterance" if clash else f"model {empty[0]} is empty"
        )
        raise EmbeddingStoreError(f"enroll map: {what}")
    means = np.empty((len(models), store.dim), np.float32)
    for row, utts in enumerate(models.values()):
        vectors = store.lookup(list(utts)).astype(np.float64)
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        means[row] = (vectors / norms).mean(axis=0)
    kept = store.lookup(list(keep)) if keep else np.empty((0, store.dim), np.float32)
    return EmbeddingStore([*models, *keep], np.concatenate([means, kept]), dict(store.meta))
