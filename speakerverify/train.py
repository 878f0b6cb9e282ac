"""The training loop: `fit()` builds everything from a Config, `train_one_epoch()` runs the steps.

One code path for CPU, one GPU and `torchrun` DDP. Checkpoints every epoch and on SIGINT/SIGTERM
(at the next step boundary); `resume` restores model, optimizer, scheduler, sampler position and
RNG states so a resumed run equals an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speakerverify.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from speakerverify.config import Config, save_config
from speakerverify.distributed import (
    DistEnv,
    any_rank,
    barrier,
    init_distributed,
    params_in_sync,
    shutdown_distributed,
)
from speakerverify.experiment import (
    JsonlLog,
    copy_atomic,
    find_checkpoint,
    prune_checkpoints,
    resume_path,
    stop_on_signals,
)
from speakerverify.schedules import margin_at, mining_at
from speakerverify.validation import validate

__all__ = ["TrainingInterrupted", "find_checkpoint", "fit", "train_one_epoch", "validate"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving `checkpoint` (resume from it)."""

    def __init__(self, checkpoint: Path, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint
        self.signum = signum


@dataclass
class Progress:
    """Where training is: completed epochs, batches done in the current epoch, optimizer steps."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_eer: float = math.inf
    epoch_loss: float = math.nan  # mean loss of the batches run in the last epoch


@dataclass
class Parts:
    """Everything one step needs (built once by `fit`)."""

    model: nn.Module  # the encoder, DDP-wrapped under torchrun
    frontend: nn.Module
    spec_augment: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    env: DistEnv
    amp_dtype: torch.dtype | None = None
    log: Any = None  # callable(record dict) on rank 0
    stop: Any = field(default=lambda: False)  # callable() -> bool


def train_one_epoch(
    parts: Parts,
    loader: Any,
    loss_fn: nn.Module,
    config: Config,
    progress: Progress,
    steps_per_epoch: int,
) -> str:
    """Run the batches of one epoch (from `progress.batch` on); update `progress` in place.

    Returns:
        "done" at the end of the epoch, "max_steps" when `train.max_steps` is reached, or "signal"
        when a stop was requested (on any rank); the caller saves the checkpoint.
    """
    model, env, device = parts.model, parts.env, parts.env.device
    model.train()
    parts.frontend.train()
    if parts.spec_augment is not None:
        parts.spec_augment.train()
    log_every, max_steps = config.train.log_every, config.train.max_steps
    window_start, window_utts, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
    bar = _progress_bar(env, steps_per_epoch, progress)
    epoch_loss, epoch_batches = 0.0, 0
    for batch in loader:
        waves = batch["waves"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.no_grad():  # the front-end has no trainable parameters
            feats, _ = parts.frontend(waves)
            if parts.spec_augment is not None:
                feats = parts.spec_augment(feats)
        loss_fn.margin = margin_at(config.loss, progress.step / steps_per_epoch)
        with torch.autocast(
            device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None
        ):
            embeddings = model(feats)
        loss = loss_fn(embeddings.float(), labels)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)
        clip = config.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step used
        parts.scheduler.step()
        progress.step += 1
        progress.batch += 1
        window_utts += len(labels) * env.world_size
        loss_value = float(loss.detach())
        window_loss += loss_value
        epoch_loss, epoch_batches = epoch_loss + loss_value, epoch_batches + 1
        progress.epoch_loss = epoch_loss / epoch_batches
        window_steps += 1
        if progress.step % log_every == 0 or progress.batch == steps_per_epoch:
            elapsed = time.perf_counter() - window_start
            record = {
                "kind": "step",
                "epoch": progress.epoch + 1,
                "step": progress.step,
                "loss": window_loss / window_steps,
                **{k: float(v) for k, v in getattr(loss_fn, "stats", {}).items()},
                "margin": float(loss_fn.margin),
                "mining": getattr(loss_fn, "mining", None),
                "lr": lr,
                "utt_per_second": window_utts / max(elapsed, 1e-9),
                "grad_norm": float(grad_norm),
            }
            if parts.log is not None:
                parts.log(record)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    active=f"{record.get('active_fraction', float('nan')):.2f}",
                    utt_s=f"{record['utt_per_second']:.0f}",
                    lr=f"{record['lr']:.2e}",
                )
            window_start, window_utts, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
        if bar is not None:
            bar.update(1)
        if max_steps is not None and progress.step >= max_steps:
            return _close(bar, "max_steps" if progress.batch < steps_per_epoch else "done")
        if any_rank(env, parts.stop()):
            return _close(bar, "signal" if progress.batch < steps_per_epoch else "done_signal")
    return _close(bar, "done")


def _progress_bar(env: DistEnv, total: int, progress: Progress) -> Any:
    if not env.is_main:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=progress.batch,
        desc=f"epoch {progress.epoch + 1}",
        disable=None,  # off when stderr is not a TTY
        dynamic_ncols=True,
        leave=False,
    )


def _close(bar: Any, outcome: str) -> str:
    if bar is not None:
        bar.close()
    return outcome


def fit(
    config: Config,
    exp_dir: str | os.PathLike,
    resume: str | os.PathLike | bool | None = None,
    init: str | os.PathLike | None = None,
) -> Path:
    """Train `config` into `exp_dir` (config.yaml, train_log.jsonl, checkpoints/).

    Runs single-process, or DDP when launched by `torchrun` (WORLD_SIZE > 1).

    Args:
        config: the resolved experiment config (written to `exp_dir/config.yaml`).
        exp_dir: experiment directory; created if missing.
        resume: None/False to start fresh (refused if `exp_dir` has checkpoints), True for the
            newest checkpoint in `exp_dir/checkpoints`, or a checkpoint path.
        init: fine-tune: a checkpoint whose weights a fresh run starts from (fresh optimizer and
            schedule; same model and front-end as `config`); ignored when resuming.

    Returns:
        `checkpoints/best.pt` when validation ran, else the last checkpoint written.

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM, once the checkpoint is saved.
        CheckpointError: the checkpoint to resume from is unusable or from another model.
    """
    from speakerverify.training_setup import preserved_global_state

    exp_dir = Path(exp_dir)
    env = init_distributed(config.train.device)
    try:
        with preserved_global_state(config.train.num_threads), stop_on_signals() as stop:
            return _fit(config, exp_dir, resume, env, stop, init)
    finally:
        shutdown_distributed(env)


def _fit(
    config: Config, exp_dir: Path, resume: Any, env: DistEnv, stop: Any, init: Any = None
) -> Path:
    from speakerverify.training_setup import (
        build_loader,
        build_losses,
        build_parts,
        capture_rng,
        restore_rng,
    )

    checkpoint_dir = exp_dir / "checkpoints"
    start_from = resume_path(resume, checkpoint_dir)
    if env.is_main:
        save_config(config, exp_dir / "config.yaml")
    parts, model_args, dataset, sampler = build_parts(
        config, env, init=init if start_from is None else None
    )
    parts.stop = stop
    steps_per_epoch = len(sampler)
    progress = Progress()
    if start_from is not None:
        payload = load_checkpoint(start_from)
        _restore(payload, parts, config, model_args, progress, start_from)
        restore_rng(payload["train_state"]["rng"], env, config.train.seed, progress.step)
        logger.info(
            "resumed from %s at epoch %d step %d", start_from, progress.epoch + 1, progress.step
        )
    losses = build_losses(config, env)
    parts.log = (
        JsonlLog(exp_dir / "train_log.jsonl", config.train.tensorboard) if env.is_main else None
    )
    fbank_dict = config.features.fbank_dict()
    last_path = start_from

    def save(path: Path) -> Path:
        if env.is_main:
            state = {
                "epoch": progress.epoch,
                "batch_in_epoch": progress.batch,
                "global_step": progress.step,
                "best_eer": progress.best_eer,
                "world_size": env.world_size,
                "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(),
                "scaler": parts.scaler.state_dict(),
                "rng": capture_rng(),
            }
            save_checkpoint(
                path,
                model_name=config.model.name,
                model_args=model_args,
                model=parts.model,
                features=fbank_dict,
                config=config.to_dict(),
                train_state=state,
            )
        barrier(env)
        return path

    try:
        while progress.epoch < config.train.epochs:
            if config.train.max_steps is not None and progress.step >= config.train.max_steps:
                break
            if last_path is not None and any_rank(env, stop()):  # signal during validation/save
                raise TrainingInterrupted(last_path, stop.signum or signal.SIGTERM)
            epoch = progress.epoch
            sampler.set_epoch(epoch)
            loader = build_loader(dataset, sampler, progress.batch, config, env)
            loss_fn = losses[mining_at(config.loss, epoch)]
            outcome = train_one_epoch(parts, loader, loss_fn, config, progress, steps_per_epoch)
            if outcome in ("signal", "max_steps"):
                last_path = save(
                    checkpoint_dir / f"epoch_{epoch + 1:04d}_step_{progress.step:08d}.pt"
                )
                if outcome == "signal":
                    raise TrainingInterrupted(last_path, stop.signum or signal.SIGTERM)
                break
            progress.epoch, progress.batch = epoch + 1, 0
            record = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": progress.step,
                "loss": progress.epoch_loss,
            }
            record.update(_validate_on_main(config, parts, env, fbank_dict))
            if env.distributed:
                record["ranks_in_sync"] = params_in_sync(parts.model)
            improved = record.get("eer", math.inf) < progress.best_eer
            if improved:
                progress.best_eer = record["eer"]
            last_path = save(checkpoint_dir / f"epoch_{epoch + 1:04d}.pt")
            if env.is_main:
                if improved:
                    copy_atomic(last_path, checkpoint_dir / "best.pt")
                prune_checkpoints(checkpoint_dir, config.train.keep_last)
                parts.log(record)
            if outcome == "done_signal":
                raise TrainingInterrupted(last_path, stop.signum or signal.SIGTERM)
    finally:
        if parts.log is not None:
            parts.log.close()
    best = checkpoint_dir / "best.pt"
    if best.exists() and progress.epoch >= config.train.epochs:
        return best
    if last_path is None:
        raise CheckpointError(f"{checkpoint_dir}: nothing to train (already at the last epoch)")
    return last_path


def _restore(
    payload: dict, parts: Parts, config: Config, model_args: dict, progress: Progress, path: Path
) -> None:
    if payload["model_name"] != config.model.name or payload["model_args"] != model_args:
        raise CheckpointError(
            f"{path}: made by {payload['model_name']} {payload['model_args']}, but the config asks "
            f"for {config.model.name} {model_args}"
        )
    state = payload.get("train_state")
    if not state:
        raise CheckpointError(f"{path}: has no train state (an averaged or exported model?)")
    module = getattr(parts.model, "module", parts.model)
    module.load_state_dict(payload["state_dict"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    progress.epoch = int(state["epoch"])
    progress.batch = int(state["batch_in_epoch"])
    progress.step = int(state["global_step"])
    progress.best_eer = float(state["best_eer"])
    if int(state.get("world_size", 1)) != parts.env.world_size:
        logger.warning(
            "%s was written with world size %s, now %d: the sampler position of the "
            "current epoch is approximate",
            path,
            state.get("world_size"),
            parts.env.world_size,
        )


def _validate_on_main(config: Config, parts: Parts, env: DistEnv, fbank: dict) -> dict[str, float]:
    if not config.data.valid_trials:
        return {}
    metrics: dict[str, float] = {}
    if env.is_main:
        module = getattr(parts.model, "module", parts.model)
        metrics = validate(
            module,
            fbank,
            config.data.valid_dir,
            config.data.valid_trials,
            env.device,
            config.data.valid_max_seconds,
        )
        module.train()
    barrier(env)
    return metrics
