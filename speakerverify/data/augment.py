"""On-the-fly augmentation of training crops: MUSAN noise, music and babble at a drawn SNR, and
reverberation with RIRS_NOISES simulated room impulse responses (the Kaldi/WeSpeaker recipe),
then optionally a recording channel simulated per crop (`speakerverify.data.simulate`), which
needs no download.

Speed perturbation is not here: it makes new speakers, so it lives in `CropDataset`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from speakerverify.data.noise import MUSAN_KINDS, RIR_KINDS, read_index
from speakerverify.data.reading import read_random_crop, read_segment

logger = logging.getLogger(__name__)

METHODS = ("noise", "music", "babble", "reverb")
Index = str | os.PathLike | Mapping[str, Sequence[str]] | None


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech + g * noise` with g chosen so that power(speech) / power(g * noise) is `snr_db`.

    Args:
        speech: `(S,)` float.
        noise: `(S,)` float, same length.
        snr_db: signal-to-noise ratio in dB.

    Returns:
        `(S,)` float32; `speech` unchanged if either signal is silent.

    >>> s = np.ones(4, dtype=np.float32); n = np.array([1, -1, 1, -1], dtype=np.float32)
    >>> [round(float(x), 2) for x in mix_at_snr(s, n, 20.0)]
    [1.1, 0.9, 1.1, 0.9]
    """
    speech_power = float(np.mean(np.square(speech, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if speech_power == 0.0 or noise_power == 0.0:
        return speech.astype(np.float32, copy=True)
    gain = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room impulse response, keeping length, timing and power of `wave`.

    The RIR is normalised to unit energy and the output starts at the RIR's direct path (its
    largest tap), so the reverberant speech stays aligned with the dry speech; the result is
    rescaled to the power of `wave`.

    Args:
        wave: `(S,)` float.
        rir: `(R,)` float impulse response.

    Returns:
        `(S,)` float32.
    """
    from scipy.signal import fftconvolve

    rir = np.asarray(rir, dtype=np.float64)
    energy = float(np.sum(rir**2))
    if energy == 0.0:
        return wave.astype(np.float32, copy=True)
    rir = rir / np.sqrt(energy)
    direct = int(np.argmax(np.abs(rir)))
    out = fftconvolve(wave.astype(np.float64), rir)[direct : direct + wave.shape[0]]
    in_power = float(np.mean(np.square(wave, dtype=np.float64)))
    out_power = float(np.mean(out**2))
    if out_power > 0.0:
        out *= np.sqrt(in_power / out_power)
    return out.astype(np.float32)


class Augmenter:
    """With probability `aug_prob`, apply one of noise / music / babble / reverb to a crop.

    A method whose source is not configured is left out (logged once, here); with no source at
    all the augmenter passes crops through unchanged. All randomness comes from the `rng` passed
    per call, so the same seed gives the same output.

    Args:
        musan_index: `prepare musan` index file, or a mapping kind -> paths (kinds music, speech,
            noise), or None.
        rir_index: `prepare rirs` index file, or a mapping room size -> paths, or None.
        aug_prob: probability that a crop is augmented at all.
        sample_rate: rate of the crops in Hz (noise and RIRs are resampled to it).
        noise_snr_db, music_snr_db, babble_snr_db: (low, high) uniform SNR ranges in dB.
        babble_speakers: (low, high) inclusive range of babble talkers summed.
        rir_rooms: room sizes to draw RIRs from (RIRS_NOISES: smallroom, mediumroom, largeroom).
        channel: called as `channel(wave (S,), rng) -> (S,)` on every crop after the MUSAN/RIR
            step (normally a `simulate.ChannelSimulator`, which draws its own stages), or None.
    """

    def __init__(
        self,
        musan_index: Index = None,
        rir_index: Index = None,
        aug_prob: float = 0.6,
        sample_rate: int = 16000,
        *,
        noise_snr_db: tuple[float, float] = (0.0, 15.0),
        music_snr_db: tuple[float, float] = (5.0, 15.0),
        babble_snr_db: tuple[float, float] = (13.0, 20.0),
        babble_speakers: tuple[int, int] = (3, 7),
        rir_rooms: Sequence[str] = ("smallroom", "mediumroom"),
        channel: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        if not 0.0 <= aug_prob <= 1.0:
            raise ValueError(f"aug_prob must be in [0, 1], got {aug_prob}")
        if babble_speakers[0] < 1 or babble_speakers[1] < babble_speakers[0]:
            raise ValueError(f"invalid babble_speakers range {babble_speakers}")
        unknown = [room for room in rir_rooms if room not in RIR_KINDS]
        if unknown:
            raise ValueError(f"unknown rir_rooms {unknown}; valid: {', '.join(RIR_KINDS)}")
        self.aug_prob = aug_prob
        self.sample_rate = sample_rate
        self.snr_db = {"noise": noise_snr_db, "music": music_snr_db, "babble": babble_snr_db}
        self.babble_speakers = babble_speakers
        musan = _load(musan_index, MUSAN_KINDS)
        rirs = _load(rir_index, RIR_KINDS)
        self.sources: dict[str, list[str]] = {
            "noise": musan.get("noise", []),
            "music": musan.get("music", []),
            "babble": musan.get("speech", []),
            "reverb": [p for room in rir_rooms for p in rirs.get(room, [])],
        }
        self.methods = [m for m in METHODS if self.sources[m]]
        self.channel = channel
        missing = [m for m in METHODS if not self.sources[m]]
        if missing and channel is None:
            logger.warning(
                "augmentation without %s (no source configured)%s",
                ", ".join(missing),
                "" if self.methods else ": crops pass through unchanged",
            )

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one crop `(S,)` float32; returns `(S,)` float32 (peak kept within [-1, 1])."""
        if self.methods and rng.random() < self.aug_prob:
            method = self.methods[int(rng.integers(len(self.methods)))]
            wave = self.apply(method, wave, rng)
        return wave if self.channel is None else self.channel(wave, rng)

    def apply(self, method: str, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply `method` ("noise", "music", "babble", "reverb") unconditionally."""
        if method not in self.methods:
            raise ValueError(f"method {method!r} not available; available: {self.methods}")
        if method == "reverb":
            path = self.sources["reverb"][int(rng.integers(len(self.sources["reverb"])))]
            rir = read_segment(path, 0, 4 * self.sample_rate, self.sample_rate)
            out = reverberate(wave, rir)
        else:
            low, high = self.snr_db[method]
            snr_db = float(rng.uniform(low, high))
            noise = (
                self._babble(wave.shape[0], rng)
                if method == "babble"
                else self._crop(self.sources[method], wave.shape[0], rng)
            )
            out = mix_at_snr(wave, noise, snr_db)
        peak = float(np.max(np.abs(out))) if out.size else 0.0
        if peak > 1.0:
            out = out / peak  # scaling both parts keeps the SNR
        return out.astype(np.float32, copy=False)

    def _crop(self, paths: list[str], num_samples: int, rng: np.random.Generator) -> np.ndarray:
        path = paths[int(rng.integers(len(paths)))]
        return read_random_crop(path, num_samples, rng, self.sample_rate)

    def _babble(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Sum of 3-7 talkers (each at unit power, so none dominates)."""
        paths = self.sources["babble"]
        low, high = self.babble_speakers
        count = int(rng.integers(low, high + 1))
        picks = rng.choice(len(paths), size=count, replace=count > len(paths))
        total = np.zeros(num_samples, dtype=np.float64)
        for i in picks:
            talker = read_random_crop(paths[int(i)], num_samples, rng, self.sample_rate)
            power = float(np.mean(np.square(talker, dtype=np.float64)))
            if power > 0.0:
                total += talker / np.sqrt(power)
        return total.astype(np.float32)


def _load(index: Index, kinds: tuple[str, ...]) -> dict[str, list[str]]:
    if index is None:
        return {}
    if isinstance(index, Mapping):
        unknown = [k for k in index if k not in kinds]
        if unknown:
            raise ValueError(f"unknown index kinds {unknown}; valid: {', '.join(kinds)}")
        return {k: list(v) for k, v in index.items()}
    return read_index(index, kinds)
