"""Online triplet mining inside a mini-batch: pure functions of a distance matrix and labels.

Every strategy works on each anchor's negatives sorted by distance once, so the work and memory
are O(B²) plus the size of the returned triplets (no (B, B, B) tensor is ever built).
"""

from __future__ import annotations

import torch

STRATEGIES: tuple[str, ...] = (
    "batch_all",
    "batch_hard",
    "semi_hard",
    "semi_hard_all",
    "hard_negative",
    "random",
)
SEMI_HARD_FALLBACKS: tuple[str, ...] = ("hardest", "drop")

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_strategy(strategy: str) -> None:
    """Raise `ValueError` naming the valid strategies when `strategy` is unknown."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def _empty(device: torch.device) -> Triplets:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty.clone(), empty.clone()


def _expand_ranges(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    start: torch.Tensor,
    stop: torch.Tensor,
    order: torch.Tensor,
) -> Triplets:
    """One triplet per sorted-negative position in [start, stop) of each (anchor, positive) pair."""
    counts = (stop - start).clamp_min(0)
    total = int(counts.sum())
    if total == 0:
        return _empty(anchor.device)
    pair = torch.repeat_interleave(torch.arange(len(counts), device=anchor.device), counts)
    first = torch.cumsum(counts, 0) - counts
    position = start[pair] + torch.arange(total, device=anchor.device) - first[pair]
    pair_anchor = anchor[pair]
    return pair_anchor, positive[pair], order[pair_anchor, position]


def _uniform_positions(limits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random integer in [0, limit) for each entry of `limits` (all > 0)."""
    uniform = torch.rand(len(limits), generator=generator, dtype=torch.float64)
    uniform = uniform.to(limits.device)
    return torch.minimum((uniform * limits).long(), limits - 1)


def mine_triplets(
    distances: torch.Tensor,
    labels: torch.Tensor,
    strategy: str,
    margin: float,
    *,
    semi_hard_fallback: str = "hardest",
    num_hardest: int = 1,
    generator: torch.Generator | None = None,
) -> Triplets:
    """Select (anchor, positive, negative) triplets from a batch.

    Positives are other items with the anchor's label, negatives items with another label; an
    anchor without a positive or without a negative yields nothing.

    Strategies:
        batch_all: every valid triplet.
        batch_hard: per anchor, its farthest positive and closest negative (Hermans et al. 2017).
        semi_hard: per (anchor, positive), the closest negative with d(a,p) < d(a,n) < d(a,p) + m
            (FaceNet). Without one, `semi_hard_fallback="hardest"` (default) takes the anchor's
            closest negative and `"drop"` drops the pair.
        semi_hard_all: every triplet with d(a,p) < d(a,n) < d(a,p) + m (pytorch-metric-learning's
            `TripletMarginMiner("semihard")`, up to the closed upper bound there).
        hard_negative: per (anchor, positive), the closest negative, or with `num_hardest=k > 1`
            one drawn uniformly among the anchor's k closest negatives (voxceleb_trainer style).
        random: per (anchor, positive), a negative drawn uniformly (the no-mining baseline).

    Args:
        distances: (B, B) distances, no gradient needed (mining only compares them).
        labels: (B,) integer speaker labels.
        strategy: one of `STRATEGIES`.
        margin: the triplet margin m (used by the semi-hard window).
        semi_hard_fallback: "hardest" or "drop" (only for `semi_hard`).
        num_hardest: k for `hard_negative`.
        generator: random source for `hard_negative` (k > 1) and `random`.

    Returns:
        (anchor, positive, negative), each (T,) int64 indices into the batch.

    >>> d = torch.tensor([[0.0, 0.1, 0.5], [0.1, 0.0, 0.2], [0.5, 0.2, 0.0]])
    >>> mine_triplets(d, torch.tensor([0, 0, 1]), "batch_hard", 0.2)
    (tensor([0, 1]), tensor([1, 0]), tensor([2, 2]))
    """
    check_strategy(strategy)
    if semi_hard_fallback not in SEMI_HARD_FALLBACKS:
        raise ValueError(
            f"unknown semi_hard_fallback {semi_hard_fallback!r}; "
            f"valid: {', '.join(SEMI_HARD_FALLBACKS)}"
        )
    if num_hardest < 1:
        raise ValueError(f"num_hardest must be >= 1, got {num_hardest}")
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be (B, B), got {tuple(distances.shape)}")
    if labels.shape != (distances.shape[0],):
        raise ValueError(f"labels must be ({distances.shape[0]},), got {tuple(labels.shape)}")
    distances = distances.detach()
    batch = len(labels)
    device = distances.device
    same = labels[:, None] == labels[None, :]
    negative_mask = ~same
    positive_mask = same.clone().fill_diagonal_(False)
    num_negatives = negative_mask.sum(1)
    has_negative = num_negatives > 0

    if strategy == "batch_hard":
        keep = positive_mask.any(1) & has_negative
        anchor = torch.arange(batch, device=device)[keep]
        far = distances.masked_fill(~positive_mask, float("-inf")).argmax(1)
        near = distances.masked_fill(~negative_mask, float("inf")).argmin(1)
        return anchor, far[keep], near[keep]

    positive_mask &= has_negative[:, None]
    anchor, positive = positive_mask.nonzero(as_tuple=True)
    if len(anchor) == 0:
        return _empty(device)
    # Each anchor's negatives by increasing distance; non-negatives sort last as +inf.
    sorted_negatives, order = distances.masked_fill(~negative_mask, float("inf")).sort(1)
    count = num_negatives[anchor]

    if strategy == "batch_all":
        return _expand_ranges(anchor, positive, torch.zeros_like(count), count, order)
    if strategy == "random":
        position = _uniform_positions(count, generator)
        return anchor, positive, order[anchor, position]
    if strategy == "hard_negative":
        if num_hardest == 1:
            return anchor, positive, order[anchor, 0]
        position = _uniform_positions(count.clamp_max(num_hardest), generator)
        return anchor, positive, order[anchor, position]

    # First negative farther than d(a,p), and first one at or beyond d(a,p) + m.
    d_ap = distances.contiguous()
    start = torch.searchsorted(sorted_negatives, d_ap, right=True)[anchor, positive]
    stop = torch.searchsorted(sorted_negatives, d_ap + margin, right=False)[anchor, positive]
    if strategy == "semi_hard_all":
        return _expand_ranges(anchor, positive, start, stop, order)
    # semi_hard
    found = start < stop
    if semi_hard_fallback == "drop":
        return anchor[found], positive[found], order[anchor[found], start[found]]
    position = torch.where(found, start, 0)
    return anchor, positive, order[anchor, position]
