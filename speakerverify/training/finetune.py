"""Fine-tuning: start training from a checkpoint's weights (`speakerverify train --init CKPT`)
with a fresh optimizer and schedule, optionally with some encoder layers frozen (`train.freeze`).

The architecture and front-end come from the checkpoint: a config without a `model` section
takes them over; a config whose model or front-end differs from the checkpoint is refused.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from speakerverify.checkpoint import CheckpointError, load_checkpoint
from speakerverify.config import ConfigError
from speakerverify.frontend.fbank_config import FbankConfig

__all__ = ["checkpoint_sections", "freeze_parameters", "load_init_weights"]


def checkpoint_sections(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The `model` and `features` config sections that rebuild the checkpoint's encoder, to fill
    in where a fine-tuning config leaves them out (`load_config(..., defaults=...)`)."""
    payload = load_checkpoint(path)
    args = dict(payload["model_args"])
    feat_dim = args.pop("feat_dim", None)
    if feat_dim is not None and feat_dim != _checkpoint_frontend(path, payload).feat_dim:
        args["feat_dim"] = feat_dim
    features = dict(payload["features"])
    return {"model": {"name": payload["model_name"], "args": args}, "features": features}


def _checkpoint_frontend(path: str | os.PathLike, payload: dict[str, Any]) -> FbankConfig:
    """The checkpoint's front-end; an option added since it was written counts as its default
    (which is what the checkpoint's front-end computes).

    Raises:
        CheckpointError: an option this speakerverify does not know (a newer checkpoint).
    """
    try:
        return FbankConfig.from_dict(dict(payload["features"]))
    # FbankConfig.from_dict's ValueError (an option it does not know, e.g. from a newer
    # speakerverify, or a value it refuses) and TypeError (a value of the wrong type).
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: --init checkpoint's front-end: {err}") from None


def load_init_weights(
    encoder: nn.Module,
    path: str | os.PathLike,
    model_name: str,
    model_args: dict[str, Any],
    features: dict[str, Any],
) -> str:
    """Copy the weights of checkpoint `path` into `encoder`; returns the checkpoint fingerprint.

    Raises:
        CheckpointError: unreadable checkpoint, or one made by another model, other model
            arguments or another front-end than the config asks for (one line naming both).
    """
    payload = load_checkpoint(path)
    theirs = (payload["model_name"], dict(payload["model_args"]))
    if theirs != (model_name, dict(model_args)):
        raise CheckpointError(
            f"{path}: --init checkpoint is {theirs[0]} {theirs[1]}, but the config asks for "
            f"{model_name} {dict(model_args)} (leave out the config's model section to use the "
            "checkpoint's)"
        )
    theirs_features = _checkpoint_frontend(path, payload).to_dict()  # older: defaults filled
    ours = FbankConfig.from_dict(dict(features)).to_dict()
    differ = sorted(k for k in ours if theirs_features[k] != ours[k])
    if differ:
        raise CheckpointError(
            f"{path}: --init checkpoint has another front-end ({', '.join(differ)} differ from "
            "the config's features section)"
        )
    encoder.load_state_dict(payload["state_dict"])
    return str(payload["fingerprint"])


def freeze_parameters(encoder: nn.Module, prefixes: tuple[str, ...] | list[str]) -> int:
    """Stop training the parameters whose names start with one of `prefixes` (whole name parts,
    e.g. `frame_layers.0` of the x-vector); returns how many tensors were frozen.

    Raises:
        ConfigError: a prefix that names no parameter (the message lists the top-level ones).
    """
    names = [name for name, _ in encoder.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(f"{prefix}.") for n in names):
            top = sorted(dict.fromkeys(n.split(".")[0] for n in names))
            raise ConfigError(
                f"train.freeze: {prefix!r} names no parameter; top-level modules: {', '.join(top)}"
            )
    frozen = 0
    for name, parameter in encoder.named_parameters():
        if any(name == p or name.startswith(f"{p}.") for p in prefixes):
            parameter.requires_grad_(False)
            frozen += 1
    return frozen
