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
    def forward(
        ctx,
        embeddings,
        value,
        distances,
        anchor,
        positive,
        negative,
        weights,
        pair_weights,
        distance,
    ):
        batch = embeddings.shape[0]
        ctx.use_matrix = pair_weights is not None or PAIR_PATH_RATIO * len(anchor) > batch * batch
        # Keep the (B, B) matrix alive until backward only where the backward reads it.
        keep = distances if ctx.use_matrix and distance == "euclidean" else None
        ctx.save_for_backward(embeddings, keep, anchor, positive, negative, weights, pair_weights)
        ctx.distance = distance
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):
        embeddings, distances, anchor, positive, negative, weights, pair_weights = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * 9
        if not ctx.use_matrix:
            weights = weights * grad_output
            grad = _pair_backward(embeddings, anchor, positive, negative, weights, ctx.distance)
        else:
            if pair_weights is None:
                pair_weights = _accumulate_pair_weights(
                    anchor, positive, negative, weights, embeddings
                )
            grad = _matrix_backward(embeddings, distances, pair_weights * grad_output, ctx.distance)
        return (grad,) + (None,) * 8


def _pair_backward(x, anchor, positive, negative, weights, distance):
    # L = Σ_t w_t (d(a_t, p_t) - d(a_t, n_t)); one (T, D) temporary at a time, updated in place.
    grad = torch.zeros_like(x)
    for other, sign in ((positive, 1.0), (negative, -1.0)):
        coefficient = (sign * weights)[:, None]
        if distance == "cosine":  # d = 1 - x_a·x_o
            grad.index_add_(0, anchor, x[other].mul_(-coefficient))
            grad.index_add_(0, other, x[anchor].mul_(-coefficient))
            continue
        difference = x[anchor].sub_(x[other])
        if distance == "squared_euclidean":  # d = |x_a - x_o|²
            difference.mul_(2.0 * coefficient)
        else:  # d = |x_a - x_o|, gradient 0 where the two coincide
            length = difference.norm(dim=1, keepdim=True)
            difference.mul_(
                torch.where(length > 0, coefficient / torch.where(length > 0, length, 1.0), 0.0)
            )
        grad.index_add_(0, anchor, difference)
        grad.index_add_(0, other, difference.neg_())
    return grad


def _accumulate_pair_weights(anchor, positive, negative, weights, x):
    # W_ij = Σ of the weights of triplets using (i, j) as (a, p) minus those using it as (a, n).
    batch = x.shape[0]
    uses = torch.bincount(anchor * batch + positive, weights=weights, minlength=batch * batch)
    uses -= torch.bincount(anchor * batch + negative, weights=weights, minlength=batch * batch)
    return uses.view(batch, batch).to(x.dtype)


def _matrix_backward(x, distances, pair_weights, distance):
    # ∇ Σ_ij W_ij d_ij with S = W + Wᵀ because d is symmetric.
    symmetric = pair_weights + pair_weights.T
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
    value: torch.Tensor,
    distance: str,
    *,
    triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    weights: torch.Tensor | None = None,
    pair_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attach a precomputed triplet loss value to `embeddings` with its exact gradient.

    The loss is L = Σ_t w_t (d(a_t,p_t) - d(a_t,n_t)) + const around the current point, given
    either as triplets with weights w_t = dL/dz_t, or directly as pair weights
    W_ij = Σ_t w_t ([i,j] = [a_t,p_t]) - Σ_t w_t ([i,j] = [a_t,n_t]).

    Args:
        embeddings: (B, D) the embeddings the distances were computed from (with grad).
        distances: (B, B) their distance matrix, no grad (read by the euclidean backward).
        value: scalar loss value (no grad).
        distance: "cosine", "euclidean" or "squared_euclidean".
        triplets: (anchor, positive, negative), each (T,), the triplets carrying a gradient.
        weights: (T,) their dL/dz.
        pair_weights: (B, B) W instead of triplets and weights.

    Returns:
        Scalar equal to `value`; first-order gradients only (no double backward).
    """
    if pair_weights is None:
        if triplets is None or weights is None:
            raise ValueError("triplet_objective needs triplets and weights, or pair_weights")
        anchor, positive, negative = triplets
    else:
        anchor = positive = negative = torch.zeros(0, dtype=torch.long, device=value.device)
        weights = torch.zeros(0, dtype=value.dtype, device=value.device)
    return _TripletObjective.apply(
        embeddings, value, distances, anchor, positive, negative, weights, pair_weights, distance
    )
