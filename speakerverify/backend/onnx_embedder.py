"""Waveform -> embedding without torch: the numpy front-end (`frontend.fbank_numpy`) and an encoder
exported by `speakerverify.backend.export`, run by onnxruntime. A drop-in for
`embedder.Embedder.embed_waveform`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from speakerverify.backend.embedder import (
    EmbedError,
    plan_windows,
    require_finite,
    window_lengths,
)
from speakerverify.errors import SpeakerVerifyError
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.frontend.fbank_numpy import NumpyFbank


class OnnxModelError(SpeakerVerifyError, ValueError):
    """The ONNX file is unusable (unreadable, not from `speakerverify model export`); one line."""


def _onnxruntime_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises for a model or an input it cannot use: one class per status code
    of its C++ core, all bare `Exception`s. Anything else from a call into it is a bug of ours."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError",
             "RuntimeException", "InvalidProtobuf", "InvalidGraph", "NotImplemented")  # fmt: skip
    return tuple(getattr(state, name) for name in names)


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
            self.graph_hash = metadata.get(GRAPH_HASH_KEY)
        # onnxruntime's own errors (a file it cannot load); KeyError, ValueError (bad JSON, an
        # unknown FbankConfig key, a non-number) and TypeError (JSON of the wrong shape) from
        # metadata that is not ours.
        except (*_onnxruntime_errors(), KeyError, ValueError, TypeError) as error:
            cause = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise OnnxModelError(
                f"{onnx_path}: not a usable speakerverify ONNX model ({cause})"
            ) from None
        self.path = str(onnx_path)
        self.input_name = self.session.get_inputs()[0].name
        self.fbank = NumpyFbank(self.config)
        self.sample_rate = int(self.config.sample_rate)
        lengths = window_lengths(max_seconds, window_seconds, hop_seconds)
        self.max_seconds, self.window_seconds, self.hop_seconds = lengths

    def windows(self, num_samples: int) -> list[tuple[int, int]]:
        """`(start, length)` sample windows covering `num_samples`, as `Embedder.windows`."""
        lengths = (self.max_seconds, self.window_seconds, self.hop_seconds)
        return plan_windows(num_samples, self.sample_rate, lengths)

    def _forward(self, wave: np.ndarray) -> np.ndarray:
        feats = self.fbank(wave)
        if feats.shape[0] < 1:
            raise EmbedError(f"input of {wave.shape[0]} samples is shorter than a frame")
        if feats.shape[0] < self.min_frames:
            raise EmbedError(
                f"input of {feats.shape[0]} frames is shorter than the model's "
                f"{self.min_frames}-frame context"
            )
        try:
            (embedding,) = self.session.run(None, {self.input_name: feats[None]})
        except _onnxruntime_errors() as error:  # an input the graph refuses, e.g. its shape
            cause = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise EmbedError(f"onnxruntime: {cause}") from None
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


# -- the twin's graph as exported -----------------------------------------------------------

GRAPH_HASH_KEY = "graph_sha256"  # metadata: sha256 of the serialized graph (nodes and weights)


def _fields(buffer: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of a protobuf message; length-delimited values as
    (offset, length) into `buffer`, so megabytes of weights are never copied while walking."""
    end = len(buffer) if end is None else end
    position = start
    while position < end:
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
        elif wire == 1:
            value, position = None, position + 8
        elif wire == 2:
            length, position = _varint(buffer, position)
            value, position = (position, length), position + length
        elif wire == 5:
            value, position = None, position + 4
        else:
            raise ValueError(f"protobuf wire type {wire}")
        if position > end:
            raise ValueError("truncated protobuf message")
        yield number, wire, value


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise ValueError("truncated varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def graph_sha256(model: bytes) -> str:
    """sha256 (hex) of the serialized graph of an ONNX ModelProto: its nodes and initializers,
    not its metadata (where `export_onnx` records it). Read with a minimal protobuf walk, as the
    fast path has no `onnx` package.

    Raises:
        ValueError: not a protobuf message, or no graph in it.
    """
    graphs = [value for number, wire, value in _fields(model) if number == 7 and wire == 2]
    if len(graphs) != 1:
        raise ValueError(f"{len(graphs)} graphs")
    start, length = graphs[0]
    return hashlib.sha256(memoryview(model)[start : start + length]).hexdigest()


def check_twin_graph(onnx_path: str | os.PathLike, recorded: str | None) -> bool:
    """Whether the twin's graph is the one `export_onnx` wrote: False when no hash was recorded
    (an export older than the check; the torch engine serves instead).

    Raises:
        OnnxModelError: the graph or its weights were changed after export (its hash is not the
            recorded one), or the file cannot be read.
    """
    if not recorded:
        return False
    try:
        actual = graph_sha256(Path(onnx_path).read_bytes())
    except (OSError, ValueError) as error:
        raise OnnxModelError(f"{onnx_path}: not a readable ONNX model ({error})") from None
    if actual != recorded:
        raise OnnxModelError(
            f"{onnx_path}: its graph or weights were changed after export (hash {actual[:16]}, "
            f"recorded {recorded[:16]}); refused: re-export it with `speakerverify model export`"
        )
    return True
