"""The embedder: front-end + encoder in eval mode, waveforms or files -> embeddings `(N, D)`,
batched, with long inputs embedded in overlapping windows so memory stays bounded.

The same input always gives the same vector (no dither). Used by extraction
(`speakerverify.backend.extraction`), validation during training and the speaker commands.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from speakerverify.errors import SpeakerVerifyError

if TYPE_CHECKING:
    import torch


logger = logging.getLogger(__name__)

__all__ = ["EmbedError", "Embedder", "plan_batches"]


class EmbedError(SpeakerVerifyError, ValueError):
    """An utterance cannot be embedded (e.g. shorter than one frame); the message names it."""


def require_finite(embeddings: np.ndarray) -> np.ndarray:
    """`embeddings` as they are, or EmbedError when one is NaN or Inf (it would poison every
    score it takes part in); shared by the torch and the ONNX embedders."""
    if not np.isfinite(embeddings).all():
        raise EmbedError("the model produced a non-finite embedding (NaN or Inf)")
    return embeddings


def encoder_min_frames(encoder: Any) -> int:
    """The shortest input `encoder` takes, in frames: one more than the frames its unpadded
    convolutions consume (`context`, x-vector), else 1."""
    return int(getattr(encoder, "context", 0)) + 1


def window_lengths(
    max_seconds: float, window_seconds: float | None, hop_seconds: float | None
) -> tuple[float, float, float]:
    """`(max_seconds, window_seconds, hop_seconds)` with the defaults filled in (a window of
    min(30, max_seconds), a hop of half a window); shared by the torch and the ONNX embedders.

    Raises:
        ValueError: unless 0 < hop_seconds <= window_seconds <= max_seconds.
    """
    max_seconds = float(max_seconds)
    window_seconds = float(window_seconds or min(30.0, max_seconds))
    hop_seconds = float(hop_seconds or window_seconds / 2)
    if not 0 < hop_seconds <= window_seconds <= max_seconds:
        raise ValueError(
            "need 0 < hop_seconds <= window_seconds <= max_seconds, got "
            f"{hop_seconds}, {window_seconds}, {max_seconds}"
        )
    return max_seconds, window_seconds, hop_seconds


def plan_windows(
    num_samples: int, sample_rate: int, lengths: tuple[float, float, float]
) -> list[tuple[int, int]]:
    """`(start, length)` sample windows covering `num_samples` (one window when short), for
    `lengths` from `window_lengths`; the last window ends at the end."""
    max_seconds, window_seconds, hop_seconds = lengths
    if num_samples <= round(max_seconds * sample_rate):
        return [(0, num_samples)]
    window = round(window_seconds * sample_rate)
    hop = round(hop_seconds * sample_rate)
    starts = [*range(0, num_samples - window, hop), num_samples - window]
    return [(start, window) for start in starts]


class Embedder:
    """Front-end + encoder in eval mode, no dither: the same input always gives the same vector.

    Inputs longer than `max_seconds` are embedded in overlapping windows of `window_seconds`
    every `hop_seconds` (the last window ends at the end), and the window embeddings are
    averaged weighted by window length, so memory is bounded whatever the length; files are then
    read window by window.

    Args:
        frontend: `Fbank`-like module, `(B, S), (B,) -> (B, T, F), (B,)`.
        encoder: `(B, T, F), (B,) -> (B, D)` with `.embed_dim`.
        fingerprint: model fingerprint recorded in stores.
        device: torch device string.
        max_seconds: longest input embedded in one pass.
        window_seconds: window length for longer inputs (default min(30, max_seconds)).
        hop_seconds: window hop (default half a window).
    """

    def __init__(
        self,
        frontend: torch.nn.Module,
        encoder: torch.nn.Module,
        *,
        fingerprint: str = "",
        device: str = "cpu",
        max_seconds: float = 60.0,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.frontend = frontend.to(self.device).eval()
        self.encoder = encoder.to(self.device).eval()
        self.fingerprint = fingerprint
        self.min_frames = encoder_min_frames(encoder)
        config = getattr(frontend, "config", None)
        self.sample_rate = int(getattr(config, "sample_rate", 16000))
        lengths = window_lengths(max_seconds, window_seconds, hop_seconds)
        self.max_seconds, self.window_seconds, self.hop_seconds = lengths

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str = "cpu", **options: Any
    ) -> Embedder:
        """Load a checkpoint (`checkpoint.load_encoder`) into an embedder."""
        from speakerverify.checkpoint import load_encoder

        loaded = load_encoder(path, device=device)
        return cls(
            loaded.frontend,
            loaded.encoder,
            fingerprint=loaded.fingerprint,
            device=device,
            **options,
        )

    def to(self, device: str | torch.device) -> Embedder:
        """Move the front-end and encoder to `device` (in place); return self."""
        import torch

        self.device = torch.device(device)
        self.frontend.to(self.device)
        self.encoder.to(self.device)
        return self

    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    def meta(self) -> dict[str, Any]:
        """What a store records about the model that made it."""
        config = getattr(self.frontend, "config", None)
        return {
            "model_fingerprint": self.fingerprint,
            "embed_dim": self.embed_dim,
            "frontend": config.to_dict() if hasattr(config, "to_dict") else {},
            "max_seconds": self.max_seconds,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
        }

    def windows(self, num_samples: int) -> list[tuple[int, int]]:
        """`(start, length)` sample windows covering `num_samples` (one window when short)."""
        lengths = (self.max_seconds, self.window_seconds, self.hop_seconds)
        return plan_windows(num_samples, self.sample_rate, lengths)

    def _forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats, feat_lengths = self.frontend(waves.to(self.device), lengths.to(self.device))
            if int(feat_lengths.min()) < 1:
                raise EmbedError(f"input of {int(lengths.min())} samples is shorter than a frame")
            if int(feat_lengths.min()) < self.min_frames:  # checked here, as the ONNX path does
                raise EmbedError(
                    f"input of {int(feat_lengths.min())} frames is shorter than the model's "
                    f"{self.min_frames}-frame context"
                )
            embeddings = self.encoder(feats, feat_lengths).float().cpu().numpy()
        return require_finite(embeddings)

    def embed_waveform(self, wave: torch.Tensor | np.ndarray) -> np.ndarray:
        """Embedding `(D,)` float32 of one waveform `(S,)` at the front-end's sample rate."""
        import torch

        wave = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
        windows = self.windows(wave.shape[0])
        if len(windows) == 1:
            return self._forward(wave[None], torch.tensor([wave.shape[0]]))[0].astype(np.float32)
        total = np.zeros(self.embed_dim, np.float64)
        for start, length in windows:
            chunk = wave[start : start + length][None]
            total += length * self._forward(chunk, torch.tensor([length]))[0]
        return (total / sum(length for _, length in windows)).astype(np.float32)

    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        """Embedding `(D,)` of an audio file; long files are read window by window."""
        from speakerverify.frontend.audio import audio_info, load_audio

        info = audio_info(path)
        if info.duration_seconds <= self.max_seconds:
            return self.embed_waveform(load_audio(path, self.sample_rate))
        num_samples = round(info.duration_seconds * self.sample_rate)
        windows = self.windows(num_samples)
        total = np.zeros(self.embed_dim, np.float64)
        weight = 0
        for start, length in windows:
            wave = load_audio(
                path,
                self.sample_rate,
                offset_seconds=start / self.sample_rate,
                duration_seconds=length / self.sample_rate,
            )
            total += wave.shape[0] * self.embed_waveform(wave)
            weight += wave.shape[0]
        return (total / weight).astype(np.float32)

    def embed_waveforms(
        self, waves: Sequence[torch.Tensor | np.ndarray], batch_size: int = 32
    ) -> np.ndarray:
        """Embeddings `(N, D)` of several waveforms, batched by similar length (zero padding)."""
        import torch

        tensors = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waves]
        out = np.empty((len(tensors), self.embed_dim), np.float32)
        for batch in plan_batches([t.shape[0] for t in tensors], self.max_samples, batch_size):
            out[batch] = self._embed_batch([tensors[i] for i in batch])
        return out

    @property
    def max_samples(self) -> int:
        return round(self.max_seconds * self.sample_rate)

    def _embed_batch(self, waves: list[torch.Tensor]) -> np.ndarray:
        import torch

        if len(waves) == 1:
            return self.embed_waveform(waves[0])[None]
        lengths = torch.tensor([w.shape[0] for w in waves])
        padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        return self._forward(padded, lengths).astype(np.float32)


def plan_batches(
    lengths: Sequence[int], max_samples: int, batch_size: int = 32, max_batch_samples: int = 0
) -> list[list[int]]:
    """Group indices into batches of similar length (longest first); long inputs go alone.

    A batch is closed when full, over the padded-samples budget, or when the next input is
    shorter than half the batch's longest (so padding stays under half of each row).

    Deterministic in `lengths` only, so every process computes the same plan.

    Args:
        lengths: (N,) samples per input.
        max_samples: inputs longer than this form a batch of one (windowed).
        batch_size: at most this many inputs per batch.
        max_batch_samples: at most this many padded samples per batch (0: 4 * max_samples).

    >>> plan_batches([5, 100, 7, 6, 300], max_samples=200, batch_size=2)
    [[4], [1], [2, 3], [0]]
    """
    budget = max_batch_samples or 4 * max_samples
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if lengths[i] > max_samples:
            batches.append([i])
            continue
        # sorted longest first: the first item sets the padded width
        width = lengths[current[0]] if current else lengths[i]
        full = len(current) >= batch_size or width * (len(current) + 1) > budget
        if current and (full or 2 * lengths[i] < width):  # > half padding: new batch
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
