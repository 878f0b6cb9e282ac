"""Export a checkpoint's encoder to ONNX: log-mel features `(B, T, F)` in, embeddings `(B, D)` out.

The front-end is not exported: compute the features as the checkpoint's front-end does (its config
is in the ONNX metadata as `frontend`, with the `fingerprint` and the `graph_sha256` the fast path
checks). Embeddings are the encoder's raw
output, as `Embedder` returns them before L2 normalisation. The batch and time axes are dynamic.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speakerverify.backend.embedder import encoder_min_frames
from speakerverify.backend.onnx_embedder import GRAPH_HASH_KEY, graph_sha256
from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import resolve_output, write_atomic

logger = logging.getLogger(__name__)

INPUT_NAME = "feats"
OUTPUT_NAME = "embedding"
OPSET = 18


class ExportError(SpeakerVerifyError):
    """The model cannot be exported (missing ONNX packages, unwritable output); one line."""


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote.

    Attributes:
        path: the .onnx file.
        fingerprint: the checkpoint's model fingerprint.
        embed_dim: D.
        feat_dim: F, features per frame the model expects.
        min_frames: the shortest input it accepts (frames).
    """

    path: str
    fingerprint: str
    embed_dim: int
    feat_dim: int
    min_frames: int

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "model export",
            "version": 1,
            "onnx": self.path,
            "fingerprint": self.fingerprint,
            "embed_dim": self.embed_dim,
            "feat_dim": self.feat_dim,
            "min_frames": self.min_frames,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
        }


def export_onnx(
    checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, *, opset: int = OPSET
) -> OnnxExport:
    """Write the encoder of `checkpoint_path` as ONNX to `out_path` (atomically).

    Raises:
        checkpoint.CheckpointError: unusable checkpoint.
        ExportError: onnx/onnxscript not installed, or the output cannot be written.
    """
    from speakerverify.checkpoint import load_encoder

    out = Path(out_path)
    if out.is_dir():
        raise ExportError(f"{out}: is a directory")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: directory {out.parent} does not exist")
    resolve_output(out)  # a FIFO or device is refused before tracing, not after
    onnx = _import_onnx()
    loaded = load_encoder(checkpoint_path)
    encoder = loaded.encoder.eval()
    feat_dim = int(loaded.frontend.config.feat_dim)
    min_frames = encoder_min_frames(encoder)
    scratch = tempfile.TemporaryDirectory(prefix="speakerverify-onnx-")
    try:
        traced = Path(scratch.name) / "model.onnx"
        _trace(encoder, str(traced), feat_dim, min_frames, opset)
        proto = onnx.load(str(traced))
        metadata = {
            "fingerprint": loaded.fingerprint,
            "model_name": loaded.model_name,
            "embed_dim": str(loaded.embed_dim),
            "frontend": json.dumps(loaded.frontend.config.to_dict(), sort_keys=True),
            "min_frames": str(min_frames),
        }
        # the hash of the graph as serialized: what the fast path checks before it trusts the
        # fingerprint above (the metadata is outside the graph, so adding it keeps the hash)
        metadata[GRAPH_HASH_KEY] = graph_sha256(proto.SerializeToString())
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        serialized = proto.SerializeToString()
        if graph_sha256(serialized) != metadata[GRAPH_HASH_KEY]:
            raise ExportError(f"{out}: the graph serialised differently twice; not written")
        write_atomic(out, serialized)
    except OSError as error:
        raise ExportError(f"{out}: cannot write ({error.strerror or error})") from None
    # What the exporter cannot trace, one line: torch.onnx.OnnxExporterError and torch._dynamo's
    # errors are all RuntimeErrors. ExportError above and any other type (a bug) pass through.
    except RuntimeError as error:
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(
            f"{checkpoint_path}: cannot export {loaded.model_name} to ONNX ({cause})"
        ) from None
    finally:
        scratch.cleanup()
    logger.info("exported %s (%s) to %s", checkpoint_path, loaded.fingerprint, out)
    return OnnxExport(str(out), loaded.fingerprint, loaded.embed_dim, feat_dim, min_frames)


def _import_onnx() -> Any:
    """The `onnx` module, once onnx and onnxscript are known to be installed (else ExportError)."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx and onnxscript packages: pip install 'speakerverify[onnx]'"
        ) from None
    return onnx


def _trace(encoder: Any, path: str, feat_dim: int, min_frames: int, opset: int) -> None:
    """Export `encoder` with dynamic batch and frame axes to the ONNX file `path`."""
    import torch

    example = torch.randn(1, max(200, min_frames), feat_dim)
    frames = torch.export.Dim("frames", min=min_frames, max=100_000)
    # the exporter logs at WARNING about optional torchvision ops it skips; not ours to report
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                encoder,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"feats": {0: torch.export.Dim("batch"), 1: frames}},
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    program.save(path, external_data=False)
