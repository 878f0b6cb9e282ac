"""Which engine embeds for the speaker commands: the checkpoint in torch, or its ONNX twin in
onnxruntime (no torch import: the fast cold start). `$SPEAKERVERIFY_BACKEND` forces one.

The ONNX twin of `X.pt` is `X.onnx` next to it (the bundled model ships one), used only when its
metadata fingerprint equals the checkpoint's, so stores and calibrations work with either engine.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from speakerverify.backend.speaker_model import SpeakerModel, VerificationError

logger = logging.getLogger(__name__)

BACKEND_ENV = "SPEAKERVERIFY_BACKEND"
BACKENDS = ("auto", "torch", "onnx")


class _FingerprintUnpickler(pickle.Unpickler):
    """Reads a torch checkpoint's pickle without torch: tensors become None, storages are not
    read, and only plain containers are built (anything else is refused)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            from collections import OrderedDict

            return OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _ignored
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> None:
        return None


def _ignored(*args: Any, **kwargs: Any) -> None:
    return None


def checkpoint_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint stored in a checkpoint, read without torch (None when it cannot be).

    A torch checkpoint is a zip whose `*/data.pkl` holds the structure; the tensor data lives in
    other members, which are not read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                return None
            with archive.open(names[0]) as handle:
                payload = _FingerprintUnpickler(handle).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError):
        return None
    except Exception:  # a malformed pickle can raise almost anything; torch will say what
        return None
    fingerprint = payload.get("fingerprint") if isinstance(payload, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


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
    from speakerverify.backend.onnx_embedder import OnnxEmbedder, OnnxModelError, onnx_twin

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
    fingerprint = checkpoint_fingerprint(checkpoint_path)
    if fingerprint is None:
        return unusable(f"{checkpoint_path}: cannot read its fingerprint without torch")
    try:
        embedder = OnnxEmbedder(twin)
    except OnnxModelError as error:
        return unusable(str(error))
    if embedder.fingerprint != fingerprint:
        return unusable(
            f"{twin} is model {embedder.fingerprint}, but {checkpoint_path} is model "
            f"{fingerprint}: re-export it"
        )
    return SpeakerModel(
        embedder, fingerprint, embedder.sample_rate, str(checkpoint_path), backend="onnx"
    )


def load_command_model(checkpoint_path: str | os.PathLike) -> SpeakerModel:
    """The model for enroll/verify/identify: the ONNX twin when usable (or forced), else torch.

    Raises:
        checkpoint.CheckpointError: the torch path's checkpoint errors, as before.
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

    # Looked up on the module at call time, so that tests can stand a fake loader in for it.
    from speakerverify.backend import speaker_model

    if "OMP_NUM_THREADS" not in os.environ:
        # One utterance is a small forward pass: on 2 shared cores the second thread's
        # synchronisation cost more than it saved (embed CPU 0.15-0.5 s -> 0.06 s, VAD 0.15 ->
        # 0.004 s in bench_cli.py's breakdown).
        torch.set_num_threads(1)
    return speaker_model.load_speaker_model(checkpoint_path)
