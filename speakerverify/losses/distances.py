"""Distance matrices and row-wise pair distances for metric losses (never `F.pairwise_distance`).

The matrix form is one matrix product: in place and without autograd for mining (the triplet
loss's value comes from that matrix too, and its gradient from the analytic backward of
`objective.py`, which builds no distances with autograd), or differentiable for the comparison
losses. The pair form (`pair_distances`) gives differentiable distances of selected pairs.
"""

from __future__ import annotations

import math
import numbers

import torch

DISTANCES: tuple[str, ...] = ("cosine", "euclidean", "squared_euclidean")


def check_distance(distance: str) -> None:
    """Raise `ValueError` naming the valid distances when `distance` is unknown."""
    if distance not in DISTANCES:
        raise ValueError(f"distance: unknown value {distance!r}; valid: {', '.join(DISTANCES)}")


def check_margin(margin: object) -> float:
    """The margin (a distance) as a float; `ValueError` unless it is a finite number >= 0."""
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real):
        raise ValueError(f"margin: must be a number, got {margin!r}")
    if not math.isfinite(margin):
        raise ValueError(f"margin: must be a finite number, got {margin!r}")
    if margin < 0:
        raise ValueError(f"margin: must be >= 0, got {margin!r}")
    return float(margin)


def _safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    # sqrt has an infinite derivative at 0 (identical embeddings); give it 0 there, keep values.
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)


def distance_matrix(embeddings: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """All pairwise distances of a batch with one matrix product.

    Args:
        embeddings: (N, D). For `cosine` they must already be L2-normalised.
        distance: "cosine" (1 - cos), "euclidean" or "squared_euclidean".

    Returns:
        (N, N) distances; the diagonal is exactly 0.

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> distance_matrix(x, "squared_euclidean")
    tensor([[0., 2.],
            [2., 0.]])
    """
    check_distance(distance)
    gram = embeddings @ embeddings.T
    if not (torch.is_grad_enabled() and embeddings.requires_grad):
        return _distances_in_place(gram, distance)
    if distance == "cosine":
        matrix = 1.0 - gram
    else:
        norms = gram.diagonal()
        matrix = (norms[:, None] + norms[None, :] - 2.0 * gram).clamp_min(0.0)
        if distance == "euclidean":
            matrix = _safe_sqrt(matrix)
    return _zero_diagonal(matrix)


def _distances_in_place(gram: torch.Tensor, distance: str) -> torch.Tensor:
    # Without autograd every B² pass counts (mining is bandwidth-bound): reuse the gram buffer.
    if distance == "cosine":
        matrix = gram.neg_().add_(1.0)
    else:
        norms = gram.diagonal().clone()
        matrix = gram.mul_(-2.0).add_(norms[:, None]).add_(norms[None, :]).clamp_min_(0.0)
        if distance == "euclidean":
            matrix.sqrt_()
    return matrix.fill_diagonal_(0.0)


def _zero_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return matrix.masked_fill(eye, 0.0)


def pair_distances(
    first: torch.Tensor, second: torch.Tensor, distance: str = "cosine"
) -> torch.Tensor:
    """Row-wise distances between two equally long lists of embeddings.

    Args:
        first: (M, D) embeddings (L2-normalised for `cosine`).
        second: (M, D) embeddings.
        distance: as in `distance_matrix`.

    Returns:
        (M,) distances, differentiable (0 gradient where two euclidean embeddings coincide).
    """
    check_distance(distance)
    if distance == "cosine":
        return 1.0 - (first * second).sum(dim=-1)
    squared = (first - second).square().sum(dim=-1)
    return squared if distance == "squared_euclidean" else _safe_sqrt(squared)
