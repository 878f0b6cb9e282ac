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

__all__ = ["CVN_MIN_VARIANCE", "WINDOW_TYPES", "FbankConfig", "dct_basis"]

WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular", "blackman")
# `cvn` divides by sqrt(max(variance, this)): a band constant over an utterance (whose CMN
# leaves float rounding, ~1e-6) stays near 0.
CVN_MIN_VARIANCE = 1e-4


def dct_basis(num_bins: int, num_ceps: int, lifter: float = 0.0) -> list[list[float]]:
    """`(num_bins, num_ceps)` orthonormal DCT-II columns, each times Kaldi's sinusoidal lifter
    when `lifter` > 0: the matrix of ``torchaudio.compliance.kaldi.mfcc`` (Kaldi's
    ``ComputeDctMatrix``), in float64 as plain lists so the torch and numpy front-ends share it.

    >>> basis = dct_basis(4, 2)
    >>> dot = lambda i, j: round(sum(row[i] * row[j] for row in basis), 12)
    >>> dot(0, 1), dot(1, 1)
    (0.0, 1.0)
    """
    rows = []
    for n in range(num_bins):
        row = []
        for k in range(num_ceps):
            scale = math.sqrt((1.0 if k == 0 else 2.0) / num_bins)
            weight = 1.0 + 0.5 * lifter * math.sin(math.pi * k / lifter) if lifter else 1.0
            row.append(scale * math.cos(math.pi / num_bins * (n + 0.5) * k) * weight)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class FbankConfig:
    """Options of :class:`Fbank`; names follow Kaldi's ``compute-fbank-feats`` with units.

    ``noise_floor_db`` is ours, not Kaldi's: the level, in dB relative to each utterance's own
    mean power, of a white noise whose *expected* mel energy is added before the log. It is
    dither without the randomness, and without a dependence on gain: bands a recording leaves
    empty (above a telephone band, below a high-pass) get the same floor in training and at
    test, instead of log-energies of quantisation noise that differ from one recording chain to
    the next. None (the default) keeps the features equal to Kaldi's.

    ``num_ceps`` turns the log-mel into MFCCs: the first ``num_ceps`` coefficients of its
    orthonormal DCT-II (Kaldi's ``compute-mfcc-feats`` with ``use_energy=false``), multiplied by
    Kaldi's sinusoidal lifter when ``cepstral_lifter`` > 0. Dropping the higher cepstra smooths
    each frame's spectrum across frequency: the envelope (vocal tract, channel) stays and the
    pitch harmonics, which 80 mel bins resolve in the low bands, go. Kaldi's own default lifter
    is 22; ours is 0 (none), since the lifter up-weights the middle cepstra.

    ``cmn_ceps`` limits CMN to the smooth part of the utterance's mean log spectrum: the
    projection of the mean frame onto the first ``cmn_ceps`` cepstral basis vectors (level and
    broad tilt) is subtracted, the rest of the mean is kept. The mean log spectrum over an
    utterance holds both the recording channel's response, which mostly tilts and scales it,
    and the speaker's own long-term envelope (formant regions), which full CMN throws away with
    the channel. None (the default) is full CMN, as in Kaldi.

    ``cvn`` (Kaldi's ``apply-cmvn --norm-vars``) also scales each band of an utterance to unit
    variance over its frames, after ``cmn``: how far a band's log energy swings depends on the
    recording chain (real narrowband speech swings two to three times more in the low bands
    than synthetic speech does), and this takes that out.

    >>> FbankConfig(num_mel_bins=40).frame_length
    400
    >>> FbankConfig(num_ceps=30).feat_dim
    30
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
    num_ceps: int | None = None
    cepstral_lifter: float = 0.0
    cmn_ceps: int | None = None

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
        if self.num_ceps is not None and not 1 <= self.num_ceps <= self.num_mel_bins:
            raise ValueError(
                f"num_ceps must be in [1, num_mel_bins = {self.num_mel_bins}], got {self.num_ceps}"
            )
        if self.cmn_ceps is not None:
            if not self.cmn or self.cvn:
                raise ValueError("cmn_ceps (partial CMN) needs cmn and no cvn")
            if not 1 <= self.cmn_ceps <= self.feat_dim:
                raise ValueError(
                    f"cmn_ceps must be in [1, {self.feat_dim}] (values per frame), "
                    f"got {self.cmn_ceps}"
                )
        if not (math.isfinite(self.cepstral_lifter) and self.cepstral_lifter >= 0):
            raise ValueError(f"cepstral_lifter must be >= 0, got {self.cepstral_lifter}")
        if self.noise_floor_db is not None and not math.isfinite(self.noise_floor_db):
            raise ValueError(
                f"noise_floor_db must be a finite number or None, got {self.noise_floor_db}"
            )

    @property
    def feat_dim(self) -> int:
        """Values per frame: `num_ceps` cepstra, or `num_mel_bins` log-mel energies."""
        return self.num_mel_bins if self.num_ceps is None else self.num_ceps

    def dct_matrix(self) -> list[list[float]] | None:
        """`(num_mel_bins, num_ceps)` log-mel -> cepstra (`dct_basis` with the lifter), or None."""
        if self.num_ceps is None:
            return None
        return dct_basis(self.num_mel_bins, self.num_ceps, self.cepstral_lifter)

    def cmn_projection(self) -> list[list[float]] | None:
        """`(feat_dim, feat_dim)` matrix taking an utterance's mean frame to the part of it that
        CMN subtracts when `cmn_ceps` is set (None: all of it).

        For cepstra it keeps the first `cmn_ceps` coefficients; for log-mel it projects onto
        the first `cmn_ceps` DCT basis vectors (the smooth part of the mean log spectrum).
        """
        if self.cmn_ceps is None:
            return None
        keep = self.cmn_ceps
        if self.num_ceps is not None:
            return [[1.0 if i == j < keep else 0.0 for j in range(self.num_ceps)]
                    for i in range(self.num_ceps)]  # fmt: skip
        basis = dct_basis(self.num_mel_bins, keep)
        return [
            [sum(a * b for a, b in zip(row_i, row_j, strict=True)) for row_j in basis]
            for row_i in basis
        ]

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
