"""The miners' index arithmetic against plain loops: every (anchor, positive) pair once, ranked
so that each rank holds at most one pair per anchor, and the per-row searches."""

from __future__ import annotations

import torch
from triplet_reference import random_batch

from speakerverify.losses.pairs import negative_mask, positive_pairs, ranks, row_search


def test_positive_pairs_and_their_ranks_equal_plain_loops():
    _, labels = random_batch(seed=23, num_items=19, num_speakers=4)
    lab = labels.tolist()
    _, inverse, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    has_negative = negative_mask(labels).any(1)
    anchor, positive = positive_pairs(inverse, class_sizes, has_negative)
    pairs = list(zip(anchor.tolist(), positive.tolist(), strict=True))
    expected = [
        (a, p) for a in range(len(lab)) for p in range(len(lab)) if a != p and lab[a] == lab[p]
    ]
    assert sorted(pairs) == expected and anchor.tolist() == sorted(anchor.tolist())  # anchor-major
    distances = torch.rand(len(lab), len(lab), generator=torch.Generator().manual_seed(0))
    seen = []
    for rank in ranks(distances, anchor, positive):
        assert len(set(rank.anchor.tolist())) == len(rank.anchor)  # one pair per anchor
        assert torch.equal(anchor[rank.pairs], rank.anchor)
        assert torch.equal(rank.d_ap[rank.anchor, 0], distances[rank.anchor, rank.positive])
        others = torch.ones(len(lab), dtype=torch.bool)
        others[rank.anchor] = False
        assert torch.isinf(rank.d_ap[others]).all()
        seen += list(zip(rank.anchor.tolist(), rank.positive.tolist(), strict=True))
    assert sorted(seen) == expected
    largest = max(lab.count(label) for label in set(lab))
    assert len(list(ranks(distances, anchor, positive))) == largest - 1


def test_row_search_equals_a_search_per_row():
    rows = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)).sort(1).values
    anchor = torch.tensor([0, 0, 2, 3, 3, 3])
    values = torch.rand(6, generator=torch.Generator().manual_seed(2))
    for right in (False, True):
        expected = [
            int(torch.searchsorted(rows[a], values[i : i + 1], right=right))
            for i, a in enumerate(anchor.tolist())
        ]
        assert row_search(rows, anchor, values, right=right).tolist() == expected
