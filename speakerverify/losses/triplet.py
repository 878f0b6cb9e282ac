"""Triplet loss with online mining and mining statistics (the training objective of the project).

Mining (a strategy of `mining.MINERS`) decides on a distance matrix built without autograd; the
loss value comes from that matrix and the gradient flows only through the mined triplets that
carry one (see objective.py). A dense strategy's triplets are reduced over its per-rank windows,
never listed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from speakerverify.losses.distances import check_distance, check_margin, distance_matrix
from speakerverify.losses.distributed import gather_batch
from speakerverify.losses.mining import (
    DEFAULT_STRATEGY,
    MINERS,
    MinerOptions,
    RankWindow,
    WindowMiner,
    check_mining_options,
    check_strategy,
    in_semi_hard_window,
)
from speakerverify.losses.objective import triplet_objective
from speakerverify.losses.output import LossOutput

REDUCTIONS: tuple[str, ...] = ("mean", "mean_active")
# The dense strategies (`WindowMiner`s), which keep many triplets per anchor, average over the
# active ones (pytorch-metric-learning's AvgNonZeroReducer); one-triplet-per-anchor/pair
# strategies average over all mined triplets (Hermans et al. 2017), so easy batches give a small
# loss rather than a noisy one.
DEFAULT_REDUCTION: dict[str, str] = {
    strategy: "mean_active" if isinstance(miner, WindowMiner) else "mean"
    for strategy, miner in MINERS.items()
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
        margin: m, the default of each call; a margin schedule passes `margin=` per call instead.
        mining: a strategy of `MINERS` ("semi_hard" by default), the default of each
            call; a mining schedule (e.g. a semi_hard warm-up) passes `mining=` per call instead.
        distance: "cosine" (1 - cos), "euclidean" or "squared_euclidean" (FaceNet).
        soft_margin: softplus instead of hinge.
        reduction: "mean" over all mined triplets or "mean_active" over triplets with non-zero
            loss; None picks `DEFAULT_REDUCTION` of each call's strategy ("mean_active" for
            batch_all and semi_hard_all, "mean" otherwise).
        semi_hard_fallback: "hardest" (default) or "drop", see `mine_triplets`.
        num_hardest: k for `hard_negative`.
        hard_probability: p for `hard_negative` (1: always among the k hardest).
        speaker_of_label: (num_classes,) the original speaker of each label, or None: labels
            with the same original speaker (a speaker's speed-perturbed copies) are never mined
            as each other's negatives.
        normalize: L2-normalise embeddings first (the project's convention; keep True).
        gather_distributed: under torch.distributed, mine over the batches of all ranks
            (all-gathered with gradients); every rank then computes the same global loss.
        seed: seed of the random source used by `random` and `hard_negative` with k > 1.

    Each call returns `LossOutput(value, stats)`; `stats` holds num_valid (mined triplets),
    num_active (z > 0), active_fraction, mean_d_ap and mean_d_an (over mined triplets),
    frac_semi_hard (d_ap < d_an < d_ap + m) and frac_hard (d_an < d_ap) among mined triplets,
    embedding_spread (mean distance between distinct embeddings of the batch; near 0 means
    collapse), and margin (the one this call used). The statistics are 0-dim tensors on the
    embeddings' device (margin and, for the mining strategies, num_valid are python floats), so
    a training step never waits for them; read them with `float()` when logging.
    """

    has_margin: ClassVar[bool] = True  # forward takes `margin=` (a margin schedule drives it)
    mines: ClassVar[bool] = True  # forward takes `mining=` (a mining schedule drives it)

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = DEFAULT_STRATEGY,
        distance: str = "cosine",
        soft_margin: bool = False,
        reduction: str | None = None,
        *,
        semi_hard_fallback: str = "hardest",
        num_hardest: int = 1,
        hard_probability: float = 1.0,
        speaker_of_label: Sequence[int] | torch.Tensor | None = None,
        normalize: bool = True,
        gather_distributed: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_distance(distance)
        if reduction is not None and reduction not in REDUCTIONS:
            raise ValueError(
                f"reduction: unknown value {reduction!r}; valid: {', '.join(REDUCTIONS)}"
            )
        check_mining_options(semi_hard_fallback, num_hardest, hard_probability)
        check_strategy(mining)
        self._explicit_reduction = reduction
        self.margin = margin
        self._mining = mining
        self.distance = distance
        self.soft_margin = soft_margin
        self.semi_hard_fallback = semi_hard_fallback
        self.num_hardest = num_hardest
        self.hard_probability = hard_probability
        self.speaker_of_label: torch.Tensor | None
        origin = None if speaker_of_label is None else torch.as_tensor(speaker_of_label).long()
        self.register_buffer("speaker_of_label", origin, persistent=False)
        self.normalize = normalize
        self.gather_distributed = gather_distributed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)

    @property
    def margin(self) -> float:
        return self._margin

    @margin.setter
    def margin(self, value: float) -> None:
        self._margin = check_margin(value)

    @property
    def mining(self) -> str:
        """The strategy of a call that passes no `mining=`."""
        return self._mining

    @property
    def reduction(self) -> str:
        """The reduction of a call that passes no `mining=`."""
        return self.reduction_for(self._mining)

    def reduction_for(self, mining: str) -> str:
        """The reduction of a call with strategy `mining`: the one given when built, else
        `DEFAULT_REDUCTION[mining]`."""
        return self._explicit_reduction or DEFAULT_REDUCTION[mining]

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, "
            f"soft_margin={self.soft_margin}, reduction={self.reduction!r}"
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        margin: float | None = None,
        mining: str | None = None,
    ) -> LossOutput:
        """Mine triplets in the batch and return the reduced loss and the mining statistics.

        Args:
            embeddings: (B, D) encoder outputs.
            labels: (B,) integer speaker labels.
            margin: m for this call (e.g. from a margin schedule); None uses `self.margin`.
            mining: the strategy of this call (e.g. from a mining schedule); None uses
                `self.mining`.

        Returns:
            `LossOutput`: the scalar loss (0, still attached to the graph, when nothing is mined
            or active) and its statistics.
        """
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise ValueError(
                f"expected embeddings (B, D) and labels (B,), got {tuple(embeddings.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()  # mining compares distances that differ by < 1e-3
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=1)
        if self.gather_distributed:
            embeddings, labels = gather_batch(embeddings, labels)
        margin = self.margin if margin is None else check_margin(margin)
        if mining is None:
            mining = self._mining
        else:
            check_strategy(mining)
        reduction = self.reduction_for(mining)
        with torch.no_grad():
            distances = distance_matrix(embeddings.detach(), self.distance)
        origins = None if self.speaker_of_label is None else self.speaker_of_label[labels]
        options = MinerOptions(
            semi_hard_fallback=self.semi_hard_fallback,
            num_hardest=self.num_hardest,
            hard_probability=self.hard_probability,
            generator=self.generator,
            origins=origins,
        )
        miner = MINERS[mining]
        if isinstance(miner, WindowMiner):  # O(B²·K) triplets: reduce over the windows instead
            windows = miner.windows(distances, labels, margin, options)
            return self._dense_loss(
                embeddings, distances, windows, margin, reduction, miner.semi_hard_only
            )
        anchor, positive, negative = miner(distances, labels, margin, options)
        d_ap = distances[anchor, positive]
        d_an = distances[anchor, negative]
        z = d_ap - d_an + margin
        per_triplet, slope = self._per_triplet(z)
        stats = self._record_stats(distances, d_ap, d_an, z, margin)
        # nothing mined or active: the loss is 0. The active count stays on the device (no
        # host read); inactive triplets carry weight 0 instead of being filtered out.
        if reduction == "mean":
            denominator: float | torch.Tensor = max(len(z), 1)
        else:
            denominator = (per_triplet > 0).sum().clamp_min(1).to(z.dtype)
        value = triplet_objective(
            embeddings,
            distances,
            per_triplet.sum() / denominator,
            self.distance,
            triplets=(anchor, positive, negative),
            weights=slope / denominator,
        )
        return LossOutput(value, stats)

    def _per_triplet(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of each z = d(a,p) - d(a,n) + m and its slope dloss/dz."""
        if self.soft_margin:
            return F.softplus(z), torch.sigmoid(z)
        return F.relu(z), (z > 0).to(z.dtype)

    def _dense_loss(
        self,
        embeddings: torch.Tensor,
        distances: torch.Tensor,
        windows: Iterator[RankWindow],
        margin: float,
        reduction: str,
        semi_hard_only: bool,
    ) -> LossOutput:
        """A dense strategy's loss reduced over its per-rank (B, B) windows, no triplet list."""
        pair_weights = torch.zeros_like(distances)
        # total loss, num_valid, num_nonzero, num_active, Σd_ap, Σd_an, num_semi_hard, num_hard
        sums = torch.zeros(8, dtype=torch.float64, device=distances.device)
        rows = torch.arange(distances.shape[0], device=distances.device)
        for d_ap, positive_of, window in windows:
            sums += self._dense_window(
                distances, d_ap, positive_of, window, margin, pair_weights, rows, semi_hard_only
            )
        total, num_valid, num_nonzero, num_active, sum_ap, sum_an, semi, hard = sums.unbind()
        count = num_valid if reduction == "mean" else num_nonzero
        denominator = count.clamp_min(1.0)  # on the device: no host read
        stats = _stats(distances, num_valid, num_active, sum_ap, sum_an, semi, hard, margin)
        value = (total / denominator).to(distances.dtype)
        pair_weights = pair_weights / denominator.to(distances.dtype)
        value = triplet_objective(
            embeddings, distances, value, self.distance, pair_weights=pair_weights
        )
        return LossOutput(value, stats)

    def _dense_window(
        self,
        distances: torch.Tensor,
        d_ap: torch.Tensor,
        positive_of: torch.Tensor,
        window: torch.Tensor,
        margin: float,
        pair_weights: torch.Tensor,
        rows: torch.Tensor,
        semi_hard_only: bool,
    ) -> torch.Tensor:
        """Add one window's triplet weights to `pair_weights`; return its sums (float64, in the
        order of `sums` in `_dense_loss`)."""
        dtype = distances.dtype
        # Float masks and count_nonzero: masked where() and bool sums are several times slower
        # on (B, B) tensors than multiplies by a 0/1 float mask.
        has_pair = torch.isfinite(d_ap)
        d_ap = torch.where(has_pair, d_ap, 0.0)  # finite z everywhere; masks zero the rest
        z = (d_ap + margin) - distances
        in_window = window.to(dtype)
        # A semi-hard window lies inside z > 0: every kept triplet is active, none is hard.
        active = window if semi_hard_only else window & (z > 0)
        num_active = torch.count_nonzero(active)
        if self.soft_margin:
            per_triplet = F.softplus(z) * in_window
            slope = torch.sigmoid(z) * in_window
            num_nonzero = torch.count_nonzero(per_triplet)
        else:
            slope = in_window if semi_hard_only else active.to(dtype)
            per_triplet = z * slope
            num_nonzero = num_active
        # Each kept triplet adds w to W[a, p_r(a)] and subtracts it from W[a, n].
        pair_weights -= slope
        pair_weights.index_put_((rows, positive_of), slope.sum(1), accumulate=True)
        per_row = in_window.sum(1)
        if semi_hard_only:
            num_semi_hard, num_hard = num_active, torch.zeros_like(num_active)
        else:
            num_semi_hard = torch.count_nonzero(active & (distances > d_ap))
            num_hard = torch.count_nonzero(window & (distances < d_ap))
        return torch.stack(
            [
                per_triplet.sum().double(),
                per_row.sum().double(),
                num_nonzero.double(),
                num_active.double(),
                (per_row * d_ap.squeeze(1)).sum().double(),
                (distances * in_window).sum().double(),
                num_semi_hard.double(),
                num_hard.double(),
            ]
        )

    @torch.no_grad()
    def _record_stats(
        self,
        distances: torch.Tensor,
        d_ap: torch.Tensor,
        d_an: torch.Tensor,
        z: torch.Tensor,
        margin: float,
    ) -> dict[str, float | torch.Tensor]:
        counts = torch.stack(
            [
                (z > 0).sum().to(z.dtype),
                d_ap.sum(),
                d_an.sum(),
                in_semi_hard_window(d_an, d_ap, margin).sum().to(z.dtype),
                (d_an < d_ap).sum().to(z.dtype),
            ]
        ).unbind()
        return _stats(distances, float(len(z)), *counts, margin)


Count = float | torch.Tensor


@torch.no_grad()
def _stats(
    distances: torch.Tensor,
    num_valid: Count,
    num_active: Count,
    sum_d_ap: Count,
    sum_d_an: Count,
    num_semi_hard: Count,
    num_hard: Count,
    margin: float,
) -> dict[str, float | torch.Tensor]:
    """The statistics, computed on the device (tensors in, tensors out: no host read)."""
    batch = distances.shape[0]
    spread = distances.sum() / max(batch * (batch - 1), 1)  # the diagonal is 0
    # with nothing mined every sum is 0, so dividing by max(num_valid, 1) gives 0
    if isinstance(num_valid, torch.Tensor):
        per_triplet: Count = 1.0 / num_valid.clamp_min(1.0)
    else:
        per_triplet = 1.0 / max(num_valid, 1.0)
    return {
        "num_valid": num_valid,
        "num_active": num_active,
        "active_fraction": num_active * per_triplet,
        "mean_d_ap": sum_d_ap * per_triplet,
        "mean_d_an": sum_d_an * per_triplet,
        "frac_semi_hard": num_semi_hard * per_triplet,
        "frac_hard": num_hard * per_triplet,
        "embedding_spread": spread,
        "margin": margin,
    }
