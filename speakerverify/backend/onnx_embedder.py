"""Waveform -> embedding without torch: the numpy front-end (`frontend.fbank_numpy`) and an encoder
exported by `speakerverify.backend.export`, run by onnxruntime. A drop-in for
`embedder.Embedder.embed_waveform`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from speakerverify.backend.embedder import require_finite
from speakerverify.errors import SpeakerVerifyError
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.frontend.fbank_numpy import NumpyFbank


class OnnxModelError(SpeakerVerifyError, ValueError):
    """The ONNX file is unusable (unreadable, not from `speakerverify model export`); one line."""


def _num_threads() -> int:
    """OMP_NUM_THREADS when set, else 1 (as the speaker commands run torch: one utterance is a
    small forward pass, and a second thread's synchronisation costs more than it saves)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


class OnnxEmbedder:
    """Front-end in numpy + ONNX encoder: `embed_waveform(wave (S,)) -> (D,)`, like `Embedder`.

    Inputs longer than `max_seconds` are embedded in the same overlapping windows as `Embedder`
    and averaged weighted by window length. The raw encoder output is returned (no L2 norm).

    Args:
        onnx_path: a file written by `speakerverify.backend.export.export_onnx` (its metadata
            holds the fingerprint, the front-end config and the shortest input).
        max_seconds, window_seconds, hop_seconds: as `embedder.Embedder`.

    Raises:
        OnnxModelError: onnxruntime cannot load the file, or its metadata is not ours.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        *,
        max_seconds: float = 60.0,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no optimiser chatter on stderr
        # The full optimiser cost more at load than it saved on one utterance (bench_cli.py).
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            self.session = onnxruntime.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
            metadata = self.session.get_modelmeta().custom_metadata_map
            self.fingerprint = metadata["fingerprint"]
            self.config = FbankConfig.from_dict(json.loads(metadata["frontend"]))
            self.min_frames = int(metadata.get("min_frames", 1))
            self.embed_dim = int(metadata["embed_dim"])
        except Exception as error:  # onnxruntime raises its own exception types
            cause = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise OnnxModelError(
                f"{onnx_path}: not a usable speakerverify ONNX model ({cause})"
            ) from None
        self.path = str(onnx_path)
        self.input_name = self.session.get_inputs()[0].name
        self.fbank = NumpyFbank(self.config)
        self.sample_rate = int(self.config.sample_rate)
        self.max_seconds = float(max_seconds)
        self.window_seconds = float(window_seconds or min(30.0, self.max_seconds))
        self.hop_seconds = float(hop_seconds or self.window_seconds / 2)

    def windows(self, num_samples: int) -> list[tuple[int, int]]:
        """`(start, length)` sample windows covering `num_samples`, as `Embedder.windows`."""
        if num_samples <= round(self.max_seconds * self.sample_rate):
            return [(0, num_samples)]
        window = round(self.window_seconds * self.sample_rate)
        hop = round(self.hop_seconds * self.sample_rate)
        starts = [*range(0, num_samples - window, hop), num_samples - window]
        return [(start, window) for start in starts]

    def _forward(self, wave: np.ndarray) -> np.ndarray:
        feats = self.fbank(wave)
        if feats.shape[0] < 1:
            raise ValueError(f"input of {wave.shape[0]} samples is shorter than a frame")
        if feats.shape[0] < self.min_frames:
            raise ValueError(
                f"input of {feats.shape[0]} frames is shorter than the model's "
                f"{self.min_frames}-frame context"
            )
        try:
            (embedding,) = self.session.run(None, {self.input_name: feats[None]})
        except Exception as error:  # onnxruntime's own types, not all RuntimeErrors
            cause = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(f"onnxruntime: {cause}") from None
        return require_finite(np.asarray(embedding[0], dtype=np.float64))

    def embed_waveform(self, wave: np.ndarray) -> np.ndarray:
        """Embedding `(D,)` float32 of one waveform `(S,)` at `sample_rate`."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        windows = self.windows(wave.shape[0])
        if len(windows) == 1:
            return self._forward(wave).astype(np.float32)
        total = np.zeros(self.embed_dim, np.float64)
        for start, length in windows:
            total += length * self._forward(wave[start : start + length])
        return (total / sum(length for _, length in windows)).astype(np.float32)


def onnx_twin(checkpoint_path: str | os.PathLike) -> Path:
    """Where a checkpoint's ONNX twin lives: `X.onnx` next to `X.pt`."""
    return Path(checkpoint_path).with_suffix(".onnx")
