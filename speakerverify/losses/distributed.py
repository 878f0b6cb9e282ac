"""All-gather of embeddings (with gradients) and labels so every DDP rank mines the global batch."""

from __future__ import annotations

import warnings

import torch


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the batches of all ranks in rank order; identity outside torch.distributed.

    Gradients flow back to each rank's own embeddings. The backward of
    `torch.distributed.nn.functional.all_gather` sums the gradients of all ranks, and every rank
    computes the same global loss, so a rank's embedding gradient is world_size times that of the
    global loss; DDP's gradient averaging divides it back, giving exactly the single-process
    gradient of the loss on the concatenated batch.

    Args:
        embeddings: (B, D) this rank's embeddings; B must be equal on every rank.
        labels: (B,) this rank's labels (global speaker indices).

    Returns:
        (world_size * B, D) embeddings and (world_size * B,) labels.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, labels
    from torch.distributed.nn.functional import all_gather

    world_size = dist.get_world_size()
    size = torch.tensor([len(labels)], dtype=torch.long, device=labels.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"gather_distributed needs the same batch size on every rank, got "
            f"{[int(size) for size in sizes]}"
        )
    with warnings.catch_warnings():
        # Deprecated in favour of a private API in torch 2.14; still the public autograd gather.
        warnings.simplefilter("ignore", FutureWarning)
        gathered_embeddings = torch.cat(all_gather(embeddings.contiguous()), dim=0)
    gathered_labels = [torch.empty_like(labels) for _ in range(world_size)]
    dist.all_gather(gathered_labels, labels.contiguous())
    return gathered_embeddings, torch.cat(gathered_labels, dim=0)
