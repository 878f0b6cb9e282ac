"""What every loss returns: its value and the statistics of that call (no side channel)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossOutput(NamedTuple):
    """`value` is the scalar to backpropagate; `stats` are the numbers for the training log, python
    floats or 0-dim tensors left on the device (so the step does not wait for them; the log
    reads them every `log_every` steps).

    A named tuple, so `value, stats = loss_fn(embeddings, labels)` unpacks it.
    """

    value: torch.Tensor
    stats: dict[str, float | torch.Tensor]
