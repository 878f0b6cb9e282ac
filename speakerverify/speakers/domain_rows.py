"""The adapted rule as a store keeps it: the `domain_*` meta rows that `SpeakerStore.set_domain`
writes and `SpeakerStore.domain_mean` reads back, each value checked on the way in and out."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from speakerverify.speakers.records import CohortFold, DomainMean, now_iso

__all__ = ["CorruptRow", "blob_array", "domain_from_rows", "domain_rows"]

# The scalar rows of the rule, and the type each is read back as.
_RULE_ROWS = (("top_k", int), ("threshold", float), ("false_accept", float), ("pairs_above", float))


class CorruptRow(ValueError):
    """A stored value that is not what it must be; `key` names its meta row."""

    def __init__(self, key: str) -> None:
        super().__init__(f"corrupt meta row {key}")
        self.key = key


def blob_array(value: object, dtype: str, dim: int | None) -> np.ndarray | None:
    """A stored BLOB as a 1-D array of `dtype` (of `dim` elements when given), or None when it
    is not one: a corrupt value, which callers report with the store and the row."""
    size = np.dtype(dtype).itemsize
    if not isinstance(value, bytes) or not value or len(value) % size:
        return None
    vector = np.frombuffer(value, dtype=dtype)
    return vector if dim is None or vector.shape[0] == dim else None


def _fold_suffix(index: int) -> str:
    """Meta-row suffix of fold `index`: none for the first (the rows stores had before folds)."""
    return "" if index == 0 else f"_{index}"


def domain_rows(domain: DomainMean) -> dict[str, object]:
    """The meta rows of `domain`, checked as `domain_from_rows` will check them.

    Raises:
        ValueError: a non-finite value, or arrays that do not match the mean's dimension.
    """
    mean = np.asarray(domain.mean, dtype="<f4").reshape(-1)
    if not np.all(np.isfinite(mean)):
        raise ValueError("domain mean is not finite")
    rows: dict[str, object] = {
        "domain_mean": mean.tobytes(),
        "domain_num_embeddings": int(domain.num_embeddings),
        "domain_source": str(domain.source),
        "domain_updated": domain.updated or now_iso(),
    }
    if domain.has_rule:
        for index, fold in enumerate(domain.folds):
            rows.update(_fold_rows(fold, _fold_suffix(index), mean.shape[0]))
        rows.update(
            domain_top_k=int(domain.top_k),
            domain_threshold=float(domain.threshold),
            domain_false_accept=float(domain.false_accept or 0.0),
            domain_pairs_above=float(domain.pairs_above or 0.0),
        )
    return rows


def _fold_rows(fold: CohortFold, suffix: str, dim: int) -> dict[str, object]:
    cohort = np.ascontiguousarray(fold.cohort, dtype="<f4")
    if cohort.ndim != 2 or cohort.shape[1] != dim:
        raise ValueError("domain cohort does not match the mean's dimension")
    if not np.all(np.isfinite(cohort)):
        raise ValueError("domain cohort is not finite")
    rows: dict[str, object] = {f"domain_cohort{suffix}": cohort.tobytes()}
    if fold.whitening is None:
        return rows
    basis = np.ascontiguousarray(fold.whitening, dtype="<f4")
    scale = np.ascontiguousarray(fold.whitening_scale, dtype="<f4").reshape(-1)
    if basis.ndim != 2 or basis.shape[1] != dim or len(scale) != len(basis):
        raise ValueError("domain whitening does not match the mean's dimension")
    if not (np.isfinite(basis).all() and np.all(scale >= 0.0) and np.all(scale <= 1.0)):
        raise ValueError("domain whitening is not finite or its scale is outside [0, 1]")
    rows[f"domain_whitening{suffix}"] = basis.tobytes()
    rows[f"domain_whitening_scale{suffix}"] = scale.tobytes()
    rows[f"domain_shrinkage{suffix}"] = float(fold.shrinkage or 0.0)
    rows[f"domain_whitening_files{suffix}"] = int(fold.whitening_files)
    return rows


def domain_from_rows(rows: dict[str, object], dim: int | None) -> DomainMean | None:
    """The domain that `rows` (a store's `domain_*` meta rows) hold, or None without one.

    Raises:
        CorruptRow: a row whose value cannot be what `domain_rows` wrote.
    """
    if "domain_mean" not in rows:
        return None
    mean = blob_array(rows["domain_mean"], "<f4", dim)
    if mean is None or not math.isfinite(float(mean.sum())):
        raise CorruptRow("domain_mean")
    count = rows.get("domain_num_embeddings", 0)
    if not isinstance(count, int) or count < 0:
        raise CorruptRow("domain_num_embeddings")
    folds: list[CohortFold] = []
    while f"domain_cohort{_fold_suffix(len(folds))}" in rows:
        folds.append(_read_fold(rows, _fold_suffix(len(folds)), mean.shape[0]))
    rule: dict = {}
    for key, kind in _RULE_ROWS if folds else ():
        value = rows.get(f"domain_{key}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CorruptRow(f"domain_{key}")
        if not math.isfinite(value) or (key == "top_k" and value < 1):
            raise CorruptRow(f"domain_{key}")
        rule[key] = kind(value)
    return DomainMean(
        mean.astype(np.float32),
        count,
        str(rows.get("domain_source", "")),
        str(rows.get("domain_updated", "")),
        folds=tuple(folds),
        **rule,
    )


def _read_fold(rows: dict[str, object], suffix: str, dim: int) -> CohortFold:
    """Fold `suffix`: its cohort, and its whitening when the rows hold one."""
    cohort = blob_array(rows[f"domain_cohort{suffix}"], "<f4", None)
    if cohort is None or cohort.size % dim or not np.isfinite(cohort).all():
        raise CorruptRow(f"domain_cohort{suffix}")
    fold = CohortFold(cohort.reshape(-1, dim).astype(np.float32))
    if f"domain_whitening{suffix}" not in rows:
        return fold
    basis = blob_array(rows[f"domain_whitening{suffix}"], "<f4", None)
    if basis is None or basis.size % dim or not np.isfinite(basis).all():
        raise CorruptRow(f"domain_whitening{suffix}")
    basis = basis.reshape(-1, dim).astype(np.float32)
    scale = blob_array(rows.get(f"domain_whitening_scale{suffix}", b""), "<f4", len(basis))
    if scale is None or not (np.all(scale >= 0.0) and np.all(scale <= 1.0)):
        raise CorruptRow(f"domain_whitening_scale{suffix}")
    shrinkage = rows.get(f"domain_shrinkage{suffix}")
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, int | float):
        raise CorruptRow(f"domain_shrinkage{suffix}")
    if not 0.0 < shrinkage <= 1.0:
        raise CorruptRow(f"domain_shrinkage{suffix}")
    files = rows.get(f"domain_whitening_files{suffix}")
    if isinstance(files, bool) or not isinstance(files, int) or files < 1:
        raise CorruptRow(f"domain_whitening_files{suffix}")
    return replace(
        fold,
        whitening=basis,
        whitening_scale=scale.astype(np.float32),
        shrinkage=float(shrinkage),
        whitening_files=files,
    )
