"""The numpy front-end and VAD of the ONNX fast path against their torch originals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from speakerverify.frontend import audio, vad_numpy
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.frontend.fbank_numpy import NumpyFbank, kaldi_mel_banks
from speakerverify.frontend.features import Fbank
from speakerverify.testing import speech_like

CONFIGS = [
    {},
    {"snip_edges": False},
    {"window_type": "hanning", "num_mel_bins": 40, "cmn": False},
    {"window_type": "hamming", "remove_dc_offset": False, "preemphasis": 0.0},
    # Not with low_freq 100 / high_freq -400 too: its leakage into a band edge turns the
    # mel-weight ulp (torch's float32 log) into 1.2e-4 on one element of 24000.
    {"window_type": "rectangular"},
    {"low_freq": 100.0, "high_freq": -400.0},
    {"window_type": "blackman", "frame_length_ms": 20.0, "frame_shift_ms": 8.0},
    {"noise_floor_db": -30.0},
    {"noise_floor_db": -50.0, "snip_edges": False, "window_type": "hamming"},
    {"sample_rate": 8000, "num_mel_bins": 40, "noise_floor_db": -30.0},
    {"noise_floor_db": -30.0, "cvn": True},
    {"noise_floor_db": -30.0, "num_ceps": 30},
    {"num_ceps": 20, "num_mel_bins": 40, "cmn": False},  # the lifter: test_features (torchaudio)
    {"noise_floor_db": -30.0, "cmn_ceps": 3},
    {"noise_floor_db": -30.0, "num_ceps": 30, "cmn_ceps": 3, "snip_edges": False},
]


def _wave(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    wave = speech_like(seconds, sample_rate, seed=seed)
    # A stretch of digital silence: the log floors (eps clamp, noise floor) decide those frames.
    wave[sample_rate // 2 : sample_rate] = 0.0
    return wave


@pytest.mark.parametrize("options", CONFIGS)
def test_numpy_fbank_equals_torch_fbank(options):
    """Against Fbank on float64 input (its Kaldi-exact path): within 1e-4 everywhere. What is
    left (~1e-5) comes from the mel weights, which torchaudio computes with torch's float32 log."""
    config = FbankConfig(**options)
    for seed, seconds in ((0, 3.0), (1, 1.237), (2, 5.0)):
        wave = _wave(seconds, config.sample_rate, seed)
        expected, lengths = Fbank(config).eval()(torch.from_numpy(wave).double())
        got = NumpyFbank(config)(wave)
        assert got.shape == tuple(expected.shape[1:]) and int(lengths[0]) == got.shape[0]
        np.testing.assert_allclose(got, expected[0].numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("options", CONFIGS)
def test_numpy_fbank_is_as_close_to_float32_fbank_as_float64_fbank_is(options):
    """Fbank's float32 path itself differs from its float64 path by up to ~4e-4 on a few
    low-energy bins (float32 FFT rounding): numpy may differ from it by that, plus 1e-4."""
    config = FbankConfig(**options)
    for seed, seconds in ((0, 3.0), (2, 5.0)):
        wave = _wave(seconds, config.sample_rate, seed)
        fbank = Fbank(config).eval()
        single = fbank(torch.from_numpy(wave))[0][0].numpy()
        double = fbank(torch.from_numpy(wave).double())[0][0].numpy()
        got = NumpyFbank(config)(wave)
        assert np.all(np.abs(got - single) <= np.abs(double - single) + 1e-4)
        assert np.mean(np.abs(got - single)) < 1e-5


def test_numpy_fbank_short_input_has_no_frames():
    assert NumpyFbank()(np.zeros(100, np.float32)).shape == (0, 80)


@pytest.mark.parametrize("options", CONFIGS[:3] + CONFIGS[-1:])
def test_mel_banks_equal_torchaudio(options):
    from torchaudio.compliance.kaldi import get_mel_banks

    config = FbankConfig(**options)
    banks, _ = get_mel_banks(
        config.num_mel_bins, config.fft_size, float(config.sample_rate), config.low_freq,
        config.high_freq, 100.0, -500.0, 1.0,
    )  # fmt: skip
    # torch's float32 log differs from numpy's by an ulp here and there
    np.testing.assert_allclose(kaldi_mel_banks(config)[:-1].T, banks.numpy(), atol=2e-5)


def test_noise_mel_energy_equals_fbank():
    config = FbankConfig(noise_floor_db=-30.0, window_type="hamming")
    np.testing.assert_allclose(
        NumpyFbank(config).noise_mel_energy, Fbank(config).noise_mel_energy.numpy(), rtol=1e-5
    )


@pytest.mark.parametrize("seed", range(4))
def test_speech_mask_and_trim_equal_torch(seed):
    rng = np.random.default_rng(seed)
    speech = speech_like(2.0 + seed * 0.37, 16000, seed=seed)
    silence = (1e-4 * rng.standard_normal(int(16000 * rng.uniform(0.2, 1.0)))).astype(np.float32)
    wave = np.concatenate([silence, speech, silence[: 1234 + seed]])
    expected = audio.speech_mask(torch.from_numpy(wave)).numpy()
    np.testing.assert_array_equal(vad_numpy.speech_mask(wave), expected)
    trimmed = audio.trim_silence(torch.from_numpy(wave)).numpy()
    np.testing.assert_array_equal(vad_numpy.trim_silence(wave), trimmed)


def test_vad_edge_cases_equal_torch():
    for wave in (np.zeros(300, np.float32), np.zeros(1600, np.float32), np.ones(403, np.float32)):
        expected = audio.speech_mask(torch.from_numpy(wave)).numpy()
        np.testing.assert_array_equal(vad_numpy.speech_mask(wave), expected)
        trimmed = audio.trim_silence(torch.from_numpy(wave)).numpy()
        np.testing.assert_array_equal(vad_numpy.trim_silence(wave), trimmed)


def test_numpy_front_end_does_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from speakerverify.frontend.fbank_numpy import NumpyFbank\n"
        "from speakerverify.frontend.vad_numpy import trim_silence\n"
        "from speakerverify.frontend.audio import read_audio\n"
        "NumpyFbank()(trim_silence(np.random.default_rng(0).normal(0, .1, 16000)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
