"""The `speakerverify score`, `calibrate` and `evaluate` steps as one call each: a trial list and
embedding stores in, a score file out (`score_trial_list`); a trial list and its scores in, a
calibration out (`calibrate_scores`) or the metrics and plots (`evaluate_scores`).

The scoring itself is `speakerverify.backend.scoring`, the calibration
`speakerverify.backend.calibration`, score files `speakerverify.backend.score_files`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from speakerverify.backend.calibration import (
    Calibration,
    CalibrationError,
    act_dcf,
    cllr,
    fit_calibration,
    load_calibration,
    min_cllr,
)
from speakerverify.backend.embedding_dir import (
    EmbeddingStore,
    EmbeddingStoreError,
    load_embeddings,
    with_enrollment_models,
)
from speakerverify.backend.metrics import compute_metrics, det_curve
from speakerverify.backend.score_files import ScoresError, read_scored_trials, write_scores
from speakerverify.backend.scoring import cohort_means, score_trials
from speakerverify.checkpoint_rules import model_mismatch

if TYPE_CHECKING:  # speakerverify.data imports torch; the readers below import it when called
    from speakerverify.data import Trials

__all__ = [
    "CalibrationReport",
    "calibrate_scores",
    "evaluate_scores",
    "mean_embedding",
    "score_trial_list",
]

# The operating points whose minDCF (and, for LLRs, actual DCF) `evaluate_scores` reports.
EVALUATED_P_TARGETS = (0.01, 0.05)


def mean_embedding(store: EmbeddingStore) -> np.ndarray:
    """Mean `(D,)` float32 of a store's embeddings, accumulated in float64 in blocks."""
    total = np.zeros(store.dim, np.float64)
    for begin in range(0, len(store), 65536):
        total += store.embeddings[begin : begin + 65536].sum(axis=0, dtype=np.float64)
    return (total / len(store)).astype(np.float32)


def _check_same_model(name: str, fingerprint: str, expected: str) -> None:
    """Refuse `name` when its model fingerprint and the embeddings' differ (both known)."""
    if expected:
        mismatch = model_mismatch(
            f"{name} was made by", fingerprint or None, "the embedding store", expected
        )
        if mismatch:
            raise EmbeddingStoreError(mismatch)


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
        TrialsError, EmbeddingStoreError, CalibrationError, ScoresError: unusable input,
            stores / calibration made by another model, or embeddings that score NaN.
    """
    from speakerverify.data import read_trials

    trials = read_trials(trials_path)
    store = _trial_store(trials, store_path, enroll_map)
    fingerprint = store.meta.get("model_fingerprint", "")
    mean = None
    if mean_store:
        mean = mean_embedding(_same_model_store(mean_store, "--mean-store", fingerprint))
    cohort = None
    if cohort_store and norm != "none":
        cohort_embeddings = _same_model_store(cohort_store, "--cohort-store", fingerprint)
        cohort = cohort_means(cohort_embeddings, mean=mean)
    calibration = None
    if calibration_path:
        calibration = load_calibration(
            calibration_path,
            fingerprint or None,
            norm,
            model_source="the embedding store",
            norm_source="--norm",
        )
    scores = score_trials(store, trials, mean=mean, cohort=cohort, norm=norm, top_n=top_n)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:  # a NaN score is no score: refused, not written
        first = int(bad[0])
        raise ScoresError(
            f"{store_path}: {bad.size} trial(s) score NaN or infinity, e.g. "
            f"'{trials.enroll[first]} {trials.test[first]}': their embeddings are not finite"
        )
    if calibration is not None:
        scores = calibration.apply(scores)
    write_scores(out, trials.enroll, trials.test, scores)
    return len(trials)


def _trial_store(
    trials: Trials, store_path: str | os.PathLike, enroll_map: str | os.PathLike | None
) -> EmbeddingStore:
    """The trials' embeddings; with an enroll map, its models replace their utterances."""
    from speakerverify.data.trials import read_enroll_map

    store = load_embeddings(store_path)
    if enroll_map:
        models = read_enroll_map(enroll_map)
        tests = [u for u in dict.fromkeys([*trials.enroll, *trials.test]) if u not in models]
        store = with_enrollment_models(store, models, tests)
    return store


def _same_model_store(path: str | os.PathLike, option: str, fingerprint: str) -> EmbeddingStore:
    """A mean or cohort store, refused when another model made it than the trials' store."""
    store = load_embeddings(path)
    _check_same_model(f"{option} {path}", store.meta.get("model_fingerprint", ""), fingerprint)
    return store


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
    false_accept: float | None = None,
) -> CalibrationReport:
    """Fit a calibration on development trials and their scores and write it to `out`.

    Args:
        trials_path: the development trial list (labels).
        scores_path: their `enroll test score` file.
        out: the calibration JSON to write.
        model_path: the checkpoint that made the scores (required: a calibration is bound to
            its fingerprint, so the speaker commands refuse it for another model).
        norm: the score normalization the scores were made with.
        prior: effective target prior of the fit.
        false_accept: when given, the calibration's default operating point accepts at most
            this share of the trials' non-targets (`Calibration.with_operating_point`).

    Raises:
        TrialsError, ScoresError, CalibrationError, CheckpointError: unusable input.
    """
    if not model_path:
        raise CalibrationError(
            f"{out}: a calibration must name the model that made the scores, or it would apply "
            "to any model: give --model CKPT"
        )
    from speakerverify.checkpoint import load_checkpoint  # torch, only when asked

    fingerprint = str(load_checkpoint(model_path)["fingerprint"])
    scores, labels = read_scored_trials(trials_path, scores_path)
    calibration = fit_calibration(
        scores, labels, prior=prior, model_fingerprint=fingerprint, norm=norm
    )
    if false_accept is not None:
        calibration = calibration.with_operating_point(
            scores[labels == 0], false_accept, Path(trials_path).name
        )
    calibration.save(out)
    return CalibrationReport(
        calibration=calibration,
        cllr=cllr(calibration.apply(scores), labels),
        min_cllr=min_cllr(scores, labels),
        num_trials=len(scores),
    )


def evaluate_scores(
    trials_path: str | os.PathLike,
    scores_path: str | os.PathLike,
    *,
    llr: bool = False,
    plot_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """EER, minDCF at `EVALUATED_P_TARGETS` and minCllr of a score file against its trial list.

    Args:
        trials_path: The trial list (`enroll test target|nontarget` lines).
        scores_path: Its scores (`enroll test score` lines), as `score` writes them.
        llr: The scores are calibrated LLRs: also Cllr and the actual DCFs.
        plot_dir: Write `det.png` and `hist.png` there, listed under "plots".

    Returns:
        `compute_metrics`'s document plus `min_cllr` (and `cllr`, `act_dcf_<p>`), with None
        for a threshold that is infinite (JSON has no infinity).
    """
    scores, labels = read_scored_trials(trials_path, scores_path)
    result: dict[str, Any] = compute_metrics(scores, labels, EVALUATED_P_TARGETS)
    result["min_cllr"] = min_cllr(scores, labels)
    if llr:
        result["cllr"] = cllr(scores, labels)
        for p_target in EVALUATED_P_TARGETS:
            result[f"act_dcf_{p_target:g}"] = act_dcf(scores, labels, p_target=p_target)
    if plot_dir:
        from speakerverify.backend.plotting import plot_det, plot_histogram

        p_miss, p_fa, _ = det_curve(scores, labels)
        det = plot_det(
            p_miss,
            p_fa,
            Path(plot_dir) / "det.png",
            label=Path(scores_path).name,
            eer=result["eer"],
        )
        thresholds = {
            "EER": result["eer_threshold"],
            "minDCF(0.01)": result["min_dcf_0.01_threshold"],
        }
        hist = plot_histogram(scores, labels, Path(plot_dir) / "hist.png", thresholds=thresholds)
        result["plots"] = [str(det), str(hist)]
    return {
        key: (value if math.isfinite(value) else None) if isinstance(value, float) else value
        for key, value in result.items()
    }
