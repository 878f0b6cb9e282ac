"""The training loop: `fit()` builds everything from a Config, `train_one_epoch()` runs the steps.

One code path for CPU, one GPU and `torchrun` DDP. Checkpoints every epoch and on SIGINT/SIGTERM
(at the next step boundary); `resume` restores model, loss, optimizer, scheduler, sampler
position and RNG states (`speakerverify.training.resume`) so a resumed run equals an
uninterrupted one on CPU.
"""

from __future__ import annotations

import enum
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speakerverify.checkpoint import CheckpointError
from speakerverify.training.distributed import (
    DistEnv,
    any_rank,
    average_gradients,
    barrier,
    init_distributed,
    params_in_sync,
    shutdown_distributed,
)
from speakerverify.training.experiment import (
    JsonlLog,
    StopFlag,
    copy_atomic,
    prune_checkpoints,
    resume_path,
    stop_on_signals,
)
from speakerverify.training.experiment_config import Config, save_config
from speakerverify.training.resume import (
    Progress,
    load_train_state,
    preserved_global_state,
    save_train_checkpoint,
)
from speakerverify.training.schedules import loss_arguments, mining_at
from speakerverify.training.setup import (
    LogFn,
    Parts,
    StopFn,
    build_loader,
    build_parts,
)
from speakerverify.training.validation import validate

__all__ = [
    "Outcome",
    "TrainingInterrupted",
    "fit",
    "train_one_epoch",
]


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving `checkpoint` (resume from it)."""

    def __init__(self, checkpoint: Path, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint
        self.signum = signum


class Outcome(enum.Enum):
    """How `train_one_epoch` ended."""

    DONE = "done"  # the epoch ran to its end
    MAX_STEPS = "max_steps"  # `train.max_steps` reached inside the epoch
    SIGNAL = "signal"  # a stop was requested inside the epoch
    DONE_SIGNAL = "done_signal"  # a stop was requested on the epoch's last batch


@dataclass
class _Step:
    """What one optimizer step reports; tensors stay on the device until a log record reads them."""

    loss: torch.Tensor
    stats: dict[str, float | torch.Tensor]
    lr: float  # the rate this step used
    grad_norm: torch.Tensor
    num_utts: int  # across all ranks


def _train_step(
    parts: Parts,
    batch: dict[str, torch.Tensor],
    loss_fn: nn.Module,
    loss_args: dict[str, float],
    grad_clip: float,
) -> _Step:
    """One optimizer step. It reads nothing back from the device itself: the only host reads
    are the miner's output sizes (`losses.mining`) and, with fp16, GradScaler's inf check."""
    device = parts.env.device
    waves = batch["waves"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    with torch.no_grad():  # the front-end has no trainable parameters
        feats, _ = parts.frontend(waves)
        if parts.spec_augment is not None:
            feats = parts.spec_augment(feats)
    with torch.autocast(device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None):
        embeddings = parts.model(feats)
    loss, stats = loss_fn(embeddings.float(), labels, **loss_args)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    # DDP averaged the encoder's gradients during backward; the loss's own parameters sit
    # outside its wrapper (the encoder alone is compiled and wrapped), so average them here.
    average_gradients(list(loss_fn.parameters()), parts.env)
    parts.scaler.unscale_(parts.optimizer)
    trained = parts.trained_parameters()
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, grad_clip or math.inf)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.scheduler.step()
    num_utts = len(labels) * parts.env.world_size
    return _Step(loss.detach(), stats, lr, grad_norm.detach(), num_utts)


class _LogWindow:
    """Mean loss and throughput of the steps since the last log record; the loss is summed on
    the device and read once per record."""

    def __init__(self, device: torch.device) -> None:
        self.start, self.utts, self.steps = time.perf_counter(), 0, 0
        self.loss = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, step: _Step) -> None:
        self.utts += step.num_utts
        self.loss += step.loss
        self.steps += 1

    def record(
        self, progress: Progress, step: _Step, mining: str | None, epoch_loss: torch.Tensor
    ) -> tuple[dict[str, Any], float]:
        """The log record and the epoch's mean loss so far (`epoch_loss`, a device tensor)."""
        names = list(step.stats)
        device = self.loss.device
        values = [
            torch.as_tensor(v, dtype=torch.float64, device=device) for v in step.stats.values()
        ]
        loss, grad_norm, epoch_mean, *stats = torch.stack(
            [self.loss / self.steps, step.grad_norm.double(), epoch_loss, *values]
        ).tolist()  # the one host read of a log window (it waits for the device to catch up)
        elapsed = time.perf_counter() - self.start
        record = {
            "kind": "step",
            "epoch": progress.epoch + 1,
            "step": progress.step,
            "loss": loss,
            **dict(zip(names, stats, strict=True)),
            "mining": mining,
            "lr": step.lr,
            "utt_per_second": self.utts / max(elapsed, 1e-9),
            "grad_norm": grad_norm,
        }
        return record, epoch_mean


def train_one_epoch(
    parts: Parts,
    loader: Any,
    loss_fn: nn.Module,
    config: Config,
    progress: Progress,
    *,
    log: LogFn | None = None,
    stop: StopFn = lambda: False,
) -> Outcome:
    """Run the batches of one epoch (from `progress.batch` on); update `progress` in place.

    The loss gets its schedule-driven arguments (`schedules.loss_arguments`) on every call and
    returns its statistics, which go into the log records of rank 0 (`log`). Losses and
    statistics stay on the device and are read every `train.log_every` steps; under DDP the
    ranks also agree on a stop request only then (an all-reduce and a host read), so a signal
    stops training within `log_every` steps.

    Returns:
        The `Outcome`; the caller saves the checkpoint.
    """
    steps_per_epoch = len(parts.sampler)
    mining = mining_at(config.loss, progress.epoch)
    for module in (parts.model, parts.frontend, parts.spec_augment):
        if module is not None:
            module.train()
    device = parts.env.device
    window, bar = _LogWindow(device), _progress_bar(parts.env, steps_per_epoch, progress)
    epoch_loss = torch.zeros((), dtype=torch.float64, device=device)
    epoch_batches = 0

    def finish(outcome: Outcome) -> Outcome:
        if epoch_batches:
            progress.epoch_loss = float(epoch_loss / epoch_batches)
        return _close(bar, outcome)

    for batch in loader:
        loss_args = loss_arguments(config.loss, progress.epoch, progress.step / steps_per_epoch)
        step = _train_step(parts, batch, loss_fn, loss_args, config.optim.grad_clip)
        progress.step, progress.batch = progress.step + 1, progress.batch + 1
        epoch_loss += step.loss
        epoch_batches += 1
        window.add(step)
        at_log = progress.step % config.train.log_every == 0 or progress.batch == steps_per_epoch
        if at_log:
            record, progress.epoch_loss = window.record(
                progress, step, mining, epoch_loss / epoch_batches
            )
            if log is not None:
                log(record)
            _show(bar, record)
            window = _LogWindow(device)
        if bar is not None:
            bar.update(1)
        in_epoch = progress.batch < steps_per_epoch
        max_steps = config.train.max_steps
        if max_steps is not None and progress.step >= max_steps:
            return finish(Outcome.MAX_STEPS if in_epoch else Outcome.DONE)
        if (at_log or not parts.env.distributed) and any_rank(parts.env, stop()):
            return finish(Outcome.SIGNAL if in_epoch else Outcome.DONE_SIGNAL)
    return finish(Outcome.DONE)


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


def _show(bar: Any, record: dict[str, Any]) -> None:
    if bar is not None:
        bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            active=f"{record.get('active_fraction', float('nan')):.2f}",
            utt_s=f"{record['utt_per_second']:.0f}",
            lr=f"{record['lr']:.2e}",
        )


def _close(bar: Any, outcome: Outcome) -> Outcome:
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
    exp_dir = Path(exp_dir)
    env = init_distributed(config.train.device)
    try:
        with preserved_global_state(config.train.num_threads), stop_on_signals() as stop:
            return _Run(config, exp_dir, resume, env, stop, init).fit()
    finally:
        shutdown_distributed(env)


class _Run:
    """One call of `fit`: the parts, where training is, and the checkpoints written so far."""

    def __init__(
        self,
        config: Config,
        exp_dir: Path,
        resume: Any,
        env: DistEnv,
        stop: StopFlag,
        init: str | os.PathLike | None = None,
    ) -> None:
        self.config, self.env, self.stop = config, env, stop
        self.checkpoint_dir = exp_dir / "checkpoints"
        self.log_path = exp_dir / "train_log.jsonl"
        # Refuse a used exp dir (or a missing checkpoint) before writing anything.
        self.last_path: Path | None = resume_path(resume, self.checkpoint_dir)
        # Fine-tuning starts a fresh run from `init`'s weights; a resumed run has its own.
        self.parts = build_parts(config, env, init=init if self.last_path is None else None)
        if env.is_main:  # once the parts are built: a refused --init or data dir writes nothing
            save_config(config, exp_dir / "config.yaml")
        self.progress = Progress()
        self.loader: Any = None  # built once: its workers persist across epochs

    def fit(self) -> Path:
        config, progress = self.config, self.progress
        if self.last_path is not None:
            load_train_state(self.last_path, config, self.parts, progress)
        log = JsonlLog(self.log_path, config.train.tensorboard) if self.env.is_main else None
        try:
            while progress.epoch < config.train.epochs and not self._at_max_steps():
                if self.last_path is not None and any_rank(self.env, self.stop()):
                    self._interrupted()  # a signal during validation or saving
                if not self._run_epoch(self.parts.loss, log):
                    break
        finally:
            if log is not None:
                log.close()
        return self._result()

    def _run_epoch(self, loss_fn: nn.Module, log: JsonlLog | None) -> bool:
        """Train one epoch, save, validate at its end; False when training stops early."""
        config, progress, parts = self.config, self.progress, self.parts
        epoch = progress.epoch
        parts.sampler.set_epoch(epoch)
        if self.loader is None:
            self.loader = build_loader(
                parts.dataset, parts.sampler, progress.batch, config, self.env
            )
        self.loader.batch_sampler.start = progress.batch
        loader = self.loader
        outcome = train_one_epoch(parts, loader, loss_fn, config, progress, log=log, stop=self.stop)
        if outcome in (Outcome.SIGNAL, Outcome.MAX_STEPS):
            name = f"epoch_{epoch + 1:04d}_step_{progress.step:08d}.pt"
            self.last_path = self._save(self.checkpoint_dir / name)
            if outcome is Outcome.SIGNAL:
                self._interrupted()
            return False
        progress.epoch, progress.batch = epoch + 1, 0
        record = {"kind": "epoch", "epoch": epoch + 1, "step": progress.step}
        record |= {"loss": progress.epoch_loss, **self._validate()}
        if self.env.distributed:
            record["ranks_in_sync"] = params_in_sync(parts.model, parts.loss)
        improved = record.get("eer", math.inf) < progress.best_eer
        if improved:
            progress.best_eer = record["eer"]
        self.last_path = self._save(self.checkpoint_dir / f"epoch_{epoch + 1:04d}.pt")
        if self.env.is_main:
            if improved:
                copy_atomic(self.last_path, self.checkpoint_dir / "best.pt")
            prune_checkpoints(self.checkpoint_dir, config.train.keep_last)
        if log is not None:
            log(record)
        if outcome is Outcome.DONE_SIGNAL:
            self._interrupted()
        return True

    def _at_max_steps(self) -> bool:
        max_steps = self.config.train.max_steps
        return max_steps is not None and self.progress.step >= max_steps

    def _interrupted(self) -> None:
        assert self.last_path is not None
        raise TrainingInterrupted(self.last_path, self.stop.signum or signal.SIGTERM)

    def _result(self) -> Path:
        best = self.checkpoint_dir / "best.pt"
        if best.exists() and self.progress.epoch >= self.config.train.epochs:
            return best
        if self.last_path is None:
            raise CheckpointError(
                f"{self.checkpoint_dir}: nothing to train (already at the last epoch)"
            )
        return self.last_path

    def _save(self, path: Path) -> Path:
        """Write a resumable checkpoint on rank 0; every rank waits for it."""
        if self.env.is_main:
            save_train_checkpoint(path, self.config, self.parts, self.progress)
        barrier(self.env)
        return path

    def _validate(self) -> dict[str, float]:
        data = self.config.data
        if not data.valid_trials:
            return {}
        metrics: dict[str, float] = {}
        if self.env.is_main:
            encoder = self.parts.encoder
            metrics = validate(
                encoder,
                self.config.features.fbank_dict(),
                data.valid_dir,
                data.valid_trials,
                self.env.device,
                data.valid_max_seconds,
            )
            encoder.train()
        barrier(self.env)
        return metrics
