"""Batched Kaldi-compatible log-mel filterbanks (equal to ``torchaudio.compliance.kaldi.fbank``)
or MFCCs (``kaldi.mfcc``), per-utterance CMN over the valid frames (or only its smooth part), and
SpecAugment masking for training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from speakerverify.frontend.fbank_config import CVN_MIN_VARIANCE, FbankConfig

# Frames per chunk of the no-grad path (framing -> FFT -> power -> mel -> log): the chunk's
# buffers (~5 kB per frame) stay in cache; fewer frames per chunk and Python overhead dominates.
_CHUNK_FRAMES = 1024


def _window(window_type: str, length: int) -> torch.Tensor:
    """Kaldi's feature windows (symmetric), computed in float64."""
    n = torch.arange(length, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (length - 1))
    if window_type == "povey":
        return hann.pow(0.85)
    if window_type == "hanning":
        return hann
    if window_type == "hamming":
        return 0.54 - 0.46 * torch.cos(2 * math.pi * n / (length - 1))
    if window_type == "blackman":
        step = 2 * math.pi / (length - 1)
        return 0.42 - 0.5 * torch.cos(step * n) + 0.08 * torch.cos(2 * step * n)
    return torch.ones(length, dtype=torch.float64)


def _mel_blocks(mel_banks: torch.Tensor, num_groups: int) -> list[tuple[int, int, int, int]]:
    """Split the mel columns into groups; (first FFT bin, end FFT bin, first col, end col) each."""
    num_bins = mel_banks.shape[1]
    blocks = []
    for group in range(num_groups):
        first, last = group * num_bins // num_groups, (group + 1) * num_bins // num_groups
        rows = (mel_banks[:, first:last] != 0).any(dim=1).nonzero().flatten()
        low, high = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 1)
        blocks.append((low, high, first, last))
    return blocks


def _zero_padding(feats: torch.Tensor, lengths: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """Zero frames `t >= lengths[b]`; in place without autograd, touching only short rows."""
    num_frames = feats.shape[1]
    short_rows = (lengths < num_frames).nonzero().flatten().tolist()
    if not short_rows:
        return feats
    if differentiable:
        frame_index = torch.arange(num_frames, device=feats.device)[None, :, None]
        return torch.where(frame_index < lengths[:, None, None], feats, 0.0)
    for row in short_rows:
        feats[row, int(lengths[row]) :] = 0.0
    return feats


class Fbank(nn.Module):
    """Log-mel filterbank features of a padded batch in one vectorized pass.

    Equals ``torchaudio.compliance.kaldi.fbank`` with the same options (``use_energy=False``,
    ``dither=0``) on every utterance, up to float32 rounding. Pre-emphasis runs once on the
    continuous signal and DC removal is folded in afterwards as a rank-one correction
    (both are linear), so each frame is written exactly once before a real FFT. Without
    autograd, framing, FFT, power, mel and log run fused over cache-sized chunks of frames in
    reused buffers (~1.3x faster than whole-batch passes here); with autograd or on a GPU,
    whole-batch differentiable ops are used. Dither is added only when ``self.training`` and
    ``config.dither > 0``.

    >>> import torch
    >>> feats, lengths = Fbank()(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
    >>> tuple(feats.shape), lengths.tolist()
    ((2, 98, 80), [98, 48])

    With ``num_ceps`` the frames are MFCCs, equal to ``torchaudio.compliance.kaldi.mfcc``
    (``use_energy=False``, the same ``cepstral_lifter``).
    """

    def __init__(self, config: FbankConfig | None = None) -> None:
        super().__init__()
        from torchaudio.compliance.kaldi import get_mel_banks

        self.config = config or FbankConfig()
        cfg = self.config
        banks, _ = get_mel_banks(
            cfg.num_mel_bins, cfg.fft_size, float(cfg.sample_rate), cfg.low_freq,
            cfg.high_freq, 100.0, -500.0, 1.0,
        )  # fmt: skip
        # (num_fft_bins + 1, F): Kaldi has no weight on the Nyquist bin.
        mel = nn.functional.pad(banks.float(), (0, 1)).T.contiguous()
        window = _window(cfg.window_type, cfg.frame_length)
        # Pre-emphasised frame j>=1 is e[n] = x[n] - a x[n-1]; frame sample 0 is (1 - a) x[0].
        # Removing the frame mean m before pre-emphasis equals subtracting m (1 - a) w after it.
        dc_weight = (1 - cfg.preemphasis) * window if cfg.remove_dc_offset else 0 * window
        self.register_buffer("mel_banks", mel, persistent=False)
        # Each triangle covers few FFT bins: multiplying only the (FFT-bin rows x mel columns)
        # block each group of mel bins touches skips most zeros of the dense matmul.
        self._mel_blocks = _mel_blocks(mel, num_groups=4)
        # Kept in float64 (cast per call) so float64 input reproduces Kaldi's float64 path too.
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("dc_weight", dc_weight, persistent=False)
        self.register_buffer("noise_mel_energy", self._noise_mel_energy(mel), persistent=False)
        # Log-mel -> cepstra (`num_ceps`) and the part of the mean frame CMN takes (`cmn_ceps`).
        dct = cfg.dct_matrix()
        self.dct: torch.Tensor | None
        self.register_buffer(
            "dct", None if dct is None else torch.tensor(dct, dtype=torch.float64), persistent=False
        )
        projection = cfg.cmn_projection()
        self.cmn_projection: torch.Tensor | None
        self.register_buffer(
            "cmn_projection",
            None if projection is None else torch.tensor(projection, dtype=torch.float64),
            persistent=False,
        )
        # Kaldi clamps mel energies at float32 epsilon (for any dtype) before the log; with a
        # noise floor that clamp would undo its gain invariance, so it only guards log(0) then.
        finfo = torch.finfo(torch.float32)
        self._log_floor = finfo.eps if cfg.noise_floor_db is None else finfo.tiny

    def _noise_mel_energy(self, mel_banks: torch.Tensor) -> torch.Tensor:
        """`(F,)` expected mel energy of unit-variance white noise after this front-end.

        A frame goes through a linear map A (DC removal, pre-emphasis, window), so for white
        noise of variance 1, E|FFT(A x)_k|^2 = sum_j |FFT(A e_j)_k|^2 over the unit impulses e_j.
        """
        cfg = self.config
        length = cfg.frame_length
        eye = torch.eye(length, dtype=torch.float64)
        if cfg.remove_dc_offset:
            eye = eye - 1.0 / length
        previous = torch.cat([eye[:1], eye[:-1]])  # Kaldi uses x[0] as its own predecessor
        emphasised = eye - cfg.preemphasis * previous
        framed = emphasised * _window(cfg.window_type, length)[:, None]
        power = torch.fft.rfft(framed, n=cfg.fft_size, dim=0).abs().square().sum(dim=1)
        return (power @ mel_banks.double()).float()

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` samples (snip-edges or Kaldi's centred framing)."""
        length, shift = self.config.frame_length, self.config.frame_shift
        if not self.config.snip_edges:
            return (num_samples + shift // 2) // shift
        return 0 if num_samples < length else 1 + (num_samples - length) // shift

    def _frame_counts(self, lengths: torch.Tensor) -> torch.Tensor:
        length, shift = self.config.frame_length, self.config.frame_shift
        if not self.config.snip_edges:
            return torch.div(lengths + shift // 2, shift, rounding_mode="floor")
        counts = torch.div(lengths - length, shift, rounding_mode="floor") + 1
        return counts.clamp_min(0)

    def forward(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute features.

        Args:
            waves: `(B, S)` padded batch or `(S,)` single waveform, float.
            lengths: `(B,)` valid samples per row (None: all `S`).

        Returns:
            feats `(B, T, F)` (a `(S,)` input gives `B = 1`), zero on padded frames and
            mean-normalised over the valid frames when ``config.cmn`` (and variance-normalised
            when ``config.cvn``); feat_lengths `(B,)`.
        """
        # Always full precision: under fp16 autocast a loud frame's mel energy overflows.
        with torch.autocast(waves.device.type, enabled=False):
            return self._features(waves, lengths)

    def _features(
        self, waves: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if waves.ndim == 1:
            waves = waves[None]
        if waves.ndim != 2:
            raise ValueError(f"waves must be (B, S) or (S,), got shape {tuple(waves.shape)}")
        if waves.dtype not in (torch.float32, torch.float64):
            waves = waves.float()
        batch, num_samples = waves.shape
        # full rows (training crops): nothing to check or zero, so no host read of the lengths
        padded = lengths is not None
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=waves.device)
        else:
            lengths = lengths.to(device=waves.device, dtype=torch.long)
            if lengths.shape != (batch,) or bool((lengths > num_samples).any()):
                raise ValueError(f"lengths must be (B,) = ({batch},) and <= S = {num_samples}")
        mel_floor = self._mel_floor(waves, lengths)  # of the signal as given
        if self.training and self.config.dither > 0:
            waves = waves + self.config.dither * torch.randn_like(waves)
        if not self.config.snip_edges:
            waves = self._reflect_edges(waves, lengths)
        feat_lengths = self._frame_counts(lengths)
        num_frames = self.num_frames(num_samples)
        if num_frames == 0:
            empty = waves.new_zeros(batch, 0, self.config.feat_dim)
            return empty, feat_lengths
        differentiable = torch.is_grad_enabled() and waves.requires_grad
        # Cache-sized chunks pay off on CPU; a GPU wants few large kernels.
        if differentiable or waves.device.type != "cpu":
            feats = self._log_mel(self._windowed_frames(waves, num_frames), mel_floor)
        else:
            feats = self._log_mel_chunked(waves, num_frames, mel_floor)
        if self.dct is not None:  # MFCCs: the first cepstra of each frame's log-mel
            feats = torch.matmul(feats, self.dct.to(feats.dtype))
        # Frames past a row's length saw padding: zero them (before the CMN sums and after).
        if padded:
            feats = _zero_padding(feats, feat_lengths, differentiable)
        if self.config.cmn:
            counts = feat_lengths.clamp_min(1).to(feats.dtype)[:, None, None]
            mean = feats.sum(dim=1, keepdim=True) / counts
            if self.cmn_projection is not None:  # partial CMN: the smooth part of the mean
                mean = torch.matmul(mean, self.cmn_projection.to(feats.dtype))
            feats = feats - mean if differentiable else feats.sub_(mean)
            if padded:
                feats = _zero_padding(feats, feat_lengths, differentiable)
            if self.config.cvn:
                variance = feats.square().sum(dim=1, keepdim=True) / counts
                std = variance.clamp_min(CVN_MIN_VARIANCE).sqrt()
                feats = feats / std if differentiable else feats.div_(std)
        return feats, feat_lengths

    def _reflect_edges(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Kaldi's snip_edges=False padding: mirror each row at its own start and end."""
        length, shift = self.config.frame_length, self.config.frame_shift
        pad = length // 2 - shift // 2
        index = torch.arange(pad + 2 * waves.shape[1], device=waves.device)[None, :] - pad
        last = lengths[:, None]
        index = torch.where(index < 0, -index - 1, index)
        index = torch.where(index >= last, 2 * last - 1 - index, index)
        return torch.gather(waves, 1, index.clamp(min=0).expand(waves.shape[0], -1))

    def _frame_parts(
        self, waves: torch.Tensor, num_frames: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Pieces of the pre-emphasised frames of `waves` `(B, >= span)`.

        Returns (first `(B, T)`: windowed sample 0 of each frame, body `(B, T, L - 1)`: the
        un-windowed pre-emphasised samples 1.. (a strided view), mean `(B, T)` or None).
        """
        cfg = self.config
        length, shift = cfg.frame_length, cfg.frame_shift
        span = (num_frames - 1) * shift + length
        waves = waves[:, :span]
        first = waves[:, : (num_frames - 1) * shift + 1 : shift] * (
            (1 - cfg.preemphasis) * self.window[0].to(waves.dtype)
        )
        emphasised = torch.add(waves[:, 1:], waves[:, :-1], alpha=-cfg.preemphasis)
        body = emphasised.unfold(-1, length - 1, shift)
        if not cfg.remove_dc_offset:
            return first, body, None
        # Frame sums from block sums: frames start and end on multiples of gcd(L, H).
        block = math.gcd(length, shift)
        sums = waves.reshape(waves.shape[0], span // block, block).sum(-1)
        mean = sums.unfold(-1, length // block, shift // block).sum(-1) / length
        return first, body, mean

    def _windowed_frames(self, waves: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`(B, T, fft_size)` pre-emphasised, DC-removed, windowed, zero-padded frames."""
        first, body, mean = self._frame_parts(waves, num_frames)
        window = self.window.to(waves.dtype)
        frames = torch.cat([first[..., None], body * window[1:]], dim=-1)
        if mean is not None:
            frames = frames - mean[..., None] * self.dc_weight.to(waves.dtype)
        return nn.functional.pad(frames, (0, self.config.fft_size - self.config.frame_length))

    def _log_mel(self, frames: torch.Tensor, mel_floor: torch.Tensor | None) -> torch.Tensor:
        """`(B, T, fft_size)` frames -> `(B, T, F)` log mel energies (+ `mel_floor` `(B, F)`),
        floored at float32 epsilon."""
        spectrum = torch.view_as_real(torch.fft.rfft(frames))
        power = spectrum[..., 0].square() + spectrum[..., 1].square()
        mel = torch.matmul(power, self.mel_banks.to(frames.dtype))
        if mel_floor is not None:
            mel = mel + mel_floor[:, None]
        return mel.clamp_min(self._log_floor).log()

    def _mel_floor(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | None:
        """`(B, F)` mel energy of white noise `noise_floor_db` below each row's mean power."""
        if self.config.noise_floor_db is None:
            return None
        valid = torch.arange(waves.shape[1], device=waves.device) < lengths[:, None]
        power = (waves.square() * valid).sum(1) / lengths.clamp_min(1).to(waves.dtype)
        power = power * 10.0 ** (self.config.noise_floor_db / 10.0)
        return power[:, None] * self.noise_mel_energy.to(waves.dtype)

    def _log_mel_chunked(
        self, waves: torch.Tensor, num_frames: int, mel_floor: torch.Tensor | None
    ) -> torch.Tensor:
        """The no-grad path: `(B, T, F)` log-mel, framing and FFT fused per cache-sized chunk.

        A chunk is a group of whole utterances (short rows) or a frame range of one utterance
        (long rows); its frames and power live in buffers reused across chunks.
        """
        cfg = self.config
        batch, length, shift = waves.shape[0], cfg.frame_length, cfg.frame_shift
        rows_per_chunk = max(1, _CHUNK_FRAMES // num_frames)
        frames_per_chunk = min(num_frames, _CHUNK_FRAMES)
        capacity = rows_per_chunk * frames_per_chunk
        frames = waves.new_zeros(capacity, cfg.fft_size)
        power = waves.new_empty(capacity, cfg.fft_size // 2 + 1)
        window = self.window.to(waves.dtype)[1:]
        dc_weight = self.dc_weight.to(waves.dtype)
        mel_banks = self.mel_banks.to(waves.dtype)
        floor = self._log_floor
        feats = waves.new_empty(batch, num_frames, cfg.num_mel_bins)
        for row in range(0, batch, rows_per_chunk):
            for start in range(0, num_frames, frames_per_chunk):
                stop = min(num_frames, start + frames_per_chunk)
                segment = waves[row : row + rows_per_chunk, start * shift :]
                first, body, mean = self._frame_parts(segment, stop - start)
                count = body.shape[0] * body.shape[1]
                chunk = frames[:count].view(body.shape[0], body.shape[1], -1)
                torch.mul(body, window, out=chunk[..., 1:length])
                chunk[..., 0] = first
                if mean is not None:
                    chunk[..., :length].addcmul_(mean[..., None], dc_weight, value=-1)
                spectrum = torch.fft.rfft(frames[:count])  # out= was slower: it copies
                # Squaring contiguously, then adding the pairs, is ~2x faster than strided re/im.
                parts = torch.view_as_real(spectrum).view(count, -1).square_()
                torch.add(parts[:, 0::2], parts[:, 1::2], out=power[:count])
                out = feats[row : row + rows_per_chunk, start:stop].view(count, -1)
                for low, high, first_bin, last_bin in self._mel_blocks:
                    out[:, first_bin:last_bin] = torch.mm(
                        power[:count, low:high], mel_banks[low:high, first_bin:last_bin]
                    )
                if mel_floor is not None:
                    rows = out.view(-1, stop - start, cfg.num_mel_bins)
                    rows.add_(mel_floor[row : row + rows.shape[0], None])
                out.clamp_min_(floor).log_()
        return feats


class SpecAugment(nn.Module):
    """Time and frequency masking (zeros, i.e. the CMN mean) of `(B, T, F)` features.

    Active only in training mode; in eval mode the input is returned unchanged. Each utterance
    gets `num_time_masks` spans of up to `max_time_mask_frames` frames inside its valid length
    and `num_freq_masks` bands of up to `max_freq_mask_bins` bins, drawn independently.

    >>> import torch
    >>> augment = SpecAugment().train()
    >>> feats = torch.ones(2, 50, 80)
    >>> masked = augment(feats, generator=torch.Generator().manual_seed(0))
    >>> bool((masked == 0).any()), bool(torch.equal(augment.eval()(feats), feats))
    (True, True)
    """

    def __init__(
        self,
        num_time_masks: int = 1,
        max_time_mask_frames: int = 10,
        num_freq_masks: int = 1,
        max_freq_mask_bins: int = 8,
    ) -> None:
        super().__init__()
        self.num_time_masks = num_time_masks
        self.max_time_mask_frames = max_time_mask_frames
        self.num_freq_masks = num_freq_masks
        self.max_freq_mask_bins = max_freq_mask_bins

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mask `feats` `(B, T, F)`; `lengths` `(B,)` valid frames; `generator` for determinism."""
        if not self.training:
            return feats
        batch, num_frames, num_bins = feats.shape
        if lengths is None:
            lengths = torch.full((batch,), num_frames, dtype=torch.long)
        lengths = lengths.cpu()
        time_mask = self._spans(num_frames, lengths, self.num_time_masks,
                                self.max_time_mask_frames, generator)  # fmt: skip
        freq_mask = self._spans(num_bins, torch.full((batch,), num_bins), self.num_freq_masks,
                                self.max_freq_mask_bins, generator)  # fmt: skip
        mask = time_mask[:, :, None] | freq_mask[:, None, :]
        return feats.masked_fill(mask.to(feats.device), 0.0)

    @staticmethod
    def _spans(
        size: int,
        limits: torch.Tensor,
        num_masks: int,
        max_width: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """`(B, size)` bool: `num_masks` random spans per row, each inside ``[0, limits[b])``."""
        batch = limits.shape[0]
        positions = torch.arange(size)
        mask = torch.zeros(batch, size, dtype=torch.bool)
        if num_masks <= 0 or max_width <= 0:
            return mask
        draws = torch.rand(2, batch, num_masks, generator=generator)
        widths = (draws[0] * (max_width + 1)).long().clamp(max=limits[:, None])
        starts = (draws[1] * (limits[:, None] - widths + 1)).long()
        inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
        return mask | inside.any(dim=1)
