"""The log-mel front-end of :class:`speakerverify.frontend.features.Fbank` in numpy, for the
torch-free ONNX path: same framing, DC removal, pre-emphasis, windows, Kaldi mel banks, log floors,
cepstra (MFCC) and CMN.

Computed in float64 (torch runs float32), so the two agree to ~1e-5 on log-mel.
"""

from __future__ import annotations

import math

import numpy as np

from speakerverify.frontend.fbank_config import CVN_MIN_VARIANCE, FbankConfig

_FLOAT32 = np.finfo(np.float32)


def kaldi_window(window_type: str, length: int) -> np.ndarray:
    """Kaldi's symmetric feature window `(length,)`, float64 (as `features._window`)."""
    n = np.arange(length, dtype=np.float64)
    hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / (length - 1))
    if window_type == "povey":
        return hann**0.85
    if window_type == "hanning":
        return hann
    if window_type == "hamming":
        return 0.54 - 0.46 * np.cos(2 * math.pi * n / (length - 1))
    if window_type == "blackman":
        step = 2 * math.pi / (length - 1)
        return 0.42 - 0.5 * np.cos(step * n) + 0.08 * np.cos(2 * step * n)
    return np.ones(length)


def kaldi_mel_banks(config: FbankConfig) -> np.ndarray:
    """`(fft_size // 2 + 1, F)` triangular mel weights, Kaldi's (no VTLN, Nyquist bin zero).

    Computed in float32 step by step as ``torchaudio.compliance.kaldi.get_mel_banks`` does, so
    the weights agree with `features.Fbank`'s to float32 rounding; returned as float64.
    """
    f32 = np.float32
    num_bins, fft_size = config.num_mel_bins, config.fft_size
    nyquist = 0.5 * config.sample_rate
    high_freq = config.high_freq if config.high_freq > 0 else config.high_freq + nyquist
    mel_low = 1127.0 * math.log(1.0 + config.low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = np.arange(num_bins, dtype=f32)[:, None]
    left, centre, right = (f32(mel_low) + (index + f32(k)) * f32(delta) for k in (0, 1, 2))
    freqs = f32(config.sample_rate / fft_size) * np.arange(fft_size // 2, dtype=f32)
    mel = (f32(1127.0) * np.log(f32(1.0) + freqs / f32(700.0)))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.maximum(f32(0.0), np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).T.astype(np.float64)


def noise_mel_energy(config: FbankConfig, mel_banks: np.ndarray) -> np.ndarray:
    """`(F,)` expected mel energy of unit-variance white noise after the front-end (see
    `features.Fbank._noise_mel_energy`: sum over unit impulses of the framed power)."""
    length = config.frame_length
    eye = np.eye(length)
    if config.remove_dc_offset:
        eye = eye - 1.0 / length
    previous = np.concatenate([eye[:1], eye[:-1]])  # x[0] is its own predecessor
    emphasised = eye - config.preemphasis * previous
    framed = emphasised * kaldi_window(config.window_type, length)[:, None]
    power = np.abs(np.fft.rfft(framed, n=config.fft_size, axis=0)) ** 2
    return (power.sum(axis=1) @ mel_banks).astype(np.float32).astype(np.float64)


class NumpyFbank:
    """Log-mel features `(T, F)` of one waveform `(S,)`, equal to `features.Fbank` (eval mode).

    Args:
        config: the front-end options (e.g. the `frontend` entry of an exported model's metadata).

    >>> feats = NumpyFbank()(np.random.default_rng(0).normal(0, 0.1, 16000))
    >>> feats.shape, feats.dtype
    ((98, 80), dtype('float32'))
    """

    def __init__(self, config: FbankConfig | None = None) -> None:
        self.config = config or FbankConfig()
        self.mel_banks = kaldi_mel_banks(self.config)
        self.window = kaldi_window(self.config.window_type, self.config.frame_length)
        self.noise_mel_energy = noise_mel_energy(self.config, self.mel_banks)
        # As in Fbank: Kaldi's float32-epsilon clamp, or only a log(0) guard under a noise floor.
        self.log_floor = _FLOAT32.eps if self.config.noise_floor_db is None else _FLOAT32.tiny
        dct = self.config.dct_matrix()
        self.dct = None if dct is None else np.array(dct, dtype=np.float64)
        projection = self.config.cmn_projection()
        self.cmn_projection = None if projection is None else np.array(projection, np.float64)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` samples (snip-edges or Kaldi's centred framing)."""
        length, shift = self.config.frame_length, self.config.frame_shift
        if not self.config.snip_edges:
            return (num_samples + shift // 2) // shift
        return 0 if num_samples < length else 1 + (num_samples - length) // shift

    def _padded(self, wave: np.ndarray, span: int) -> np.ndarray:
        """Kaldi's snip_edges=False signal: mirrored (edge sample repeated) at both ends."""
        length, shift = self.config.frame_length, self.config.frame_shift
        num_samples = wave.shape[0]
        index = np.arange(span) - (length // 2 - shift // 2)
        index = np.where(index < 0, -index - 1, index)
        index = np.where(index >= num_samples, 2 * num_samples - 1 - index, index)
        return wave[np.maximum(index, 0)]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """Features `(T, F)` float32 of `wave` `(S,)` (float, at `config.sample_rate`)."""
        cfg = self.config
        wave = np.asarray(wave, dtype=np.float64).reshape(-1)
        num_frames = self.num_frames(wave.shape[0])
        if num_frames == 0:
            return np.zeros((0, cfg.feat_dim), np.float32)
        length, shift = cfg.frame_length, cfg.frame_shift
        span = (num_frames - 1) * shift + length
        signal = wave[:span] if cfg.snip_edges else self._padded(wave, span)
        frames = np.lib.stride_tricks.sliding_window_view(signal, length)[::shift][:num_frames]
        if cfg.remove_dc_offset:
            frames = frames - frames.mean(axis=1, keepdims=True)
        previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        frames = (frames - cfg.preemphasis * previous) * self.window
        power = np.abs(np.fft.rfft(frames, n=cfg.fft_size, axis=1)) ** 2
        mel = power @ self.mel_banks
        if cfg.noise_floor_db is not None:  # of the signal as given, not the mirrored one
            level = np.mean(wave**2) * 10.0 ** (cfg.noise_floor_db / 10.0)
            mel = mel + level * self.noise_mel_energy
        feats = np.log(np.maximum(mel, self.log_floor))
        if self.dct is not None:
            feats = feats @ self.dct
        if cfg.cmn:
            mean = feats.mean(axis=0, keepdims=True)
            feats = feats - (mean if self.cmn_projection is None else mean @ self.cmn_projection)
            if cfg.cvn:
                feats = feats / np.sqrt(np.maximum(np.mean(feats**2, axis=0), CVN_MIN_VARIANCE))
        return feats.astype(np.float32)
