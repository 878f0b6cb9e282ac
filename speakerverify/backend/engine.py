"""Which engine embeds for the speaker commands: the checkpoint in torch, or its ONNX twin in
onnxruntime (no torch import: the fast cold start). `$SPEAKERVERIFY_BACKEND` forces one.

The ONNX twin of `X.pt` is `X.onnx` next to it (the bundled model ships one), used only when its
metadata fingerprint equals the checkpoint's, so stores and calibrations work with either engine.
The checkpoint is checked as the torch loader checks it (format, model name, finite weights, the
fingerprint computed from its weights), and the twin's graph and weights must hash to what its
export recorded. This catches a twin corrupted or swapped after export (random weights under
copied metadata), not a forger who can write the model's directory: they can rewrite any file.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from speakerverify.backend.speaker_model import (
    SpeakerModel,
    VerificationError,
    load_speaker_model,
)
from speakerverify.checkpoint_rules import check_payload, model_mismatch, read_checkpoint

logger = logging.getLogger(__name__)

BACKEND_ENV = "SPEAKERVERIFY_BACKEND"
BACKENDS = ("auto", "torch", "onnx")


def checkpoint_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint of a checkpoint computed from its weights without torch, once it passes
    the checks torch's loader makes (`checkpoint_rules.check_payload`); None when it cannot be
    read without torch (torch will say what is wrong, if anything).

    Raises:
        checkpoint_rules.CheckpointError: the file is read and is not usable (as under torch).
    """
    read = read_checkpoint(path)
    if read is None:
        return None
    return check_payload(path, *read)


def onnxruntime_available() -> bool:
    """Whether onnxruntime is installed (found, not imported)."""
    return importlib.util.find_spec("onnxruntime") is not None


def requested_backend() -> str:
    """`$SPEAKERVERIFY_BACKEND` (auto when unset). VerificationError when it is not valid."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise VerificationError(
            f"{BACKEND_ENV}={value!r} is not a backend; valid are {', '.join(BACKENDS)}"
        )
    return value


def _onnx_model(checkpoint_path: str, forced: bool) -> SpeakerModel | None:
    """The ONNX twin as a SpeakerModel, or None (with `forced`, a one-line error instead)."""
    from speakerverify.backend.onnx_embedder import (
        OnnxEmbedder,
        OnnxModelError,
        check_twin_graph,
        onnx_twin,
    )

    def unusable(reason: str) -> None:
        if forced:
            raise VerificationError(f"{BACKEND_ENV}=onnx: {reason}")
        logger.debug("torch backend: %s", reason)

    if not onnxruntime_available():
        return unusable("onnxruntime is not installed: pip install 'speakerverify[fast]'")
    twin = onnx_twin(checkpoint_path)
    if not twin.is_file():
        return unusable(
            f"{checkpoint_path}: no ONNX twin {twin} "
            f"(write it with `speakerverify model export {checkpoint_path} --onnx {twin}`)"
        )
    read = read_checkpoint(checkpoint_path)
    if read is None:
        return unusable(f"{checkpoint_path}: cannot read it without torch")
    fingerprint = check_payload(checkpoint_path, *read)  # refused as under torch
    del read  # its megabytes are freed for onnxruntime to reuse rather than to fault in anew
    try:
        embedder = OnnxEmbedder(twin)
    except OnnxModelError as error:
        return unusable(str(error))
    mismatch = model_mismatch(
        f"{twin}: exported from", embedder.fingerprint, str(checkpoint_path), fingerprint
    )
    if mismatch:
        return unusable(f"{mismatch}: re-export it")
    # Metadata naming the checkpoint's model over other weights or nodes is refused outright.
    if not check_twin_graph(twin, embedder.graph_hash):
        return unusable(
            f"{twin}: exported without a graph hash, so its weights cannot be checked: "
            f"re-export it (`speakerverify model export {checkpoint_path} --onnx {twin}`)"
        )
    return SpeakerModel(
        embedder, fingerprint, embedder.sample_rate, str(checkpoint_path), backend="onnx"
    )


def load_command_model(checkpoint_path: str | os.PathLike) -> SpeakerModel:
    """The model for enroll/verify/identify: the ONNX twin when usable (or forced), else torch.

    Raises:
        checkpoint.CheckpointError: the checkpoint's errors, the same under either engine.
        onnx_embedder.OnnxModelError: a twin whose graph or weights changed after its export.
        VerificationError: a bad `$SPEAKERVERIFY_BACKEND`, or `onnx` forced but not usable.
    """
    checkpoint_path = str(checkpoint_path)
    backend = requested_backend()
    # No checkpoint file at all: the torch path names the problem, as it always did.
    if backend != "torch" and Path(checkpoint_path).is_file():
        model = _onnx_model(checkpoint_path, forced=backend == "onnx")
        if model is not None:
            return model
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        # One utterance is a small forward pass: on 2 shared cores the second thread's
        # synchronisation cost more than it saved (embed CPU 0.15-0.5 s -> 0.06 s, VAD 0.15 ->
        # 0.004 s in bench_cli.py's breakdown).
        torch.set_num_threads(1)
    return load_speaker_model(checkpoint_path)
