"""What makes a checkpoint usable, in one place and without torch: its format version, keys, a
known model name, finite weights, and the fingerprint computed from the weights (never read from
the file and trusted). `checkpoint.load_checkpoint` applies these rules to what torch read; the
ONNX fast path applies them to what `read_checkpoint` reads from the zip without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from speakerverify.errors import SpeakerVerifyError

__all__ = [
    "FORMAT_VERSION",
    "INFERENCE_ARGS",
    "MODEL_NAMES",
    "REQUIRED_KEYS",
    "CheckpointError",
    "Weights",
    "check_payload",
    "fingerprint_weights",
    "model_mismatch",
    "read_checkpoint",
]

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_name", "model_args", "state_dict", "features", "fingerprint")
# The keys of `speakerverify.models.MODELS`, known here without importing torch (a test keeps the
# two equal).
MODEL_NAMES = ("ecapa_tdnn", "fusion", "resnet34", "xvector")

# Model arguments that change what the same weights compute, with their defaults. A value other
# than the default is part of the fingerprint; at the default it is left out, so fingerprints of
# checkpoints written before the argument existed do not change. A fusion's members (their names
# and arguments, `centre_embeddings` among them) count whole.
INFERENCE_ARGS: dict[str, Any] = {"centre_embeddings": True, "members": None}

# torch dtype name -> numpy dtype of the same bytes (bfloat16 as raw 16-bit words)
NUMPY_DTYPES = {
    "torch.float32": "<f4",
    "torch.float64": "<f8",
    "torch.float16": "<f2",
    "torch.bfloat16": "<u2",
    "torch.int64": "<i8",
    "torch.int32": "<i4",
    "torch.int16": "<i2",
    "torch.int8": "i1",
    "torch.uint8": "u1",
    "torch.bool": "?",
}
FLOAT_DTYPES = ("torch.float32", "torch.float64", "torch.float16", "torch.bfloat16")


class CheckpointError(SpeakerVerifyError):
    """A checkpoint cannot be written, read or used; the one-line message names the file."""


@dataclass(frozen=True)
class Weights:
    """One tensor of a state dict as bytes: what the fingerprint hashes and the checks read.

    Attributes:
        dtype: torch's name of the element type, e.g. "torch.float32".
        shape: the tensor's shape.
        data: its elements, C-contiguous, little-endian.
    """

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def finite(self) -> bool:
        """Whether every element is finite (always, for integer and bool tensors)."""
        if self.dtype not in FLOAT_DTYPES or not self.data:
            return True
        loaded = self.as_loaded()
        return bool(np.isfinite(np.frombuffer(loaded.data, NUMPY_DTYPES[loaded.dtype])).all())

    def as_loaded(self) -> Weights:
        """The tensor as a float32 model holds it once loaded: float16 and bfloat16 weights (an
        `--fp16` packaged model) become float32; others are unchanged."""
        if self.dtype not in ("torch.float16", "torch.bfloat16"):
            return self
        values = np.frombuffer(self.data, NUMPY_DTYPES[self.dtype])
        if self.dtype == "torch.bfloat16":  # the high half of a float32
            wide = (values.astype(np.uint32) << 16).view(np.float32)
        else:
            wide = values.astype(np.float32)
        return Weights("torch.float32", self.shape, wide.astype("<f4").tobytes())


def fingerprint_weights(
    weights: Mapping[str, Weights], features: Any, model_args: Mapping[str, Any] | None = None
) -> str:
    """16 hex chars identifying the weights, the front-end config and the `INFERENCE_ARGS` that
    differ from their defaults (order independent); `checkpoint.model_fingerprint` on tensors.

    Weights are hashed as the model holds them once loaded (`Weights.as_loaded`), so an
    `--fp16` packaged model has the fingerprint of its float32 restoration, as its writer states.

    Raises:
        TypeError: `features` or an inference argument is not JSON-able.
    """
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].as_loaded()
        digest.update(name.encode())
        digest.update(tensor.dtype.encode())
        digest.update(str((tensor.numel,)).encode())  # the shape of the flattened tensor
        digest.update(tensor.data)
    digest.update(json.dumps(features, sort_keys=True).encode())
    changed = {
        key: value
        for key, value in (model_args or {}).items()
        if key in INFERENCE_ARGS and value != INFERENCE_ARGS[key]
    }
    if changed:
        digest.update(json.dumps(changed, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def model_mismatch(made: str, recorded: str | None, other: str, fingerprint: str) -> str | None:
    """The one check and message for "made by another model": None when `recorded` (the
    fingerprint a store, calibration or export names; None when it names none) is
    `fingerprint`, else the message. Callers raise their own error with it, adding advice.

    >>> model_mismatch("s.db: store was made by", "ab12", "checkpoint m.pt", "cd34")
    's.db: store was made by model ab12, but checkpoint m.pt is model cd34'
    """
    if recorded is None or recorded == fingerprint:
        return None
    return f"{made} model {recorded}, but {other} is model {fingerprint}"


def check_payload(path: str | os.PathLike, payload: Any, weights: Mapping[str, Weights]) -> str:
    """Check a loaded checkpoint dict and return the fingerprint computed from its weights.

    Args:
        path: the file (for messages).
        payload: what was unpickled.
        weights: `payload["state_dict"]` as bytes.

    Raises:
        CheckpointError: not a speakerverify checkpoint, a format version that is not an integer
            or is newer than ours, an unknown model name, non-finite weights, or weights that do
            not give the fingerprint the file states (the file was changed after it was written).
    """
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a speakerverify checkpoint (not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a speakerverify checkpoint (missing {missing})")
    for key in ("state_dict", "model_args", "features"):
        if not isinstance(payload[key], dict):
            raise CheckpointError(f"{path}: corrupt checkpoint ({key} is not a dict)")
    version = payload.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{path}: corrupt checkpoint (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this speakerverify "
            f"({FORMAT_VERSION}); upgrade speakerverify"
        )
    name = payload["model_name"]
    if name not in MODEL_NAMES:
        raise CheckpointError(
            f"{path}: unknown model {name!r}; valid: {', '.join(sorted(MODEL_NAMES))}"
        )
    for key, tensor in sorted(weights.items()):
        if not tensor.finite():
            raise CheckpointError(f"{path}: weights {key} are not finite (NaN or infinite)")
    try:
        computed = fingerprint_weights(weights, payload["features"], payload["model_args"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt checkpoint (features: {error})") from None
    stated = payload["fingerprint"]
    if stated != computed:
        raise CheckpointError(
            f"{path}: its weights are model {computed}, not the model {stated} the file states: "
            "it was changed after it was written; refused"
        )
    return computed


# -- reading a torch checkpoint without torch --------------------------------------------------

_STORAGES = {
    "FloatStorage": "torch.float32",
    "DoubleStorage": "torch.float64",
    "HalfStorage": "torch.float16",
    "BFloat16Storage": "torch.bfloat16",
    "LongStorage": "torch.int64",
    "IntStorage": "torch.int32",
    "ShortStorage": "torch.int16",
    "CharStorage": "torch.int8",
    "ByteStorage": "torch.uint8",
    "BoolStorage": "torch.bool",
}


class _Unreadable(Exception):
    """The file uses something this reader does not know: let torch read it."""


@dataclass(frozen=True)
class _Storage:
    dtype: str
    key: str


class _Tensor:
    """A tensor as this reader rebuilds it: its storage, offset, shape and strides."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> None:
        if not isinstance(storage, _Storage):
            raise _Unreadable("a tensor without a storage")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


class _TorchFreeUnpickler(pickle.Unpickler):
    """Unpickles a checkpoint's `data.pkl`: plain containers and tensors only; anything else is
    refused (never built), as `torch.load(weights_only=True)` would."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Tensor
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        raise _Unreadable(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise _Unreadable("an unknown persistent id")
        if pid[1] not in _STORAGES.values():
            raise _Unreadable("an unknown storage type")
        return _Storage(pid[1], str(pid[2]))


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, dict[str, Weights]] | None:
    """The checkpoint dict (tensors as `Weights` in its state dict too) and its state dict as
    `Weights`, read without torch; None when this reader cannot (torch then reads it and says
    what is wrong, if anything).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                return None
            prefix = pickles[0][: -len("data.pkl")]
            order = f"{prefix}byteorder"
            if order in archive.namelist() and archive.read(order).strip() != b"little":
                return None
            with archive.open(pickles[0]) as handle:
                payload = _TorchFreeUnpickler(handle).load()
            cache: dict[str, bytes] = {}

            def as_weights(tensor: _Tensor) -> Weights:
                key = tensor.storage.key
                if key not in cache:
                    cache[key] = archive.read(f"{prefix}data/{key}")
                return _contiguous(tensor, cache[key])

            if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
                return payload, {}
            state_dict = payload["state_dict"]
            weights = {}
            for name, tensor in state_dict.items():
                if not isinstance(tensor, _Tensor):
                    return None
                weights[name] = state_dict[name] = as_weights(tensor)
    except (OSError, zipfile.BadZipFile, KeyError, _Unreadable):
        return None
    # A malformed pickle, reported by torch when it reads the file: pickle's UnpicklingError and
    # EOFError, struct.error from a short opcode argument, and the ValueError, TypeError,
    # IndexError or AttributeError of calling OrderedDict, _Tensor or numpy's frombuffer with
    # the arguments the file chooses. Any other type is a bug of this reader.
    except (
        pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, IndexError,
        AttributeError,
    ):  # fmt: skip
        return None
    return payload, weights


def _contiguous(tensor: _Tensor, storage: bytes) -> Weights:
    """The tensor's elements, C-contiguous, from its storage's bytes. A contiguous tensor (what
    `save_checkpoint` writes) is a slice of them, and the whole storage is not copied at all:
    copying every weight twice was a third of the fast path's model load."""
    dtype = np.dtype(NUMPY_DTYPES[tensor.storage.dtype])
    elements = np.frombuffer(storage, dtype)
    if 0 in tensor.size:
        return Weights(tensor.storage.dtype, tensor.size, b"")
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if tensor.offset < 0 or min(tensor.stride, default=0) < 0 or last >= elements.size:
        raise _Unreadable("a tensor outside its storage")
    if _is_c_contiguous(tensor.size, tensor.stride):
        start, stop = tensor.offset * dtype.itemsize, (last + 1) * dtype.itemsize
        data = storage if (start, stop) == (0, len(storage)) else storage[start:stop]
        return Weights(tensor.storage.dtype, tensor.size, data)
    view = np.lib.stride_tricks.as_strided(
        elements[tensor.offset :],
        shape=tensor.size,
        strides=[s * dtype.itemsize for s in tensor.stride],
        writeable=False,
    )
    return Weights(tensor.storage.dtype, tensor.size, np.ascontiguousarray(view).tobytes())


def _is_c_contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether elements with these strides lie in row-major order without gaps (the stride of a
    dimension of length 1 does not matter)."""
    expected = 1
    for length, step in zip(reversed(size), reversed(stride), strict=True):
        if length != 1 and step != expected:
            return False
        expected *= length
    return True
