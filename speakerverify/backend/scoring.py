"""Cosine scoring of trial lists, mean subtraction and S-Norm/AS-Norm, as pure functions of
embedding arrays (`speakerverify.backend.scoring_steps` runs them from files).

All vectorized: rows are looked up once per distinct utterance, trials are scored in chunks by a
row-wise dot product, and cohort statistics come from one matrix product per chunk of utterances.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # speakerverify.data imports torch
    from speakerverify.backend.embedding_dir import EmbeddingStore
    from speakerverify.data import Trials

# Embedding dirs and threads are imported by the functions that use them: the speaker commands
# import this module for `l2_normalize` alone, on the cold path of `verify`.


__all__ = [
    "NORMS",
    "cohort_means",
    "cohort_statistics",
    "cosine_scores",
    "l2_normalize",
    "score_trials",
]

NORMS = ("none", "snorm", "asnorm")
_CHUNK = 4096


def l2_normalize(
    x: np.ndarray,
    mean: np.ndarray | None = None,
    *,
    dtype: np.dtype | type | None = None,
    copy: bool = True,
) -> np.ndarray:
    """`(x - mean) / ||x - mean||` along the last axis (`(D,)` or `(N, D)`).

    The one zero-vector rule of the package: a vector of length zero stays zero, so its cosine
    with anything is 0. Callers that must refuse such a vector (the speaker store) check first.

    Args:
        x: vectors.
        mean: `(D,)` subtracted first, or None.
        dtype: of the result; None keeps the precision of `x` (at least float32).
        copy: False normalizes `x` in place when it already has `dtype`.

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    dtype = np.result_type(x, np.float32) if dtype is None else np.dtype(dtype)
    x = np.array(x, dtype=dtype, copy=True) if copy else np.asarray(x, dtype=dtype)
    if mean is not None:
        x -= np.asarray(mean, dtype=dtype)
    norms = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def cosine_scores(
    enroll: np.ndarray, test: np.ndarray, mean: np.ndarray | None = None
) -> np.ndarray:
    """Cosine similarity of each enrollment vector with its test vector -> `(N,)`.

    Args:
        enroll: `(N, D)` (or `(D,)`).
        test: `(N, D)`, or one `(D,)` vector scored against every enrollment row.
        mean: `(D,)` subtracted from both sides first (cosine after centring), or None.

    Returns:
        In the precision of the inputs (at least float32); 0 against a zero vector.

    >>> cosine_scores(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [-1.0, 1.0]]))
    array([1., 0.])
    >>> cosine_scores(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([3.0, 3.0])).round(4)
    array([0.7071, 0.7071])
    """
    enroll = np.atleast_2d(enroll)
    test = np.asarray(test)
    if test.ndim == 1:
        test = np.broadcast_to(test, enroll.shape)
    if enroll.shape != test.shape:
        raise ValueError(f"enroll {enroll.shape} and test {test.shape} must have the same shape")
    return np.einsum("nd,nd->n", l2_normalize(enroll, mean), l2_normalize(test, mean))


def cohort_means(
    store: EmbeddingStore,
    utt2spk: Mapping[str, str] | None = None,
    mean: np.ndarray | None = None,
) -> np.ndarray:
    """Per-speaker cohort embeddings `(C, D)`: normalize utterances, average per speaker, normalize.

    Args:
        store: cohort utterance embeddings.
        utt2spk: utt_id -> speaker; None takes the speaker as the utt id up to the first "/"
            (VoxCeleb ids `id10001/session/00001`), or each utterance as its own speaker.
        mean: (D,) subtracted first (the same mean the trials get).
    """
    ids = store.utt_ids
    if utt2spk is None:
        speakers = [u.split("/", 1)[0] for u in ids]
    else:
        missing = [u for u in ids if u not in utt2spk]
        if missing:
            from speakerverify.backend.embedding_dir import UnknownUtteranceError

            raise UnknownUtteranceError(
                f"{len(missing)} cohort utterance(s) without a speaker, e.g. {missing[0]}"
            )
        speakers = [utt2spk[u] for u in ids]
    names, inverse = np.unique(np.asarray(speakers), return_inverse=True)
    from scipy.sparse import csr_matrix

    sums = np.zeros((names.size, store.dim), np.float64)
    chunk = 65536
    for begin in range(0, len(ids), chunk):
        block = l2_normalize(store.embeddings[begin : begin + chunk], mean, dtype=np.float32)
        owners = inverse[begin : begin + chunk]
        # (C, n) 0/1 speaker-membership matrix times the block: per-speaker sums in one product
        membership = csr_matrix(
            (np.ones(owners.size, np.float32), (owners, np.arange(owners.size))),
            shape=(names.size, owners.size),
        )
        sums += membership @ block
    return l2_normalize(sums, dtype=np.float32)


def cohort_statistics(
    embeddings: np.ndarray, cohort: np.ndarray, top_n: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std `(U,)` float32 of each normalized embedding's `(U, D)` scores against its
    `top_n` highest-scoring rows of the normalized `cohort` `(C, D)` (None: all of them)."""
    num_utts, num_cohort = embeddings.shape[0], cohort.shape[0]
    means = np.empty(num_utts, np.float32)
    stds = np.empty(num_utts, np.float32)
    cohort_t = np.ascontiguousarray(cohort.T)
    keep = num_cohort if top_n is None else min(top_n, num_cohort)

    def summarize(begin: int, scores: np.ndarray) -> None:
        if keep < num_cohort:
            scores.partition(num_cohort - keep, axis=1)  # in place: no copy of (u, C)
            scores = scores[:, num_cohort - keep :]
        means[begin : begin + scores.shape[0]] = scores.mean(axis=1)
        stds[begin : begin + scores.shape[0]] = scores.std(axis=1)

    from concurrent.futures import ThreadPoolExecutor

    # np.partition releases the GIL: select the top-n of one block in a thread while the next
    # block's matrix product runs
    chunk = 2048
    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = None
        for begin in range(0, num_utts, chunk):
            scores = embeddings[begin : begin + chunk] @ cohort_t  # (u, C)
            if pending is not None:
                pending.result()
            pending = worker.submit(summarize, begin, scores)
        if pending is not None:
            pending.result()
    return means, stds


def score_trials(
    store: EmbeddingStore,
    trials: Trials,
    *,
    mean: np.ndarray | None = None,
    cohort: np.ndarray | None = None,
    norm: str = "none",
    top_n: int = 300,
) -> np.ndarray:
    """Cosine scores `(N,)` float32 of a trial list, optionally S-Norm/AS-Norm normalized.

    Embeddings are centred by `mean`, L2-normalized and compared by dot product. With a cohort,
    each side's score statistics (mean and population std of its scores against the cohort;
    AS-Norm: only the `top_n` highest) normalize the score:
    `0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)`.
    S-Norm is AS-Norm with the whole cohort.

    Args:
        store: embeddings of every utterance in the trials.
        trials: `.enroll`, `.test` utt id lists.
        mean: (D,) embedding mean to subtract (e.g. of the training set), or None.
        cohort: (C, D) cohort embeddings (per-speaker means, see `cohort_means`), for norm.
        norm: "none", "snorm" or "asnorm".
        top_n: AS-Norm cohort size per side (clamped to C).

    Raises:
        ValueError: unknown norm, or a norm without a cohort.
        UnknownUtteranceError: trial utterances missing from the store (a KeyError).
    """
    _check_norm(norm, cohort, top_n)
    num_trials = len(trials.enroll)
    if len(trials.test) != num_trials:
        raise ValueError("enroll and test lists differ in length")
    utt_ids, enroll_rows, test_rows = _trial_rows(trials)
    rows = store.embeddings[store.rows(utt_ids)]  # a copy (fancy indexing)
    embeddings = l2_normalize(rows, mean, dtype=np.float32, copy=False)
    scores = np.empty(num_trials, np.float32)
    for begin in range(0, num_trials, _CHUNK):
        end = begin + _CHUNK
        scores[begin:end] = np.einsum(
            "nd,nd->n", embeddings[enroll_rows[begin:end]], embeddings[test_rows[begin:end]]
        )
    if norm == "none":
        return scores
    cohort_embeddings = l2_normalize(cohort, dtype=np.float32)
    means, stds = cohort_statistics(
        embeddings, cohort_embeddings, top_n if norm == "asnorm" else None
    )
    stds = np.maximum(stds, np.float32(1e-6))
    enroll_part = (scores - means[enroll_rows]) / stds[enroll_rows]
    test_part = (scores - means[test_rows]) / stds[test_rows]
    return (0.5 * (enroll_part + test_part)).astype(np.float32)


def _check_norm(norm: str, cohort: np.ndarray | None, top_n: int) -> None:
    """Refuse an unknown norm, a norm without a cohort and an AS-Norm `top_n` below 2."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if norm != "none" and cohort is None:
        raise ValueError(f"norm {norm!r} needs a cohort")
    if norm == "asnorm" and top_n < 2:
        raise ValueError(f"top_n must be >= 2, got {top_n}")


def _trial_rows(trials: Trials) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each distinct utterance once (first-seen order), and the index into it of every trial's
    enroll and test side, coded in one pass."""
    num_trials = len(trials.enroll)
    codes: dict[str, int] = {}
    setdefault = codes.setdefault
    sides = np.fromiter(
        (setdefault(u, len(codes)) for u in itertools.chain(trials.enroll, trials.test)),
        np.int64,
        count=2 * num_trials,
    )
    return list(codes), sides[:num_trials], sides[num_trials:]
