"""Options of the log-mel front-end (`speakerverify.frontend.features.Fbank`), without torch.

Experiment configs compose their `features` section from `FbankConfig` (so loading a config
never imports torch) and checkpoints store `FbankConfig.to_dict()`; a new option added here
flows through both. The ONNX fast path and `speakerverify.frontend.fbank_numpy` read it from model
metadata, also without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["CVN_MIN_VARIANCE", "WINDOW_TYPES", "FbankConfig"]

WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular", "blackman")
# `cvn` divides by sqrt(max(variance, this)): a band constant over an utterance (whose CMN
# leaves float rounding, ~1e-6) stays near 0.
CVN_MIN_VARIANCE = 1e-4


@dataclass(frozen=True)
class FbankConfig:
    """Options of :class:`Fbank`; names follow Kaldi's ``compute-fbank-feats`` with units.

    ``noise_floor_db`` is ours, not Kaldi's: the level, in dB relative to each utterance's own
    mean power, of a white noise whose *expected* mel energy is added before the log. It is
    dither without the randomness, and without a dependence on gain: bands a recording leaves
    empty (above a telephone band, below a high-pass) get the same floor in training and at
    test, instead of log-energies of quantisation noise that differ from one recording chain to
    the next. None (the default) keeps the features equal to Kaldi's.

    ``cvn`` (Kaldi's ``apply-cmvn --norm-vars``) also scales each band of an utterance to unit
    variance over its frames, after ``cmn``: how far a band's log energy swings depends on the
    recording chain (real narrowband speech swings two to three times more in the low bands
    than synthetic speech does), and this takes that out.

    >>> FbankConfig(num_mel_bins=40).frame_length
    400
    >>> FbankConfig.from_dict({"num_mel_bins": 64}).num_mel_bins
    64
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0
    snip_edges: bool = True
    cmn: bool = True
    cvn: bool = False
    noise_floor_db: float | None = None

    def __post_init__(self) -> None:
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(f"window_type {self.window_type!r}: valid are {list(WINDOW_TYPES)}")
        if self.num_mel_bins <= 3:
            raise ValueError(f"num_mel_bins must be > 3, got {self.num_mel_bins}")
        if not 0 < self.frame_shift <= self.frame_length:
            raise ValueError(
                f"need 0 < frame_shift_ms ({self.frame_shift_ms}) <= "
                f"frame_length_ms ({self.frame_length_ms})"
            )
        nyquist = self.sample_rate / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not (0 <= self.low_freq < high <= nyquist):
            raise ValueError(
                f"need 0 <= low_freq ({self.low_freq}) < high_freq ({high}) <= {nyquist} Hz"
            )
        if self.dither < 0 or not 0 <= self.preemphasis <= 1:
            raise ValueError("dither must be >= 0 and preemphasis in [0, 1]")
        if self.cvn and not self.cmn:
            raise ValueError("cvn (variance normalisation) needs cmn (mean normalisation)")
        if self.noise_floor_db is not None and not math.isfinite(self.noise_floor_db):
            raise ValueError(
                f"noise_floor_db must be a finite number or None, got {self.noise_floor_db}"
            )

    @property
    def frame_length(self) -> int:
        """Window length in samples."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def frame_shift(self) -> int:
        """Hop in samples."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def fft_size(self) -> int:
        """The window length rounded up to a power of two (Kaldi's round_to_power_of_two)."""
        return 1 << (self.frame_length - 1).bit_length()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the options."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FbankConfig:
        """Build from a dict; unknown keys raise ValueError listing the valid ones."""
        valid = [field.name for field in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown FbankConfig keys {unknown}; valid are {valid}")
        return cls(**values)
