"""Recording conditions simulated with no download: coloured and babble-like noise, room impulse
responses, microphone EQ, band limits (telephone, low-pass), mu-law coding and level.

Rooms come from a small hand-made model by default (`room_impulse_response`), or, with the
`rooms` extra, from the image-source model of a drawn shoebox room (`shoebox_impulse_response`,
pyroomacoustics).

`ChannelSimulator.draw` picks one condition (a `Channel`) from its ranges; `apply_channel` plays
a waveform through it. Training draws a condition per crop (independent of the speaker, so the
encoder cannot use the channel as a cue); the synthetic corpus draws one per session. All
randomness comes from the `rng` passed in, so a seed gives the same audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from speakerverify.data.augment import mix_at_snr
from speakerverify.errors import SpeakerVerifyError

NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")
# Six log-spaced points of the random EQ curve, Hz.
_EQ_POINTS_HZ = (60.0, 150.0, 400.0, 1000.0, 2800.0, 7600.0)
# Shoebox rooms, m: (length, width, height) ranges, from a small office to a lecture room.
_ROOM_DIMS_M = ((3.0, 10.0), (3.0, 8.0), (2.4, 4.0))
_WALL_MARGIN_M = 0.5  # talker and microphone at least this far from every wall
_HEIGHT_M = (1.0, 2.0)  # of talker and microphone (seated to standing, desk to wall)
_DISTANCE_M = (1.0, 3.0)  # talker to microphone
# Image sources up to this order (about 5,000) cost a few ms; the full order of a 0.8 s room
# (100+, millions of images) costs seconds. Later reflections become a noise tail.
_MAX_IMAGE_ORDER = 15
_MAX_ABSORPTION = 0.9  # walls absorbing more: the room is shrunk instead (short rt60, big room)


class MissingExtraError(SpeakerVerifyError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


@dataclass(frozen=True)
class Channel:
    """One recording condition; 0 / None switch a stage off.

    Attributes:
        rt60: reverberation time of a simulated room, seconds (0: dry).
        room: how that room is simulated, a `ROOMS` name: "simple" (`room_impulse_response`) or
            "shoebox" (`shoebox_impulse_response`, needs pyroomacoustics).
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
    room: str = "simple"
    noise: str | None = None
    snr_db: float = 30.0
    eq_db: tuple[float, ...] | None = None
    lowpass_hz: float | None = None
    narrowband: bool = False
    telephone: bool = False
    mulaw: bool = False
    line_snr_db: float | None = None
    level_db: float = -26.0

    def __post_init__(self) -> None:
        if self.room not in ROOMS:
            raise ValueError(f"room {self.room!r}: valid are {list(ROOMS)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChannelSimulator:
    """Draws `Channel`s: each stage on with its probability, its parameter from its range.

    The defaults describe everyday recordings (rooms, phones, laptops, noise at 0-30 dB SNR).
    `room` names how the rooms of the reverberant channels are simulated (a `ROOMS` name):
    "simple" (the default) or "shoebox", which needs pyroomacoustics (`pip install
    'speakerverify[rooms]'`; without it the simulator is refused at once, with MissingExtraError).

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
    room: str = "simple"
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
        Channel(room=self.room)  # the room name, checked where every drawn Channel checks it
        if self.room == "shoebox":
            _import_pyroomacoustics()  # fail now, not in a loader worker; forks inherit it

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
            room=self.room,
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


def shoebox_impulse_response(
    rng: np.random.Generator, rt60: float, sample_rate: int = 16000
) -> np.ndarray:
    """A drawn shoebox room, talker and microphone, simulated by the image-source model of
    pyroomacoustics (the `rooms` extra). `(R,)` float64, unit energy.

    The room is 3-10 x 3-8 x 2.4-4 m, talker and microphone 1-2 m high, at least 0.5 m from the
    walls and 1-3 m apart; the walls absorb what Sabine's formula needs for `rt60`
    (`pyroomacoustics.inverse_sabine`). Image sources up to order 15 give the direct path and
    the early reflections; from where the omitted higher orders would start to arrive on, a
    noise tail continues the simulated level and decays by 60 dB in `rt60`. The direct path
    arrives after 2.5 ms (half the library's fractional-delay filter); the response lasts `rt60`
    from there. An `rt60` too short for the drawn room (walls absorbing over 90 %) shrinks it.

    Args:
        rng: the only source of randomness (the simulation itself is deterministic).
        rt60: reverberation time, seconds (> 0).
        sample_rate: Hz.

    Returns:
        `(R,)` float64 impulse response with `sum(rir**2) == 1`.

    Raises:
        MissingExtraError: pyroomacoustics is not installed.
        ValueError: `rt60` is not positive.
    """
    pra = _import_pyroomacoustics()
    if not rt60 > 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60!r}")
    speed = float(pra.constants.get("c"))
    room_dim = np.array([rng.uniform(low, high) for low, high in _ROOM_DIMS_M])
    # Sabine: absorption = 24 ln(10) V / (c S rt60), so a wall cannot absorb enough for a short
    # rt60 in a big room; V / S grows with the room's size, so shrink it until one can.
    volume_per_area = 0.5 / np.sum(1 / room_dim)
    most = _MAX_ABSORPTION * speed * rt60 / (24 * np.log(10))
    room_dim *= min(1.0, most / volume_per_area)
    talker, microphone = _draw_positions(rng, room_dim)
    absorption, order = pra.inverse_sabine(rt60, room_dim, c=speed)
    order = min(order, _MAX_IMAGE_ORDER)
    room = pra.ShoeBox(
        room_dim, fs=sample_rate, materials=pra.Material(float(absorption)), max_order=order
    )
    room.add_source(talker)
    room.add_microphone(microphone)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    delay = int(np.linalg.norm(microphone - talker) / speed * sample_rate)
    half_filter = int(pra.constants.get("frac_delay_length")) // 2
    end = delay + half_filter + int(rt60 * sample_rate)
    if order == _MAX_IMAGE_ORDER:
        # The images up to `order` hold every one within (order + 1) shortest spans of the room
        # lattice (inverse_sabine's reasoning); one span short of that, for where talker and
        # microphone sit, the response is complete (within 1 dB of order 30 over 30 rooms).
        span = 1 / np.sqrt(np.sum(1 / np.sort(room_dim)[:2] ** 2))
        complete = min(int(order * span / speed * sample_rate) + half_filter, len(rir))
        window = min(int(0.01 * sample_rate), complete)
        level = np.sqrt(np.mean(rir[complete - window : complete] ** 2))
        t = (np.arange(complete, end) - (complete - window / 2)) / sample_rate
        tail = rng.standard_normal(len(t)) * level * np.exp(-np.log(1000) * t / rt60)
        rir = np.concatenate([rir[:complete], tail])
    rir = rir[delay:end]
    return rir / np.sqrt(np.sum(rir**2))


def _draw_positions(
    rng: np.random.Generator, room_dim: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Talker and microphone `(3,)` positions in `room_dim`, m, `_DISTANCE_M` apart if it fits."""
    margin = np.minimum(_WALL_MARGIN_M, room_dim / 4)

    def point() -> np.ndarray:
        x, y = rng.uniform(margin[:2], room_dim[:2] - margin[:2])
        z = np.clip(rng.uniform(*_HEIGHT_M), margin[2], room_dim[2] - margin[2])
        return np.array([x, y, z])

    talker = point()
    for _ in range(100):  # rejection: a few tries at most unless the room is shrunk
        microphone = point()
        if _DISTANCE_M[0] <= np.linalg.norm(microphone - talker) <= _DISTANCE_M[1]:
            break
    return talker, microphone


def _import_pyroomacoustics() -> Any:
    """The pyroomacoustics module, or MissingExtraError naming the extra that installs it."""
    try:
        import pyroomacoustics
    except ImportError:
        raise MissingExtraError(
            "room 'shoebox' needs pyroomacoustics: pip install 'speakerverify[rooms]'"
        ) from None
    return pyroomacoustics


# How `Channel.room` simulates a room: `(rng, rt60, sample_rate) -> (R,)` unit-energy RIR.
ROOMS: dict[str, Callable[[np.random.Generator, float, int], np.ndarray]] = {
    "simple": room_impulse_response,
    "shoebox": shoebox_impulse_response,
}


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
        rir = ROOMS[channel.room](rng, channel.rt60, sample_rate)
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
