"""Tests for speakerverify.speakers.verification with a fake (spectral-envelope) embedder: decision
rules, centred scoring, enroll/verify/identify/adapt over real audio files and a real store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from speaker_helpers import FP, SpectrumEmbedder, store_rows, write_domain_audio

from speakerverify.backend.calibration import CalibrationError, default_calibration_path
from speakerverify.backend.scoring import cosine_scores
from speakerverify.backend.speaker_model import SpeakerModel, VerificationError, embed_utterance
from speakerverify.frontend.audio import AudioError
from speakerverify.speakers.decision import (
    DecisionRule,
    bayes_llr_threshold,
    resolve_decision_rule,
)
from speakerverify.speakers.store import SpeakerStore, StoreError, UnknownSpeakerError
from speakerverify.speakers.verification import (
    adapt,
    enroll_speaker,
    identify,
    verify_against,
    verify_pair,
)
from speakerverify.testing import speech_like, write_voices


class LinearCalibration:
    def __init__(self, slope=10.0, offset=-5.0, model_fingerprint=FP):
        self.slope, self.offset, self.model_fingerprint = slope, offset, model_fingerprint

    def apply(self, scores):
        return self.slope * np.asarray(scores) + self.offset

    def score_threshold(self, p_target):
        return (bayes_llr_threshold(p_target) - self.offset) / self.slope


def fake_model(tmp_path) -> SpeakerModel:
    return SpeakerModel(SpectrumEmbedder(), FP, 16000, str(tmp_path / "model.pt"))


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """Three speakers x three 3-second files, plus near-silence and an 8 kHz file."""
    root = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(7)
    names = ["ann", "bo", "cy"]
    files, speakers = write_voices(root, names, rng, per_speaker=3, seconds=3.0, seed_stride=100)
    path = root / "ann_8k.wav"
    sf.write(path, speech_like(3.0, 8000, speakers["ann"], seed=99), 8000)
    files["ann_8k"] = path
    quiet = 1e-5 * np.random.default_rng(0).standard_normal(32000)
    sf.write(root / "quiet.wav", quiet.astype(np.float32), 16000)
    files["quiet"] = root / "quiet.wav"
    return files


# -- decision rules --------------------------------------------------------------------------


def test_bayes_threshold_is_minus_logit():
    for p in (0.5, 0.01, 0.9):
        assert bayes_llr_threshold(p) == pytest.approx(-math.log(p / (1 - p)))


def test_calibration_rule_accepts_at_llr_zero_for_p_half():
    cal = LinearCalibration(slope=10.0, offset=-5.0)
    rule = DecisionRule(
        "calibration",
        0.0,
        "llr",
        p_target=0.5,
        calibration=cal,
        calibration_path="c.json",
        score_threshold=cal.score_threshold(0.5),
    )
    scores = np.array([0.2, 0.4999, 0.5, 0.8])
    np.testing.assert_array_equal(rule.accept(scores), [False, False, True, True])
    np.testing.assert_allclose(rule.llr(scores), 10 * scores - 5)
    assert "p_target=0.5" in rule.describe() and "LLR >= 0.000" in rule.describe()
    assert rule.to_json()["source"] == "calibration" and rule.to_json()["score_threshold"] == 0.5


def test_threshold_rule_uses_raw_score_and_says_so():
    rule = DecisionRule("threshold", 0.3, "score", score_threshold=0.3)
    np.testing.assert_array_equal(rule.accept(np.array([0.29, 0.3, 0.9])), [False, True, True])
    assert rule.llr(np.array([0.5])) is None
    assert "--threshold" in rule.describe()


def test_no_calibration_and_no_threshold_is_a_clear_error(tmp_path):
    with pytest.raises(VerificationError, match=r"--calibration FILE.*--threshold"):
        resolve_decision_rule(fake_model(tmp_path))


def test_threshold_without_calibration(tmp_path):
    rule = resolve_decision_rule(fake_model(tmp_path), threshold=0.25)
    assert (rule.source, rule.scale, rule.threshold, rule.calibration) == (
        "threshold",
        "score",
        0.25,
        None,
    )


@pytest.mark.parametrize("p_target", [0.0, 1.0, -0.1, 2.0])
def test_bad_p_target(tmp_path, p_target):
    with pytest.raises(VerificationError, match="p-target"):
        resolve_decision_rule(fake_model(tmp_path), threshold=0.1, p_target=p_target)


def test_missing_explicit_calibration_file(tmp_path):
    with pytest.raises(VerificationError, match=r"nope.json: calibration file not found"):
        resolve_decision_rule(fake_model(tmp_path), calibration_path=tmp_path / "nope.json")


def test_default_calibration_path_sits_next_to_checkpoint(tmp_path):
    assert default_calibration_path(tmp_path / "exp" / "best.pt") == (
        tmp_path / "exp" / "best.calibration.json"
    )


# -- scoring ---------------------------------------------------------------------------------


def test_centred_cosine_matches_hand_computation(rng):
    enroll, test, mean = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal(6)
    got = cosine_scores(enroll, test, mean)
    for i in range(4):
        a, b = enroll[i] - mean, test - mean
        assert got[i] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert not np.allclose(got, cosine_scores(enroll, test))


# -- operations on real files ----------------------------------------------------------------


def test_embed_utterance_counts_speech_and_warns_on_8k(tmp_path, voices):
    model = fake_model(tmp_path)
    utt = embed_utterance(model, voices["ann0"])
    assert 1.0 < utt.speech_seconds <= 3.0 and utt.sample_rate == 16000 and not utt.warnings
    assert np.linalg.norm(utt.embedding) == pytest.approx(1.0, abs=1e-5)
    narrow = embed_utterance(model, voices["ann_8k"])
    # Regression (issue 24): the warning said the model was trained on wideband speech, but half
    # of the bundled model's training audio went through a narrowband channel.
    assert narrow.sample_rate == 8000 and narrow.warnings == (
        f"{voices['ann_8k']}: 8000 Hz audio is upsampled to 16000 Hz; it has nothing above "
        "4 kHz, so accuracy may be lower than on wideband speech",
    )
    assert "trained" not in narrow.warnings[0]


def test_silence_only_and_too_little_speech(tmp_path, voices):
    model = fake_model(tmp_path)
    with pytest.raises(VerificationError, match=r"quiet.wav: no speech found"):
        embed_utterance(model, voices["quiet"])
    with pytest.raises(VerificationError, match=r"ann0.wav: only .* need at least 10 s"):
        embed_utterance(model, voices["ann0"], min_speech_seconds=10.0)


def enroll_all(store, model, voices):
    for name in ("ann", "bo", "cy"):
        enroll_speaker(store, model, name, [voices[f"{name}0"], voices[f"{name}1"]])


def test_enroll_then_verify_and_identify(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    enroll_all(store, model, voices)
    with SpeakerStore(store) as opened:
        assert [r.num_utterances for r in opened.speakers()] == [2, 2, 2]
        assert opened.fingerprint == FP
    same = verify_against(
        store, model, DecisionRule("threshold", 0.0, "score"), "ann", voices["ann2"]
    )
    other = verify_against(
        store, model, DecisionRule("threshold", 0.0, "score"), "ann", voices["bo2"]
    )
    assert same.score > other.score
    threshold = (same.score + other.score) / 2
    rule = DecisionRule("threshold", threshold, "score")
    assert verify_against(store, model, rule, "ann", voices["ann2"]).accepted
    assert not verify_against(store, model, rule, "ann", voices["bo2"]).accepted
    result = identify(
        store, model, DecisionRule("threshold", -1.0, "score"), voices["cy2"], top_k=2
    )
    assert result.identified == "cy" and [c["rank"] for c in result.candidates] == [1, 2]
    assert result.candidates[0]["score"] >= result.candidates[1]["score"]
    unknown = identify(store, model, DecisionRule("threshold", 1.01, "score"), voices["cy2"])
    assert unknown.identified is None and unknown.to_json()["decision"] == "unknown"
    assert len(unknown.candidates) == 3


def test_enroll_more_files_updates_counts(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    first = enroll_speaker(store, model, "ann", [voices["ann0"]], min_speech_seconds=1.0)
    second = enroll_speaker(store, model, "ann", [voices["ann1"], voices["ann2"]])
    assert first.speaker["num_utterances"] == 1 and second.speaker["num_utterances"] == 3
    assert second.speaker["speech_seconds"] == pytest.approx(
        first.speaker["speech_seconds"] + second.to_json()["added_speech_seconds"], abs=1e-2
    )
    replaced = enroll_speaker(
        store, model, "ann", [voices["ann0"]], min_speech_seconds=1.0, replace=True
    )
    assert replaced.speaker["num_utterances"] == 1


def test_failed_enroll_leaves_store_as_it_was(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    with pytest.raises(VerificationError, match="in total"):
        enroll_speaker(store, model, "ann", [voices["ann0"]], min_speech_seconds=30)
    assert not store.exists()  # a store that did not exist is not created by a failure
    enroll_speaker(store, model, "ann", [voices["ann0"], voices["ann1"]])
    before = store_rows(store)
    bad = [
        ([voices["ann2"], tmp_path / "missing.wav"], AudioError, "missing.wav: file not found"),
        ([voices["quiet"]], VerificationError, "quiet.wav: no speech"),
        ([tmp_path], AudioError, "is a directory"),
    ]
    for paths, error, message in bad:
        with pytest.raises(error, match=message):
            enroll_speaker(store, model, "ann", paths)
    with pytest.raises(VerificationError, match="control character"):
        enroll_speaker(store, model, "a\x07b", [voices["ann2"]])
    other = SpeakerModel(SpectrumEmbedder(), "0000000000000000", 16000, "other.pt")
    with pytest.raises(StoreError, match=f"{FP}.*0000000000000000"):
        enroll_speaker(store, other, "ann", [voices["ann2"]])
    assert store_rows(store) == before


def test_unknown_speaker(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    enroll_speaker(store, model, "ann", [voices["ann0"], voices["ann1"]])
    with pytest.raises(UnknownSpeakerError, match="'zed'"):
        verify_against(store, model, DecisionRule("threshold", 0.0, "score"), "zed", voices["ann2"])


def test_verify_pair_is_symmetric(tmp_path, voices):
    model, rule = fake_model(tmp_path), DecisionRule("threshold", 0.0, "score")
    ab = verify_pair(model, rule, voices["ann0"], voices["bo0"])
    ba = verify_pair(model, rule, voices["bo0"], voices["ann0"])
    assert ab.score == pytest.approx(ba.score) and ab.to_json()["mode"] == "pair"


def test_adapt_saves_mean_and_verify_scores_centred(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    enroll_all(store, model, voices)
    domain_dir = tmp_path / "domain"
    files = write_domain_audio(domain_dir / "sub")
    (domain_dir / "notes.txt").write_text("not audio, ignored by extension")
    result = adapt(store, model=model, audio_dir=domain_dir)
    assert result.num_embeddings == 24 and "only 24 files" in result.warnings[0]
    expected_mean = np.mean([embed_utterance(model, f).embedding for f in files], axis=0)
    with SpeakerStore(store) as opened:
        np.testing.assert_allclose(opened.domain_mean.mean, expected_mean, atol=1e-6)
        ann = opened.get("ann").embedding
    rule = DecisionRule("threshold", 0.0, "score")
    verdict = verify_against(store, model, rule, "ann", voices["cy2"])
    test = embed_utterance(model, voices["cy2"]).embedding
    assert verdict.score == pytest.approx(
        float(cosine_scores(ann, test, expected_mean)[0]), abs=1e-5
    )
    assert verdict.to_json()["score_kind"] == "centred_cosine"
    assert verdict.to_json()["centring"]["num_embeddings"] == 24


def test_adapt_bad_inputs_leave_store_alone(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    enroll_speaker(store, model, "ann", [voices["ann0"], voices["ann1"]])
    before = store_rows(store)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VerificationError, match="no audio files"):
        adapt(store, model=model, audio_dir=tmp_path / "empty")
    with pytest.raises(VerificationError, match="no such directory"):
        adapt(store, model=model, audio_dir=tmp_path / "missing")
    write_domain_audio(tmp_path / "mixed")
    (tmp_path / "mixed" / "b.wav").write_bytes(b"not a wav at all")
    with pytest.raises(AudioError, match=r"b.wav"):
        adapt(store, model=model, audio_dir=tmp_path / "mixed")
    (tmp_path / "few").mkdir()
    for key in ("ann2", "bo2", "cy2"):
        (tmp_path / "few" / f"{key}.wav").write_bytes(voices[key].read_bytes())
    with pytest.raises(VerificationError, match=r"few: only 3 files; adapt needs at least 20"):
        adapt(store, model=model, audio_dir=tmp_path / "few")
    assert store_rows(store) == before


# -- real calibration files (speakerverify.backend.calibration.Calibration) --------------------


def write_calibration(path, **fields):
    from speakerverify.backend.calibration import Calibration

    values = {"slope": 10.0, "offset": -5.0, "model_fingerprint": FP, **fields}
    Calibration(**values).save(path)
    return path


def test_default_calibration_next_to_checkpoint_gives_bayes_decision(tmp_path):
    model = fake_model(tmp_path)
    write_calibration(default_calibration_path(model.path))
    rule = resolve_decision_rule(model)
    assert (rule.source, rule.scale, rule.threshold) == ("calibration", "llr", 0.0)
    assert rule.score_threshold == pytest.approx(0.5)
    np.testing.assert_array_equal(rule.accept(np.array([0.49, 0.51])), [False, True])
    strict = resolve_decision_rule(model, p_target=0.01)
    assert strict.threshold == pytest.approx(math.log(99))
    assert strict.score_threshold == pytest.approx((math.log(99) + 5) / 10)
    explicit = resolve_decision_rule(model, threshold=0.3)
    assert explicit.source == "threshold" and explicit.llr(np.array([0.3]))[0] == pytest.approx(-2)


def test_the_calibrations_operating_point_is_the_default_and_p_target_overrides_it(tmp_path):
    model = fake_model(tmp_path)
    write_calibration(
        default_calibration_path(model.path), default_p_target=0.01, operating_point="synthetic"
    )
    rule = resolve_decision_rule(model)
    assert rule.default and rule.p_target == 0.01 and rule.operating_point == "synthetic"
    assert rule.score_threshold == pytest.approx((math.log(99) + 5) / 10)
    assert "p_target=0.01, its default operating point" in rule.describe()
    asked = resolve_decision_rule(model, p_target=0.5)
    assert not asked.default and asked.score_threshold == pytest.approx(0.5)
    bad = tmp_path / "bad.json"
    with pytest.raises(CalibrationError, match="'default_p_target' must be a number in"):
        write_calibration(bad, default_p_target=1.5)  # refused on save
    good = json.loads(default_calibration_path(model.path).read_text())
    bad.write_text(json.dumps({**good, "default_p_target": 1.5}))
    with pytest.raises(VerificationError, match="'default_p_target' must be a number in"):
        resolve_decision_rule(model, calibration_path=bad)  # and on load


def test_calibration_file_problems_are_one_line_errors(tmp_path):
    model = fake_model(tmp_path)
    foreign = write_calibration(tmp_path / "foreign.json", model_fingerprint="1" * 16)
    with pytest.raises(VerificationError, match=f"foreign.json: .*{'1' * 16}.*{FP}"):
        resolve_decision_rule(model, calibration_path=foreign)
    normed = write_calibration(tmp_path / "asnorm.json", norm="asnorm")
    with pytest.raises(VerificationError, match="asnorm-normalised"):
        resolve_decision_rule(model, calibration_path=normed)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(VerificationError, match=r"broken.json: invalid JSON") as info:
        resolve_decision_rule(model, calibration_path=broken)
    assert "\n" not in str(info.value)


def test_calibrated_verify_reports_llr_and_centring_caveat(tmp_path, voices):
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    enroll_speaker(store, model, "ann", [voices["ann0"], voices["ann1"]])
    rule = resolve_decision_rule(model, calibration_path=write_calibration(tmp_path / "c.json"))
    plain = verify_against(store, model, rule, "ann", voices["ann2"])
    assert plain.llr == pytest.approx(10 * plain.score - 5) and not plain.warnings
    assert plain.accepted == (plain.llr >= 0)
    write_domain_audio(tmp_path / "domain")
    adapt(store, model=model, audio_dir=tmp_path / "domain")
    centred = verify_against(store, model, rule, "ann", voices["ann2"])
    assert centred.centring is not None and "approximate" in centred.warnings[-1]


def test_adapt_from_embedding_store(tmp_path, rng):
    from speakerverify.backend.embedding_dir import save_embeddings

    vectors = rng.standard_normal((120, 8)).astype(np.float32) + 3.0
    save_embeddings(
        tmp_path / "emb", [f"u{i}" for i in range(120)], vectors, {"model_fingerprint": FP}
    )
    store = tmp_path / "s.db"
    result = adapt(store, embeddings_dir=tmp_path / "emb")
    assert result.num_embeddings == 120 and result.model_fingerprint == FP and not result.warnings
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    with SpeakerStore(store) as opened:
        np.testing.assert_allclose(opened.domain_mean.mean, unit.mean(axis=0), atol=1e-6)
        assert opened.fingerprint == FP
    before = store_rows(store)
    save_embeddings(tmp_path / "other", ["a"], vectors[:1], {"model_fingerprint": "2" * 16})
    with pytest.raises(StoreError, match=f"{FP}.*{'2' * 16}"):
        adapt(store, embeddings_dir=tmp_path / "other")
    with pytest.raises(VerificationError, match="not an embedding directory"):
        adapt(store, embeddings_dir=tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(VerificationError, match="half: cannot read embeddings"):
        adapt(store, embeddings_dir=tmp_path / "half")
    assert store_rows(store) == before


def test_store_in_missing_directory_fails_before_embedding(tmp_path, voices):
    class Exploding:
        def embed_waveform(self, wave):
            raise AssertionError("embedding should not start")

    model = SpeakerModel(Exploding(), FP, 16000, "m.pt")
    with pytest.raises(StoreError, match="does not exist"):
        enroll_speaker(tmp_path / "no" / "s.db", model, "ann", [voices["ann0"]])


def test_each_enrollment_file_needs_half_a_second_of_speech(tmp_path, voices):
    blip = tmp_path / "blip.wav"
    wave = np.concatenate([speech_like(0.25, 16000, seed=3), np.zeros(16000, np.float32)])
    sf.write(blip, wave + 1e-5 * np.random.default_rng(0).standard_normal(wave.size), 16000)
    model, store = fake_model(tmp_path), tmp_path / "s.db"
    with pytest.raises(VerificationError, match=r"blip.wav: only 0\.\d+ s of speech"):
        enroll_speaker(store, model, "ann", [voices["ann0"], voices["ann1"], blip])
    assert not store.exists()


def test_find_audio_files_follows_symlinked_directories_once(tmp_path):
    # adapt AUDIO_DIR and enroll from a directory of links to a corpus: the files behind the
    # links count, and a link loop is visited once.
    from speakerverify.backend.speaker_model import find_audio_files

    corpus = tmp_path / "corpus" / "spk1"
    corpus.mkdir(parents=True)
    sf.write(corpus / "a.wav", np.zeros(160, dtype=np.float32), 16000)
    sf.write(corpus / "b.flac", np.zeros(160, dtype=np.float32), 16000)
    view = tmp_path / "view"
    view.mkdir()
    (view / "spk1").symlink_to(corpus)
    (corpus / "loop").symlink_to(corpus)
    found = find_audio_files(view)
    assert [p.name for p in found] == ["a.wav", "b.flac"]


def test_identify_holds_each_comparison_to_the_rate_over_the_enrolled(tmp_path, voices):
    from speakerverify.backend.calibration import Calibration

    model, store = fake_model(tmp_path), tmp_path / "s.db"
    nontargets = np.random.default_rng(5).uniform(-1.0, 1.0, 3000)
    calibration = Calibration(10.0, -5.0, model_fingerprint=FP).with_operating_point(
        nontargets, 0.03
    )
    calibration.save(default_calibration_path(model.path))
    enroll_all(store, model, voices)
    rule = resolve_decision_rule(model)
    claim = verify_against(store, model, rule, "cy", voices["cy2"])
    search = identify(store, model, rule, voices["cy2"])
    assert claim.rule.comparisons is None
    assert claim.rule.score_threshold == pytest.approx(np.quantile(nontargets, 0.97), abs=1e-5)
    assert search.rule.comparisons == 3 and search.rule.per_comparison == pytest.approx(0.01)
    expected = calibration.score_at_false_accept(0.01)[0]
    assert search.rule.score_threshold == pytest.approx(expected)
    assert expected == pytest.approx(np.quantile(nontargets, 0.99), abs=0.01)
    document = search.to_json()
    assert document["threshold"]["open_set"] == {
        "enrolled": 3,
        "per_comparison_false_accept": pytest.approx(0.01),
    }
    best = search.candidates[0]
    assert best["accepted"] == (best["score"] >= search.rule.score_threshold)
