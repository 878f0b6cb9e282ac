"""Verification metrics of discrimination: EER, minDCF and the DET curve.

Every error-rate metric comes from ONE sort of the trials; equal scores form one operating point.
The metrics of calibrated scores (actual DCF, Cllr, minCllr) are in `backend.calibration`.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from speakerverify.errors import SpeakerVerifyError

logger = logging.getLogger(__name__)

__all__ = [
    "MetricsError",
    "check_prior",
    "check_trials",
    "compute_metrics",
    "det_curve",
    "eer",
    "min_dcf",
]

# +-inf scores are stored as +-_BIG in the sort key: its lowest mantissa bit is 0, so the label bit
# fits, and it is above every finite float32.
_BIG = float(np.nextafter(np.finfo(np.float64).max, 0.0))
_LOW_BIT = np.uint64(1)


class MetricsError(SpeakerVerifyError, ValueError):
    """The trials leave a metric undefined (no targets, no non-targets, NaN scores)."""


def _check_inputs(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"scores and labels must be 1-D arrays of equal length, got shapes "
            f"{scores.shape} and {labels.shape}"
        )
    if scores.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iub":
            raise ValueError(f"labels must be 0/1 integers or booleans, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise ValueError("labels must be 1 (target) or 0 (non-target)")
        labels = labels.astype(np.bool_)
    return scores, labels


def check_trials(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Validated (scores, boolean labels, number of targets, whether any score is infinite)."""
    scores, labels = _check_inputs(scores, labels)
    has_inf = False
    if scores.dtype.kind == "f" and scores.size:
        low, high = scores.min(), scores.max()  # NaN propagates through min
        if np.isnan(low) or np.isnan(high):
            raise MetricsError(f"scores contain {int(np.isnan(scores).sum())} NaN value(s)")
        has_inf = bool(np.isinf(low) or np.isinf(high))
    num_targets = int(np.count_nonzero(labels))
    if num_targets == 0:
        raise MetricsError("no target trials (label 1): EER and DCF are undefined")
    if num_targets == labels.size:
        raise MetricsError("no non-target trials (label 0): EER and DCF are undefined")
    return scores, labels, num_targets, has_inf


@dataclass
class _Sweep:
    """The trials sorted once by score (ascending; targets before non-targets within a tie).

    Prefix `i` (the `i` lowest-scored trials rejected) is an operating point when `i` starts a group
    of equal scores (or `i == n`); its threshold is the score at sorted index `i` (accept if score
    >= threshold). `target_positions` are the sorted indices of the targets, so the number of
    targets in prefix `i` is `searchsorted(target_positions, i)`.
    """

    keys: np.ndarray  # (n,) float64 sorted scores; with `label_bits`, lowest mantissa bit = label
    target_positions: np.ndarray  # (num_targets,) int64 ascending
    label_bits: bool
    num_targets: int
    num_nontargets: int

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray) -> _Sweep:
        scores, labels, num_targets, has_inf = check_trials(scores, labels)
        n = scores.size
        small_int = scores.dtype.kind in "iub" and scores.dtype.itemsize <= 2
        if scores.dtype == np.float32 or small_int:
            exact32 = True
        else:
            exact32 = bool(np.array_equal(scores.astype(np.float32).astype(np.float64), scores))
        if exact32:
            # float32 values widened to float64 leave 29 zero mantissa bits: the lowest carries the
            # label, so one float sort orders by (score, label) without an argsort. A set bit moves
            # a negative number down, so the bit is label XOR sign to put targets first in a tie.
            scores32 = scores if scores.dtype == np.float32 else scores.astype(np.float32)
            keys = np.empty(n, np.float64)
            np.add(scores32, np.float32(0.0), out=keys)  # widen, and -0.0 -> +0.0 (one tie)
            if has_inf:
                np.clip(keys, -_BIG, _BIG, out=keys)
            label_bit = np.equal(labels, scores32 < 0)  # == (not target) XOR negative
            np.bitwise_or(keys.view(np.uint64), label_bit, out=keys.view(np.uint64))
            del label_bit
            keys.sort()
            # negatives are a prefix of the sorted keys; there the bit is set for targets
            num_negative = int(np.searchsorted(keys, 0.0))
            low_words = keys.view(np.uint32)[0 if np.little_endian else 1 :: 2]
            is_target = np.empty(n, np.bool_)
            np.bitwise_and(low_words, np.uint32(1), out=is_target, casting="unsafe")
            np.logical_not(is_target[num_negative:], out=is_target[num_negative:])
            target_positions = np.flatnonzero(is_target)
            return cls(keys, target_positions, True, num_targets, n - num_targets)
        logger.debug("scores are not float32-exact: exact lexsort path (slower)")
        order = np.lexsort((~labels, scores.astype(np.float64)))
        keys = scores.astype(np.float64)[order] + 0.0
        target_positions = np.flatnonzero(labels[order])
        return cls(keys, target_positions, False, num_targets, n - num_targets)

    @property
    def size(self) -> int:
        return self.keys.size

    def score_at(self, index: int) -> float:
        """The score at sorted index `index`; for `index == n`, a threshold above every score."""
        if index >= self.size:
            top = self.score_at(self.size - 1)
            return math.inf if top == math.inf else float(np.nextafter(top, math.inf))
        value = self.keys[index]
        if self.label_bits:
            value = (np.asarray(value).view(np.uint64) & ~_LOW_BIT).view(np.float64)
        value = float(value)
        if abs(value) == _BIG:
            return math.copysign(math.inf, value)
        return value

    def group_end(self, index: int) -> int:
        """One past the last sorted index whose score equals the score at `index`."""
        value = self.keys[index]
        if self.label_bits:
            bare = (np.asarray(value).view(np.uint64) & ~_LOW_BIT).view(np.float64)
            with_bit = (np.asarray(bare).view(np.uint64) | _LOW_BIT).view(np.float64)
            value = max(float(bare), float(with_bit))
        return int(np.searchsorted(self.keys, value, side="right"))

    def group_start(self, index: int) -> int:
        value = self.keys[index]
        if self.label_bits:
            bare = (np.asarray(value).view(np.uint64) & ~_LOW_BIT).view(np.float64)
            with_bit = (np.asarray(bare).view(np.uint64) | _LOW_BIT).view(np.float64)
            value = min(float(bare), float(with_bit))
        return int(np.searchsorted(self.keys, value, side="left"))

    def rates(self, index: int) -> tuple[float, float]:
        """(P_miss, P_fa) when the `index` lowest-scored trials are rejected."""
        targets = int(np.searchsorted(self.target_positions, index))
        false_accepts = self.num_nontargets - (index - targets)
        return targets / self.num_targets, false_accepts / self.num_nontargets

    def eer(self) -> tuple[float, float]:
        def difference(index: int) -> float:
            p_miss, p_fa = self.rates(index)
            return p_miss - p_fa

        # P_miss - P_fa rises strictly with the prefix length: bisect for the first prefix >= 0
        first = bisect_left(range(self.size + 1), 0.0, key=difference)
        start = self.group_start(first - 1)
        end = self.group_end(first - 1)
        miss_a, fa_a = self.rates(start)
        miss_b, fa_b = self.rates(end)
        d_a, d_b = miss_a - fa_a, miss_b - fa_b
        alpha = d_a / (d_a - d_b)  # d_a < 0 <= d_b
        eer_value = miss_a + alpha * (miss_b - miss_a)
        t_a, t_b = self.score_at(start), self.score_at(end)
        if alpha == 1.0 or not math.isfinite(t_b - t_a):
            threshold = t_b
        else:
            threshold = t_a + alpha * (t_b - t_a)
        return float(eer_value), float(threshold)

    def min_dcfs(
        self, p_targets: tuple[float, ...], c_miss: float = 1.0, c_fa: float = 1.0
    ) -> list[tuple[float, float]]:
        """(normalized minDCF, threshold) for each prior, in one chunked pass over the targets."""
        for p_target in p_targets:
            check_prior(p_target)
        weights_miss = [c_miss * p / self.num_targets for p in p_targets]
        weights_fa = [c_fa * (1.0 - p) / self.num_nontargets for p in p_targets]
        # Candidates: just before each target (the DCF only falls along a run of non-targets) and
        # reject-all. At prefix pos[k]: misses = k, false accepts = num_nontargets - pos[k] + k.
        # DCF = w_miss*k + w_fa*(num_nontargets - pos[k] + k); minimize k - c*pos[k] with
        # c = w_fa / (w_miss + w_fa), in cache-sized chunks, then evaluate the winner exactly.
        ratios = [wf / (wm + wf) for wm, wf in zip(weights_miss, weights_fa, strict=True)]
        best_values = [math.inf] * len(p_targets)
        best_indices = [0] * len(p_targets)
        chunk = 1 << 16
        ramp = np.arange(chunk, dtype=np.float64)
        buffer = np.empty(chunk, np.float64)
        positions = self.target_positions
        for begin in range(0, positions.size, chunk):
            block = positions[begin : begin + chunk]
            out = buffer[: block.size]
            for j, ratio in enumerate(ratios):
                np.multiply(block, -ratio, out=out)
                out += ramp[: block.size]
                local = int(np.argmin(out))
                value = float(out[local]) + begin
                if value < best_values[j]:
                    best_values[j], best_indices[j] = value, begin + local
        results = []
        for j, p_target in enumerate(p_targets):
            k = best_indices[j]
            false_accepts = self.num_nontargets - int(positions[k]) + k
            cost = weights_miss[j] * k + weights_fa[j] * false_accepts
            index = int(positions[k])
            if c_miss * p_target < cost:  # reject all
                cost, index = c_miss * p_target, self.size
            normalizer = min(c_miss * p_target, c_fa * (1.0 - p_target))
            results.append((cost / normalizer, self.score_at(index)))
        return results


def check_prior(p_target: float) -> None:
    """Refuse a target prior outside (0, 1)."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold.

    Definition: the operating points are (P_miss, P_fa) at every distinct score used as threshold
    (accept if score >= threshold; equal scores form ONE point) plus reject-all; consecutive points
    are joined by straight lines (the ROC of random tie-breaking). The EER is where that polyline
    crosses P_miss = P_fa; the threshold is interpolated with the same weight between the two
    points' thresholds.

    Args:
        scores: (N,) trial scores, higher = more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials.

    Returns:
        (eer as a fraction in [0, 1], threshold).

    Raises:
        ValueError: NaN scores, no targets or no non-targets, mismatched shapes.

    >>> eer(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    (0.5, 0.4)
    >>> eer(np.array([0.2, 0.3, 0.7, 0.9]), np.array([0, 0, 1, 1]))
    (0.0, 0.7)
    >>> round(eer(np.full(4, 0.5), np.array([1, 0, 1, 0]))[0], 9)  # all equal: one point
    0.5
    """
    return _Sweep.build(scores, labels).eer()


def min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalized minimum detection cost and the threshold that attains it.

    DCF = c_miss * p_target * P_miss + c_fa * (1 - p_target) * P_fa, divided by
    min(c_miss * p_target, c_fa * (1 - p_target)), minimized over the operating points of `eer`.

    Args:
        scores: (N,) trial scores.
        labels: (N,) 1 target / 0 non-target.
        p_target: prior probability of a target trial.
        c_miss: cost of a miss.
        c_fa: cost of a false accept.

    Returns:
        (min_dcf, threshold); accept if score >= threshold.

    >>> min_dcf(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), p_target=0.5)
    (0.5, 0.35)
    >>> min_dcf(np.array([0.2, 0.3, 0.7, 0.9]), np.array([0, 0, 1, 1]))
    (0.0, 0.7)
    """
    return _Sweep.build(scores, labels).min_dcfs((p_target,), c_miss, c_fa)[0]


def compute_metrics(
    scores: np.ndarray, labels: np.ndarray, p_targets: tuple[float, ...] = (0.01, 0.05)
) -> dict[str, float | int]:
    """EER and minDCF at each prior (C_miss = C_fa = 1) with thresholds, from one sort.

    Returns:
        dict with keys `eer`, `eer_threshold`, `min_dcf_<p>`, `min_dcf_<p>_threshold` (for
        p_target 0.01 the key is `min_dcf_0.01`), `num_trials`, `num_targets`, `num_nontargets`.

    >>> m = compute_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    >>> m["eer"], m["min_dcf_0.01"], m["num_targets"]
    (0.5, 0.5, 2)
    """
    sweep = _Sweep.build(scores, labels)
    eer_value, eer_threshold = sweep.eer()
    result: dict[str, float | int] = {"eer": eer_value, "eer_threshold": eer_threshold}
    for p_target, (value, threshold) in zip(
        p_targets, sweep.min_dcfs(tuple(p_targets)), strict=True
    ):
        result[f"min_dcf_{p_target:g}"] = value
        result[f"min_dcf_{p_target:g}_threshold"] = threshold
    result.update(
        num_trials=sweep.size, num_targets=sweep.num_targets, num_nontargets=sweep.num_nontargets
    )
    return result


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All operating points, by increasing threshold.

    Returns:
        (p_miss, p_fa, thresholds), each (K,) float64; K = number of distinct scores + 1 (the last
        point rejects everything).

    >>> p_miss, p_fa, thresholds = det_curve(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1]))
    >>> p_miss.tolist(), p_fa.tolist(), thresholds[:3].tolist()
    ([0.0, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, 0.0], [0.1, 0.4, 0.8])
    """
    sweep = _Sweep.build(scores, labels)
    keys = sweep.keys
    if sweep.label_bits:
        keys = (keys.view(np.uint64) & ~_LOW_BIT).view(np.float64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1], [True])))
    targets = np.searchsorted(sweep.target_positions, starts)
    p_miss = targets / sweep.num_targets
    p_fa = (sweep.num_nontargets - (starts - targets)) / sweep.num_nontargets
    thresholds = np.empty(starts.size, np.float64)
    thresholds[:-1] = keys[starts[:-1]]
    thresholds[-1] = sweep.score_at(sweep.size)
    big = np.abs(thresholds) == _BIG
    thresholds[big] = np.copysign(np.inf, thresholds[big])
    return p_miss, p_fa, thresholds
