"""Index arithmetic shared by the miners: negatives, (anchor, positive) pairs and their ranks.

Pairs come from a (B, largest class) table of class mates, never from a (B, B) nonzero; a pair's
rank is its position among its anchor's pairs, so the pairs of one rank are at most one per
anchor and fit in (B, 1) or (B, B) tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


def negative_mask(labels: torch.Tensor, origins: torch.Tensor | None = None) -> torch.Tensor:
    """(B, B) bool: n is a negative of a (another label, and another origin when given)."""
    mask = labels[:, None] != labels[None, :]
    if origins is not None:
        mask &= origins[:, None] != origins[None, :]
    return mask


def positive_pairs(
    inverse: torch.Tensor, class_sizes: torch.Tensor, has_negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (anchor, positive) pairs, anchor-major, of anchors that have a negative.

    Built from the (B, largest class) mates table, not from a (B, B) mask.
    """
    mates = class_mates(inverse, class_sizes)
    rows = torch.arange(len(inverse), device=inverse.device)[:, None]
    row, slot = ((mates != rows) & has_negative[:, None]).nonzero(as_tuple=True)
    return row, mates[row, slot]


def class_mates(inverse: torch.Tensor, class_sizes: torch.Tensor) -> torch.Tensor:
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


class Rank(NamedTuple):
    """The (anchor, positive) pairs of one positive rank r: each anchor with its r-th positive."""

    pairs: torch.Tensor  # (T,) bool over all pairs: those of rank r
    anchor: torch.Tensor  # their anchors
    positive: torch.Tensor  # their positives
    d_ap: torch.Tensor  # (B, 1) d(a, p_r(a)), +inf in rows without a rank-r positive


def ranks(distances: torch.Tensor, anchor: torch.Tensor, positive: torch.Tensor) -> Iterator[Rank]:
    """The pairs (`anchor` non-decreasing) rank by rank: K - 1 ranks in a P×K batch."""
    if len(anchor) == 0:
        return
    batch = distances.shape[0]
    column, num_ranks = pair_ranks(anchor, batch)
    for rank in range(num_ranks):
        in_rank = column == rank
        rank_anchor, rank_positive = anchor[in_rank], positive[in_rank]
        d_ap = torch.full((batch, 1), float("inf"), dtype=distances.dtype, device=distances.device)
        d_ap[rank_anchor, 0] = distances[rank_anchor, rank_positive]
        yield Rank(in_rank, rank_anchor, rank_positive, d_ap)


def pair_ranks(anchor: torch.Tensor, batch: int) -> tuple[torch.Tensor, int]:
    """Rank of each pair among its anchor's pairs (`anchor` non-decreasing), and the max count."""
    per_row = torch.bincount(anchor, minlength=batch)
    first = torch.cumsum(per_row, 0) - per_row
    column = torch.arange(len(anchor), device=anchor.device) - first[anchor]
    return column, int(per_row.max())


def row_search(
    rows: torch.Tensor, anchor: torch.Tensor, values: torch.Tensor, *, right: bool
) -> torch.Tensor:
    """Insertion position of values[i] in the sorted row rows[anchor[i]], without row copies.

    `anchor` must be non-decreasing (row-major pairs): the values are laid out as a
    (B, max_per_row) table so that one batched `torch.searchsorted` covers them all.
    """
    batch = rows.shape[0]
    column, width = pair_ranks(anchor, batch)
    table = torch.zeros(batch, width, dtype=values.dtype, device=values.device)
    table[anchor, column] = values
    found = torch.searchsorted(rows.contiguous(), table, right=right)
    return found[anchor, column]
