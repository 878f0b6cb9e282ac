"""Self-describing checkpoints: build, save (atomic), load (`weights_only=True`), fingerprint.

A checkpoint is a `torch.save` dict of tensors and plain types only, so `embed`, `enroll` and
`verify` need nothing but its path:
`{format_version, model_name, model_args, state_dict, features, config, versions, fingerprint,
train_state}`, then records of what it was made from (`averaged_from`, `fused_from`,
`adaptation`, `packaged`...). Every writer (training, `average`, `fuse`, `adapt --out`, the
recipe's packaging) builds it with `build_payload` (or `derive_payload`) and writes it with
`write_checkpoint`. Checkpoints made of several others (`average`, `fuse`) are put together
in `speakerverify.checkpoint_combine`.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speakerverify._version import __version__
from speakerverify.checkpoint_rules import (
    FORMAT_VERSION,
    INFERENCE_ARGS,
    CheckpointError,
    Weights,
    check_payload,
    fingerprint_weights,
)
from speakerverify.files import write_atomic

# FORMAT_VERSION, INFERENCE_ARGS and CheckpointError live in the torch-free `checkpoint_rules`
# (the fast path checks checkpoints by the same rules) and are re-exported here.
__all__ = [
    "FORMAT_VERSION",
    "INFERENCE_ARGS",
    "CheckpointError",
    "LoadedModel",
    "build_payload",
    "derive_payload",
    "load_checkpoint",
    "load_encoder",
    "model_fingerprint",
    "save_checkpoint",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

# The keys `build_payload` writes, in order; whatever follows them in a checkpoint is a record.
PAYLOAD_KEYS = (
    "format_version", "model_name", "model_args", "state_dict", "features", "config", "versions",
    "fingerprint", "train_state",
)  # fmt: skip


def model_fingerprint(
    state_dict: dict[str, torch.Tensor],
    features: dict[str, Any],
    model_args: dict[str, Any] | None = None,
) -> str:
    """16 hex chars identifying the weights, the front-end config and the `INFERENCE_ARGS` that
    differ from their defaults (order independent).

    Two checkpoints with equal weights and front-end give the same fingerprint, whatever their
    training state; embedding and enrollment stores record it to refuse mixing models. Computed
    by `checkpoint_rules.fingerprint_weights`, which the torch-free fast path uses too.
    """
    return fingerprint_weights(as_weights(state_dict), features, model_args)


def as_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, Weights]:
    """A state dict's tensors as the bytes the fingerprint hashes and the checks read."""
    weights = {}
    for name, value in state_dict.items():
        tensor = value.detach().to("cpu").contiguous()
        flat = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        weights[name] = Weights(str(tensor.dtype), tuple(tensor.shape), flat)
    return weights


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_name: str,
    model_args: dict[str, Any],
    model: nn.Module,
    features: dict[str, Any],
    config: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically (temp file in the same dir + `os.replace`).

    Args:
        path: destination `.pt` file.
        model_name: `speakerverify.models.MODELS` key that rebuilds the encoder.
        model_args: JSON-able constructor arguments of that model.
        model: the encoder (a DDP wrapper is unwrapped).
        features: the front-end config (`FbankConfig.to_dict()`).
        config: the resolved experiment config (`Config.to_dict()`), if any.
        train_state: optimizer/scheduler state, epoch/step, sampler position, RNG states (tensors
            and plain types only), if the checkpoint should allow resuming.

    Returns:
        The model fingerprint (16 hex chars).
    """
    module = getattr(model, "module", model)
    state_dict = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    payload = build_payload(
        model_name=model_name,
        model_args=model_args,
        state_dict=state_dict,
        features=features,
        config=config,
        train_state=train_state,
    )
    return write_checkpoint(payload, path)


def build_payload(
    *,
    model_name: str,
    model_args: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    features: dict[str, Any],
    config: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    records: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (the one place its keys, versions and fingerprint are put together).

    Args:
        model_name, model_args, features, config, train_state: as in `save_checkpoint`.
        state_dict: the encoder's weights on the CPU.
        versions: the software versions to record; None records this speakerverify's and
            torch's. `derive_payload` passes its source's on.
        records: what the model was made from or what was done to it (e.g. `averaged_from`,
            `fused_from`, `adaptation`, `packaged`): plain types, put after the keys above.

    Raises:
        ValueError: a record named like one of the keys above (a caller's bug).
    """
    if versions is None:
        versions = {"speakerverify": __version__, "torch": str(torch.__version__)}
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_args": dict(model_args),
        "state_dict": state_dict,
        "features": dict(features),
        "config": config,
        "versions": dict(versions),
        "fingerprint": model_fingerprint(state_dict, features, model_args),
        "train_state": train_state,
    }
    clashing = sorted(set(records or {}) & set(payload))
    if clashing:
        raise ValueError(f"checkpoint records cannot replace its keys {clashing}")
    payload.update(records or {})
    return payload


def derive_payload(
    source: dict[str, Any], state_dict: dict[str, torch.Tensor], **records: Any
) -> dict[str, Any]:
    """The checkpoint of a model made from `source`'s by changing its weights (BatchNorm
    adaptation, packaging): the same model, front-end, config, earlier records and versions (the
    software it was trained with), the fingerprint of the new weights, no train state, and
    `records` added (replacing an earlier record of the same name in its place).

    Args:
        source: a loaded checkpoint dict (`load_checkpoint`).
        state_dict: the new weights on the CPU.
        records: what was done, e.g. `adaptation={...}`.
    """
    earlier = {key: value for key, value in source.items() if key not in PAYLOAD_KEYS}
    payload = build_payload(
        model_name=source["model_name"],
        model_args=source["model_args"],
        state_dict=state_dict,
        features=source["features"],
        config=source.get("config"),
        versions=source.get("versions"),
        records={**earlier, **records},
    )
    if payload["fingerprint"] == source["fingerprint"]:
        # the source's own string: pickle writes a string once where a record repeats it (as
        # `packaged.source_fingerprint` does), so re-packaging a model gives the same bytes
        payload["fingerprint"] = source["fingerprint"]
    return payload


def write_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> str:
    """Write a `build_payload` / `derive_payload` dict to `path` atomically (temp file in the
    same dir + `os.replace`), making its directory if needed; returns its fingerprint.

    Raises:
        CheckpointError: the file cannot be written (e.g. an output that is not a regular file,
            a directory that cannot be made or written to).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda stream: torch.save(payload, stream))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write checkpoint: {err.strerror or err}") from None
    return payload["fingerprint"]


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


PICKLED_CODE = "refused: it contains pickled code"


def _refusal(path: Path, err: BaseException) -> str:
    """Why `torch.load(weights_only=True)` failed, in one line. Never torch's own advice to
    retry with `weights_only=False`: that would run whatever the file's pickle calls."""
    message = str(err)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", message)
    code = found.group(1) if found else _foreign_global(path)
    if code:
        return f"{PICKLED_CODE} ({code}), not only tensors and plain types; not run"
    if "WeightsUnpickler error:" in message:
        detail = message.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        cause = f"not a readable checkpoint ({detail})"
    else:
        cause = f"not a readable checkpoint ({type(err).__name__}: {first_line(err)})"
    if "weights_only" in cause.lower() or "weights only" in cause.lower():
        return f"{PICKLED_CODE} or data that only an unsafe load would accept; not run"
    return cause


def _foreign_global(path: Path) -> str | None:
    """The first global other than torch's and OrderedDict that the file's pickle names, found
    by reading its opcodes (nothing is built or run); None when there is none or it cannot be
    read. torch's safe loader stops at opcodes it does not know (pickle protocol 4 and later)
    before it sees the globals, so this names what such a file would have called."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(names[0]) if names else b""
        else:
            data = path.read_bytes()
        strings: list[str] = []
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                name = str(argument).replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            else:
                if isinstance(argument, str):
                    strings.append(argument)
                continue
            if not (name.startswith("torch.") or name == "collections.OrderedDict"):
                return name
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None
    return None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with `torch.load(weights_only=True)` and check it
    (`checkpoint_rules.check_payload`): its fingerprint is computed from the weights and must be
    the one the file states.

    Raises:
        CheckpointError: missing/unreadable file, not a checkpoint, corrupt, or containing
            pickled objects other than tensors and plain types (refused, never executed); an
            unknown model name, non-finite weights, or weights changed after the file was
            written.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            # torch warns on stderr about the pickle protocol of a file it did not write: noise
            # before the one-line error such a file (never a checkpoint of ours) gets
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load's own errors: pickle.UnpicklingError (a global it refuses), RuntimeError (not
    # a zip or a torch file), EOFError and OSError (truncated, unreadable); and what its
    # weights-only unpickler lets escape from a malformed pickle (IndexError from an empty
    # stack, KeyError from a missing memo entry, struct.error, ValueError, TypeError,
    # AttributeError, AssertionError). Nothing of ours runs inside torch.load.
    except (
        pickle.UnpicklingError, RuntimeError, EOFError, OSError, IndexError, KeyError,
        struct.error, ValueError, TypeError, AttributeError, AssertionError,
    ) as err:  # fmt: skip
        raise CheckpointError(f"{path}: {_refusal(path, err)}") from None
    state_dict = payload.get("state_dict") if isinstance(payload, dict) else None
    weights = {}
    if isinstance(state_dict, dict):
        for name, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: corrupt checkpoint (state_dict[{name!r}])")
        weights = as_weights(state_dict)
    check_payload(path, payload, weights)
    return payload


@dataclass
class LoadedModel:
    """An encoder and its front-end rebuilt from a checkpoint, both in eval mode."""

    frontend: nn.Module
    encoder: nn.Module
    fingerprint: str
    model_name: str
    embed_dim: int
    sample_rate: int


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the front-end (`Fbank`) and encoder from a checkpoint, ready for inference.

    Raises:
        CheckpointError: unreadable checkpoint, unknown model name or mismatching weights, or a
            device that is not one or not on this machine ("cuda" without CUDA).
    """
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.frontend.features import Fbank
    from speakerverify.models import build_model

    device = _usable_device(path, device)
    payload = load_checkpoint(path)
    try:
        encoder = build_model(payload["model_name"], **payload["model_args"])
        encoder.load_state_dict(payload["state_dict"])
        frontend = Fbank(FbankConfig.from_dict(payload["features"]))
    # build_model's ValueError (an unknown name, arguments the model does not take),
    # load_state_dict's RuntimeError (missing, unexpected or mis-shaped weights),
    # FbankConfig.from_dict's ValueError and TypeError (an unknown option, a value of the wrong
    # type) and KeyError for a missing payload field: a checkpoint this version cannot rebuild.
    except (ValueError, TypeError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the model: {first_line(err)}") from None
    return LoadedModel(
        frontend=frontend.to(device).eval(),
        encoder=encoder.to(device).eval(),
        fingerprint=payload["fingerprint"],  # computed from the weights by load_checkpoint
        model_name=payload["model_name"],
        embed_dim=int(encoder.embed_dim),
        sample_rate=int(payload["features"].get("sample_rate", 16000)),
    )


def _usable_device(path: str | os.PathLike, device: str | torch.device) -> torch.device:
    """`device` as a torch.device this machine has; CheckpointError naming it otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{path}: cannot load on device {device!r} ({first_line(err)})"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CheckpointError(f"{path}: cannot load on {device!r}: CUDA is not available")
        if parsed.index is not None and parsed.index >= count:
            raise CheckpointError(f"{path}: cannot load on {device!r}: only {count} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise CheckpointError(f"{path}: cannot load on {device!r}: MPS is not available")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise CheckpointError(f"{path}: cannot load on {device!r}: use cpu, cuda or mps")
    return parsed
