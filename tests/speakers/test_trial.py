"""Tests for speakerverify.speakers.trial: `verify_trial` tells a name from a file, checks names,
stores and files before it loads the model, and decides as the pair and store calls do;
`identify_trial` checks the store and the file first and ranks as `identify` does."""

from __future__ import annotations

import re

import numpy as np
import pytest
from speaker_helpers import FP, SpectrumEmbedder

from speakerverify.backend.speaker_model import SpeakerModel, VerificationError
from speakerverify.frontend.audio import AudioError
from speakerverify.speakers.decision import DecisionRule
from speakerverify.speakers.store import StoreError, UnknownSpeakerError
from speakerverify.speakers.trial import StoreNotGiven, identify_trial, verify_trial
from speakerverify.speakers.verification import (
    enroll_speaker,
    identify,
    verify_against,
    verify_pair,
)
from speakerverify.testing import write_voices


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("trial_voices")
    rng = np.random.default_rng(11)
    return write_voices(root, ["ann", "bo"], rng, per_speaker=2, seconds=3.0)[0]


def model_at(tmp_path) -> SpeakerModel:
    return SpeakerModel(SpectrumEmbedder(), FP, 16000, str(tmp_path / "model.pt"))


def unloadable():
    raise AssertionError("the model was loaded before the input was checked")


def test_a_file_first_is_a_pair_trial_like_verify_pair(tmp_path, voices):
    model = model_at(tmp_path)
    result = verify_trial(voices["ann0"], voices["ann1"], lambda: model, threshold=0.2)
    expected = verify_pair(
        model, DecisionRule("threshold", 0.2, "score"), voices["ann0"], voices["ann1"]
    )
    assert result.mode == "pair" and result.score == pytest.approx(expected.score)
    assert result.accepted == expected.accepted


def test_a_name_first_is_looked_up_in_the_store_like_verify_against(tmp_path, voices):
    model, store = model_at(tmp_path), tmp_path / "s.db"
    enroll_speaker(store, model, "ann", [voices["ann0"]], min_speech_seconds=1.0)
    result = verify_trial("ann", voices["ann1"], model, store_path=store, threshold=0.2)
    expected = verify_against(
        store, model, DecisionRule("threshold", 0.2, "score"), "ann", voices["ann1"]
    )
    assert result.mode == "store" and result.score == pytest.approx(expected.score)


def test_bad_names_stores_and_files_fail_before_the_model_loads(tmp_path, voices):
    store = tmp_path / "s.db"
    with pytest.raises(StoreNotGiven):
        verify_trial("ann", voices["ann1"], unloadable)
    with pytest.raises(
        VerificationError, match=re.escape(f"no speaker store {store} to look it up in")
    ):
        verify_trial("ann", voices["ann1"], unloadable, store_path=store)
    enroll_speaker(store, model_at(tmp_path), "ann", [voices["ann0"]], min_speech_seconds=1.0)
    with pytest.raises(UnknownSpeakerError):
        verify_trial("cy", voices["ann1"], unloadable, store_path=store)
    with pytest.raises(VerificationError, match="no enrolled speaker of that name"):
        verify_trial("cy.wav", voices["ann1"], unloadable, store_path=store)
    with pytest.raises(AudioError, match=r"missing\.wav: file not found"):
        verify_trial("ann", tmp_path / "missing.wav", unloadable, store_path=store)
    with pytest.raises(VerificationError, match="is a directory, not an audio file"):
        verify_trial(tmp_path, voices["ann1"], unloadable)


def test_identify_trial_ranks_as_identify_does(tmp_path, voices):
    model, store = model_at(tmp_path), tmp_path / "s.db"
    for name in ("ann", "bo"):
        enroll_speaker(store, model, name, [voices[f"{name}0"]], min_speech_seconds=1.0)
    result = identify_trial(voices["bo1"], lambda: model, store_path=store, threshold=-1.0)
    expected = identify(store, model, DecisionRule("threshold", -1.0, "score"), voices["bo1"])
    assert result.identified == expected.identified == "bo"
    assert [c["score"] for c in result.candidates] == [c["score"] for c in expected.candidates]
    nobody = identify_trial(voices["bo1"], model, store_path=store, threshold=1.01)
    assert nobody.identified is None and nobody.num_enrolled == 2


def test_identify_trial_checks_store_and_file_before_the_model(tmp_path, voices):
    model, store = model_at(tmp_path), tmp_path / "s.db"
    enroll_speaker(store, model, "ann", [voices["ann0"]], min_speech_seconds=1.0)
    with pytest.raises(AudioError, match=r"missing\.wav: file not found"):
        identify_trial(tmp_path / "missing.wav", unloadable, store_path=store)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match=re.escape(str(garbage))):
        identify_trial(voices["ann1"], unloadable, store_path=garbage)
