"""Scoring: cosine against brute force, S-Norm/AS-Norm against hand computations, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speakerverify.backend.calibration import Calibration, CalibrationError, cllr, fit_calibration
from speakerverify.backend.embedding_dir import EmbeddingStore, load_embeddings, save_embeddings
from speakerverify.backend.metrics import eer
from speakerverify.backend.score_files import (
    ScoresError,
    read_scored_trials,
    read_scores,
    trial_labels,
    write_scores,
)
from speakerverify.backend.scoring import cohort_means, cosine_scores, score_trials
from speakerverify.backend.scoring_steps import calibrate_scores, score_trial_list
from speakerverify.data import Trials


def make_store(rng, num_speakers=6, per_speaker=4, dim=8):
    centres = rng.standard_normal((num_speakers, dim))
    ids, rows, speakers = [], [], []
    for s in range(num_speakers):
        for u in range(per_speaker):
            ids.append(f"id{s:05d}/sess/{u:05d}")
            rows.append(centres[s] + 0.7 * rng.standard_normal(dim))
            speakers.append(s)
    return EmbeddingStore(ids, np.asarray(rows, np.float32), {}), np.asarray(speakers)


def make_trials(rng, store, speakers, num_trials=200, unique=False):
    n = len(store)
    enroll = rng.integers(0, n, num_trials)
    test = rng.integers(0, n, num_trials)
    if unique:  # as a trial list on disk must be: each pair once
        keep = np.sort(np.unique(enroll * n + test, return_index=True)[1])
        enroll, test = enroll[keep], test[keep]
    labels = (speakers[enroll] == speakers[test]).astype(np.int8)
    ids = store.utt_ids
    return Trials([ids[i] for i in enroll], [ids[i] for i in test], labels, "t")


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_cosine_scores_match_brute_force(rng):
    store, speakers = make_store(rng)
    trials = make_trials(rng, store, speakers)
    scores = score_trials(store, trials)
    expected = [
        float(unit(store.lookup([e])[0]) @ unit(store.lookup([t])[0]))
        for e, t in zip(trials.enroll, trials.test, strict=True)
    ]
    assert scores.dtype == np.float32 and scores.shape == (200,)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    np.testing.assert_allclose(
        cosine_scores(store.lookup(trials.enroll), store.lookup(trials.test)), scores, atol=1e-6
    )


def test_mean_subtraction(rng):
    store, speakers = make_store(rng)
    trials = make_trials(rng, store, speakers)
    mean = np.asarray(store.embeddings).mean(axis=0)
    centred = EmbeddingStore(store.utt_ids, np.asarray(store.embeddings) - mean)
    np.testing.assert_allclose(
        score_trials(store, trials, mean=mean), score_trials(centred, trials), atol=1e-6
    )


def test_snorm_equals_hand_computation(rng):
    store, speakers = make_store(rng)
    trials = make_trials(rng, store, speakers, num_trials=30)
    cohort = rng.standard_normal((5, 8))
    got = score_trials(store, trials, cohort=cohort, norm="snorm")
    for i, (e, t) in enumerate(zip(trials.enroll, trials.test, strict=True)):
        ve, vt = unit(store.lookup([e])[0].astype(np.float64)), unit(store.lookup([t])[0])
        s = ve @ vt
        ce, ct = unit(cohort) @ ve, unit(cohort) @ vt
        expected = 0.5 * ((s - ce.mean()) / ce.std() + (s - ct.mean()) / ct.std())
        assert got[i] == pytest.approx(expected, abs=1e-4)


def test_asnorm_full_cohort_equals_snorm_and_top_n_matches_sorting(rng):
    store, speakers = make_store(rng)
    trials = make_trials(rng, store, speakers, num_trials=40)
    cohort = rng.standard_normal((7, 8))
    snorm = score_trials(store, trials, cohort=cohort, norm="snorm")
    np.testing.assert_allclose(
        score_trials(store, trials, cohort=cohort, norm="asnorm", top_n=7), snorm, atol=1e-6
    )
    np.testing.assert_allclose(
        score_trials(store, trials, cohort=cohort, norm="asnorm", top_n=100), snorm, atol=1e-6
    )
    top3 = score_trials(store, trials, cohort=cohort, norm="asnorm", top_n=3)
    e, t = trials.enroll[0], trials.test[0]
    ve, vt = unit(store.lookup([e])[0].astype(np.float64)), unit(store.lookup([t])[0])
    ce, ct = np.sort(unit(cohort) @ ve)[-3:], np.sort(unit(cohort) @ vt)[-3:]
    s = ve @ vt
    expected = 0.5 * ((s - ce.mean()) / ce.std() + (s - ct.mean()) / ct.std())
    assert top3[0] == pytest.approx(expected, abs=1e-4)
    assert not np.allclose(top3, snorm)


def test_bad_arguments(rng):
    store, speakers = make_store(rng)
    trials = make_trials(rng, store, speakers, num_trials=5)
    with pytest.raises(ValueError, match="valid: none, snorm, asnorm"):
        score_trials(store, trials, norm="znorm")
    with pytest.raises(ValueError, match="cohort"):
        score_trials(store, trials, norm="snorm")
    missing = Trials(["nope/a/1"], [store.utt_ids[0]], np.ones(1, np.int8), "x")
    with pytest.raises(KeyError, match="1 utterance"):
        score_trials(store, missing)


def test_cohort_means_per_speaker(rng):
    store, _ = make_store(rng, num_speakers=3, per_speaker=2)
    cohort = cohort_means(store)
    assert cohort.shape == (3, 8)
    expected = unit(unit(store.embeddings[:2]).sum(axis=0))
    np.testing.assert_allclose(cohort[0], expected, atol=1e-6)
    by_utt = cohort_means(store, {u: u for u in store.utt_ids})
    assert by_utt.shape == (6, 8)


def test_score_file_round_trip_and_alignment(tmp_path, rng):
    store, speakers = make_store(rng)
    trials = make_trials(rng, store, speakers, num_trials=50)
    scores = score_trials(store, trials)
    path = tmp_path / "scores.txt"
    write_scores(path, trials.enroll, trials.test, scores)
    enroll, test, values = read_scores(path)
    assert (enroll, test) == (trials.enroll, trials.test)
    assert np.array_equal(values.astype(np.float32), scores)  # 9 digits round-trip float32
    order = rng.permutation(50)
    shuffled = trial_labels(
        trials, [enroll[i] for i in order], [test[i] for i in order], values[order]
    )
    np.testing.assert_array_equal(shuffled[0], values)
    with pytest.raises(ScoresError, match="1 trial"):
        trial_labels(trials, enroll[1:], test[1:], values[1:], path="s.txt")
    path.write_text("a b 0.5\nc d\n")
    with pytest.raises(ScoresError, match=r"scores.txt:2:"):
        read_scores(path)


def test_store_round_trip(tmp_path, rng):
    store, _ = make_store(rng)
    save_embeddings(tmp_path / "s", store.utt_ids, store.embeddings, {"model_fingerprint": "ab"})
    loaded = load_embeddings(tmp_path / "s")
    assert isinstance(loaded.embeddings, np.memmap)
    assert loaded.utt_ids == store.utt_ids and loaded.meta["model_fingerprint"] == "ab"
    np.testing.assert_array_equal(loaded.lookup(store.utt_ids[::-1]), store.embeddings[::-1])


def gaussian_scores(rng, n, d_prime):
    labels = rng.random(n) < 0.5
    # raw scores with an arbitrary affine distortion (cosine-like range)
    x = rng.standard_normal(n) + d_prime * labels
    return 0.05 * x + 0.3, labels


def test_calibration_lowers_cllr_on_held_out_trials(rng, tmp_path):
    dev_scores, dev_labels = gaussian_scores(rng, 4000, 2.0)
    eval_scores, eval_labels = gaussian_scores(rng, 4000, 2.0)
    calibration = fit_calibration(dev_scores, dev_labels, model_fingerprint="f00d")
    raw = cllr(eval_scores, eval_labels)
    calibrated = cllr(calibration.apply(eval_scores), eval_labels)
    assert calibrated < raw
    assert calibrated < 0.65  # minCllr for d'=2 is ~0.6
    # the true LLR of N(d',1) vs N(0,1) at x is d' x - d'^2/2; in raw units x = (s - 0.3) / 0.05
    assert calibration.slope == pytest.approx(2.0 / 0.05, rel=0.1)
    assert calibration.apply(np.array([0.35]))[0] == pytest.approx(0.0, abs=0.15)
    # score_threshold inverts apply at the Bayes threshold
    threshold = calibration.score_threshold(0.01)
    assert calibration.apply(np.array([threshold]))[0] == pytest.approx(math.log(99))
    path = tmp_path / "calib.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration
    path.write_text('{"slope": 1.0, "offset": 0.0, "colour": 3}')
    with pytest.raises(CalibrationError, match="unknown keys"):
        Calibration.load(path)
    with pytest.raises(CalibrationError, match="not positive"):
        Calibration(-1.0, 0.0).score_threshold(0.5)


def test_two_gaussian_scores_give_phi_eer_and_calibration_keeps_it(rng):
    # targets ~ N(d', 1), non-targets ~ N(0, 1) (in an affine "cosine" scale): EER = Phi(-d'/2);
    # calibration is monotone, so EER is unchanged by it
    scores, labels = gaussian_scores(rng, 100_000, 2.0)
    value = eer(scores, labels)[0]
    assert value == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)), abs=0.006)
    calibration = fit_calibration(scores, labels)
    assert eer(calibration.apply(scores), labels)[0] == pytest.approx(value, abs=1e-12)


def test_score_and_calibrate_are_one_call_each(tmp_path, rng):
    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.data import write_trials
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.models import build_model

    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    model_path = tmp_path / "model.pt"
    fingerprint = save_checkpoint(
        model_path, model_name="xvector", model_args=args,
        model=build_model("xvector", **args).eval(), features=FbankConfig().to_dict(),
    )  # fmt: skip
    store, speakers = make_store(rng, num_speakers=8, per_speaker=6)
    trials = make_trials(rng, store, speakers, num_trials=300, unique=True)
    meta = {"model_fingerprint": fingerprint}
    save_embeddings(tmp_path / "store", store.utt_ids, store.embeddings, meta)
    write_trials(tmp_path / "trials.txt", trials, format="kaldi")
    trials_path, store_path = tmp_path / "trials.txt", tmp_path / "store"
    scores_path, calibration_path = tmp_path / "scores.txt", tmp_path / "cal.json"
    num = score_trial_list(trials_path, store_path, scores_path, mean_store=store_path)
    assert num == len(trials)
    mean = store.embeddings.astype(np.float64).mean(axis=0).astype(np.float32)
    expected = score_trials(store, trials, mean=mean)
    np.testing.assert_allclose(read_scores(scores_path)[2], expected, atol=1e-6)
    _, labels = read_scored_trials(trials_path, scores_path)
    np.testing.assert_array_equal(labels, trials.labels)

    report = calibrate_scores(trials_path, scores_path, calibration_path, model_path=model_path)
    assert report.calibration.model_fingerprint == fingerprint
    assert Calibration.load(calibration_path) == report.calibration
    assert report.num_trials == len(trials) and report.cllr < 1.0
    assert report.min_cllr <= report.cllr + 1e-9

    llr_path = tmp_path / "llr.txt"
    score_trial_list(trials_path, store_path, llr_path, mean_store=store_path,
                     calibration_path=calibration_path)  # fmt: skip
    np.testing.assert_allclose(
        read_scores(llr_path)[2], report.calibration.apply(expected), atol=1e-5
    )
    with pytest.raises(CalibrationError, match="fitted on none scores, but --norm is snorm"):
        score_trial_list(trials_path, store_path, llr_path, norm="snorm", cohort_store=store_path,
                         calibration_path=calibration_path)  # fmt: skip


def test_one_normalization_with_one_zero_vector_rule():
    from speakerverify.backend.scoring import l2_normalize

    rows = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(l2_normalize(rows), [[0.6, 0.8], [0.0, 0.0]])
    assert l2_normalize(rows).dtype == np.float64
    assert l2_normalize(rows.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [0.0, 1.0])
    np.testing.assert_allclose(l2_normalize(rows, mean=np.array([3.0, 0.0])), [[0, 1], [-1, 0]])
    assert cosine_scores(rows, np.array([1.0, 1.0]))[1] == 0.0  # a zero vector scores 0


def test_the_store_still_refuses_a_zero_embedding(tmp_path):
    from speakerverify.speakers.store import SpeakerStore

    with (
        SpeakerStore(tmp_path / "s.db", create=True) as store,
        pytest.raises(ValueError, match="zero or non-finite norm"),
    ):
        store.add("ann", np.zeros((1, 4)), speech_seconds=3.0, fingerprint="f")
