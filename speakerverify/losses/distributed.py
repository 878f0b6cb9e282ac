"""All-gather of embeddings (with gradients) and labels so every DDP rank mines the global batch."""

from __future__ import annotations

import torch


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the batches of all ranks in rank order; identity outside torch.distributed.

    Gradients flow back to each rank's own embeddings. The backward of the functional
    all-gather (`torch.distributed._functional_collectives.all_gather_single`, what torch 2.14's
    deprecation of `torch.distributed.nn.functional.all_gather` points to; it has autograd and
    works under `torch.compile`) reduce-scatters, i.e. sums the gradients of
    all ranks, and every rank computes the same global loss, so a rank's embedding gradient is
    world_size times that of the global loss; DDP's gradient averaging divides it back, giving
    exactly the single-process gradient of the loss on the concatenated batch.

    Args:
        embeddings: (B, D) this rank's embeddings; B must be equal on every rank (the P×K
            sampler guarantees it; the gather fails on unequal sizes rather than checking them
            with a host read every step).
        labels: (B,) this rank's labels (global speaker indices).

    Returns:
        (world_size * B, D) embeddings and (world_size * B,) labels.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, labels
    from torch.distributed._functional_collectives import all_gather_single

    group = dist.group.WORLD
    gathered_embeddings = all_gather_single(embeddings.contiguous(), 0, group)
    gathered_labels = all_gather_single(labels.contiguous(), 0, group)
    return gathered_embeddings, gathered_labels
