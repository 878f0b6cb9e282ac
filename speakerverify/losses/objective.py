"""The triplet objective with an analytic backward over the mined triplets.

The loss value comes from the distance matrix the miner already built without autograd; the
backward applies each triplet's weight dL/dz to the two distances it uses: per selected pair
(gather + index_add, O(T·D)) when few triplets are active, or through one (B, B) weight matrix
and one matrix product when many are. No distance matrix is ever built with autograd, so a
batch-hard step costs one matrix product forward and O(B·D) backward.
"""

from __future__ import annotations

import torch

# Per-pair backward (~4·T·D gathers and index_adds) while 32·T <= B², else one matrix product
# (B²·D at BLAS speed); measured by benchmarks/bench_mining.py.
PAIR_PATH_RATIO = 32


class _TripletObjective(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embeddings, value, distances, anchor, positive, negative, weights, distance):
        batch = embeddings.shape[0]
        ctx.use_matrix = PAIR_PATH_RATIO * len(anchor) > batch * batch
        # Keep the (B, B) matrix alive until backward only where the backward reads it.
        keep = distances if ctx.use_matrix and distance == "euclidean" else None
        ctx.save_for_backward(embeddings, keep, anchor, positive, negative, weights)
        ctx.distance = distance
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):
        embeddings, distances, anchor, positive, negative, weights = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * 8
        weights = weights * grad_output
        if not ctx.use_matrix:
            grad = _pair_backward(embeddings, anchor, positive, negative, weights, ctx.distance)
        else:
            grad = _matrix_backward(
                embeddings, distances, anchor, positive, negative, weights, ctx.distance
            )
        return grad, None, None, None, None, None, None, None


def _pair_backward(x, anchor, positive, negative, weights, distance):
    # L = Σ_t w_t (d(a_t, p_t) - d(a_t, n_t)): pair (i, j) carries coefficient ±w.
    first = torch.cat([anchor, anchor])
    second = torch.cat([positive, negative])
    coefficient = torch.cat([weights, -weights])[:, None]
    x_first, x_second = x[first], x[second]
    if distance == "cosine":  # d = 1 - x_i·x_j
        grad_first, grad_second = -coefficient * x_second, -coefficient * x_first
    else:
        difference = x_first - x_second
        if distance == "squared_euclidean":  # d = |x_i - x_j|²
            grad_first = 2.0 * coefficient * difference
        else:  # d = |x_i - x_j|, gradient 0 where the two coincide
            length = difference.norm(dim=1, keepdim=True)
            scale = torch.where(length > 0, coefficient / torch.where(length > 0, length, 1.0), 0)
            grad_first = scale * difference
        grad_second = -grad_first
    grad = torch.zeros_like(x)
    grad.index_add_(0, first, grad_first)
    grad.index_add_(0, second, grad_second)
    return grad


def _matrix_backward(x, distances, anchor, positive, negative, weights, distance):
    # L = Σ_ij W_ij d_ij with W accumulated per pair; S = W + Wᵀ because d is symmetric.
    batch = x.shape[0]
    uses = torch.bincount(anchor * batch + positive, weights=weights, minlength=batch * batch)
    uses -= torch.bincount(anchor * batch + negative, weights=weights, minlength=batch * batch)
    uses = uses.view(batch, batch).to(x.dtype)
    symmetric = uses + uses.T
    if distance == "cosine":
        return -(symmetric @ x)
    if distance == "euclidean":
        positive_distance = distances > 0
        symmetric = torch.where(
            positive_distance, symmetric / torch.where(positive_distance, distances, 1.0), 0.0
        )
    else:
        symmetric = 2.0 * symmetric
    return symmetric.sum(dim=1, keepdim=True) * x - symmetric @ x


def triplet_objective(
    embeddings: torch.Tensor,
    distances: torch.Tensor,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    weights: torch.Tensor,
    value: torch.Tensor,
    distance: str,
) -> torch.Tensor:
    """Attach a precomputed triplet loss value to `embeddings` with its exact gradient.

    Args:
        embeddings: (B, D) the embeddings the distances were computed from (with grad).
        distances: (B, B) their distance matrix, no grad (used by the euclidean backward).
        anchor, positive, negative: (T,) the triplets that carry a gradient.
        weights: (T,) dL/dz of each, z = d(a,p) - d(a,n) + m.
        value: scalar loss value (no grad).
        distance: "cosine", "euclidean" or "squared_euclidean".

    Returns:
        Scalar equal to `value` whose backward is Σ_t w_t ∇(d(a_t,p_t) - d(a_t,n_t)).
        First-order only (no double backward).
    """
    return _TripletObjective.apply(
        embeddings, value, distances, anchor, positive, negative, weights, distance
    )
