"""Triplet loss with online mining and mining statistics (the training objective of the project).

Mining decides on a distance matrix built without autograd; the loss value comes from that
matrix and the gradient flows only through the mined triplets that carry one (see objective.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speakerverify.losses.distances import check_distance, distance_matrix
from speakerverify.losses.distributed import gather_batch
from speakerverify.losses.mining import check_strategy, mine_triplets
from speakerverify.losses.objective import triplet_objective

REDUCTIONS: tuple[str, ...] = ("mean", "mean_active")
# Strategies that keep many triplets per anchor average over the active ones (pytorch-metric-
# learning's AvgNonZeroReducer); one-triplet-per-anchor/pair strategies average over all mined
# triplets (Hermans et al. 2017), so easy batches give a small loss rather than a noisy one.
DEFAULT_REDUCTION: dict[str, str] = {
    "batch_all": "mean_active",
    "semi_hard_all": "mean_active",
    "batch_hard": "mean",
    "semi_hard": "mean",
    "hard_negative": "mean",
    "random": "mean",
}
STAT_KEYS: tuple[str, ...] = (
    "num_valid",
    "num_active",
    "active_fraction",
    "mean_d_ap",
    "mean_d_an",
    "frac_semi_hard",
    "frac_hard",
    "embedding_spread",
)


class TripletLoss(nn.Module):
    """Triplet margin loss over triplets mined online inside the (global) batch.

    Per triplet, with z = d(a,p) - d(a,n) + margin, the loss is max(0, z) (hinge) or
    softplus(z) (`soft_margin=True`; use margin 0 for Hermans et al.'s soft margin).

    Args:
        margin: m, settable between calls (margin schedules write `loss_fn.margin`).
        mining: a strategy of `mine_triplets` ("semi_hard" by default); settable between calls
            (a warm-up schedule writes `loss_fn.mining`; a defaulted reduction follows it).
        distance: "cosine" (1 - cos), "euclidean" or "squared_euclidean" (FaceNet).
        soft_margin: softplus instead of hinge.
        reduction: "mean" over all mined triplets or "mean_active" over triplets with non-zero
            loss; None picks `DEFAULT_REDUCTION[mining]` ("mean_active" for batch_all and
            semi_hard_all, "mean" otherwise).
        semi_hard_fallback: "hardest" (default) or "drop", see `mine_triplets`.
        num_hardest: k for `hard_negative`.
        normalize: L2-normalise embeddings first (the project's convention; keep True).
        gather_distributed: under torch.distributed, mine over the batches of all ranks
            (all-gathered with gradients); every rank then computes the same global loss.
        seed: seed of the random source used by `random` and `hard_negative` with k > 1.

    After each call `stats` holds python floats: num_valid (mined triplets), num_active (z > 0),
    active_fraction, mean_d_ap and mean_d_an (over mined triplets), frac_semi_hard
    (d_ap < d_an < d_ap + m) and frac_hard (d_an < d_ap) among mined triplets, embedding_spread
    (mean distance between distinct embeddings of the batch; near 0 means collapse), and margin.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "semi_hard",
        distance: str = "cosine",
        soft_margin: bool = False,
        reduction: str | None = None,
        *,
        semi_hard_fallback: str = "hardest",
        num_hardest: int = 1,
        normalize: bool = True,
        gather_distributed: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_distance(distance)
        if reduction is not None and reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
        self._explicit_reduction = reduction
        self.margin = margin
        self.mining = mining
        self.distance = distance
        self.soft_margin = soft_margin
        self.semi_hard_fallback = semi_hard_fallback
        self.num_hardest = num_hardest
        self.normalize = normalize
        self.gather_distributed = gather_distributed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)
        self.stats: dict[str, float] = {}

    @property
    def margin(self) -> float:
        return self._margin

    @margin.setter
    def margin(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"margin must be >= 0, got {value}")
        self._margin = float(value)

    @property
    def mining(self) -> str:
        return self._mining

    @mining.setter
    def mining(self, strategy: str) -> None:
        """Switch strategy between calls (e.g. a semi_hard warm-up, then batch_hard)."""
        check_strategy(strategy)
        self._mining = strategy
        self.reduction = self._explicit_reduction or DEFAULT_REDUCTION[strategy]

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, "
            f"soft_margin={self.soft_margin}, reduction={self.reduction!r}"
        )

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mine triplets in the batch and return the reduced loss.

        Args:
            embeddings: (B, D) encoder outputs.
            labels: (B,) integer speaker labels.

        Returns:
            Scalar loss (0, still attached to the graph, when nothing is mined or active).
        """
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise ValueError(
                f"expected embeddings (B, D) and labels (B,), got {tuple(embeddings.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=1)
        if self.gather_distributed:
            embeddings, labels = gather_batch(embeddings, labels)
        margin = self.margin
        with torch.no_grad():
            distances = distance_matrix(embeddings.detach(), self.distance)
        anchor, positive, negative = mine_triplets(
            distances,
            labels,
            self.mining,
            margin,
            semi_hard_fallback=self.semi_hard_fallback,
            num_hardest=self.num_hardest,
            generator=self.generator,
        )
        d_ap = distances[anchor, positive]
        d_an = distances[anchor, negative]
        z = d_ap - d_an + margin
        if self.soft_margin:
            per_triplet = F.softplus(z)
            slope = torch.sigmoid(z)  # d softplus / dz; every triplet carries a gradient
        else:
            per_triplet = F.relu(z)
            slope = (z > 0).to(z.dtype)
        nonzero = per_triplet > 0
        self._record_stats(distances, d_ap, d_an, z, margin)
        denominator = len(z) if self.reduction == "mean" else int(nonzero.sum())
        denominator = max(denominator, 1)  # nothing mined or active: the loss is 0
        carries = slope > 0
        return triplet_objective(
            embeddings,
            distances,
            anchor[carries],
            positive[carries],
            negative[carries],
            slope[carries] / denominator,
            per_triplet.sum() / denominator,
            self.distance,
        )

    @torch.no_grad()
    def _record_stats(
        self,
        distances: torch.Tensor,
        d_ap: torch.Tensor,
        d_an: torch.Tensor,
        z: torch.Tensor,
        margin: float,
    ) -> None:
        batch = distances.shape[0]
        num_pairs = max(batch * (batch - 1), 1)
        spread = distances.sum() / num_pairs  # the diagonal is exactly 0
        if len(z):
            values = torch.stack(
                [
                    (z > 0).sum().to(z.dtype),
                    d_ap.mean(),
                    d_an.mean(),
                    ((d_an > d_ap) & (d_an < d_ap + margin)).to(z.dtype).mean(),
                    (d_an < d_ap).to(z.dtype).mean(),
                    spread.to(z.dtype),
                ]
            ).tolist()
        else:
            values = [0.0, 0.0, 0.0, 0.0, 0.0, float(spread)]
        num_active, mean_d_ap, mean_d_an, frac_semi_hard, frac_hard, spread_value = values
        num_valid = float(len(z))
        self.stats = {
            "num_valid": num_valid,
            "num_active": num_active,
            "active_fraction": num_active / num_valid if num_valid else 0.0,
            "mean_d_ap": mean_d_ap,
            "mean_d_an": mean_d_an,
            "frac_semi_hard": frac_semi_hard,
            "frac_hard": frac_hard,
            "embedding_spread": spread_value,
            "margin": margin,
        }
