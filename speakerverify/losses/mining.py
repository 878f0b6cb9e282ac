"""Online triplet mining inside a mini-batch: pure functions of a distance matrix and labels.

`MINERS` maps each strategy to one small function with one signature,
`(distances, labels, margin, options) -> (anchor, positive, negative)`; `mine_triplets` checks
its arguments and dispatches.

Every strategy works on (B, B) matrices only (semi-hard ones once per positive rank, i.e. K - 1
times in a P×K batch), so memory is O(B²) plus the returned triplets: no (B, B, B) tensor.

A miner returns as many triplets as the data allows, so it reads a few sizes on the host
(`torch.unique`, `nonzero`, the largest class): these are the training step's only deliberate
host synchronisations (a static-shape miner would need O(B³) masks or padded outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

SEMI_HARD_FALLBACKS: tuple[str, ...] = ("hardest", "drop")
# Strategies keeping O(B²·K) triplets; `dense_windows` gives them as per-rank (B, B) masks.
DENSE_STRATEGIES: tuple[str, ...] = ("batch_all", "semi_hard_all")

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class MinerOptions:
    """The knobs some miners read (each miner ignores the others).

    Attributes:
        semi_hard_fallback: "hardest" or "drop" (`semi_hard`).
        num_hardest: k (`hard_negative`).
        hard_probability: chance of drawing among the k hardest rather than among all negatives
            (`hard_negative`).
        generator: random source (`hard_negative` with k > 1 or hard_probability < 1, `random`).
        origins: (B,) the original speaker of each item, or None (= labels): items with other
            labels but the same origin (a speaker's speed-perturbed copies) are never negatives
            of each other (every miner).
    """

    semi_hard_fallback: str = "hardest"
    num_hardest: int = 1
    hard_probability: float = 1.0
    generator: torch.Generator | None = None
    origins: torch.Tensor | None = None


# Every miner: (distances (B, B) without grad, labels (B,), margin, options) -> triplets.
Miner = Callable[[torch.Tensor, torch.Tensor, float, MinerOptions], Triplets]


def _empty(device: torch.device) -> Triplets:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty.clone(), empty.clone()


def negative_mask(labels: torch.Tensor, origins: torch.Tensor | None = None) -> torch.Tensor:
    """(B, B) bool: n is a negative of a (another label, and another origin when given)."""
    mask = labels[:, None] != labels[None, :]
    if origins is not None:
        mask &= origins[:, None] != origins[None, :]
    return mask


def _uniform_positions(limits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random integer in [0, limit) for each entry of `limits` (all > 0)."""
    uniform = torch.rand(len(limits), generator=generator, dtype=torch.float64)
    uniform = uniform.to(limits.device)
    return torch.minimum((uniform * limits).long(), limits - 1)


def mine_batch_all(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Every valid triplet."""
    return _from_windows(distances, labels, "batch_all", margin, options.origins)


def mine_semi_hard_all(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Every triplet with d(a,p) < d(a,n) < d(a,p) + m."""
    return _from_windows(distances, labels, "semi_hard_all", margin, options.origins)


def _from_windows(
    distances: torch.Tensor,
    labels: torch.Tensor,
    strategy: str,
    margin: float,
    origins: torch.Tensor | None,
) -> Triplets:
    found_anchor, found_positive, found_negative = [], [], []
    windows = dense_windows(distances, labels, strategy, margin, origins=origins)
    for _, positive_of, window in windows:
        window_anchor, window_negative = window.nonzero(as_tuple=True)
        found_anchor.append(window_anchor)
        found_positive.append(positive_of[window_anchor])
        found_negative.append(window_negative)
    if not found_anchor:
        return _empty(distances.device)
    return torch.cat(found_anchor), torch.cat(found_positive), torch.cat(found_negative)


def mine_batch_hard(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Per anchor, its farthest positive and closest negative (Hermans et al. 2017)."""
    batch = len(labels)
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    # Positives through a (B, largest class) table: no (B, B) mask for the label test.
    mates = _class_mates(inverse, class_sizes)
    rows = torch.arange(batch, device=distances.device)[:, None]
    positive_distances = distances.gather(1, mates).masked_fill(mates == rows, float("-inf"))
    far = mates.gather(1, positive_distances.argmax(1, keepdim=True)).squeeze(1)
    if options.origins is None:
        near = distances.clone().scatter_(1, mates, float("inf")).argmin(1)
        keep = (class_sizes[inverse] > 1) & (class_sizes[inverse] < batch)
    else:
        negatives = negative_mask(labels, options.origins)
        near = distances.masked_fill(~negatives, float("inf")).argmin(1)
        keep = (class_sizes[inverse] > 1) & negatives.any(1)
    return rows.squeeze(1)[keep], far[keep], near[keep]


def _pairs_and_negatives(
    distances: torch.Tensor, labels: torch.Tensor, origins: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, positive) pairs of anchors with a negative, each anchor's number of negatives,
    the negative mask and the distances with non-negative entries at +inf."""
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    negatives = negative_mask(labels, origins)
    num_negatives = negatives.sum(1)
    anchor, positive = _positive_pairs(inverse, class_sizes, num_negatives > 0)
    negative_distances = distances.masked_fill(~negatives, float("inf"))
    return anchor, positive, num_negatives[anchor], negatives, negative_distances


def mine_random(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Per (anchor, positive), a negative drawn uniformly (the no-mining baseline)."""
    anchor, positive, count, negatives, _ = _pairs_and_negatives(distances, labels, options.origins)
    if len(anchor) == 0:
        return _empty(distances.device)
    return anchor, positive, _random_negatives(anchor, count, negatives, options.generator)


def _random_negatives(
    anchor: torch.Tensor,
    count: torch.Tensor,
    negatives: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Per pair, a negative of its anchor drawn uniformly: the r-th negative (index order) for a
    uniform r in [0, count)."""
    rank = _uniform_positions(count, generator)
    return _row_search(negatives.cumsum(1), anchor, rank, right=True)


def mine_hard_negative(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Per (anchor, positive), the closest negative, or one of the k closest drawn uniformly; with
    hard_probability p < 1, that only with probability p and otherwise any negative drawn
    uniformly (voxceleb_trainer's hard-negative sampling: k = 10, p = 0.5)."""
    anchor, positive, count, negatives, negative_distances = _pairs_and_negatives(
        distances, labels, options.origins
    )
    if len(anchor) == 0:
        return _empty(distances.device)
    if options.num_hardest == 1:
        hard = negative_distances.argmin(1)[anchor]
    else:
        k = min(options.num_hardest, len(labels))
        hardest = negative_distances.topk(k, dim=1, largest=False, sorted=True).indices
        position = _uniform_positions(count.clamp_max(k), options.generator)
        hard = hardest[anchor, position]
    if options.hard_probability >= 1.0:
        return anchor, positive, hard
    uniform = _random_negatives(anchor, count, negatives, options.generator)
    coin = torch.rand(len(anchor), generator=options.generator, dtype=torch.float64)
    take_hard = coin.to(anchor.device) < options.hard_probability
    return anchor, positive, torch.where(take_hard, hard, uniform)


def mine_semi_hard(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Per (anchor, positive), the closest negative inside the semi-hard window (FaceNet)."""
    anchor, positive, _, _, negative_distances = _pairs_and_negatives(
        distances, labels, options.origins
    )
    if len(anchor) == 0:
        return _empty(distances.device)
    batch = len(labels)
    # One (B, B) pass per positive rank.
    chosen = torch.zeros_like(anchor)
    found = torch.zeros_like(anchor, dtype=torch.bool)
    column, num_ranks = _pair_ranks(anchor, batch)
    for rank in range(num_ranks):
        in_rank = column == rank
        rank_anchor, rank_positive = anchor[in_rank], positive[in_rank]
        d_ap = torch.full((batch, 1), float("inf"), dtype=distances.dtype, device=distances.device)
        d_ap[rank_anchor, 0] = distances[rank_anchor, rank_positive]
        window = (negative_distances > d_ap) & (negative_distances < d_ap + margin)
        closest, closest_index = torch.where(window, negative_distances, float("inf")).min(1)
        chosen[in_rank] = closest_index[rank_anchor]
        found[in_rank] = torch.isfinite(closest[rank_anchor])
    if options.semi_hard_fallback == "drop":
        return anchor[found], positive[found], chosen[found]
    hardest = negative_distances.min(1).indices
    return anchor, positive, torch.where(found, chosen, hardest[anchor])


MINERS: dict[str, Miner] = {
    "batch_all": mine_batch_all,
    "batch_hard": mine_batch_hard,
    "semi_hard": mine_semi_hard,
    "semi_hard_all": mine_semi_hard_all,
    "hard_negative": mine_hard_negative,
    "random": mine_random,
}
STRATEGIES: tuple[str, ...] = tuple(MINERS)


def check_strategy(strategy: str) -> None:
    """Raise `ValueError` naming the valid strategies when `strategy` is unknown."""
    if strategy not in MINERS:
        raise ValueError(f"unknown mining strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def check_mining_options(
    semi_hard_fallback: str, num_hardest: int, hard_probability: float
) -> None:
    """ValueError naming the option when a miner setting is out of range."""
    if semi_hard_fallback not in SEMI_HARD_FALLBACKS:
        raise ValueError(
            f"unknown semi_hard_fallback {semi_hard_fallback!r}; "
            f"valid: {', '.join(SEMI_HARD_FALLBACKS)}"
        )
    if num_hardest < 1:
        raise ValueError(f"num_hardest must be >= 1, got {num_hardest}")
    if not 0.0 <= hard_probability <= 1.0:
        raise ValueError(f"hard_probability must be in [0, 1], got {hard_probability}")


def mine_triplets(
    distances: torch.Tensor,
    labels: torch.Tensor,
    strategy: str,
    margin: float,
    *,
    semi_hard_fallback: str = "hardest",
    num_hardest: int = 1,
    hard_probability: float = 1.0,
    generator: torch.Generator | None = None,
    origins: torch.Tensor | None = None,
) -> Triplets:
    """Select (anchor, positive, negative) triplets from a batch with the miner `MINERS[strategy]`.

    Positives are other items with the anchor's label, negatives items with another label (and,
    with `origins`, another original speaker); an anchor without a positive or without a
    negative yields nothing.

    Strategies:
        batch_all: every valid triplet.
        batch_hard: per anchor, its farthest positive and closest negative (Hermans et al. 2017).
        semi_hard: per (anchor, positive), the closest negative with d(a,p) < d(a,n) < d(a,p) + m
            (FaceNet). Without one, `semi_hard_fallback="hardest"` (default) takes the anchor's
            closest negative and `"drop"` drops the pair.
        semi_hard_all: every triplet with d(a,p) < d(a,n) < d(a,p) + m (pytorch-metric-learning's
            `TripletMarginMiner("semihard")`, up to the closed upper bound there).
        hard_negative: per (anchor, positive), the closest negative, or with `num_hardest=k > 1`
            one drawn uniformly among the anchor's k closest negatives; with
            `hard_probability=p < 1` that only with probability p, otherwise any negative drawn
            uniformly (voxceleb_trainer's hard-negative sampling is k = 10, p = 0.5).
        random: per (anchor, positive), a negative drawn uniformly (the no-mining baseline).

    Args:
        distances: (B, B) distances, no gradient needed (mining only compares them).
        labels: (B,) integer speaker labels.
        strategy: one of `STRATEGIES`.
        margin: the triplet margin m (used by the semi-hard window).
        semi_hard_fallback: "hardest" or "drop" (only for `semi_hard`).
        num_hardest: k for `hard_negative`.
        hard_probability: p for `hard_negative`, in [0, 1].
        generator: random source for `hard_negative` (k > 1 or p < 1) and `random`.
        origins: (B,) original speaker of each item (e.g. `label % num_speakers` for
            speed-perturbed copies that got new labels): items of the same origin are never
            each other's negatives. None: the labels.

    Returns:
        (anchor, positive, negative), each (T,) int64 indices into the batch.

    >>> d = torch.tensor([[0.0, 0.1, 0.5], [0.1, 0.0, 0.2], [0.5, 0.2, 0.0]])
    >>> mine_triplets(d, torch.tensor([0, 0, 1]), "batch_hard", 0.2)
    (tensor([0, 1]), tensor([1, 0]), tensor([2, 2]))
    """
    check_strategy(strategy)
    check_mining_options(semi_hard_fallback, num_hardest, hard_probability)
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be (B, B), got {tuple(distances.shape)}")
    if labels.shape != (distances.shape[0],):
        raise ValueError(f"labels must be ({distances.shape[0]},), got {tuple(labels.shape)}")
    if origins is not None and origins.shape != labels.shape:
        raise ValueError(f"origins must be ({len(labels)},), got {tuple(origins.shape)}")
    options = MinerOptions(semi_hard_fallback, num_hardest, hard_probability, generator, origins)
    return MINERS[strategy](distances.detach(), labels, margin, options)


def dense_windows(
    distances: torch.Tensor,
    labels: torch.Tensor,
    strategy: str,
    margin: float,
    *,
    origins: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The triplets of `batch_all` / `semi_hard_all` as (B, B) masks, one per positive rank.

    Rank r holds, for every anchor, its r-th positive p_r(a) (anchors are rows); the window
    marks the negatives n forming a kept triplet (a, p_r(a), n). K - 1 ranks in a P×K batch, so
    time is O(B²·K) and memory O(B²), and a loss can reduce over the masks without ever listing
    the O(B²·K) triplets.

    Args:
        distances: (B, B), no gradient.
        labels: (B,).
        strategy: "batch_all" or "semi_hard_all".
        margin: m of the semi-hard window.
        origins: (B,) original speakers (see `mine_triplets`), or None.

    Yields:
        d_ap (B, 1) with +inf in rows without a rank-r positive, positive_of (B,) the rank-r
        positive of each row (0 where none), window (B, B) bool.
    """
    if strategy not in DENSE_STRATEGIES:
        raise ValueError(f"dense_windows takes {', '.join(DENSE_STRATEGIES)}, got {strategy!r}")
    distances = distances.detach()
    batch = len(labels)
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    negatives = negative_mask(labels, origins)
    anchor, positive = _positive_pairs(inverse, class_sizes, negatives.any(1))
    if len(anchor) == 0:
        return
    column, num_ranks = _pair_ranks(anchor, batch)
    for rank in range(num_ranks):
        in_rank = column == rank
        rank_anchor, rank_positive = anchor[in_rank], positive[in_rank]
        d_ap = torch.full((batch, 1), float("inf"), dtype=distances.dtype, device=distances.device)
        d_ap[rank_anchor, 0] = distances[rank_anchor, rank_positive]
        positive_of = torch.zeros(batch, dtype=torch.long, device=distances.device)
        positive_of[rank_anchor] = rank_positive
        if strategy == "batch_all":
            has_pair = torch.zeros(batch, 1, dtype=torch.bool, device=distances.device)
            has_pair[rank_anchor] = True
            window = negatives & has_pair
        else:
            window = negatives & (distances > d_ap) & (distances < d_ap + margin)
        yield d_ap, positive_of, window


def _positive_pairs(
    inverse: torch.Tensor, class_sizes: torch.Tensor, has_negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (anchor, positive) pairs, anchor-major, of anchors that have a negative.

    Built from the (B, largest class) mates table, not from a (B, B) mask.
    """
    mates = _class_mates(inverse, class_sizes)
    rows = torch.arange(len(inverse), device=inverse.device)[:, None]
    row, slot = ((mates != rows) & has_negative[:, None]).nonzero(as_tuple=True)
    return row, mates[row, slot]


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
