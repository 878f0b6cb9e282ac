"""Metrics against a reference built from sklearn.metrics.roc_curve, plus hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from speakerverify.backend.calibration import act_dcf, cllr, isotonic_fit, min_cllr
from speakerverify.backend.metrics import compute_metrics, det_curve, eer, min_dcf


def reference_metrics(scores, labels, p_targets=(0.01, 0.05)):
    """Same definitions as speakerverify.backend.metrics, from sklearn's ROC (all distinct
    thresholds)."""
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    # sklearn: decreasing thresholds, first point rejects all; flip to increasing thresholds
    p_miss, p_fa, thresholds = (1.0 - tpr)[::-1], fpr[::-1], thresholds[::-1]
    difference = p_miss - p_fa
    b = int(np.argmax(difference >= 0))
    a = b - 1
    alpha = difference[a] / (difference[a] - difference[b])
    result = {"eer": p_miss[a] + alpha * (p_miss[b] - p_miss[a])}
    for p in p_targets:
        dcf = (p * p_miss + (1 - p) * p_fa) / min(p, 1 - p)
        best = int(np.argmin(dcf))
        result[f"min_dcf_{p:g}"] = dcf[best]
        result[f"min_dcf_{p:g}_threshold"] = thresholds[best]
    return result


def assert_matches_reference(scores, labels):
    ours = compute_metrics(scores, labels)
    ref = reference_metrics(scores, labels)
    assert ours["eer"] == pytest.approx(ref["eer"], abs=1e-9)
    for p in (0.01, 0.05):
        assert ours[f"min_dcf_{p:g}"] == pytest.approx(ref[f"min_dcf_{p:g}"], abs=1e-9)
        if math.isfinite(ref[f"min_dcf_{p:g}_threshold"]):
            assert ours[f"min_dcf_{p:g}_threshold"] == ref[f"min_dcf_{p:g}_threshold"]
    assert eer(scores, labels)[0] == ours["eer"]
    assert min_dcf(scores, labels, 0.05)[0] == ours["min_dcf_0.05"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_sklearn_reference_random(seed, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 20000))
    labels = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(np.int8)
    labels[:2] = [0, 1]
    scores = (rng.standard_normal(n) + 1.5 * labels).astype(dtype)
    assert_matches_reference(scores, labels)


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_with_many_ties(seed):
    rng = np.random.default_rng(100 + seed)
    n = 5000
    labels = rng.random(n) < 0.3
    labels[:2] = [False, True]
    # few distinct values (including negatives and zero): ties everywhere
    scores = np.round(rng.standard_normal(n) + labels, 1).astype(np.float32)
    assert_matches_reference(scores, labels)
    assert_matches_reference(scores.astype(np.float64), labels)  # the exact lexsort path


def test_ties_form_one_operating_point():
    # targets and non-targets share the score 1.0: the straight ROC segment through the tie
    scores = np.array([0.0, 1.0, 1.0, 2.0], np.float32)
    labels = np.array([0, 1, 0, 1])
    # points (P_miss, P_fa): (0, 1) (0, .5) (.5, 0) (1, 0): the tie is the step (0, .5)->(.5, 0)
    assert eer(scores, labels) == pytest.approx((0.25, 1.5))
    assert_matches_reference(scores, labels)
    # with the order inside the tie reversed nothing changes
    assert eer(scores[[0, 2, 1, 3]], labels[[0, 2, 1, 3]]) == eer(scores, labels)


def test_all_equal_scores_give_half():
    labels = np.array([1, 0, 0, 1, 0])
    value, threshold = eer(np.full(5, 0.3, np.float32), labels)
    assert value == pytest.approx(0.5)
    assert threshold == pytest.approx(0.3)
    assert min_dcf(np.full(5, 0.3), labels, 0.5)[0] == pytest.approx(1.0)


def test_perfect_separation_and_inverted():
    scores = np.array([-2.0, -1.0, 1.0, 2.0])
    assert eer(scores, np.array([0, 0, 1, 1])) == (0.0, 1.0)
    assert eer(scores, np.array([1, 1, 0, 0]))[0] == 1.0
    assert min_dcf(scores, np.array([0, 0, 1, 1]), 0.01) == (0.0, 1.0)


def test_infinite_scores_are_ordered():
    scores = np.array([-np.inf, 0.0, 1.0, np.inf], np.float32)
    labels = np.array([0, 1, 0, 1])
    finite = np.array([-9.0, 0.0, 1.0, 9.0], np.float32)  # same order, for sklearn
    assert eer(scores, labels)[0] == eer(finite, labels)[0] == pytest.approx(0.5)
    assert min_dcf(scores, labels)[0] == min_dcf(finite, labels)[0]
    thresholds = det_curve(scores, labels)[2]
    assert thresholds[0] == -np.inf and thresholds[-1] == np.inf


def test_permutation_invariant(rng):
    scores = rng.standard_normal(3000).astype(np.float32)
    labels = rng.random(3000) < 0.2
    order = rng.permutation(3000)
    assert compute_metrics(scores, labels) == compute_metrics(scores[order], labels[order])


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.array([0.1, 0.2]), np.array([0, 0]), "no target"),
        (np.array([0.1, 0.2]), np.array([1, 1]), "no non-target"),
        (np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]), "NaN"),
        (np.array([0.1, 0.2]), np.array([0, 1, 1]), "equal length"),
        (np.array([0.1, 0.2]), np.array([0, 2]), "target"),
    ],
)
def test_bad_inputs_are_clear_errors(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(scores, labels)


def test_two_gaussians_eer_matches_theory():
    # targets ~ N(d', 1), non-targets ~ N(0, 1): EER = Phi(-d'/2)
    rng = np.random.default_rng(7)
    n = 200_000
    for d_prime in (1.0, 2.0, 3.0):
        labels = rng.random(n) < 0.5
        scores = (rng.standard_normal(n) + d_prime * labels).astype(np.float32)
        expected = 0.5 * math.erfc(d_prime / 2 / math.sqrt(2))
        value, threshold = eer(scores, labels)
        # binomial standard error at n/2 per class is < 0.0012; allow ~4 sigma
        assert value == pytest.approx(expected, abs=0.004)
        assert threshold == pytest.approx(d_prime / 2, abs=0.03)


def test_act_dcf_at_min_dcf_threshold_equals_min_dcf(rng):
    labels = rng.random(4000) < 0.3
    scores = rng.standard_normal(4000) + 2 * labels
    for p in (0.01, 0.05, 0.5):
        value, threshold = min_dcf(scores, labels, p)
        assert act_dcf(scores, labels, threshold, p_target=p) == pytest.approx(value, abs=1e-12)
        assert act_dcf(scores, labels, threshold + 0.3, p_target=p) >= value - 1e-12


def test_cllr_of_true_llrs_and_min_cllr(rng):
    # for N(+-1, 1) classes the true LLR is 2x; Cllr near minCllr, scaling it up makes it worse
    labels = rng.random(20000) < 0.5
    x = rng.standard_normal(20000) + np.where(labels, 1.0, -1.0)
    true_llr = 2 * x
    assert cllr(np.zeros(10), np.arange(10) % 2) == pytest.approx(1.0)
    assert min_cllr(x, labels) <= cllr(true_llr, labels) + 1e-12
    assert cllr(true_llr, labels) == pytest.approx(min_cllr(x, labels), abs=0.02)
    assert cllr(5 * true_llr, labels) > cllr(true_llr, labels) + 0.1
    assert min_cllr(5 * x + 3, labels) == pytest.approx(min_cllr(x, labels), abs=1e-12)
    # act_dcf with the Bayes threshold for LLRs
    assert act_dcf(true_llr, labels, p_target=0.5) == pytest.approx(
        act_dcf(x, labels, 0.0, p_target=0.5)
    )


def test_det_curve_matches_roc(rng):
    labels = rng.random(500) < 0.4
    scores = np.round(rng.standard_normal(500), 1)
    p_miss, p_fa, thresholds = det_curve(scores, labels)
    fpr, tpr, ref_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(p_miss, (1 - tpr)[::-1], atol=1e-12)
    np.testing.assert_allclose(p_fa, fpr[::-1], atol=1e-12)
    np.testing.assert_array_equal(thresholds[:-1], ref_thresholds[::-1][:-1])
    assert np.all(np.diff(p_miss) >= 0) and np.all(np.diff(p_fa) <= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_fit_equals_scikit_learns_pav(seed):
    # Scores rounded to 2 decimals: many ties, which must share one value, as in scikit-learn.
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed)
    labels = rng.random(3000) < 0.2
    scores = np.round(rng.standard_normal(3000) + 1.5 * labels, 2)
    ours = isotonic_fit(scores, labels.astype(np.float64))
    reference = IsotonicRegression(out_of_bounds="clip").fit_transform(scores, labels)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    assert np.all(np.diff(ours[np.argsort(scores, kind="stable")]) >= 0)
    assert np.sum(ours) == pytest.approx(np.sum(labels))  # PAV keeps the total
