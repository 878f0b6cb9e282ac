"""What a checkpoint is: architecture, size, fingerprint, front-end, training data, calibration.

`describe_model` backs `speakerverify model info`; `make_card` writes the model card of a
packaged model (`recipes/mini/local/package_model.py`). For the bundled model the card supplies
what a checkpoint cannot know (training data, time, metrics, limits).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CARD_VERSION = 1


def num_parameters(encoder: Any) -> int:
    """Parameters of an encoder (`nn.Module`; buffers such as BatchNorm statistics not counted)."""
    return int(sum(p.numel() for p in encoder.parameters()))


def training_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint's own config says about its training (None where it does not); for a
    fusion (`checkpoint_combine.fuse_checkpoints`), each member's under "members"."""
    if payload.get("member_configs"):
        members = [training_summary({"config": c}) for c in payload["member_configs"]]
        return {"data": members[0]["data"], "members": members}
    config = payload.get("config") or {}
    data = config.get("data") or {}
    train = config.get("train") or {}
    loss = config.get("loss") or {}
    state = payload.get("train_state") or {}
    return {
        "data": data.get("train_dir"),
        "epochs": train.get("epochs"),
        "step": state.get("step") if isinstance(state, dict) else None,
        "loss": loss.get("name"),
        **_mining_summary(loss),
        "frozen": list(train.get("freeze") or []),  # layers left as initialised
        # 0.9x / 1.1x speed copies of every utterance trained as new speakers
        "speed_perturb": bool(data.get("speed_perturb", False)),
    }


def _mining_summary(section: dict[str, Any]) -> dict[str, Any]:
    """Which strategy mined when, from a checkpoint's loss section in either spelling (read as
    training reads it); None where the section is not a loss config this version reads."""
    from speakerverify.config import ConfigError, LossConfig
    from speakerverify.training.schedules import mining_at

    unknown = {"mining": None, "mining_warmup": None, "mining_warmup_epochs": 0}
    if not isinstance(section, dict):
        return unknown
    try:
        loss = LossConfig.from_flat(section)
    except (ConfigError, TypeError):  # a loss, key or value this version does not know
        return unknown
    epochs = loss.mining_warmup_epochs
    return {
        "mining": mining_at(loss, epochs),  # after the warm-up
        # What mined during the first epochs, when it was not `mining` (None otherwise).
        "mining_warmup": loss.mining_warmup if epochs else None,
        "mining_warmup_epochs": epochs,
    }


def describe_model(path: str | os.PathLike, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-able description of the checkpoint at `path`.

    Args:
        path: checkpoint file.
        card: its model card (the bundled model's), whose training data, date, metrics and limits
            are reported; without one these come from the checkpoint's config and versions.

    Raises:
        checkpoint.CheckpointError: unreadable or foreign checkpoint.
    """
    from speakerverify.backend.calibration import default_calibration_path
    from speakerverify.checkpoint import load_checkpoint, load_encoder

    payload = load_checkpoint(path)
    loaded = load_encoder(path)
    calibration = default_calibration_path(path)
    info: dict[str, Any] = {
        "path": str(path),
        "name": Path(path).stem,
        "architecture": payload["model_name"],
        "model_args": payload["model_args"],
        "embed_dim": loaded.embed_dim,
        "num_parameters": num_parameters(loaded.encoder),
        "fingerprint": payload["fingerprint"],
        "frontend": payload["features"],
        "versions": payload.get("versions") or {},
        "file_modified": datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc)
        .date()
        .isoformat(),
        "training": training_summary(payload),
        "adapted": payload.get("adaptation"),
        "calibration": str(calibration) if calibration.is_file() else None,
        "card": None,
    }
    if card is not None:
        info["name"] = card.get("name", info["name"])
        info["card"] = card
        info["training"] = {**info["training"], **(card.get("training") or {})}
    return info


def make_card(
    path: str | os.PathLike,
    *,
    name: str,
    training: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    limits: str = "",
    date: str = "",
    commit: str = "",
) -> dict[str, Any]:
    """The model card of the checkpoint at `path`: fingerprint and sizes computed from it.

    Args:
        path: the packaged checkpoint.
        name: model name (the file stem, e.g. "xvector_synth").
        training: what it was trained on and for how long (data, steps, seconds, ...).
        metrics: evaluation results (EER, minDCF, ...) with the trial list they came from.
        limits: plain text on where the model should not be trusted.
        date: ISO date of training.
        commit: code revision it was trained at.
    """
    from speakerverify.checkpoint import load_checkpoint, load_encoder

    payload = load_checkpoint(path)
    loaded = load_encoder(path)
    return {
        "card_version": CARD_VERSION,
        "name": name,
        "architecture": payload["model_name"],
        "model_args": payload["model_args"],
        "embed_dim": loaded.embed_dim,
        "num_parameters": num_parameters(loaded.encoder),
        "fingerprint": payload["fingerprint"],
        "frontend": payload["features"],
        "training": dict(training),
        "date": date,
        "commit": commit,
        "metrics": dict(metrics or {}),
        "limits": limits,
    }
