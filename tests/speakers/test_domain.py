"""The adapted decision rule (speakerverify.speakers.domain): AS-Norm against a brute-force
reference, Ledoit-Wolf shrinkage against scikit-learn, the whitening against the inverse square
root of the shrunk covariance, and the whole rule on synthetic domains whose right answers are
known."""

from __future__ import annotations

import numpy as np
import pytest
from speaker_helpers import FP

from speakerverify.speakers.decision import DecisionRule, adapted_rule, score_against
from speakerverify.speakers.domain import (
    MIN_COHORT,
    MIN_WHITENING,
    cohort_top_k,
    domain_scores,
    estimate_domain,
    fit_whitening,
    ledoit_wolf_shrinkage,
    snorm_scores,
    split_by_similarity,
)
from speakerverify.speakers.store import SpeakerStore, StoreError


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_snorm_scores_match_a_brute_force_loop(rng):
    cohort = unit(rng.standard_normal((40, 6)))
    enroll = unit(rng.standard_normal((3, 6)))
    test = unit(rng.standard_normal(6))
    scores = enroll @ test
    got = snorm_scores(scores, enroll, test, cohort, top_k=7)
    for i in range(3):
        e_top = sorted((float(enroll[i] @ c) for c in cohort), reverse=True)[:7]
        t_top = sorted((float(test @ c) for c in cohort), reverse=True)[:7]
        expected = 0.5 * (
            (scores[i] - np.mean(e_top)) / np.std(e_top)
            + (scores[i] - np.mean(t_top)) / np.std(t_top)
        )
        assert got[i] == pytest.approx(expected, rel=1e-4)


def domain_embeddings(rng, num_speakers, per_speaker, offset, dim=64):
    """Embeddings of a domain: a large common offset (the channel / language every recording
    of the domain shares), a speaker vector and per-utterance noise."""
    speakers = rng.standard_normal((num_speakers, dim))
    noise = 0.5 * rng.standard_normal((num_speakers, per_speaker, dim))
    return unit(offset + speakers[:, None, :] + noise)


@pytest.mark.parametrize("whiten, cohort_size", [(False, 300), (True, 150)])  # 2 folds of 150
def test_adapted_rule_holds_its_false_accept_rate_where_raw_cosine_accepts_everyone(
    rng, whiten, cohort_size
):
    # Known answer: in this domain any two recordings score high raw cosine (the offset), so a
    # threshold fitted elsewhere accepts impostors; the adapted rule, estimated from unlabelled
    # recordings of other speakers of the domain, must reject them and accept genuine trials.
    dim = 64
    offset = 6.0 * unit(rng.standard_normal(dim))
    pool = domain_embeddings(rng, 30, 10, offset).reshape(-1, dim)  # unlabelled, 30 speakers
    people = domain_embeddings(rng, 40, 3, offset)  # disjoint from the pool
    domain = estimate_domain(pool, "domain/", whiten=whiten)
    assert domain.has_rule and domain.cohort_size == 300 and domain.whitened == whiten
    assert [fold.cohort.shape for fold in domain.folds] == [(cohort_size, dim)] * (1 + whiten)
    assert domain.top_k == cohort_top_k(cohort_size) == cohort_size // 5
    assert domain.threshold == pytest.approx(2.3263, abs=1e-4) and domain.false_accept == 0.01
    assert domain.pairs_above < 0.15  # same-speaker pool pairs pass, others do not
    models = unit(people[:, :2].mean(axis=1))  # enrolled with two recordings each
    tests = people[:, 2]
    rule = DecisionRule("calibration", 0.0, "llr", default=True).for_domain(domain)
    assert rule.source == "adapted" and rule.scale == "snorm"
    genuine = [
        score_against(rule, domain, models[i : i + 1], tests[i]).accepted[0] for i in range(40)
    ]
    impostor = [
        score_against(rule, domain, models[j : j + 1], tests[i]).accepted[0]
        for i in range(40)
        for j in range(40)
        if i != j
    ]
    assert np.mean(genuine) >= 0.95
    # nominal 1 %: two-file models score a little wider than the single files the test side
    # is normalised with, so it is approximate (2.3 % here)
    assert np.mean(impostor) <= 0.03
    raw = np.array([models[j] @ tests[i] for i in range(40) for j in range(40) if i != j])
    assert np.mean(raw >= np.quantile(models @ pool[:50].T, 0.5)) > 0.4  # raw cosine fails


def test_explicit_rules_are_not_replaced_by_the_adapted_rule(rng):
    domain = estimate_domain(unit(rng.standard_normal((MIN_COHORT, 8))), "d")
    explicit = DecisionRule("threshold", 0.3, "score", score_threshold=0.3)
    assert explicit.for_domain(domain) is explicit
    default = DecisionRule("calibration", 0.0, "llr", default=True)
    assert default.for_domain(None) is default
    adapted = default.for_domain(domain)
    assert "S-norm against 20 in-domain files (top 10)" in adapted.describe()
    with pytest.raises(ValueError, match="score_against"):
        adapted.accept(np.array([0.5]))


def test_estimate_domain_refuses_too_few_files_and_non_finite_values(rng):
    with pytest.raises(ValueError, match="at least 20 in-domain files, got 19"):
        estimate_domain(rng.standard_normal((19, 8)), "d")
    bad = rng.standard_normal((25, 8))
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        estimate_domain(bad, "d")


def test_store_round_trips_the_adapted_rule_and_names_corrupt_values(tmp_path, rng):
    domain = estimate_domain(rng.standard_normal((30, 8)) + 2.0, "/audio/domain")
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        saved = store.set_domain(domain, fingerprint=FP)
        assert saved.has_rule and saved.source == "/audio/domain"
        np.testing.assert_array_equal(saved.folds[0].cohort, domain.folds[0].cohort)
        np.testing.assert_array_equal(saved.mean, domain.mean)
        assert (saved.top_k, saved.threshold, saved.num_embeddings) == (10, domain.threshold, 30)
        # a mean saved without a rule replaces the whole earlier domain, rule included
        store.set_domain_mean(np.ones(8), 5, "x", fingerprint=FP)
        assert not store.domain_mean.has_rule and store.domain_mean.folds == ()
        store.set_domain(domain, fingerprint=FP)
        store._conn.execute("UPDATE meta SET value = x'0102' WHERE key = 'domain_cohort'")
        store._conn.commit()
        with pytest.raises(StoreError, match=r"corrupt store \(meta row domain_cohort\)"):
            _ = store.domain_mean


def test_ledoit_wolf_shrinkage_matches_scikit_learn(rng):
    from sklearn.covariance import ledoit_wolf_shrinkage as reference

    for num, dim in ((50, 300), (300, 40), (30, 8)):
        x = rng.standard_normal((num, dim)) * np.linspace(0.1, 3.0, dim)
        x -= x.mean(axis=0)
        assert ledoit_wolf_shrinkage(x) == pytest.approx(reference(x, assume_centered=True))


@pytest.mark.parametrize("num", [300, 30])  # full rank, and fewer rows than dimensions
def test_fit_whitening_is_the_inverse_square_root_of_the_shrunk_covariance(rng, num):
    dim = 40
    x = rng.standard_normal((num, dim)) * np.linspace(0.1, 3.0, dim)
    x -= x.mean(axis=0)
    basis, scale, shrinkage = fit_whitening(x)
    np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-10)
    assert len(basis) == min(num - 1, dim) and np.all((scale >= 0) & (scale < 1))
    covariance = x.T @ x / num
    floor = shrinkage * np.trace(covariance) / dim
    shrunk = (1 - shrinkage) * covariance + floor * np.eye(dim)
    values, vectors = np.linalg.eigh(shrunk)
    reference = vectors @ np.diag(values**-0.5) @ vectors.T
    got = (np.eye(dim) - basis.T @ np.diag(scale) @ basis) / np.sqrt(floor)
    np.testing.assert_allclose(got, reference, rtol=1e-8, atol=1e-8)


def test_split_by_similarity_keeps_each_speakers_files_on_one_side(rng):
    dim, speakers, per = 64, 30, 10
    offset = 6.0 * unit(rng.standard_normal(dim))
    pool = domain_embeddings(rng, speakers, per, offset, dim).reshape(-1, dim)
    order = rng.permutation(len(pool))  # the grouping must not lean on the file order
    first, second = split_by_similarity(pool[order] - pool.mean(axis=0))
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(len(pool)))
    speaker = order // per
    assert not set(speaker[first]) & set(speaker[second])
    assert abs(len(first) - len(second)) <= 2 * per


def test_whitening_separates_speakers_a_loud_nuisance_hides_from_centred_scores(rng):
    # Known answer: recordings of the domain vary most along a few directions that have nothing
    # to do with the speaker (level, tilt, the words), four times the speakers' spread. Centred
    # cosine is dominated by them; whitened cosine, estimated without labels from other
    # speakers of the domain, takes their weight off and separates the speakers.
    dim = 64
    nuisance = np.linalg.qr(rng.standard_normal((dim, 4)))[0].T  # (4, dim) orthonormal

    def recordings(num_speakers, per_speaker):
        speakers = rng.standard_normal((num_speakers, 1, dim))
        loud = 4.0 * rng.standard_normal((num_speakers, per_speaker, 4)) @ nuisance
        return unit(3.0 + speakers + 0.3 * rng.standard_normal(loud.shape) + loud)

    pool = recordings(40, 8).reshape(-1, dim)
    people = recordings(30, 3)
    models, tests = unit(people[:, :2].mean(axis=1)), people[:, 2]
    rates = {}
    for whiten in (False, True):
        domain = estimate_domain(pool, "d", whiten=whiten)
        rule = DecisionRule("calibration", 0.0, "llr", default=True).for_domain(domain)
        genuine = [score_against(rule, domain, models[i], tests[i]).accepted[0] for i in range(30)]
        impostor = [
            score_against(rule, domain, models[j], tests[i]).accepted[0]
            for i in range(30)
            for j in range(30)
            if i != j
        ]
        rates[whiten] = (1 - np.mean(genuine), np.mean(impostor))
    assert rates[True][0] <= 0.05 and rates[True][1] <= 0.03
    assert rates[False][0] >= 0.3  # centring alone rejects many genuine claims here
    whitened = estimate_domain(pool, "d")
    first, second = whitened.folds  # each half whitens the other, its cohort
    assert first.whitening_files == len(second.cohort) and second.whitening_files == len(
        first.cohort
    )
    assert first.whitening_files + second.whitening_files == len(pool)
    assert "whitened in two halves of" in adapted_rule(whitened).describe()


def test_whitening_needs_enough_files_and_can_be_turned_off(rng):
    few = unit(rng.standard_normal((MIN_WHITENING - 1, 8)))
    assert not estimate_domain(few, "d").whitened
    many = unit(rng.standard_normal((MIN_WHITENING, 8)))
    whitened = estimate_domain(many, "d")
    assert whitened.whitened and len(whitened.folds) == 2
    described = adapted_rule(whitened).to_json()["adapted"]["whitening"]
    assert [fold["files"] for fold in described] == [
        len(whitened.folds[1].cohort),
        len(whitened.folds[0].cohort),
    ]
    off = estimate_domain(many, "d", whiten=False)
    assert not off.whitened and off.cohort_size == MIN_WHITENING and len(off.folds) == 1
    assert adapted_rule(off).to_json()["adapted"]["whitening"] is None


def test_store_round_trips_the_whitening_and_names_corrupt_rows(tmp_path, rng):
    domain = estimate_domain(rng.standard_normal((120, 8)) + 2.0, "/audio/domain")
    enroll, test = unit(rng.standard_normal((3, 8))), unit(rng.standard_normal(8))
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        saved = store.set_domain(domain, fingerprint=FP)
        assert len(saved.folds) == 2
        for got, want in zip(saved.folds, domain.folds, strict=True):
            for field in ("cohort", "whitening", "whitening_scale"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
            assert (got.shrinkage, got.whitening_files) == (want.shrinkage, want.whitening_files)
        for got, want in zip(
            domain_scores(saved, enroll, test), domain_scores(domain, enroll, test), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12)
        for key, value in (
            ("domain_whitening", "x'0102'"),
            ("domain_whitening_scale_1", "x'0000c07f'"),  # one NaN: the wrong length, too
            ("domain_shrinkage", "0"),
            ("domain_whitening_files_1", "'many'"),
            ("domain_cohort_1", "x'01'"),
        ):
            store.set_domain(domain, fingerprint=FP)
            store._conn.execute(f"UPDATE meta SET value = {value} WHERE key = '{key}'")
            store._conn.commit()
            with pytest.raises(StoreError, match=rf"corrupt store \(meta row {key}\)"):
                _ = store.domain_mean


def test_split_by_similarity_stays_balanced_around_a_dense_bulk(rng):
    # one tight crowd of 90 files and 10 far-off ones: groups of the crowd must be cut finer
    # rather than leave the outliers a half of their own
    dim = 32
    bulk = unit(5.0 + 0.05 * rng.standard_normal((90, dim)))
    outliers = unit(rng.standard_normal((10, dim)) * 10.0)
    rows = np.concatenate([bulk, outliers])
    first, second = split_by_similarity(rows - rows.mean(axis=0))
    assert min(len(first), len(second)) >= 40
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(100))
