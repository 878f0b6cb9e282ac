"""Online triplet mining inside a mini-batch: pure functions of a distance matrix and labels.

Every strategy works on (B, B) matrices only (semi-hard ones once per positive rank, i.e. K - 1
times in a P×K batch), so memory is O(B²) plus the returned triplets: no (B, B, B) tensor.
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
    candidates: torch.Tensor,
) -> Triplets:
    """One triplet per entry of `candidates[start:stop]` of each (anchor, positive) pair."""
    counts = (stop - start).clamp_min(0)
    total = int(counts.sum())
    if total == 0:
        return _empty(anchor.device)
    pair = torch.repeat_interleave(torch.arange(len(counts), device=anchor.device), counts)
    first = torch.cumsum(counts, 0) - counts
    position = (start - first)[pair] + torch.arange(total, device=anchor.device)
    return anchor[pair], positive[pair], candidates[position]


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
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    num_negatives = batch - class_sizes[inverse]
    has_negative = num_negatives > 0

    if strategy == "batch_hard":
        # Positives through a (B, largest class) table: no (B, B) mask for the label test.
        mates = _class_mates(inverse, class_sizes)
        rows = torch.arange(batch, device=device)[:, None]
        positive_distances = distances.gather(1, mates).masked_fill(mates == rows, float("-inf"))
        far = mates.gather(1, positive_distances.argmax(1, keepdim=True)).squeeze(1)
        near = distances.clone().scatter_(1, mates, float("inf")).argmin(1)
        keep = (class_sizes[inverse] > 1) & has_negative
        return rows.squeeze(1)[keep], far[keep], near[keep]

    same = labels[:, None] == labels[None, :]
    # Distances to negatives only (+inf elsewhere), then `same` becomes the positive mask.
    negative_distances = torch.where(same, float("inf"), distances)
    anchor, positive = same.fill_diagonal_(False).nonzero(as_tuple=True)
    keep = has_negative[anchor]
    anchor, positive = anchor[keep], positive[keep]
    if len(anchor) == 0:
        return _empty(device)
    count = num_negatives[anchor]

    if strategy == "batch_all":
        # Negatives of each anchor form one contiguous run of the row-major nonzero list.
        negative_list = (~same).fill_diagonal_(False).nonzero(as_tuple=True)[1]
        run_start = torch.cumsum(num_negatives, 0) - num_negatives
        return _expand_ranges(
            anchor, positive, run_start[anchor], run_start[anchor] + count, negative_list
        )
    if strategy == "random":
        # The r-th negative of the anchor (index order) for a uniform r in [0, count).
        rank = _uniform_positions(count, generator)
        running = (~same).fill_diagonal_(False).cumsum(1)
        return anchor, positive, _row_search(running, anchor, rank, right=True)
    if strategy == "hard_negative":
        if num_hardest == 1:
            return anchor, positive, negative_distances.argmin(1)[anchor]
        k = min(num_hardest, batch)
        hardest = negative_distances.topk(k, dim=1, largest=False, sorted=True).indices
        position = _uniform_positions(count.clamp_max(k), generator)
        return anchor, positive, hardest[anchor, position]

    # Semi-hard window d(a,p) < d(a,n) < d(a,p) + m, one (B, B) comparison per positive rank:
    # O(B²) memory and O(B²·K) time, never a (pairs, B) or (B, B, B) tensor.
    column, num_ranks = _pair_ranks(anchor, batch)
    if strategy == "semi_hard_all":
        found_anchor, found_positive, found_negative = [], [], []
    else:
        chosen = torch.zeros_like(anchor)
        found = torch.zeros_like(anchor, dtype=torch.bool)
    for rank in range(num_ranks):
        in_rank = column == rank
        rank_anchor, rank_positive = anchor[in_rank], positive[in_rank]
        d_ap = torch.full((batch, 1), float("inf"), dtype=distances.dtype, device=device)
        d_ap[rank_anchor, 0] = distances[rank_anchor, rank_positive]
        window = (negative_distances > d_ap) & (negative_distances < d_ap + margin)
        if strategy == "semi_hard_all":
            window_anchor, window_negative = window.nonzero(as_tuple=True)
            found_anchor.append(window_anchor)
            found_negative.append(window_negative)
            positive_of = torch.zeros(batch, dtype=torch.long, device=device)
            positive_of[rank_anchor] = rank_positive
            found_positive.append(positive_of[window_anchor])
            continue
        closest, closest_index = torch.where(window, negative_distances, float("inf")).min(1)
        chosen[in_rank] = closest_index[rank_anchor]
        found[in_rank] = torch.isfinite(closest[rank_anchor])
    if strategy == "semi_hard_all":
        return torch.cat(found_anchor), torch.cat(found_positive), torch.cat(found_negative)
    if semi_hard_fallback == "drop":
        return anchor[found], positive[found], chosen[found]
    hardest = negative_distances.min(1).indices
    return anchor, positive, torch.where(found, chosen, hardest[anchor])


def _class_mates(inverse: torch.Tensor, class_sizes: torch.Tensor) -> torch.Tensor:
    """(B, largest class) indices of the items sharing each item's label, padded with itself."""
    batch = len(inverse)
    order = torch.argsort(inverse, stable=True)
    class_start = torch.cumsum(class_sizes, 0) - class_sizes
    slot = torch.arange(batch, device=inverse.device) - class_start[inverse[order]]
    table = torch.full(
        (len(class_sizes), int(class_sizes.max())), -1, dtype=torch.long, device=inverse.device
    )
    table[inverse[order], slot] = order
    mates = table[inverse]
    itself = torch.arange(batch, device=inverse.device)[:, None].expand_as(mates)
    return torch.where(mates >= 0, mates, itself)


def _pair_ranks(anchor: torch.Tensor, batch: int) -> tuple[torch.Tensor, int]:
    """Rank of each pair among its anchor's pairs (`anchor` non-decreasing), and the max count."""
    per_row = torch.bincount(anchor, minlength=batch)
    first = torch.cumsum(per_row, 0) - per_row
    column = torch.arange(len(anchor), device=anchor.device) - first[anchor]
    return column, int(per_row.max())


def _row_search(
    rows: torch.Tensor, anchor: torch.Tensor, values: torch.Tensor, *, right: bool
) -> torch.Tensor:
    """Insertion position of values[i] in the sorted row rows[anchor[i]], without row copies.

    `anchor` must be non-decreasing (row-major pairs): the values are laid out as a
    (B, max_per_row) table so that one batched `torch.searchsorted` covers them all.
    """
    batch = rows.shape[0]
    column, width = _pair_ranks(anchor, batch)
    table = torch.zeros(batch, width, dtype=values.dtype, device=values.device)
    table[anchor, column] = values
    found = torch.searchsorted(rows.contiguous(), table, right=right)
    return found[anchor, column]
