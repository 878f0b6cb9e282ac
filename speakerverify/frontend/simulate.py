"""Recording conditions simulated with no download: coloured and babble-like noise, room impulse
responses, microphone EQ, band limits (telephone, low-pass), mu-law coding and level.

`ChannelSimulator.draw` picks one condition (a `Channel`) from its ranges; `apply_channel` plays
a waveform through it. Training draws a condition per crop (independent of the speaker, so the
encoder cannot use the channel as a cue); the synthetic corpus draws one per session. All
randomness comes from the `rng` passed in, so a seed gives the same audio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from speakerverify.frontend.augment import mix_at_snr

NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")
# Six log-spaced points of the random EQ curve, Hz.
_EQ_POINTS_HZ = (60.0, 150.0, 400.0, 1000.0, 2800.0, 7600.0)


@dataclass(frozen=True)
class Channel:
    """One recording condition; 0 / None switch a stage off.

    Attributes:
        rt60: reverberation time of a simulated room, seconds (0: dry).
        noise: kind of additive acoustic noise (one of NOISE_KINDS) or None.
        snr_db: speech-to-noise ratio of that noise, dB.
        eq_db: gains of a smooth EQ curve at `_EQ_POINTS_HZ` (microphone, voice colour), or None.
        lowpass_hz: a low-pass edge (cheap microphones, MP3-like), or None.
        narrowband: a round trip through 8 kHz (a narrowband recording, upsampled).
        telephone: narrowband and band-pass 300-3,400 Hz first.
        mulaw: 8-bit mu-law coding (G.711) at 8 kHz, the classic telephone codec.
        line_snr_db: white noise added after the channel (electronics), dB below the speech,
            or None.
        level_db: output level, dB relative to full scale (RMS).
    """

    rt60: float = 0.0
    noise: str | None = None
    snr_db: float = 30.0
    eq_db: tuple[float, ...] | None = None
    lowpass_hz: float | None = None
    narrowband: bool = False
    telephone: bool = False
    mulaw: bool = False
    line_snr_db: float | None = None
    level_db: float = -26.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChannelSimulator:
    """Draws `Channel`s: each stage on with its probability, its parameter from its range.

    The defaults describe everyday recordings (rooms, phones, laptops, noise at 0-30 dB SNR).

    >>> rng = np.random.default_rng(0)
    >>> channel = ChannelSimulator(narrowband_prob=1.0, mulaw_prob=0.0).draw(rng)
    >>> channel.narrowband, channel.mulaw
    (True, False)
    >>> out = apply_channel(np.sin(np.arange(16000) * 0.1), channel, rng)
    >>> out.shape, out.dtype
    ((16000,), dtype('float32'))
    """

    reverb_prob: float = 0.3
    rt60_range: tuple[float, float] = (0.2, 0.8)
    noise_prob: float = 0.6
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    snr_db_range: tuple[float, float] = (5.0, 30.0)
    eq_prob: float = 0.8
    eq_max_db: float = 6.0
    lowpass_prob: float = 0.15
    lowpass_hz_range: tuple[float, float] = (3800.0, 7000.0)
    narrowband_prob: float = 0.5
    telephone_prob: float = 0.5  # of narrowband channels
    mulaw_prob: float = 0.3  # of narrowband channels
    line_noise_prob: float = 0.5
    line_snr_db_range: tuple[float, float] = (30.0, 60.0)
    level_db_range: tuple[float, float] = (-36.0, -16.0)

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "noise_prob", "eq_prob", "lowpass_prob", "narrowband_prob",
                     "telephone_prob", "mulaw_prob", "line_noise_prob"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        unknown = sorted(set(self.noise_kinds) - set(NOISE_KINDS))
        if unknown or not self.noise_kinds:
            raise ValueError(f"noise_kinds {list(self.noise_kinds)}: valid are {list(NOISE_KINDS)}")
        for name in ("rt60_range", "snr_db_range", "lowpass_hz_range", "line_snr_db_range",
                     "level_db_range"):  # fmt: skip
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}")

    def draw(self, rng: np.random.Generator) -> Channel:
        """One condition; every stage is drawn whether or not it is used (stable streams)."""
        draws = rng.random(8)
        rt60 = float(rng.uniform(*self.rt60_range))
        noise = str(self.noise_kinds[int(rng.integers(len(self.noise_kinds)))])
        snr_db = float(rng.uniform(*self.snr_db_range))
        eq_db = tuple(float(g) for g in self.eq_max_db / 2 * rng.standard_normal(6))
        lowpass_hz = float(rng.uniform(*self.lowpass_hz_range))
        line_snr_db = float(rng.uniform(*self.line_snr_db_range))
        narrowband = bool(draws[4] < self.narrowband_prob)
        return Channel(
            rt60=rt60 if draws[0] < self.reverb_prob else 0.0,
            noise=noise if draws[1] < self.noise_prob else None,
            snr_db=snr_db,
            eq_db=eq_db if draws[2] < self.eq_prob else None,
            lowpass_hz=lowpass_hz if draws[3] < self.lowpass_prob and not narrowband else None,
            narrowband=narrowband,
            telephone=narrowband and bool(draws[7] < self.telephone_prob),
            mulaw=narrowband and bool(draws[5] < self.mulaw_prob),
            line_snr_db=line_snr_db if draws[6] < self.line_noise_prob else None,
            level_db=float(rng.uniform(*self.level_db_range)),
        )

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw a condition and apply it: `(S,)` -> `(S,)` float32 (the augmenter's signature)."""
        return apply_channel(wave, self.draw(rng), rng)


def colored_noise(
    rng: np.random.Generator, kind: str, num_samples: int, sample_rate: int = 16000
) -> np.ndarray:
    """White, pink, brown, mains hum or speech-shaped syllable-rate modulated noise, `(S,)`."""
    from scipy.fft import irfft, next_fast_len, rfft

    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind {kind!r}: valid are {list(NOISE_KINDS)}")
    t = np.arange(num_samples) / sample_rate
    if kind == "hum":
        base = 50.0 if rng.random() < 0.5 else 60.0
        hum = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        return hum + 0.1 * rng.standard_normal(num_samples)
    size = next_fast_len(num_samples, real=True)  # odd sizes make the FFT 10x slower
    spectrum = rfft(rng.standard_normal(size))
    freqs = np.maximum(np.fft.rfftfreq(size, 1 / sample_rate), 20.0)
    if kind == "pink":
        spectrum /= np.sqrt(freqs)
    elif kind == "brown":
        spectrum /= freqs
    elif kind == "babble":  # long-term speech spectrum: a broad bump around 500 Hz
        spectrum *= np.exp(-(((np.log(freqs) - np.log(500)) / 1.0) ** 2))
    noise = irfft(spectrum, size)[:num_samples]
    if kind == "babble":  # several talkers' syllable rhythms
        rates = rng.uniform(3, 6, size=3)
        phases = rng.uniform(0, 6.3, size=3)
        envelope = sum(
            1 + np.sin(2 * np.pi * r * t + p) for r, p in zip(rates, phases, strict=True)
        )
        noise *= envelope / 3
    return noise


def room_impulse_response(
    rng: np.random.Generator, rt60: float, sample_rate: int = 16000
) -> np.ndarray:
    """A simulated room: direct path, sparse early reflections, then a diffuse tail that decays
    by 60 dB in `rt60` seconds, faster at high frequencies (air and wall absorption). `(R,)`."""
    length = max(int(rt60 * sample_rate), 16)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    # High frequencies die sooner: mix in a low-passed copy of the tail whose share grows in time.
    smooth = np.convolve(tail, np.ones(4) / 4, mode="same")
    share = np.clip(t / rt60, 0.0, 1.0)
    tail = (1 - share) * tail + share * smooth
    delay = int(rng.uniform(0.001, 0.004) * sample_rate)  # gap before the diffuse field
    tail[:delay] = 0.0
    rir = tail * rng.uniform(0.3, 1.0)
    rir[0] = 1.0  # direct path
    for _ in range(int(rng.integers(3, 9))):  # first-order wall reflections
        at = int(rng.uniform(0.002, 0.03) * sample_rate)
        if at < length:
            rir[at] += rng.uniform(-0.7, 0.7)
    return rir / np.sqrt(np.sum(rir**2))


def _equalise(wave: np.ndarray, gains_db: np.ndarray, sample_rate: int) -> np.ndarray:
    from scipy.fft import irfft, next_fast_len, rfft

    size = next_fast_len(len(wave), real=True)
    freqs = np.fft.rfftfreq(size, 1 / sample_rate)
    points = np.log(np.asarray(_EQ_POINTS_HZ))
    curve = np.interp(np.log(np.maximum(freqs, _EQ_POINTS_HZ[0])), points, gains_db)
    return irfft(rfft(wave, size) * 10 ** (curve / 20), size)[: len(wave)]


@lru_cache(maxsize=64)
def _butter(order: int, edges: float | tuple[float, float], kind: str, sample_rate: int):
    from scipy.signal import butter

    return butter(order, edges, kind, fs=sample_rate, output="sos")


def mu_law(wave: np.ndarray) -> np.ndarray:
    """8-bit mu-law (mu = 255) encode + decode of `wave` relative to its peak."""
    peak = float(np.max(np.abs(wave))) + 1e-9
    mu = 255.0
    coded = np.sign(wave) * np.log1p(mu * np.abs(wave / peak)) / np.log1p(mu)
    coded = np.round(coded * 127) / 127
    return peak * np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu


def apply_channel(
    wave: np.ndarray, channel: Channel, rng: np.random.Generator, sample_rate: int = 16000
) -> np.ndarray:
    """Play `wave` `(S,)` through `channel`: room, acoustic noise, EQ, band limits, codec, line
    noise, level. Returns `(S,)` float32 within [-1, 1]."""
    from scipy.signal import fftconvolve, resample_poly, sosfilt

    wave = np.asarray(wave, dtype=np.float64)
    if channel.rt60 > 0:
        rir = room_impulse_response(rng, channel.rt60, sample_rate)
        wave = fftconvolve(wave, rir)[: len(wave)]
    if channel.noise is not None:  # acoustic: in the room, so the channel filters it too
        noise = colored_noise(rng, channel.noise, len(wave), sample_rate)
        wave = mix_at_snr(wave, noise, channel.snr_db).astype(np.float64)
    if channel.eq_db is not None:
        wave = _equalise(wave, np.asarray(channel.eq_db), sample_rate)
    if channel.lowpass_hz:
        edge = round(min(channel.lowpass_hz, 0.45 * sample_rate), -1)  # 10 Hz steps: cacheable
        wave = sosfilt(_butter(6, edge, "lowpass", sample_rate), wave)
    if channel.narrowband or channel.telephone:
        if channel.telephone:
            wave = sosfilt(_butter(4, (300.0, 3400.0), "bandpass", sample_rate), wave)
        narrow = resample_poly(wave, 8000, sample_rate)
        if channel.mulaw:
            narrow = mu_law(narrow)
        wave = resample_poly(narrow, sample_rate, 8000)[: len(wave)]
    if channel.line_snr_db is not None:
        line = rng.standard_normal(len(wave))
        wave = mix_at_snr(wave, line, channel.line_snr_db).astype(np.float64)
    power = float(np.mean(wave**2))
    if power > 0:
        wave = wave * 10 ** (channel.level_db / 20) / np.sqrt(power)
    return np.clip(wave, -1.0, 32767 / 32768).astype(np.float32)
