"""Augmenter: measured SNR, babble talker counts, RIR alignment, determinism, missing sources."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

import speakerverify.data.augment as augment
from speakerverify.data.augment import Augmenter, mix_at_snr, reverberate
from speakerverify.testing import speech_like

SR = 16000


def snr_db(clean, mixed):
    noise = mixed.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    index = {"noise": [], "music": [], "speech": []}
    for kind in index:
        for i in range(3):
            seconds = 1.5 if i else 0.4  # one file shorter than the crop: wrap-padded
            if kind == "speech":
                wave = speech_like(seconds, seed=100 + i)
            elif kind == "music":
                t = np.arange(int(seconds * SR)) / SR
                wave = 0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * t) * (1 + np.sin(3 * t))
            else:
                wave = 0.2 * rng.standard_normal(int(seconds * SR))
            path = root / f"{kind}-{i}.wav"
            sf.write(path, wave.astype(np.float32), SR)
            index[kind].append(str(path))
    rirs = []
    for i in range(2):
        rir = np.zeros(4000)
        rir[30 + 20 * i] = 1.0
        tail = np.arange(3900 - 20 * i)
        rir[31 + 20 * i : 31 + 20 * i + len(tail)] = (
            0.05 * rng.standard_normal(len(tail)) * np.exp(-tail / 800)  # DRR about 0 dB
        )
        path = root / f"rir-{i}.wav"
        sf.write(path, rir.astype(np.float32), SR, subtype="FLOAT")
        rirs.append(str(path))
    return index, {"smallroom": rirs[:1], "mediumroom": rirs[1:]}


@pytest.fixture
def speech():
    return 0.2 * speech_like(1.0, seed=7)


@pytest.mark.parametrize("target", [0.0, 5.0, 12.5, 20.0])
def test_mix_at_snr_is_exact(rng, speech, target):
    noise = rng.standard_normal(speech.shape[0]).astype(np.float32)
    mixed = mix_at_snr(speech, noise, target)
    assert abs(snr_db(speech, mixed) - target) < 0.5
    assert mixed.shape == speech.shape and mixed.dtype == np.float32


@pytest.mark.parametrize("method", ["noise", "music", "babble"])
def test_augmenter_hits_requested_snr_and_keeps_length(sources, speech, method):
    musan, _ = sources
    for target in (3.0, 11.0):
        augmenter = Augmenter(
            musan, aug_prob=1.0, noise_snr_db=(target, target),
            music_snr_db=(target, target), babble_snr_db=(target, target),
        )  # fmt: skip
        for seed in range(4):
            out = augmenter.apply(method, speech, np.random.default_rng(seed))
            assert out.shape == speech.shape and out.dtype == np.float32
            assert abs(snr_db(speech, out) - target) < 0.5


def test_default_snr_ranges(sources, speech):
    musan, _ = sources
    augmenter = Augmenter(musan, aug_prob=1.0)
    for method, (low, high) in [("noise", (0, 15)), ("music", (5, 15)), ("babble", (13, 20))]:
        measured = [
            snr_db(speech, augmenter.apply(method, speech, np.random.default_rng(s)))
            for s in range(12)
        ]
        assert low - 0.5 <= min(measured) and max(measured) <= high + 0.5
        assert max(measured) - min(measured) > 1.0  # actually drawn, not fixed


def test_babble_sums_three_to_seven_talkers(sources, speech, monkeypatch):
    musan, _ = sources
    calls = []
    real = augment.read_random_crop

    def spy(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(augment, "read_random_crop", spy)
    augmenter = Augmenter(musan, aug_prob=1.0)
    counts = []
    for seed in range(40):
        calls.clear()
        augmenter.apply("babble", speech, np.random.default_rng(seed))
        assert set(calls) <= set(musan["speech"])
        counts.append(len(calls))
    assert min(counts) == 3 and max(counts) == 7


def test_reverb_keeps_direct_path_aligned_length_and_power(sources, speech):
    _, rirs = sources
    out = reverberate(speech, sf.read(rirs["smallroom"][0])[0])
    assert out.shape == speech.shape
    # direct path at lag 0 (white noise: its autocorrelation has a single peak)
    white = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    wet = reverberate(white, sf.read(rirs["smallroom"][0])[0])
    lags = np.arange(-200, 201)
    xcorr = [np.dot(np.roll(wet, -lag), white) for lag in lags]
    assert lags[int(np.argmax(xcorr))] == 0
    assert np.mean(out**2) == pytest.approx(np.mean(speech**2), rel=1e-3)
    assert np.corrcoef(out, speech)[0, 1] < 0.99  # but it is reverberant
    # a pure delayed impulse is the identity after alignment and normalisation
    impulse = np.zeros(500)
    impulse[123] = 0.25
    np.testing.assert_allclose(reverberate(speech, impulse), speech, atol=1e-6)


def test_reverb_uses_only_the_configured_rooms(sources, speech):
    _, rirs = sources
    augmenter = Augmenter(rir_index=rirs, aug_prob=1.0, rir_rooms=("mediumroom",))
    assert augmenter.sources["reverb"] == rirs["mediumroom"]
    out = augmenter(speech, np.random.default_rng(0))
    expected = reverberate(speech, sf.read(rirs["mediumroom"][0])[0])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="valid: smallroom, mediumroom, largeroom"):
        Augmenter(rir_index=rirs, rir_rooms=("hall",))


def test_same_seed_same_output_and_probability(sources, speech):
    musan, rirs = sources
    augmenter = Augmenter(musan, rirs, aug_prob=0.6)
    outputs = [augmenter(speech, np.random.default_rng(s)) for s in range(30)]
    for s in range(30):
        np.testing.assert_array_equal(augmenter(speech, np.random.default_rng(s)), outputs[s])
    changed = sum(not np.array_equal(o, speech) for o in outputs)
    assert 8 <= changed <= 28  # about 60 % of 30
    never = Augmenter(musan, rirs, aug_prob=0.0)
    assert all(never(speech, np.random.default_rng(s)) is speech for s in range(5))


def test_output_stays_within_full_scale(sources):
    musan, _ = sources
    loud = 0.99 * speech_like(1.0, seed=3) / 0.5
    augmenter = Augmenter(musan, aug_prob=1.0, noise_snr_db=(0.0, 0.0))
    out = augmenter.apply("noise", loud.astype(np.float32), np.random.default_rng(0))
    assert np.max(np.abs(out)) <= 1.0 + 1e-6


def test_missing_sources_are_skipped_and_logged_once(sources, speech, caplog):
    musan, _ = sources
    with caplog.at_level(logging.WARNING, logger="speakerverify.data.augment"):
        noise_only = Augmenter({"noise": musan["noise"]}, aug_prob=1.0)
        for s in range(10):
            noise_only(speech, np.random.default_rng(s))
    assert noise_only.methods == ["noise"]
    assert len(caplog.records) == 1
    assert "without music, babble, reverb" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speakerverify.data.augment"):
        nothing = Augmenter(aug_prob=1.0)
        assert nothing(speech, np.random.default_rng(0)) is speech
    assert len(caplog.records) == 1 and "pass through unchanged" in caplog.records[0].getMessage()
    with pytest.raises(ValueError, match="not available"):
        noise_only.apply("reverb", speech, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown index kinds"):
        Augmenter({"thunder": ["/x.wav"]})
