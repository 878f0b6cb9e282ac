"""Random fixed-length crops of audio files, read by seeking (never the whole long file)."""

from __future__ import annotations

import os

import numpy as np

from speakerverify.frontend.audio import audio_info, load_audio


def num_samples_of(path: str | os.PathLike, sample_rate: int = 16000) -> int:
    """Length of `path` in samples at `sample_rate`, from the header (ffmpeg formats decode)."""
    info = audio_info(path)
    return int(info.num_frames * sample_rate // info.sample_rate)


def read_segment(
    path: str | os.PathLike, offset: int, num_samples: int, sample_rate: int = 16000
) -> np.ndarray:
    """Samples `[offset, offset + num_samples)` of `path` at `sample_rate`, as float32 `(S,)`.

    Shorter when the file ends first. A crop that is digital silence comes back as zeros instead
    of an error (silent stretches inside otherwise fine recordings are normal).
    """
    wave = load_audio(
        path,
        sample_rate,
        offset_seconds=offset / sample_rate,
        duration_seconds=num_samples / sample_rate,
        allow_silence=True,
    )
    return wave.numpy()[:num_samples]


def fit_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Cut to `num_samples`, or wrap-pad (repeat from the start) when shorter."""
    if wave.shape[0] >= num_samples:
        return wave[:num_samples]
    if wave.shape[0] == 0:
        return np.zeros(num_samples, dtype=np.float32)
    return np.pad(wave, (0, num_samples - wave.shape[0]), mode="wrap")


def read_random_crop(
    path: str | os.PathLike,
    num_samples: int,
    rng: np.random.Generator,
    sample_rate: int = 16000,
    *,
    total_samples: int | None = None,
) -> np.ndarray:
    """A uniformly placed crop of `num_samples` from `path`, wrap-padded if the file is shorter.

    Args:
        path: audio file.
        num_samples: crop length at `sample_rate`.
        rng: source of the crop offset.
        sample_rate: output rate in Hz.
        total_samples: file length at `sample_rate` if known (utt2dur), else read from the header.

    Returns:
        float32 `(num_samples,)`.
    """
    if total_samples is None:
        total_samples = num_samples_of(path, sample_rate)
    if total_samples <= num_samples:
        return fit_length(read_segment(path, 0, total_samples, sample_rate), num_samples)
    offset = int(rng.integers(0, total_samples - num_samples + 1))
    return fit_length(read_segment(path, offset, num_samples, sample_rate), num_samples)
