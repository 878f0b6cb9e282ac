"""Recording-channel simulation for the synthetic corpus: one condition per session (telephone
band at 8 kHz, mu-law, synthetic room reverberation, random EQ, low-pass, noise at 0-30 dB SNR,
level), applied with small per-utterance variation. All randomness from the `rng` passed in.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def make_session_channel(rng: np.random.Generator) -> dict:
    """One recording condition, shared by the utterances of a session."""
    telephone = rng.random() < 0.5
    return {
        "telephone": telephone,
        "mulaw": rng.random() < (0.4 if telephone else 0.1),
        "rt60": float(rng.uniform(0.15, 0.7)) if rng.random() < 0.35 else 0.0,
        "eq_db": (4.0 * rng.standard_normal(6)).tolist() if rng.random() < 0.8 else None,
        "lowpass_hz": float(rng.uniform(3800, 7000)) if rng.random() < 0.15 else None,
        "noise": str(rng.choice(["white", "pink", "brown", "hum", "babble"]))
        if rng.random() < 0.85
        else None,
        "snr_db": float(30 * np.sqrt(rng.random())),
        "level_db": float(rng.uniform(-34, -18)),
    }


def colored_noise(rng: np.random.Generator, kind: str, num_samples: int) -> np.ndarray:
    """White, pink, brown, mains hum or speech-shaped modulated noise, `(S,)`."""
    from scipy.fft import irfft, next_fast_len, rfft

    size = next_fast_len(num_samples, real=True)  # odd sizes make the FFT 10x slower
    spectrum = rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
    if kind == "pink":
        spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    elif kind == "brown":
        spectrum /= np.maximum(freqs, 20.0)
    elif kind == "babble":  # speech-shaped, syllable-rate modulated noise
        spectrum *= np.exp(-(((np.log(np.maximum(freqs, 1.0)) - np.log(500)) / 1.0) ** 2))
    noise = irfft(spectrum, size)[:num_samples]
    if kind == "babble":
        t = np.arange(num_samples) / SAMPLE_RATE
        noise *= 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3))
    if kind == "hum":
        t = np.arange(num_samples) / SAMPLE_RATE
        base = 50.0 if rng.random() < 0.5 else 60.0
        noise = sum(np.sin(2 * np.pi * base * k * t) / k for k in range(1, 6))
        noise = noise + 0.1 * rng.standard_normal(num_samples)
    return noise


def apply_channel(wave: np.ndarray, channel: dict, rng: np.random.Generator) -> np.ndarray:
    """Room, EQ, band limits, telephone, mu-law, noise and level: `(S,)` float64 at 16 kHz."""
    from scipy.fft import irfft, next_fast_len, rfft
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    if channel["rt60"] > 0:
        length = int(channel["rt60"] * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        rir = rng.standard_normal(length) * np.exp(-6.9 * t / channel["rt60"])
        rir[0] = rng.uniform(2, 8)  # direct path
        wave = fftconvolve(wave, rir / np.sqrt(np.sum(rir**2)))[: len(wave)]
    if channel["eq_db"] is not None:
        size = next_fast_len(len(wave), real=True)
        spectrum = rfft(wave, size)
        freqs = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
        points = np.log(np.geomspace(60, 7600, 6))
        gains = np.asarray(channel["eq_db"]) + 1.0 * rng.standard_normal(6)
        curve = np.interp(np.log(np.maximum(freqs, 60)), points, gains)
        wave = irfft(spectrum * 10 ** (curve / 20), size)[: len(wave)]
    if channel["lowpass_hz"]:
        wave = sosfilt(butter(6, channel["lowpass_hz"], fs=SAMPLE_RATE, output="sos"), wave)
    if channel["telephone"]:
        wave = sosfilt(butter(4, [300, 3400], "bandpass", fs=SAMPLE_RATE, output="sos"), wave)
        wave = resample_poly(wave, 1, 2)
    if channel["mulaw"]:
        peak = np.max(np.abs(wave)) + 1e-9
        mu = 255.0
        coded = np.sign(wave / peak) * np.log1p(mu * np.abs(wave / peak)) / np.log1p(mu)
        coded = np.round(coded * 127) / 127
        wave = peak * np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu
    if channel["telephone"]:
        wave = resample_poly(wave, 2, 1)
    speech_power = np.mean(wave**2) + 1e-12
    if channel["noise"]:
        noise = colored_noise(rng, channel["noise"], len(wave))
        snr_db = float(np.clip(channel["snr_db"] + 3 * rng.standard_normal(), 0, 30))
        noise *= np.sqrt(speech_power / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
        wave = wave + noise
    level_db = channel["level_db"] + 2 * rng.standard_normal()
    wave = wave * 10 ** (level_db / 20) / np.sqrt(np.mean(wave**2) + 1e-12)
    peak = np.max(np.abs(wave))
    if peak > 0.98 and rng.random() > 0.05:  # a few files keep their clipping, like real uploads
        wave *= 0.98 / peak
    return np.clip(wave, -1.0, 32767 / 32768)
