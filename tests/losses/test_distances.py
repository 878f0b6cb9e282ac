"""Distance matrices and pair distances agree; margins (distances) are checked in one place."""

from __future__ import annotations

import pytest
import torch
from triplet_reference import DISTANCES

from speakerverify.losses import distance_matrix, pair_distances
from speakerverify.losses.distances import check_margin


def test_pair_distances_match_the_matrix():
    emb = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    first, second = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 1, 4, 0])
    for distance in DISTANCES:
        matrix = distance_matrix(emb, distance)
        torch.testing.assert_close(
            pair_distances(emb[first], emb[second], distance), matrix[first, second]
        )


def test_a_margin_is_a_finite_number_at_least_zero():
    assert check_margin(0) == 0.0 and isinstance(check_margin(1), float)
    assert check_margin(0.2) == 0.2
    for bad, problem in [(-0.1, "must be >= 0"), (float("nan"), "finite"), (True, "a number"),
                         ([1], "a number"), ("0.2", "a number")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"^margin: .*{problem}"):
            check_margin(bad)
