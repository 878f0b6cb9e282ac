"""The normalisation on an encoder's embedding output, with a choice of where its origin is."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class EmbeddingNorm(nn.BatchNorm1d):
    """BatchNorm without affine parameters on the (B, D) embedding.

    Training always normalises with the batch's mean and variance: centred batches keep triplet
    training from collapsing every embedding onto one direction. At inference the running
    statistics are used; with ``centre=False`` only the running variance is, so the origin of
    the embedding space is the network's own zero rather than the training data's mean. That
    matters when the test audio is far from the training audio: models trained on synthetic
    speakers put real speech many standard deviations from the synthetic mean, and cosine
    scores around a far-away origin rank real voices worse than around the network's zero
    (recipes/mini/README.md). Centring on in-domain audio stays available at scoring time
    (`speakerverify adapt`, `score --mean-store`).

    The state dict is BatchNorm1d's, so checkpoints load with either setting.
    """

    def __init__(self, dim: int, centre: bool = True) -> None:
        super().__init__(dim, affine=False)
        self.centre = centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.running_mean is not None and self.running_var is not None
        if self.training or self.centre:  # BatchNorm1d's own step, written out for TorchScript
            if self.training and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            # (no encoder uses BatchNorm's cumulative mode, momentum None; 0.1 is the default)
            momentum = 0.1 if self.momentum is None else float(self.momentum)
            mean, var = self.running_mean, self.running_var
            return F.batch_norm(x, mean, var, None, None, self.training, momentum, self.eps)
        return x / torch.sqrt(self.running_var + self.eps)


def embedding_head(linear: nn.Module, norm: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """`norm(linear(pooled))` in float32, also under autocast.

    The embedding is what the triplet loss compares: distances between unit vectors that differ
    by less than bf16's resolution (3 significant digits) near the end of training, and a
    BatchNorm's batch variance is best not taken in half precision. The layer is one (B, C) x
    (C, D) product, so full precision costs nothing measurable.

    Args:
        linear: the last layer, (B, C) -> (B, D).
        norm: the BatchNorm of the embedding.
        pooled: (B, C) pooled statistics, any float dtype.

    Returns:
        (B, D) float32 (float64 for float64 input).
    """
    with torch.autocast(pooled.device.type, enabled=False):
        if pooled.dtype in (torch.float16, torch.bfloat16):
            pooled = pooled.float()
        return norm(linear(pooled))
