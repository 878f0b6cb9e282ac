"""Cosine scoring of trial lists, mean subtraction, S-Norm/AS-Norm, and the `speakerverify score`
/ `calibrate` steps as one call each (`score_trial_list`, `calibrate_scores`; the calibration
itself is `speakerverify.backend.calibration`, score files `speakerverify.backend.score_files`).

All vectorized: rows are looked up once per distinct utterance, trials are scored in chunks by a
row-wise dot product, and cohort statistics come from one matrix product per chunk of utterances.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from speakerverify.backend.calibration import (
    Calibration,
    CalibrationError,
    cllr,
    fit_calibration,
    min_cllr,
)
from speakerverify.backend.embedding_dir import (
    EmbeddingStore,
    EmbeddingStoreError,
    UnknownUtteranceError,
    load_embeddings,
    with_enrollment_models,
)
from speakerverify.backend.score_files import read_scored_trials, write_scores

if TYPE_CHECKING:  # speakerverify.data imports torch; the readers below import it when called
    from speakerverify.data import Trials

logger = logging.getLogger(__name__)

__all__ = [
    "NORMS",
    "CalibrationReport",
    "calibrate_scores",
    "cohort_means",
    "cosine_scores",
    "l2_normalize",
    "mean_embedding",
    "score_trial_list",
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


def _cohort_stats(
    embeddings: np.ndarray, cohort: np.ndarray, top_n: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std `(U,)` of each normalized embedding's scores against its top-n cohort."""
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
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if norm != "none" and cohort is None:
        raise ValueError(f"norm {norm!r} needs a cohort")
    if norm == "asnorm" and top_n < 2:
        raise ValueError(f"top_n must be >= 2, got {top_n}")
    num_trials = len(trials.enroll)
    if len(trials.test) != num_trials:
        raise ValueError("enroll and test lists differ in length")
    # each distinct utterance once: code the trial sides in one pass, then gather and normalize
    codes: dict[str, int] = {}
    setdefault = codes.setdefault
    sides = np.fromiter(
        (setdefault(u, len(codes)) for u in itertools.chain(trials.enroll, trials.test)),
        np.int64,
        count=2 * num_trials,
    )
    enroll_rows, test_rows = sides[:num_trials], sides[num_trials:]
    rows = store.embeddings[store.rows(list(codes))]  # a copy (fancy indexing)
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
    means, stds = _cohort_stats(embeddings, cohort_embeddings, top_n if norm == "asnorm" else None)
    stds = np.maximum(stds, np.float32(1e-6))
    enroll_part = (scores - means[enroll_rows]) / stds[enroll_rows]
    test_part = (scores - means[test_rows]) / stds[test_rows]
    return (0.5 * (enroll_part + test_part)).astype(np.float32)


# -- the `score` and `calibrate` steps ----------------------------------------------------------


def mean_embedding(store: EmbeddingStore) -> np.ndarray:
    """Mean `(D,)` float32 of a store's embeddings, accumulated in float64 in blocks."""
    total = np.zeros(store.dim, np.float64)
    for begin in range(0, len(store), 65536):
        total += store.embeddings[begin : begin + 65536].sum(axis=0, dtype=np.float64)
    return (total / len(store)).astype(np.float32)


def _check_same_model(name: str, fingerprint: str, expected: str, error: type[Exception]) -> None:
    if fingerprint and expected and fingerprint != expected:
        raise error(
            f"{name} was made by model {fingerprint}, but the embeddings by model {expected}"
        )


def score_trial_list(
    trials_path: str | os.PathLike,
    store_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mean_store: str | os.PathLike | None = None,
    cohort_store: str | os.PathLike | None = None,
    norm: str = "none",
    top_n: int = 300,
    calibration_path: str | os.PathLike | None = None,
    enroll_map: str | os.PathLike | None = None,
) -> int:
    """Score a trial list with the embeddings of a store and write the score file `out`.

    Args:
        trials_path: the trial list.
        store_path: embeddings of every trial utterance.
        out: `enroll test score` lines in trial order.
        mean_store: subtract the mean embedding of this store (e.g. the training set).
        cohort_store: cohort utterances for `norm` (averaged per speaker).
        norm: "none", "snorm" or "asnorm" (the latter two need `cohort_store`).
        top_n: AS-Norm cohort scores kept per side.
        calibration_path: write calibrated LLRs with this calibration (fitted on scores of the
            same model and normalization).
        enroll_map: `model utt1 utt2 ...` lines: the trials' enroll side names these models,
            each scored as the mean of its utterances' normalised embeddings.

    Returns:
        The number of trials scored.

    Raises:
        TrialsError, EmbeddingStoreError, CalibrationError, ScoresError: unusable input, or
            stores / calibration made by another model.
    """
    from speakerverify.data import read_trials
    from speakerverify.data.trials import read_enroll_map

    trials = read_trials(trials_path)
    store = load_embeddings(store_path)
    if enroll_map:
        models = read_enroll_map(enroll_map)
        tests = [u for u in dict.fromkeys([*trials.enroll, *trials.test]) if u not in models]
        store = with_enrollment_models(store, models, tests)
    fingerprint = store.meta.get("model_fingerprint", "")
    mean = None
    if mean_store:
        mean_embeddings = load_embeddings(mean_store)
        mean = mean_embedding(mean_embeddings)
        _check_same_model(
            f"--mean-store {mean_store}",
            mean_embeddings.meta.get("model_fingerprint", ""),
            fingerprint,
            EmbeddingStoreError,
        )
    cohort = None
    if cohort_store and norm != "none":
        cohort_embeddings = load_embeddings(cohort_store)
        _check_same_model(
            f"--cohort-store {cohort_store}",
            cohort_embeddings.meta.get("model_fingerprint", ""),
            fingerprint,
            EmbeddingStoreError,
        )
        cohort = cohort_means(cohort_embeddings, mean=mean)
    calibration = None
    if calibration_path:
        calibration = Calibration.load(calibration_path)
        _check_same_model(
            f"calibration {calibration_path}",
            calibration.model_fingerprint,
            fingerprint,
            EmbeddingStoreError,
        )
        if calibration.norm != norm:
            raise CalibrationError(
                f"{calibration_path}: fitted on {calibration.norm} scores, but --norm is {norm}"
            )
    scores = score_trials(store, trials, mean=mean, cohort=cohort, norm=norm, top_n=top_n)
    if calibration is not None:
        scores = calibration.apply(scores)
    write_scores(out, trials.enroll, trials.test, scores)
    return len(trials)


@dataclass
class CalibrationReport:
    """What `calibrate_scores` fitted and how well: Cllr after calibration, and minCllr."""

    calibration: Calibration
    cllr: float
    min_cllr: float
    num_trials: int


def calibrate_scores(
    trials_path: str | os.PathLike,
    scores_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    norm: str = "none",
    prior: float = 0.5,
) -> CalibrationReport:
    """Fit a calibration on development trials and their scores and write it to `out`.

    Args:
        trials_path: the development trial list (labels).
        scores_path: their `enroll test score` file.
        out: the calibration JSON to write.
        model_path: the checkpoint that made the scores; binds the calibration to its
            fingerprint, so the speaker commands refuse it for another model.
        norm: the score normalization the scores were made with.
        prior: effective target prior of the fit.

    Raises:
        TrialsError, ScoresError, CalibrationError, CheckpointError: unusable input.
    """
    fingerprint = ""
    if model_path:
        from speakerverify.checkpoint import load_checkpoint  # torch, only when asked

        fingerprint = str(load_checkpoint(model_path)["fingerprint"])
    scores, labels = read_scored_trials(trials_path, scores_path)
    calibration = fit_calibration(
        scores, labels, prior=prior, model_fingerprint=fingerprint, norm=norm
    )
    calibration.save(out)
    return CalibrationReport(
        calibration=calibration,
        cllr=cllr(calibration.apply(scores), labels),
        min_cllr=min_cllr(scores, labels),
        num_trials=len(scores),
    )
