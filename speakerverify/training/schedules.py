"""Training schedules as pure functions of the step or epoch: learning rate, margin, mining."""

from __future__ import annotations

import math

from speakerverify.config import LossConfig, OptimConfig
from speakerverify.losses import DEFAULT_STRATEGY, LOSSES

__all__ = ["LrSchedule", "loss_arguments", "margin_at", "mining_at", "warmup_steps_of"]


def warmup_steps_of(optim: OptimConfig, steps_per_epoch: int) -> int:
    """Warm-up length in optimizer steps (`warmup_steps`, or `warmup_epochs` × steps per epoch)."""
    if optim.warmup_steps:
        return int(optim.warmup_steps)
    return round(optim.warmup_epochs * steps_per_epoch)


class LrSchedule:
    """LR multiplier per step for `torch.optim.lr_scheduler.LambdaLR`.

    Linear warm-up from `1/warmup_steps` to 1, then cosine or exponential decay reaching
    `final_ratio` (= final_lr / lr) at `total_steps`; "constant" keeps 1. A class rather than a
    closure so LambdaLR's state_dict holds its (plain) attributes.

    >>> schedule = LrSchedule(total_steps=10, warmup_steps=2, scheduler="cosine", final_ratio=0.1)
    >>> [round(schedule(s), 3) for s in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.1]
    """

    def __init__(
        self, total_steps: int, warmup_steps: int, scheduler: str, final_ratio: float
    ) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.scheduler = scheduler
        self.final_ratio = float(final_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.scheduler == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.scheduler == "cosine":
            return self.final_ratio + (1 - self.final_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        if self.scheduler == "exponential":
            return self.final_ratio**progress
        raise ValueError(
            f"unknown scheduler {self.scheduler!r}; valid: cosine, exponential, constant"
        )


def margin_at(loss: LossConfig, epoch_progress: float) -> float | None:
    """Margin at `epoch_progress` (fractional epochs since the start of training): from
    `margin_start` up to `args.margin`; None when the config sets no margin, so the loss keeps
    its own.

    >>> from speakerverify.config import LossConfig
    >>> cfg = LossConfig(args={"margin": 0.3}, margin_start=0.1, margin_warmup_epochs=2)
    >>> [round(margin_at(cfg, e), 3) for e in (0, 1, 2, 5)]
    [0.1, 0.2, 0.3, 0.3]
    """
    margin = loss.args.get("margin")
    if margin is None:
        return None
    if loss.margin_start is None or epoch_progress >= loss.margin_warmup_epochs:
        return margin
    fraction = epoch_progress / loss.margin_warmup_epochs
    return loss.margin_start + (margin - loss.margin_start) * fraction


def loss_arguments(loss: LossConfig, epoch: int, epoch_progress: float) -> dict[str, float | str]:
    """The schedule-driven keyword arguments of one loss call in (0-based) `epoch`, at
    `epoch_progress` fractional epochs: `margin` when the config sets one (validation allows
    that only for losses that declare `has_margin`) and `mining` for a loss that `mines`.

    >>> from speakerverify.config import LossConfig
    >>> cfg = LossConfig(args={"margin": 0.2, "mining": "batch_hard"}, mining_warmup="semi_hard",
    ...                  mining_warmup_epochs=1)
    >>> loss_arguments(cfg, 0, 0.5), loss_arguments(cfg, 1, 1.5)
    ({'margin': 0.2, 'mining': 'semi_hard'}, {'margin': 0.2, 'mining': 'batch_hard'})
    >>> loss_arguments(LossConfig(name="info_nce"), 0, 0.5)
    {}
    """
    arguments: dict[str, float | str] = {}
    margin = margin_at(loss, epoch_progress)
    if margin is not None:
        arguments["margin"] = margin
    mining = mining_at(loss, epoch)
    if mining is not None:
        arguments["mining"] = mining
    return arguments


def mining_at(loss: LossConfig, epoch: int) -> str | None:
    """Mining strategy in (0-based) `epoch`: the warm-up strategy first, then `args.mining` (or
    the default strategy); None for a loss that does not mine."""
    if not LOSSES[loss.name].mines:
        return None
    if loss.mining_warmup is not None and epoch < loss.mining_warmup_epochs:
        return loss.mining_warmup
    return loss.args.get("mining", DEFAULT_STRATEGY)
