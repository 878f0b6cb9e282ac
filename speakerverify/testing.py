"""Synthetic speech-like audio and tiny VoxCeleb-shaped corpora for tests and benchmarks (no
download, no TTS).

A "speaker" is a glottal pulse train at its own pitch, shaped by its own formant resonators; each
utterance varies pitch contour, syllable rhythm and loudness, so an encoder can learn who speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter


@dataclass(frozen=True)
class SynthSpeaker:
    f0: float  # base pitch, Hz
    formants: tuple[float, ...]  # resonance centres, Hz
    bandwidths: tuple[float, ...]  # resonance bandwidths, Hz


def random_speaker(rng: np.random.Generator) -> SynthSpeaker:
    """A speaker with a random pitch and vocal-tract scale."""
    female = rng.random() < 0.5
    f0 = rng.uniform(170, 260) if female else rng.uniform(85, 150)
    scale = rng.uniform(1.0, 1.2) if female else rng.uniform(0.85, 1.02)
    base = np.array([500.0, 1500.0, 2500.0, 3500.0])
    formants = tuple(float(f) for f in base * scale * rng.uniform(0.93, 1.07, size=4))
    bandwidths = tuple(float(b) for b in rng.uniform(60, 160, size=4))
    return SynthSpeaker(f0=float(f0), formants=formants, bandwidths=bandwidths)


def _resonator(signal: np.ndarray, freq: float, bw: float, sample_rate: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sample_rate)
    theta = 2 * np.pi * freq / sample_rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, signal)


def speech_like(
    seconds: float,
    sample_rate: int = 16000,
    speaker: SynthSpeaker | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A float32 waveform in [-1, 1] of `seconds` with voiced syllables and short pauses."""
    rng = np.random.default_rng(seed)
    speaker = speaker or random_speaker(rng)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    # Pitch contour: slow drift plus per-utterance offset.
    f0 = speaker.f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6)))
    f0 *= rng.uniform(0.95, 1.05)
    phase = np.cumsum(f0 / sample_rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    source = pulses + 0.02 * rng.standard_normal(n)
    out = np.zeros(n)
    for freq, bw in zip(speaker.formants, speaker.bandwidths, strict=True):
        out += _resonator(source, freq, bw, sample_rate)
    # Syllable envelope: ~4 Hz bursts with random gaps.
    envelope = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.12, 0.3) * sample_rate)
        gap = int(rng.uniform(0.03, 0.15) * sample_rate)
        seg = min(length, n - pos)
        envelope[pos : pos + seg] = np.hanning(length)[:seg] * rng.uniform(0.5, 1.0)
        pos += length + gap
    out = out * envelope + 1e-3 * rng.standard_normal(n)
    out = out / (np.max(np.abs(out)) + 1e-9) * 0.5
    return out.astype(np.float32)


def write_voices(
    root: Path,
    names: list[str],
    rng: np.random.Generator,
    *,
    per_speaker: int,
    seconds: float,
    seed_stride: int = 10,
    sample_rate: int = 16000,
) -> tuple[dict[str, Path], dict[str, SynthSpeaker]]:
    """One `random_speaker(rng)` per name and `per_speaker` files `root/<name><u>.wav` each
    (utterance seed `seed_stride * speaker index + u`): the files by stem, and the speakers (for
    other renderings of one voice: another rate, stereo)."""
    files: dict[str, Path] = {}
    speakers: dict[str, SynthSpeaker] = {}
    for s, name in enumerate(names):
        speakers[name] = speaker = random_speaker(rng)
        for u in range(per_speaker):
            files[f"{name}{u}"] = path = root / f"{name}{u}.wav"
            wave = speech_like(seconds, sample_rate, speaker, seed=seed_stride * s + u)
            sf.write(path, wave, sample_rate)
    return files, speakers


def make_voxceleb_corpus(
    root: Path,
    num_speakers: int = 6,
    sessions_per_speaker: int = 2,
    utts_per_session: int = 2,
    seconds: float = 2.0,
    sample_rate: int = 16000,
    seed: int = 0,
    first_id: int = 10001,
    ext: str = "wav",
) -> list[str]:
    """Write `root/wav/idNNNNN/<session>/NNNNN.<ext>` (the VoxCeleb1 layout); return the utt ids.

    Utt ids are paths relative to `root/wav` without extension, as the trial lists name them.
    """
    rng = np.random.default_rng(seed)
    utt_ids = []
    for s in range(num_speakers):
        speaker = random_speaker(rng)
        spk_id = f"id{first_id + s:05d}"
        for _ in range(sessions_per_speaker):
            session = "".join(rng.choice(list("abcdefghijkABCDEFGHIJK0123456789_-"), size=11))
            for u in range(utts_per_session):
                utt = f"{spk_id}/{session}/{u + 1:05d}"
                path = root / "wav" / f"{utt}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                wave = speech_like(seconds, sample_rate, speaker, seed=int(rng.integers(1 << 31)))
                sf.write(path, wave, sample_rate, subtype="PCM_16")
                utt_ids.append(utt)
    return utt_ids


def make_train_dir(root: Path, num_speakers: int = 8, seed: int = 0) -> Path:
    """A tiny training data dir (`root/train`): `num_speakers` synthetic speakers x 3 utterances
    of 1.5 s, one session each, the wavs under `root/wav`."""
    from speakerverify.data import DataDir

    utts = make_voxceleb_corpus(root, num_speakers=num_speakers, sessions_per_speaker=1,
                                utts_per_session=3, seconds=1.5, seed=seed)  # fmt: skip
    wav = {u: str(root / "wav" / f"{u}.wav") for u in utts}
    DataDir(wav=wav, utt2spk={u: u.split("/")[0] for u in utts}).save(root / "train")
    return root / "train"
