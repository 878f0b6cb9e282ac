"""Distance matrices and pair distances agree."""

from __future__ import annotations

import torch
from triplet_reference import DISTANCES

from speakerverify.losses import distance_matrix, pair_distances


def test_pair_distances_match_the_matrix():
    emb = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    first, second = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 1, 4, 0])
    for distance in DISTANCES:
        matrix = distance_matrix(emb, distance)
        torch.testing.assert_close(
            pair_distances(emb[first], emb[second], distance), matrix[first, second]
        )
