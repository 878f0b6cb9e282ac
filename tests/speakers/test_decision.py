"""Open-set identification's decision rule: the calibration's non-target tail (saved, loaded,
read off at any rate) and `DecisionRule.for_identification`, which shares the single-claim
false-accept rate over the enrolled speakers, checked against quantiles of known distributions
and a simulated search."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest
from speaker_helpers import FP

from speakerverify.backend.calibration import Calibration, CalibrationError, nontarget_tail
from speakerverify.speakers.decision import (
    DecisionRule,
    adapted_rule,
    bayes_llr_threshold,
    open_set_caveat,
)
from speakerverify.speakers.domain import estimate_domain

RATE = 0.01


@pytest.fixture(scope="module")
def nontargets():
    """100,000 standard-normal non-target scores: their quantiles are known in closed form."""
    return np.random.default_rng(0).standard_normal(100_000)


@pytest.fixture(scope="module")
def calibration(nontargets):
    return Calibration(4.0, -8.0, model_fingerprint=FP).with_operating_point(nontargets, RATE)


def calibration_rule(calibration, *, p_target=None, default=True):
    """What `resolve_decision_rule` makes: the calibration's own operating point unless
    `p_target` is given."""
    point = "" if p_target else calibration.operating_point or "its own"
    p_target = p_target or calibration.default_p_target
    return DecisionRule(
        "calibration",
        bayes_llr_threshold(p_target),
        "llr",
        p_target=p_target,
        calibration=calibration,
        calibration_path="model.calibration.json",
        score_threshold=calibration.score_threshold(p_target),
        default=default,
        operating_point=point,
    )


def test_the_tail_reads_off_the_quantile_of_any_rate(calibration, nontargets):
    assert calibration.default_false_accept == RATE
    for rate in (RATE, 1e-3, 3e-4, 0.05, 0.2):
        score, used = calibration.score_at_false_accept(rate)
        assert used == rate
        # the tail's points are exact quantiles; between them log-linear interpolation
        assert score == pytest.approx(np.quantile(nontargets, 1 - rate), abs=0.01)
        # and the sample's quantile is the normal's (30 trials above it at 3e-4: loosely)
        assert score == pytest.approx(NormalDist().inv_cdf(1 - rate), abs=0.15)
    exact, _ = calibration.score_at_false_accept(RATE)  # the default rate is a tail point
    assert exact == pytest.approx(calibration.score_threshold(calibration.default_p_target), 1e-5)
    lowest, used = calibration.score_at_false_accept(1e-9)  # below 1 / 100,000: the top point
    assert used == pytest.approx(1e-5)
    assert lowest == pytest.approx(np.quantile(nontargets, 1 - 1e-5), abs=1e-6)


def test_the_tail_survives_a_save_and_load(calibration, tmp_path):
    path = tmp_path / "model.calibration.json"
    calibration.save(path)
    loaded = Calibration.load(path)
    assert loaded.nontarget_tail == calibration.nontarget_tail
    assert loaded.score_at_false_accept(1e-3) == calibration.score_at_false_accept(1e-3)
    rates = [rate for rate, _ in loaded.nontarget_tail]
    assert rates == sorted(set(rates)) and rates[0] == pytest.approx(1e-5) and rates[-1] == 0.5


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ([[0.1, 1.0], [0.01, 2.0]], "rates must rise"),
        ([[0.01, 1.0], [0.1, 2.0]], "scores must not rise"),
        ([[0.0, 1.0]], "rates must rise within"),
        ([[0.01, "1"]], r"\[rate, score\] pairs"),
        ({"0.01": 1.0}, r"\[rate, score\] pairs"),
        ([], r"\[rate, score\] pairs"),
    ],
)
def test_a_malformed_tail_is_refused_on_load(calibration, tmp_path, tail, message):
    path = tmp_path / "bad.json"
    calibration.save(path)
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "nontarget_tail": tail}))
    with pytest.raises(CalibrationError, match=f"bad.json: 'nontarget_tail' .*{message}"):
        Calibration.load(path)


def test_a_calibration_without_a_tail_cannot_be_read_off():
    with pytest.raises(CalibrationError, match="no non-target score tail"):
        Calibration(4.0, -8.0, model_fingerprint=FP).score_at_false_accept(0.01)


def test_tail_points_are_the_quantiles_at_rates_from_one_trial_to_half():
    scores = np.arange(1000.0)
    tail = nontarget_tail(scores, per_decade=2, include=(0.03,))
    rates = [rate for rate, _ in tail]
    assert rates[0] == 0.001 and rates[-1] == 0.5 and 0.03 in rates
    for rate, score in tail:
        assert score == pytest.approx(np.quantile(scores, 1 - rate), abs=1e-6)


@pytest.mark.parametrize("enrolled", [2, 9, 50])
def test_identification_shares_the_rate_over_the_enrolled_speakers(
    calibration, nontargets, enrolled
):
    rule = calibration_rule(calibration).for_identification(enrolled)
    assert (rule.comparisons, rule.per_comparison) == (enrolled, pytest.approx(RATE / enrolled))
    expected = np.quantile(nontargets, 1 - RATE / enrolled)
    assert rule.score_threshold == pytest.approx(expected, abs=0.01)
    assert rule.score_threshold > calibration.score_threshold(calibration.default_p_target)
    # the LLR threshold and the prior say the same as the score threshold
    assert rule.threshold == pytest.approx(bayes_llr_threshold(rule.p_target))
    assert calibration.apply(np.array([rule.score_threshold]))[0] == pytest.approx(rule.threshold)
    assert f"{enrolled} enrolled speakers" in rule.describe()
    assert rule.to_json()["open_set"]["enrolled"] == enrolled


def test_a_stranger_is_named_at_most_at_the_single_claim_rate(calibration):
    """Strangers scored against 9 enrolled speakers (fresh normal non-targets): the search
    names someone for about 1 - (1 - 0.01 / 9)^9 of them, under 1 %; verify's own threshold
    would name 1 - 0.99^9 = 8.6 %."""
    rng = np.random.default_rng(1)
    strangers = rng.standard_normal((200_000, 9))
    single = calibration_rule(calibration)
    search = single.for_identification(9)
    named = np.mean(search.accept(strangers.max(axis=1)))
    named_by_single = np.mean(single.accept(strangers.max(axis=1)))
    assert 0.007 < named < 0.0105
    assert named_by_single == pytest.approx(1 - 0.99**9, abs=0.003)


def test_explicit_rules_and_one_speaker_decide_as_asked(calibration):
    explicit = calibration_rule(calibration, p_target=0.02, default=False)
    assert explicit.for_identification(9) is explicit
    given = calibration_rule(calibration, default=False)  # --calibration FILE, its own point
    assert given.for_identification(9).comparisons == 9
    threshold = DecisionRule("threshold", 0.5, "score")
    assert threshold.for_identification(9) is threshold
    default = calibration_rule(calibration)
    assert default.for_identification(1) is default


def test_a_calibration_without_a_tail_keeps_verifys_point_and_says_so():
    old = Calibration(4.0, -8.0, model_fingerprint=FP, default_p_target=0.05)
    rule = calibration_rule(old)
    assert rule.for_identification(9) is rule
    caveat = open_set_caveat(rule, [f"s{i}" for i in range(9)])
    assert len(caveat) == 1 and "no non-target score tail" in caveat[0]
    assert "9 comparisons" in caveat[0]
    assert open_set_caveat(rule, ["one"]) == []
    tailed = calibration_rule(
        Calibration(4.0, -8.0, model_fingerprint=FP).with_operating_point(
            np.random.default_rng(2).standard_normal(1000), RATE
        )
    ).for_identification(9)
    assert open_set_caveat(tailed, [f"s{i}" for i in range(9)]) == []


def test_the_adapted_rule_shares_its_nominal_rate_too():
    domain = estimate_domain(np.random.default_rng(3).standard_normal((40, 16)), "fixture")
    rule = adapted_rule(domain)
    search = rule.for_identification(10)
    assert search.threshold == pytest.approx(NormalDist().inv_cdf(1 - domain.false_accept / 10))
    assert search.threshold > rule.threshold and search.per_comparison == domain.false_accept / 10
    assert search.for_domain(domain) is search  # scoring keeps the search's threshold
    assert "10 enrolled speakers" in search.describe()
