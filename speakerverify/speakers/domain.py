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

From 100 files on, `adapt` also whitens. The files are split into two halves; each half's
covariance around the mean, shrunk towards a multiple of the identity by the Ledoit-Wolf rule (no
tuned constant), whitens the other half, which is then that fold's cohort. A trial is centred,
whitened and scored in both folds, and its two S-norm values are averaged. Centring, whitening on
in-domain data and length normalisation is the classic recipe for i-vectors and x-vectors
(Garcia-Romero and Espy-Wilson 2011). Here it matters for another reason too: a model that
learned on synthetic speakers spreads real speech most along directions that do not tell its
speakers apart, and whitening takes that weight off them (realdev: recipes/mini/README.md,
"Whitening in `adapt`").

Why two folds. A cohort must be files its whitening did not see: a file inside a covariance
estimated from fewer files than dimensions is nearly orthogonal to every other file once
whitened, and would make every S-norm score huge. It should also be other speakers than the
whitening's: whitening takes weight off the directions its own speakers vary along, so a cohort
of those speakers scores lower against everyone than an outside impostor does, and the threshold
lets more impostors through. No labels say who is speaking, so the files are grouped by
similarity (average-linkage clusters of cosines after a first whitening on all of them, about
16 files a group) and whole groups go to one half or the other. With one fold, a speaker of the
adaptation audio is either whitened away or in the cohort; with both, every adaptation speaker is
in one fold's cohort, which is what keeps AS-Norm's "unknown" answers for them.
"""

from __future__ import annotations

import numpy as np

from speakerverify.backend.scoring import cohort_statistics, l2_normalize
from speakerverify.speakers.records import CohortFold, DomainMean, now_iso

__all__ = [
    "ADAPTED_FALSE_ACCEPT",
    "MAX_COHORT",
    "MIN_COHORT",
    "MIN_WHITENING",
    "cohort_top_k",
    "domain_scores",
    "estimate_domain",
    "fit_whitening",
    "ledoit_wolf_shrinkage",
    "normalise",
    "snorm_scores",
    "snorm_threshold",
    "split_by_similarity",
    "whitening_json",
]

# Nominal false-accept rate of the adapted rule's threshold: 1 % of non-target trials.
ADAPTED_FALSE_ACCEPT = 0.01
# Fewer adaptation files cannot describe a domain's non-target spread.
MIN_COHORT = 20
# Whitening takes half the files, and each half should hold several speakers: below this many
# files the rule centres only.
MIN_WHITENING = 100
# Files per group of similar files (likely one speaker's) that the whitening / cohort split keeps
# on one side.
FILES_PER_GROUP = 16
# The rule keeps at most this many files (evenly spaced over the sorted list): 2,000 x 1,152
# float32 is 9 MB in the store, and the statistics settle long before. Whitened, the two halves
# share them, and each fold also keeps up to as many whitening directions as its cohort files.
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


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit and Wolf's (2004) shrinkage for the covariance of `centred` rows `(N, D)`.

    The weight `a` of `(1 - a) S + a (tr S / D) I` that minimises the expected squared error of
    the sample covariance `S = X^T X / N`, estimated from the data; computed through the
    `(N, N)` Gram matrix, so it costs nothing extra when D is much larger than N.
    """
    x = np.asarray(centred, dtype=np.float64)
    return _shrinkage_of_gram(x @ x.T, x.shape[1])


def _shrinkage_of_gram(gram: np.ndarray, dim: int) -> float:
    """`ledoit_wolf_shrinkage` of the rows whose Gram matrix `X X^T` `(N, N)` is `gram`."""
    num = len(gram)
    squared_norms = np.diag(gram)
    mu = float(squared_norms.sum()) / (num * dim)  # tr(S) / D
    frobenius = float(np.sum(gram * gram)) / num**2  # ||S||_F^2
    delta = frobenius - dim * mu * mu  # ||S - mu I||_F^2
    beta = (float(np.sum(squared_norms**2)) / num - frobenius) / num
    if delta <= 0.0:
        return 1.0
    return float(min(max(beta, 0.0), delta) / delta)


def fit_whitening(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The shrunk whitening of `centred` rows `(N, D)`: `(basis (R, D), scale (R,), shrinkage)`.

    With `S = V diag(g) V^T` (R = rank, at most N - 1 directions) and `C = (1 - a) S + a m I`
    (`a` Ledoit-Wolf's shrinkage, `m = tr S / D`), `C^(-1/2)` is, up to the factor
    `(a m)^(-1/2)` that cosine scoring ignores, `I - V diag(scale) V^T` with
    `scale = 1 - sqrt(a m / ((1 - a) g + a m))`: every other direction is left as it is.
    """
    x = np.asarray(centred, dtype=np.float64)
    num, dim = x.shape
    gram = x @ x.T  # (N, N): both the shrinkage and the eigenvectors come from it
    shrinkage = max(_shrinkage_of_gram(gram, dim), 1e-6)
    eigenvalues, vectors = np.linalg.eigh(gram / num)
    keep = eigenvalues > 1e-10 * max(float(eigenvalues.max()), 1e-300)
    eigenvalues, vectors = eigenvalues[keep][::-1], vectors[:, keep][:, ::-1]
    basis = (x.T @ vectors / np.sqrt(num * eigenvalues)).T  # unit rows: V^T
    floor = shrinkage * float(eigenvalues.sum()) / dim
    scale = 1.0 - np.sqrt(floor / ((1.0 - shrinkage) * eigenvalues + floor))
    return basis, scale, shrinkage


def split_by_similarity(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two halves of the rows of `centred` `(N, D)` (N >= 2) made of whole groups of
    similar rows: average-linkage clusters of cosine distance, about FILES_PER_GROUP rows each,
    handed out largest first to the half with fewer rows so far. When one group is too large
    for the smaller half to hold 40 % of the rows (a dense bulk and a few outlying files), the
    tree is cut into twice as many groups, down to single rows. Deterministic."""
    from scipy.cluster.hierarchy import fcluster, linkage  # scipy comes with scikit-learn

    num = len(centred)
    tree = linkage(l2_normalize(np.asarray(centred, dtype=np.float64)), "average", "cosine")
    groups = max(2, round(num / FILES_PER_GROUP))
    while True:
        labels = fcluster(tree, t=min(groups, num), criterion="maxclust")
        names, sizes = np.unique(labels, return_counts=True)
        side = np.zeros(num, dtype=bool)
        totals = [0, 0]
        for index in np.argsort(-sizes, kind="stable"):
            second = totals[0] > totals[1]
            side[labels == names[index]] = second
            totals[second] += int(sizes[index])
        if min(totals) >= 0.4 * num or groups >= num:
            return np.flatnonzero(~side), np.flatnonzero(side)
        groups *= 2


def normalise(
    embeddings: np.ndarray, mean: np.ndarray | None = None, fold: CohortFold | None = None
) -> np.ndarray:
    """Embeddings `(D,)` or `(N, D)` as a fold scores them: centred on `mean`, whitened when the
    fold whitens (then in float64), and L2-normalised."""
    if fold is None or fold.whitening is None:
        return l2_normalize(embeddings, mean)
    x = np.asarray(embeddings, dtype=np.float64)
    if mean is not None:
        x = x - np.asarray(mean, dtype=np.float64)
    return l2_normalize(_whiten(x, fold.whitening, fold.whitening_scale), copy=False)


def _whiten(centred: np.ndarray, basis: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`centred` rows `(N, D)` times `I - basis^T diag(scale) basis` (`fit_whitening`), float64."""
    x = np.asarray(centred, dtype=np.float64)
    basis = np.asarray(basis, dtype=np.float64)
    return x - ((x @ basis.T) * np.asarray(scale, dtype=np.float64)) @ basis


def domain_scores(
    domain: DomainMean | None, enroll: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of `enroll` `(N, D)` against one `test` `(D,)` in `domain`: `(cosines (N,),
    S-norm values (N,) or None)`.

    Without a domain, plain cosines and no S-norm; with a mean saved without a rule, cosines of
    centred embeddings; with the adapted rule, each fold's cosines and S-norm values, averaged
    over the folds.
    """
    enroll = np.atleast_2d(enroll)
    test = np.asarray(test)[None, :]
    mean = None if domain is None else domain.mean
    if domain is None or not domain.folds:
        return l2_normalize(enroll, mean) @ l2_normalize(test, mean)[0], None
    cosines, values = [], []
    for fold in domain.folds:
        fold_enroll = normalise(enroll, mean, fold)
        fold_test = normalise(test, mean, fold)[0]
        scores = fold_enroll @ fold_test
        cosines.append(scores)
        values.append(snorm_scores(scores, fold_enroll, fold_test, fold.cohort, domain.top_k))
    return np.mean(cosines, axis=0), np.mean(values, axis=0)


def whitening_json(domain: DomainMean) -> list[dict] | None:
    """Each fold's whitening (files, directions, shrinkage, cohort files), or None."""
    if not domain.whitened:
        return None
    return [
        {
            "files": fold.whitening_files,
            "directions": len(fold.whitening),
            "shrinkage": fold.shrinkage,
            "cohort_files": len(fold.cohort),
        }
        for fold in domain.folds
    ]


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
    embeddings: np.ndarray,
    source: str,
    *,
    false_accept: float = ADAPTED_FALSE_ACCEPT,
    whiten: bool = True,
) -> DomainMean:
    """The adapted rule of unlabelled in-domain `embeddings` `(N, D)` (N >= MIN_COHORT).

    With `whiten` and at least MIN_WHITENING files: two folds, each half of the files (whole
    groups of similar files, `split_by_similarity`) whitening the other half, its cohort.
    Otherwise one fold: every file is the cohort of centred embeddings.

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
    mean = unit.mean(axis=0).astype(np.float32)  # as stored: trials are centred on this
    if whiten and len(unit) >= MIN_WHITENING:
        files = _spread(unit)
        halves = [files[rows] for rows in split_by_similarity(_whitened(files - mean))]
        folds = tuple(
            _whitened_fold(whitening=halves[index], cohort=halves[1 - index], mean=mean)
            for index in (0, 1)
        )
    else:
        folds = (CohortFold(normalise(_spread(unit), mean).astype(np.float32)),)
    top_k = cohort_top_k(min(len(fold.cohort) for fold in folds))
    threshold = snorm_threshold(false_accept)
    return DomainMean(
        mean,
        len(embeddings),
        source,
        now_iso(),
        folds=folds,
        top_k=top_k,
        threshold=threshold,
        false_accept=false_accept,
        pairs_above=float(np.mean([_pairs_above(f.cohort, top_k, threshold) for f in folds])),
    )


def _whitened_fold(whitening: np.ndarray, cohort: np.ndarray, mean: np.ndarray) -> CohortFold:
    """The fold whose `cohort` files are whitened by the shrunk covariance of `whitening`'s."""
    basis, scale, shrinkage = fit_whitening(whitening - mean)
    basis, scale = basis.astype(np.float32), scale.astype(np.float32)  # as stored and scored
    return CohortFold(
        l2_normalize(_whiten(cohort - mean, basis, scale), copy=False).astype(np.float32),
        whitening=basis,
        whitening_scale=scale,
        shrinkage=shrinkage,
        whitening_files=len(whitening),
    )


def _whitened(centred: np.ndarray) -> np.ndarray:
    """`centred` rows whitened with their own shrunk covariance (for grouping them only)."""
    return _whiten(centred, *fit_whitening(centred)[:2])


def _spread(rows: np.ndarray) -> np.ndarray:
    """At most MAX_COHORT of `rows`, evenly spaced over them."""
    keep = np.linspace(0, len(rows) - 1, min(len(rows), MAX_COHORT)).round().astype(int)
    return rows[np.unique(keep)]
