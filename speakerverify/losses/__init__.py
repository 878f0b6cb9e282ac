"""Metric-learning losses on speaker embeddings: triplet loss with online mining (the product).

`build_loss(name, **args)` builds a loss from the `LOSSES` registry ("triplet", and for ablations
"contrastive", "info_nce", "angular_prototypical"); every loss is called as
`loss_fn(embeddings (B, D), labels (B,)) -> LossOutput(value, stats)`. Each loss class declares
its contract: `has_margin` (its forward also takes `margin=`, what a margin schedule drives) and
`mines` (it also takes `mining=`, a strategy of `MINERS`, what a mining schedule drives, and is
built with `speaker_of_label=` to keep a speaker's speed-perturbed copies out of its negatives).
A constructor's `ValueError` names the argument first (`margin: must be >= 0, got -1`).
"""

from __future__ import annotations

from torch import nn

from speakerverify.losses.comparison import (
    AngularPrototypicalLoss,
    ContrastiveLoss,
    InfoNceLoss,
)
from speakerverify.losses.distances import DISTANCES, distance_matrix, pair_distances
from speakerverify.losses.mining import (
    DEFAULT_STRATEGY,
    MINERS,
    STRATEGIES,
    MinerOptions,
    WindowMiner,
    mine_triplets,
)
from speakerverify.losses.output import LossOutput
from speakerverify.losses.triplet import DEFAULT_REDUCTION, STAT_KEYS, TripletLoss

LOSSES: dict[str, type[nn.Module]] = {
    "triplet": TripletLoss,
    "contrastive": ContrastiveLoss,
    "info_nce": InfoNceLoss,
    "angular_prototypical": AngularPrototypicalLoss,
}


def build_loss(name: str, **args: object) -> nn.Module:
    """Build a registered loss by name.

    Args:
        name: a key of `LOSSES`.
        **args: constructor arguments of that loss.

    Raises:
        ValueError: for an unknown name (listing the valid ones).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**args)


__all__ = [
    "DEFAULT_REDUCTION",
    "DEFAULT_STRATEGY",
    "DISTANCES",
    "LOSSES",
    "MINERS",
    "STAT_KEYS",
    "STRATEGIES",
    "AngularPrototypicalLoss",
    "ContrastiveLoss",
    "InfoNceLoss",
    "LossOutput",
    "MinerOptions",
    "TripletLoss",
    "WindowMiner",
    "build_loss",
    "distance_matrix",
    "mine_triplets",
    "pair_distances",
]
