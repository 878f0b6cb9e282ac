"""Online triplet mining inside a mini-batch: pure functions of a distance matrix and labels.

`MINERS` is the one registry of strategies: each entry is called as
`miner(distances, labels, margin, options) -> (anchor, positive, negative)` index tensors;
`mine_triplets` checks its arguments and dispatches. The two dense strategies, which keep
O(B²·K) triplets (batch_all, semi_hard_all), are `WindowMiner`s: their rule is a (B, B) window
per positive rank, calling one lists the triplets of its windows, and the triplet loss reduces
over the same windows without ever listing them.

Every strategy works on (B, B) matrices only (once per positive rank, i.e. K - 1 times in a P×K
batch, where it needs the ranks), so memory is O(B²) plus the returned triplets: no (B, B, B)
tensor.

A miner returns as many triplets as the data allows, so it reads a few sizes on the host
(`torch.unique`, `nonzero`, the largest class): these are the training step's only deliberate
host synchronisations (a static-shape miner would need O(B³) masks or padded outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from speakerverify.losses.pairs import (
    Rank,
    class_mates,
    negative_mask,
    positive_pairs,
    ranks,
    row_search,
)

DEFAULT_STRATEGY = "semi_hard"  # what a loss that mines uses when nothing says otherwise
SEMI_HARD_FALLBACKS: tuple[str, ...] = ("hardest", "drop")

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


class RankWindow(NamedTuple):
    """The kept triplets of one positive rank r as a (B, B) mask: each anchor a (a row), its r-th
    positive p_r(a) and each negative n marked in its row form a triplet (a, p_r(a), n)."""

    d_ap: torch.Tensor  # (B, 1) d(a, p_r(a)), +inf in rows without a rank-r positive
    positive_of: torch.Tensor  # (B,) p_r(a), 0 in rows without one
    window: torch.Tensor  # (B, B) bool


# A dense strategy's rule: (distances, labels, margin, options) -> one window per positive rank.
WindowRule = Callable[[torch.Tensor, torch.Tensor, float, MinerOptions], Iterator[RankWindow]]


@dataclass(frozen=True)
class WindowMiner:
    """The miner of a dense strategy (O(B²·K) triplets), defined by its window rule.

    Called like every miner, it lists the triplets of its windows; the triplet loss reduces over
    `windows` itself instead, so that it never lists them (O(B²) memory).

    Attributes:
        windows: the rule: one (B, B) window per positive rank, K - 1 in a P×K batch.
        semi_hard_only: every kept triplet is semi-hard (d_ap < d_an < d_ap + m): all of them
            are active and none is hard, so a loss need not count them.
    """

    windows: WindowRule
    semi_hard_only: bool = False

    def __call__(
        self, distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
    ) -> Triplets:
        found_anchor, found_positive, found_negative = [], [], []
        for _, positive_of, window in self.windows(distances, labels, margin, options):
            window_anchor, window_negative = window.nonzero(as_tuple=True)
            found_anchor.append(window_anchor)
            found_positive.append(positive_of[window_anchor])
            found_negative.append(window_negative)
        if not found_anchor:
            return _empty(distances.device)
        return torch.cat(found_anchor), torch.cat(found_positive), torch.cat(found_negative)


def _empty(device: torch.device) -> Triplets:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty.clone(), empty.clone()


def in_semi_hard_window(d_an: torch.Tensor, d_ap: torch.Tensor, margin: float) -> torch.Tensor:
    """Bool mask of the semi-hard negatives, d(a,p) < d(a,n) < d(a,p) + m (FaceNet)."""
    return (d_an > d_ap) & (d_an < d_ap + margin)


def _uniform_positions(limits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random integer in [0, limit) for each entry of `limits` (all > 0)."""
    uniform = torch.rand(len(limits), generator=generator, dtype=torch.float64)
    uniform = uniform.to(limits.device)
    return torch.minimum((uniform * limits).long(), limits - 1)


def batch_all_windows(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Iterator[RankWindow]:
    """Every valid triplet."""
    for rank, positive_of, negatives in _dense_ranks(distances, labels, options.origins):
        has_pair = torch.zeros(len(labels), 1, dtype=torch.bool, device=distances.device)
        has_pair[rank.anchor] = True
        yield RankWindow(rank.d_ap, positive_of, negatives & has_pair)


def semi_hard_all_windows(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Iterator[RankWindow]:
    """Every triplet with d(a,p) < d(a,n) < d(a,p) + m."""
    for rank, positive_of, negatives in _dense_ranks(distances, labels, options.origins):
        window = negatives & in_semi_hard_window(distances, rank.d_ap, margin)
        yield RankWindow(rank.d_ap, positive_of, window)


def _dense_ranks(
    distances: torch.Tensor, labels: torch.Tensor, origins: torch.Tensor | None
) -> Iterator[tuple[Rank, torch.Tensor, torch.Tensor]]:
    """The ranks of the valid pairs (`_valid_pairs`), each with its (B,) positive_of, and the
    (B, B) negative mask."""
    anchor, positive, negatives = _valid_pairs(labels, origins)
    for rank in ranks(distances, anchor, positive):
        positive_of = torch.zeros(len(labels), dtype=torch.long, device=distances.device)
        positive_of[rank.anchor] = rank.positive
        yield rank, positive_of, negatives


def mine_batch_hard(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, options: MinerOptions
) -> Triplets:
    """Per anchor, its farthest positive and closest negative (Hermans et al. 2017)."""
    batch = len(labels)
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    # Positives through a (B, largest class) table: no (B, B) mask for the label test.
    mates = class_mates(inverse, class_sizes)
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


def _valid_pairs(
    labels: torch.Tensor, origins: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (anchor, positive) pairs, anchor-major, of anchors that have a negative, and the
    (B, B) negative mask: what every strategy but batch_hard mines from."""
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    negatives = negative_mask(labels, origins)
    anchor, positive = positive_pairs(inverse, class_sizes, negatives.any(1))
    return anchor, positive, negatives


def _pairs_and_negatives(
    distances: torch.Tensor, labels: torch.Tensor, origins: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The valid pairs, each anchor's number of negatives, the negative mask and the distances
    with non-negative entries at +inf."""
    anchor, positive, negatives = _valid_pairs(labels, origins)
    negative_distances = distances.masked_fill(~negatives, float("inf"))
    return anchor, positive, negatives.sum(1)[anchor], negatives, negative_distances


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
    return row_search(negatives.cumsum(1), anchor, rank, right=True)


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
    chosen = torch.zeros_like(anchor)
    found = torch.zeros_like(anchor, dtype=torch.bool)
    for rank in ranks(distances, anchor, positive):  # one (B, B) pass per positive rank
        window = in_semi_hard_window(negative_distances, rank.d_ap, margin)
        closest, closest_index = torch.where(window, negative_distances, float("inf")).min(1)
        chosen[rank.pairs] = closest_index[rank.anchor]
        found[rank.pairs] = torch.isfinite(closest[rank.anchor])
    if options.semi_hard_fallback == "drop":
        return anchor[found], positive[found], chosen[found]
    hardest = negative_distances.min(1).indices
    return anchor, positive, torch.where(found, chosen, hardest[anchor])


MINERS: dict[str, Miner] = {
    "batch_all": WindowMiner(batch_all_windows),
    "batch_hard": mine_batch_hard,
    "semi_hard": mine_semi_hard,
    "semi_hard_all": WindowMiner(semi_hard_all_windows, semi_hard_only=True),
    "hard_negative": mine_hard_negative,
    "random": mine_random,
}
STRATEGIES: tuple[str, ...] = tuple(MINERS)


def check_strategy(strategy: str) -> None:
    """Raise `ValueError` naming the valid strategies when `strategy` (a loss's `mining`) is
    unknown."""
    if strategy not in MINERS:
        raise ValueError(f"mining: unknown value {strategy!r}; valid: {', '.join(STRATEGIES)}")


def check_mining_options(
    semi_hard_fallback: str, num_hardest: int, hard_probability: float
) -> None:
    """`ValueError` naming the option first when a miner setting is out of range."""
    if semi_hard_fallback not in SEMI_HARD_FALLBACKS:
        raise ValueError(
            f"semi_hard_fallback: unknown value {semi_hard_fallback!r}; "
            f"valid: {', '.join(SEMI_HARD_FALLBACKS)}"
        )
    if num_hardest < 1:
        raise ValueError(f"num_hardest: must be >= 1, got {num_hardest!r}")
    if not 0.0 <= hard_probability <= 1.0:
        raise ValueError(f"hard_probability: must be in [0, 1], got {hard_probability!r}")


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
