"""What every loss returns: its value and the statistics of that call (no side channel)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossOutput(NamedTuple):
    """`value` is the scalar to backpropagate; `stats` are python floats for the training log.

    A named tuple, so `value, stats = loss_fn(embeddings, labels)` unpacks it.
    """

    value: torch.Tensor
    stats: dict[str, float]
