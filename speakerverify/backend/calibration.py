"""Score calibration: an affine map from raw scores to log-likelihood ratios, fitted by
prior-weighted logistic regression on development trials, saved as a small JSON file; and the
metrics of calibrated scores (actual DCF, Cllr, and minCllr after the best monotone calibration).

Pure functions of score arrays; `speakerverify.backend.scoring_steps.calibrate_scores` runs the
whole `speakerverify calibrate` step (trial list + score file in, calibration file out).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path

import numpy as np

from speakerverify.backend.metrics import check_prior, check_trials
from speakerverify.backend.scoring import NORMS
from speakerverify.checkpoint_rules import model_mismatch
from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import check_input, write_atomic

__all__ = [
    "Calibration",
    "CalibrationError",
    "act_dcf",
    "cllr",
    "default_calibration_path",
    "fit_calibration",
    "load_calibration",
    "min_cllr",
    "nontarget_tail",
]


class CalibrationError(SpeakerVerifyError, ValueError):
    """A calibration cannot be fitted, loaded or inverted; the message names the file if any."""


@dataclass
class Calibration:
    """Affine map from raw scores to log-likelihood ratios: `llr = slope * score + offset`.

    A calibration is saved and loaded only when `check` passes: a positive finite slope, a finite
    offset, a prior in (0, 1), the fingerprint of the model it was fitted for, a known norm.

    Attributes:
        slope: > 0 for a usable calibration.
        offset: in LLR units.
        model_fingerprint: fingerprint of the model whose scores were calibrated ("" unknown:
            such a calibration may be used in memory, never saved or loaded).
        prior: effective target prior used to weight the training trials.
        num_targets: target trials it was fitted on.
        num_nontargets: non-target trials it was fitted on.
        norm: the score normalization the calibration expects ("none", "snorm", "asnorm").
        default_p_target: the operating point the speaker commands use when none is asked for
            (None: 0.5); `with_operating_point` sets it from a false-accept rate.
        operating_point: how `default_p_target` was chosen, in words.
        default_false_accept: the false-accept rate `default_p_target` was chosen for (None:
            not chosen that way).
        nontarget_tail: `[rate, score]` pairs, rates increasing: the score that `rate` of the
            calibration's non-target trials reach (their upper tail, from 1 / num_nontargets
            to 0.5), so that a threshold at any other rate can be read off
            (`score_at_false_accept`; `identify` needs one per number of enrolled speakers).
    """

    slope: float
    offset: float
    model_fingerprint: str = ""
    prior: float = 0.5
    num_targets: int = 0
    num_nontargets: int = 0
    norm: str = "none"
    default_p_target: float | None = None
    operating_point: str = ""
    default_false_accept: float | None = None
    nontarget_tail: list[list[float]] | None = None

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """LLRs `(N,)` float64 of raw scores `(N,)`.

        >>> Calibration(2.0, -1.0).apply(np.array([0.0, 1.0])).tolist()
        [-1.0, 1.0]
        """
        return self.slope * np.asarray(scores, dtype=np.float64) + self.offset

    def score_threshold(self, p_target: float) -> float:
        """Raw score at which the LLR equals the Bayes threshold −logit(p_target).

        >>> Calibration(2.0, -1.0).score_threshold(0.5)
        0.5
        """
        if not 0.0 < p_target < 1.0:
            raise CalibrationError(f"p_target must be in (0, 1), got {p_target}")
        if not self.slope > 0:
            raise CalibrationError(f"calibration slope {self.slope} is not positive")
        return (math.log((1.0 - p_target) / p_target) - self.offset) / self.slope

    def with_operating_point(
        self, nontarget_scores: np.ndarray, false_accept: float, trials: str = ""
    ) -> Calibration:
        """A copy whose default operating point accepts at most `false_accept` of the given
        non-target scores: the prior whose Bayes threshold sits at their (1 - rate) quantile.

        >>> cal = Calibration(10.0, -5.0).with_operating_point(np.linspace(0, 1, 101), 0.1)
        >>> round(cal.score_threshold(cal.default_p_target), 6)
        0.9
        """
        if not 0.0 < false_accept < 1.0:
            raise CalibrationError(f"false-accept rate must be in (0, 1), got {false_accept}")
        if not self.slope > 0:
            raise CalibrationError(f"calibration slope {self.slope} is not positive")
        scores = np.asarray(nontarget_scores, dtype=np.float64)
        if scores.size < math.ceil(1.0 / false_accept):
            raise CalibrationError(
                f"{scores.size} non-target trials cannot resolve a {false_accept:g} "
                f"false-accept rate; need at least {math.ceil(1.0 / false_accept)}"
            )
        threshold = float(np.quantile(scores, 1.0 - false_accept))
        p_target = self.p_target_at_score(threshold)
        where = f" of {trials}" if trials else ""
        text = (
            f"at most {false_accept:g} of {scores.size} non-target trials{where} accepted "
            f"(score >= {threshold:.4f})"
        )
        return replace(
            self,
            default_p_target=p_target,
            operating_point=text,
            default_false_accept=float(false_accept),
            nontarget_tail=nontarget_tail(scores, include=(false_accept,)),
        )

    def p_target_at_score(self, score: float) -> float:
        """The prior whose Bayes threshold −logit(p_target) sits at raw `score`.

        >>> round(Calibration(2.0, -1.0).p_target_at_score(0.5), 6)
        0.5
        """
        llr = self.slope * float(score) + self.offset
        p_target = 1.0 / (1.0 + math.exp(min(llr, 700.0)))
        if not 0.0 < p_target < 1.0:
            raise CalibrationError(f"the prior at score {score:g} ({p_target:g}) is out of (0, 1)")
        return p_target

    def score_at_false_accept(self, rate: float) -> tuple[float, float]:
        """The raw score that `rate` of the calibration's non-target trials reach, read off
        `nontarget_tail` (linear in log rate between its points), and the rate it stands for:
        `rate` itself, or the tail's smallest rate (1 / num_nontargets) when `rate` is below
        what the trials can resolve.

        >>> cal = Calibration(10.0, -5.0).with_operating_point(np.linspace(0, 1, 101), 0.1)
        >>> score, used = cal.score_at_false_accept(0.1)
        >>> round(score, 6), used
        (0.9, 0.1)
        >>> cal.score_at_false_accept(1e-6)[1]  # 101 trials resolve 1/101 at best
        0.00990099

        Raises:
            CalibrationError: no tail (a calibration made without an operating point), or a
                rate outside (0, 1).
        """
        if not 0.0 < rate < 1.0:
            raise CalibrationError(f"false-accept rate must be in (0, 1), got {rate}")
        if not self.nontarget_tail:
            raise CalibrationError(
                "the calibration keeps no non-target score tail (made without --false-accept)"
            )
        rates, scores = np.asarray(self.nontarget_tail, dtype=np.float64).T
        used = float(min(max(rate, rates[0]), rates[-1]))
        return float(np.interp(math.log(used), np.log(rates), scores)), used

    def check(self, source: str | os.PathLike) -> None:
        """Refuse a calibration that cannot be used safely, naming `source` (its file).

        A slope <= 0 accepts the lowest scores (0 accepts everything once the offset allows);
        a calibration without a model fingerprint would apply to any model.

        Raises:
            CalibrationError: one line saying which field is wrong.
        """
        for key in ("slope", "offset", "prior"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CalibrationError(f"{source}: '{key}' must be a number, got {value!r}")
            if not math.isfinite(value):
                raise CalibrationError(f"{source}: '{key}' is not finite")
        if not self.slope > 0:
            raise CalibrationError(
                f"{source}: slope {self.slope:g} is not positive: higher scores must mean the "
                "same speaker; re-run `speakerverify calibrate`"
            )
        if not 0.0 < self.prior < 1.0:
            raise CalibrationError(f"{source}: prior {self.prior:g} is not in (0, 1)")
        if not isinstance(self.model_fingerprint, str) or not self.model_fingerprint:
            raise CalibrationError(
                f"{source}: no model_fingerprint: a calibration must name the model it was fitted "
                "for (`speakerverify calibrate --model CKPT`)"
            )
        if self.norm not in NORMS:
            raise CalibrationError(
                f"{source}: unknown norm {self.norm!r}; valid: {', '.join(NORMS)}"
            )
        for key in ("num_targets", "num_nontargets"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CalibrationError(f"{source}: '{key}' must be a count, got {value!r}")
        point = self.default_p_target
        if point is not None and (
            isinstance(point, bool) or not isinstance(point, int | float) or not 0 < point < 1
        ):
            raise CalibrationError(f"{source}: 'default_p_target' must be a number in (0, 1)")
        if not isinstance(self.operating_point, str):
            raise CalibrationError(f"{source}: 'operating_point' must be text")
        rate = self.default_false_accept
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1
        ):
            raise CalibrationError(f"{source}: 'default_false_accept' must be a number in (0, 1)")
        if self.nontarget_tail is not None:
            _check_tail(self.nontarget_tail, source)

    def save(self, path: str | os.PathLike) -> None:
        """Write as a small JSON object, atomically, once `check` passes.

        Raises:
            CalibrationError: the calibration fails `check`, or the file cannot be written.
        """
        self.check(path)
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)
        except OSError as error:
            raise CalibrationError(f"{path}: cannot write ({error.strerror or error})") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read a JSON calibration written by `save` and `check` it.

        Raises:
            CalibrationError: missing file, bad JSON, missing/unknown keys, non-numbers, or a
                calibration `check` refuses (slope <= 0, prior outside (0, 1), no fingerprint).
        """
        path = Path(path)
        try:
            check_input(path)  # a FIFO would block read_text forever
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"{path}: calibration file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CalibrationError(f"{path}: invalid JSON ({error})") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{path}: expected a JSON object")
        valid = set(cls.__dataclass_fields__)
        unknown = set(data) - valid
        if unknown:
            raise CalibrationError(
                f"{path}: unknown keys {sorted(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        missing = sorted({"slope", "offset", "model_fingerprint"} - set(data))
        if missing:
            raise CalibrationError(f"{path}: missing keys {missing}")
        calibration = cls(**data)
        calibration.check(path)
        return calibration


def nontarget_tail(
    nontarget_scores: np.ndarray, *, per_decade: int = 8, include: tuple[float, ...] = ()
) -> list[list[float]]:
    """`[rate, score]` pairs of the upper tail of `nontarget_scores` `(N,)`: for rates from 1 / N
    to 0.5, `per_decade` to a factor of ten, and the rates in `include` (so that they are read
    off exactly), the score that share of the trials reach.

    >>> nontarget_tail(np.linspace(0.0, 1.0, 11), per_decade=1, include=(0.2,))
    [[0.0909091, 0.909091], [0.2, 0.8], [0.5, 0.5]]
    """
    scores = np.asarray(nontarget_scores, dtype=np.float64)
    lowest = 1.0 / scores.size
    steps = max(1, math.ceil(per_decade * math.log10(0.5 / lowest)))
    rates = np.geomspace(lowest, 0.5, steps + 1) if lowest < 0.5 else np.array([0.5])
    rates = [*rates.tolist(), *(r for r in include if lowest <= r <= 0.5)]
    rates = np.unique([float(f"{r:.6g}") for r in rates])  # sorted, no two equal once rounded
    values = np.quantile(scores, 1.0 - rates)
    return [[float(r), round(float(v), 6)] for r, v in zip(rates, values, strict=True)]


def _check_tail(tail: object, source: str | os.PathLike) -> None:
    """Refuse a `nontarget_tail` that is not `[rate, score]` pairs with rates rising in (0, 1)
    and scores not rising with them."""
    message = f"{source}: 'nontarget_tail' must be [rate, score] pairs"
    if not isinstance(tail, list) or not tail:
        raise CalibrationError(message)
    for pair in tail:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
            and all(math.isfinite(v) for v in pair)
        ):
            raise CalibrationError(message)
    rates = [pair[0] for pair in tail]
    scores = [pair[1] for pair in tail]
    if not all(0 < r < 1 for r in rates) or any(b <= a for a, b in pairwise(rates)):
        raise CalibrationError(f"{source}: 'nontarget_tail' rates must rise within (0, 1)")
    if any(b > a for a, b in pairwise(scores)):
        raise CalibrationError(
            f"{source}: 'nontarget_tail' scores must not rise with the rate (a higher score "
            "is reached by fewer trials)"
        )


def load_calibration(
    path: str | os.PathLike,
    fingerprint: str | None,
    norm: str,
    *,
    model_source: str = "the model",
    norm_source: str = "the scores' normalisation",
) -> Calibration:
    """The calibration at `path`, for scores of model `fingerprint` (None: not known) normalised
    with `norm`: the one loader of `score`, `verify` and `identify`.

    Args:
        model_source, norm_source: what the messages call the model and the scores' norm.

    Raises:
        CalibrationError: what `Calibration.load` refuses, or a calibration fitted for another
            model or on scores normalised otherwise.
    """
    calibration = Calibration.load(path)
    if fingerprint is not None:
        made = f"{path}: calibration was fitted for"
        mismatch = model_mismatch(made, calibration.model_fingerprint, model_source, fingerprint)
        if mismatch:
            raise CalibrationError(mismatch)
    if calibration.norm != norm:
        only = f"; its LLRs hold for {calibration.norm}-normalised scores only"
        only = "" if calibration.norm == "none" else only
        raise CalibrationError(
            f"{path}: fitted on {calibration.norm} scores, but {norm_source} is {norm}{only}"
        )
    return calibration


def default_calibration_path(model_path: str | os.PathLike) -> Path:
    """`<dir>/<checkpoint stem>.calibration.json`, where `calibrate` puts it next to a model."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.calibration.json")


def fit_calibration(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    prior: float = 0.5,
    model_fingerprint: str = "",
    norm: str = "none",
) -> Calibration:
    """Fit `llr = slope * score + offset` by prior-weighted logistic regression (BOSARIS style).

    Targets are weighted `prior / N_t` and non-targets `(1 - prior) / N_n`, so the fitted log-odds
    are posterior log-odds at `prior`; subtracting logit(prior) leaves an LLR.

    Args:
        scores: (N,) raw development scores.
        labels: (N,) 1 target / 0 non-target.
        prior: effective target prior of the fit (0.5 = the usual balanced Cllr objective).

    Raises:
        CalibrationError: unusable scores or labels, or scores that do not separate targets from
            non-targets (constant, or higher for non-targets): their fit has a slope <= 0, which
            would accept everything or the wrong trials.
    """
    from sklearn.linear_model import LogisticRegression

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise CalibrationError("scores and labels must be 1-D arrays of equal length")
    if not np.all(np.isfinite(scores)):
        raise CalibrationError("scores must be finite")
    num_targets = int(labels.sum())
    num_nontargets = labels.size - num_targets
    if num_targets == 0 or num_nontargets == 0:
        raise CalibrationError("calibration needs both target and non-target trials")
    if not 0.0 < prior < 1.0:
        raise CalibrationError(f"prior must be in (0, 1), got {prior}")
    weights = np.where(labels, prior / num_targets, (1.0 - prior) / num_nontargets)
    weights *= labels.size  # keep the loss scale near the unweighted one for the solver
    # centre/scale the input so lbfgs converges on tiny score ranges (cosines ~ 0.1 apart)
    with np.errstate(over="ignore", invalid="ignore"):
        centre, scale = float(scores.mean()), float(scores.std())
    if not (math.isfinite(centre) and math.isfinite(scale)):
        raise CalibrationError(
            f"scores too large to calibrate (up to {float(np.abs(scores).max()):g} in magnitude)"
        )
    if scale == 0.0:
        raise CalibrationError(
            f"all {labels.size} scores are {centre:g}: they cannot separate targets from "
            "non-targets, so no calibration can be fitted"
        )
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)
    model.fit(((scores - centre) / scale)[:, None], labels, sample_weight=weights)
    slope = float(model.coef_[0, 0]) / scale
    offset = float(model.intercept_[0]) - slope * centre - math.log(prior / (1.0 - prior))
    if not (slope > 0 and math.isfinite(slope) and math.isfinite(offset)):
        raise CalibrationError(
            f"the scores do not separate targets from non-targets (fitted slope {slope:g}: "
            "targets do not score higher); no calibration written"
        )
    return Calibration(
        slope=slope,
        offset=offset,
        model_fingerprint=model_fingerprint,
        prior=prior,
        num_targets=num_targets,
        num_nontargets=num_nontargets,
        norm=norm,
    )


def act_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float | None = None,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalized DCF of the decisions `score >= threshold` (actual, not minimized).

    Args:
        threshold: decision threshold; None means the scores are LLRs and the Bayes threshold
            log(c_fa * (1 - p_target) / (c_miss * p_target)) is used.

    >>> act_dcf(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), 0.3, p_target=0.5)
    0.5
    """
    scores, labels, _, _ = check_trials(scores, labels)
    check_prior(p_target)
    if threshold is None:
        threshold = math.log(c_fa * (1.0 - p_target) / (c_miss * p_target))
    accepted = scores >= threshold
    p_miss = np.count_nonzero(~accepted & labels) / np.count_nonzero(labels)
    p_fa = np.count_nonzero(accepted & ~labels) / np.count_nonzero(~labels)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return float(cost / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def cllr(llrs: np.ndarray, labels: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits (0 perfect, 1 = an uninformative system).

    Cllr = 1/(2 N_t) sum log2(1 + e^-llr_t) + 1/(2 N_n) sum log2(1 + e^llr_n).

    >>> cllr(np.zeros(4), np.array([0, 1, 0, 1]))
    1.0
    """
    llrs, labels, _, _ = check_trials(llrs, labels)
    llrs = llrs.astype(np.float64)
    target_cost = np.logaddexp(0.0, -llrs[labels]).mean()
    nontarget_cost = np.logaddexp(0.0, llrs[~labels]).mean()
    return float((target_cost + nontarget_cost) / (2.0 * math.log(2.0)))


def min_cllr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cllr after the optimal monotone (PAV) calibration of the scores; ties stay tied.

    >>> min_cllr(np.array([0.2, 0.3, 0.7, 0.9]), np.array([0, 0, 1, 1]))
    0.0
    """
    scores, labels, _, _ = check_trials(scores, labels)
    posterior = isotonic_fit(scores.astype(np.float64), labels.astype(np.float64))
    num_targets = np.count_nonzero(labels)
    prior_log_odds = math.log(num_targets / (labels.size - num_targets))
    with np.errstate(divide="ignore"):
        llrs = np.log(posterior) - np.log1p(-posterior) - prior_log_odds
    target_cost = np.logaddexp(0.0, -llrs[labels]).mean()
    nontarget_cost = np.logaddexp(0.0, llrs[~labels]).mean()
    return float((target_cost + nontarget_cost) / (2.0 * math.log(2.0)))


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The non-decreasing function of `x` nearest to `y` in least squares, at each `x` (pool
    adjacent violators; equal `x` share one value, the mean of their `y`). What scikit-learn's
    `IsotonicRegression().fit_transform(x, y)` gives, without its 1-2 s import.

    >>> isotonic_fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 0.0, 1.0])).tolist()
    [0.0, 0.5, 0.5, 1.0]
    """
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.ravel(), weights=y, minlength=len(values))
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for total, count in zip(sums.tolist(), counts.tolist(), strict=True):
        mean, weight, size = total / count, float(count), 1
        while means and means[-1] >= mean:  # a violation: pool with the block before
            before, before_weight = means.pop(), weights.pop()
            mean = (before * before_weight + mean * weight) / (before_weight + weight)
            weight += before_weight
            size += sizes.pop()
        means.append(mean)
        weights.append(weight)
        sizes.append(size)
    return np.repeat(np.array(means), sizes)[inverse.ravel()]
