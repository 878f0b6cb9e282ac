"""Checkpoints made of several others: the average of one model's checkpoints (`speakerverify
average`) and the fusion of several encoders into one (`speakerverify fuse`). Both build and
write their result with `speakerverify.checkpoint`'s one builder and one writer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from speakerverify.checkpoint import (
    CheckpointError,
    build_payload,
    first_line,
    load_checkpoint,
    write_checkpoint,
)

__all__ = ["average_checkpoints", "fuse_checkpoints"]


def average_checkpoints(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> str:
    """Average the weights of several checkpoints of one model (WeSpeaker-style model averaging).

    Floating-point tensors are averaged in float64; integer buffers (e.g. BatchNorm's
    `num_batches_tracked`) are taken from the last checkpoint. The output has no train state.

    Returns:
        The fingerprint of the averaged model.

    Raises:
        CheckpointError: no paths, or checkpoints of different models / front-ends.
    """
    if not paths:
        raise CheckpointError(f"{out_path}: no checkpoints to average")
    first = load_checkpoint(paths[0])
    sums = {
        k: v.to(torch.float64) if v.is_floating_point() else v
        for k, v in first["state_dict"].items()
    }
    last = first
    for path in paths[1:]:
        payload = load_checkpoint(path)
        for key in ("model_name", "model_args", "features"):
            if payload[key] != first[key]:
                raise CheckpointError(f"{path}: {key} differs from {paths[0]}; cannot average")
        if set(payload["state_dict"]) != set(sums):
            raise CheckpointError(f"{path}: parameter names differ from {paths[0]}")
        for key, value in payload["state_dict"].items():
            if value.is_floating_point():
                sums[key] = sums[key] + value.to(torch.float64)
            else:
                sums[key] = value
        last = payload
    dtypes = {k: v.dtype for k, v in first["state_dict"].items()}
    averaged = {
        k: (v / len(paths)).to(dtypes[k]) if dtypes[k].is_floating_point else v
        for k, v in sums.items()
    }
    payload = build_payload(
        model_name=first["model_name"],
        model_args=first["model_args"],
        state_dict=averaged,
        features=first["features"],
        config=last.get("config"),
        records={"averaged_from": [str(p) for p in paths]},
    )
    return write_checkpoint(payload, out_path)


def fuse_checkpoints(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> str:
    """Put the encoders of several checkpoints side by side as one `fusion` encoder
    (`speakerverify.models.Fusion`: its cosine score is the average of theirs).

    The members keep their weights (under `members.N.`) and arguments; they must share one
    front-end. The output has no train state and records the paths it was fused from.

    Returns:
        The fingerprint of the fused model.

    Raises:
        CheckpointError: fewer than two paths, a member that is itself a fusion, front-ends
            that differ, or members that cannot be rebuilt together.
    """
    from speakerverify.models import build_model

    if len(paths) < 2:
        raise CheckpointError(f"{out_path}: fusing needs at least two checkpoints")
    payloads = [load_checkpoint(path) for path in paths]
    features = payloads[0]["features"]
    for path, payload in zip(paths, payloads, strict=True):
        if payload["model_name"] == "fusion":
            raise CheckpointError(f"{path}: already a fusion; fuse its members instead")
        if payload["features"] != features:
            raise CheckpointError(f"{path}: front-end differs from {paths[0]}; cannot fuse")
    model_args = {
        "feat_dim": payloads[0]["model_args"].get("feat_dim", 80),
        "members": [
            {
                "name": payload["model_name"],
                "args": {k: v for k, v in payload["model_args"].items() if k != "feat_dim"},
            }
            for payload in payloads
        ],
    }
    state_dict = {
        f"members.{index}.{key}": value
        for index, payload in enumerate(payloads)
        for key, value in payload["state_dict"].items()
    }
    try:
        build_model("fusion", **model_args).load_state_dict(state_dict)
    # as in load_encoder: arguments a member does not take (ValueError), mis-shaped weights
    # (RuntimeError), e.g. members trained on features of different sizes
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(f"{out_path}: cannot fuse: {first_line(err)}") from None
    records = {
        "fused_from": [str(p) for p in paths],
        "member_configs": [p.get("config") for p in payloads],  # how each was trained
    }
    payload = build_payload(
        model_name="fusion",
        model_args=model_args,
        state_dict=state_dict,
        features=features,
        records=records,
    )
    return write_checkpoint(payload, out_path)
