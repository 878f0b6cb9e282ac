"""The adapted decision rule: what `adapt` learns from unlabelled in-domain audio, and how a
score is normalised with it.

`adapt` keeps three things from the adaptation files' embeddings: their mean (scores are cosines
of embeddings centred on it), the centred embeddings themselves as a score-normalisation cohort,
and a threshold. A trial's centred cosine `s` is adaptive-S-normalised against the cohort
(Matejka et al. 2017): each side's mean and standard deviation over its `top_k` highest cohort
scores give `0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)`, a score in units of the domain's
own non-target spread. The threshold is the standard normal quantile at the nominal false-accept
rate (2.326 for 1 %): no label is needed, and none of the adaptation pairs' scores is trusted as a
non-target, since unlabelled recordings of one domain often share speakers (a plain quantile of
all adaptation pairs is pulled up by every pair that does). The share of adaptation pairs at or
above the threshold is reported as a check: an upper bound on the false-accept rate there, as
some of those pairs are the same speaker. The nominal rate is approximate: AS-Norm keeps each
side's closest cohort files, and a model averaged over several files scores wider than single
files do (measured: 2.3 % on the Gaussian fixture of tests/speakers/test_domain.py, 0.1-0.2 % on
synthetic speakers, none of 18 impostor claims on realdev).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from speakerverify.backend.scoring import cohort_statistics, l2_normalize
from speakerverify.speakers.records import DomainMean, now_iso

__all__ = [
    "ADAPTED_FALSE_ACCEPT",
    "MAX_COHORT",
    "MIN_COHORT",
    "cohort_top_k",
    "estimate_domain",
    "snorm_scores",
    "snorm_threshold",
]

# Nominal false-accept rate of the adapted rule's threshold: 1 % of non-target trials.
ADAPTED_FALSE_ACCEPT = 0.01
# Fewer adaptation files cannot describe a domain's non-target spread.
MIN_COHORT = 20
# The cohort keeps at most this many files (evenly spaced over the sorted list): 2,000 x 1,152
# float32 is 9 MB in the store, and the statistics settle long before.
MAX_COHORT = 2000


def cohort_top_k(size: int) -> int:
    """AS-Norm's cohort size per side: a fifth of the cohort, at least 10, at most 300.

    >>> cohort_top_k(256), cohort_top_k(20), cohort_top_k(5000)
    (51, 10, 300)
    """
    return int(min(size, 300, max(10, round(size / 5))))


def snorm_scores(
    scores: np.ndarray, enroll: np.ndarray, test: np.ndarray, cohort: np.ndarray, top_k: int
) -> np.ndarray:
    """Adaptive S-Norm `(N,)` of centred cosine `scores` `(N,)` between `enroll` `(N, D)` and
    one `test` `(D,)` (both centred and L2-normalised), against `cohort` `(C, D)` (the same).
    """
    enroll_mean, enroll_std = cohort_statistics(enroll, cohort, top_k)
    test_mean, test_std = cohort_statistics(np.asarray(test)[None, :], cohort, top_k)
    scores = np.asarray(scores, dtype=np.float64)
    enroll_part = (scores - enroll_mean) / np.maximum(enroll_std, 1e-6)
    test_part = (scores - test_mean[0]) / max(float(test_std[0]), 1e-6)
    return 0.5 * (enroll_part + test_part)


def snorm_threshold(false_accept: float) -> float:
    """The S-norm value a share `false_accept` of non-target trials reach: the standard normal
    quantile at 1 - false_accept (the adapted rule's threshold, per claim or per comparison).

    >>> round(snorm_threshold(0.01), 3)
    2.326
    """
    from statistics import NormalDist  # not on verify's cold path (decimal, fractions, regexes)

    return NormalDist().inv_cdf(1.0 - false_accept)


def _pairs_above(cohort: np.ndarray, top_k: int, threshold: float) -> float:
    """Share of distinct cohort pairs whose S-Norm (each side against the cohort without
    itself) reaches `threshold`."""
    gram = cohort.astype(np.float64) @ cohort.T.astype(np.float64)
    np.fill_diagonal(gram, -np.inf)
    keep = min(top_k, len(cohort) - 1)
    top = -np.partition(-gram, keep - 1, axis=1)[:, :keep]
    mean, std = top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)
    rows, cols = np.triu_indices(len(cohort), 1)
    normed = 0.5 * ((gram[rows, cols] - mean[rows]) / std[rows])
    normed += 0.5 * ((gram[rows, cols] - mean[cols]) / std[cols])
    return float(np.mean(normed >= threshold)) if normed.size else 0.0


def estimate_domain(
    embeddings: np.ndarray, source: str, *, false_accept: float = ADAPTED_FALSE_ACCEPT
) -> DomainMean:
    """The adapted rule of unlabelled in-domain `embeddings` `(N, D)` (N >= MIN_COHORT).

    Raises:
        ValueError: fewer than MIN_COHORT embeddings, non-finite values, or a bad rate.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) < MIN_COHORT:
        raise ValueError(
            f"the adapted decision rule needs at least {MIN_COHORT} in-domain files, "
            f"got {len(embeddings)}"
        )
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("in-domain embeddings are not finite")
    if not 0.0 < false_accept < 0.5:
        raise ValueError(f"false-accept rate must be in (0, 0.5), got {false_accept}")
    unit = l2_normalize(embeddings)
    mean = unit.mean(axis=0)
    rows = np.unique(np.linspace(0, len(unit) - 1, min(len(unit), MAX_COHORT)).round().astype(int))
    cohort = l2_normalize(unit[rows] - mean).astype(np.float32)
    top_k = cohort_top_k(len(cohort))
    threshold = snorm_threshold(false_accept)
    domain = DomainMean(mean.astype(np.float32), len(embeddings), source, now_iso())
    return replace(
        domain,
        cohort=cohort,
        top_k=top_k,
        threshold=threshold,
        false_accept=false_accept,
        pairs_above=_pairs_above(cohort, top_k, threshold),
    )
