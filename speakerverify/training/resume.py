"""Exact resume: where training is (`Progress`), the train state a checkpoint carries besides the
weights (the loss's own parameters, optimizer, scheduler, grad scaler, position, every RNG state)
and restoring it.

A resumed run equals an uninterrupted one on CPU; `speakerverify.training.loop` decides when to
save and what to resume from.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speakerverify.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from speakerverify.training.distributed import DistEnv
from speakerverify.training.experiment_config import Config
from speakerverify.training.setup import Parts

__all__ = [
    "Progress",
    "capture_rng",
    "load_train_state",
    "preserved_global_state",
    "restore_rng",
    "save_train_checkpoint",
]

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training is: completed epochs, batches done in the current epoch, optimizer steps."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_eer: float = math.inf
    epoch_loss: float = math.nan  # mean loss of the batches run in the last epoch


def save_train_checkpoint(path: Path, config: Config, parts: Parts, progress: Progress) -> None:
    """Write the encoder with everything `load_train_state` needs (call it on rank 0 only)."""
    state = {
        "epoch": progress.epoch,
        "batch_in_epoch": progress.batch,
        "global_step": progress.step,
        "best_eer": progress.best_eer,
        "world_size": parts.env.world_size,
        "loss": {k: v.detach().to("cpu").clone() for k, v in parts.loss.state_dict().items()},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": capture_rng(),
    }
    save_checkpoint(
        path,
        model_name=config.model.name,
        model_args=parts.model_args,
        model=parts.encoder,
        features=config.features.fbank_dict(),
        config=config.to_dict(),
        train_state=state,
    )


def load_train_state(path: Path, config: Config, parts: Parts, progress: Progress) -> None:
    """Restore weights, the loss's state, optimizer, scheduler, scaler, `progress` and RNGs.

    A checkpoint written before the loss's state was saved (no `train_state["loss"]`) resumes
    with the loss as built: its parameters start from their initial values, with fresh
    optimizer moments.

    Raises:
        CheckpointError: the checkpoint is of another model or has no train state.
    """
    env = parts.env
    payload = load_checkpoint(path)
    if payload["model_name"] != config.model.name or payload["model_args"] != parts.model_args:
        raise CheckpointError(
            f"{path}: made by {payload['model_name']} {payload['model_args']}, but the config "
            f"asks for {config.model.name} {parts.model_args}"
        )
    state = payload.get("train_state")
    if not state:
        raise CheckpointError(f"{path}: has no train state (an averaged or exported model?)")
    parts.encoder.load_state_dict(payload["state_dict"])
    optimizer_state = state["optimizer"]
    if "loss" in state:
        parts.loss.load_state_dict(state["loss"])
    else:
        optimizer_state = _without_loss_state(path, optimizer_state, parts)
    parts.optimizer.load_state_dict(optimizer_state)
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    progress.epoch = int(state["epoch"])
    progress.batch = int(state["batch_in_epoch"])
    progress.step = int(state["global_step"])
    progress.best_eer = float(state["best_eer"])
    if int(state.get("world_size", 1)) != env.world_size:
        logger.warning(
            "%s was written with world size %s, now %d: the sampler position of the "
            "current epoch is approximate",
            path,
            state.get("world_size"),
            env.world_size,
        )
    restore_rng(state["rng"], env, config.train.seed, progress.step)
    logger.info("resumed from %s at epoch %d step %d", path, progress.epoch + 1, progress.step)


def _without_loss_state(path: Path, saved: dict[str, Any], parts: Parts) -> dict[str, Any]:
    """The optimizer state of a checkpoint written before the loss's parameters trained, made to
    fit today's optimizer: those parameters come last in its one group (see `build_parts`), so
    they are appended to the saved group and get fresh state (no entry in `saved["state"]`)."""
    num_loss_parameters = sum(1 for p in parts.loss.parameters() if p.requires_grad)
    if num_loss_parameters == 0:
        return saved
    logger.warning(
        "%s has no state of the %s loss (written before its parameters trained): they start "
        "from their initial values",
        path,
        type(parts.loss).__name__,
    )
    current = parts.optimizer.state_dict()["param_groups"]
    if len(saved["param_groups"]) != len(current) or len(current) != 1:
        return saved  # not the layout this fix-up knows; the optimizer says what differs
    (group,) = saved["param_groups"]
    wanted = current[0]["params"]
    if group["params"] != wanted[: len(wanted) - num_loss_parameters]:
        return saved
    return {**saved, "param_groups": [{**group, "params": list(wanted)}]}


def capture_rng() -> dict[str, Any]:
    """Every RNG state as tensors and plain types (so `weights_only=True` can load it)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
    version, python_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_host_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        (
            numpy_state["kind"],
            keys,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))


def restore_rng(state: dict[str, Any], env: DistEnv, seed: int, step: int) -> None:
    """Restore `capture_rng()` output; ranks other than 0 reseed from (seed, rank, step) since
    the checkpoint holds rank 0's states."""
    _restore_host_rng(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if env.rank > 0:
        torch.manual_seed(seed + 1_000_003 * env.rank + 7919 * step + 1)


@contextlib.contextmanager
def preserved_global_state(num_threads: int = 0) -> Iterator[None]:
    """Set torch's thread count (0 = unchanged) for the duration; restore it and every host RNG
    afterwards, so calling `fit` leaves the caller's process as it found it."""
    threads = torch.get_num_threads()
    saved = capture_rng()
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _restore_host_rng(saved)
