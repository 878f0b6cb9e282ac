"""Process-group set-up for `torchrun` (DDP: NCCL on CUDA, gloo on CPU) and small collectives."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "any_rank",
    "average_gradients",
    "barrier",
    "init_distributed",
    "params_in_sync",
    "shutdown_distributed",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, its device, and whether it created the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> CUDA (this process's local GPU) when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group described by torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT) when WORLD_SIZE > 1; otherwise a single-process environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistEnv(0, 1, 0, resolved, owns_group=False)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns = True
        logger.info("rank %d/%d joined the %s process group", rank, world_size, backend)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, resolved, owns_group=owns)


def shutdown_distributed(env: DistEnv) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank when `flag` is True on at least one (so all ranks stop together)."""
    if not env.distributed:
        return flag
    device = env.device if env.device.type == "cuda" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def average_gradients(parameters: list[torch.nn.Parameter], env: DistEnv) -> None:
    """Average the gradients of `parameters` over the ranks (one all-reduce), as DDP does for the
    modules it wraps; a parameter without a gradient on a rank counts as a zero gradient there,
    so every rank reduces the same tensor. Nothing happens outside DDP or without parameters."""
    parameters = [p for p in parameters if p.requires_grad]
    if not env.distributed or not parameters:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters]
    )
    dist.all_reduce(flat)
    flat /= env.world_size
    for param, grad in zip(parameters, flat.split([p.numel() for p in parameters]), strict=True):
        param.grad = grad.view_as(param).clone()


def params_in_sync(*modules: torch.nn.Module) -> bool:
    """Whether every rank holds bit-identical parameters of `modules` (DDP keeps the encoder's
    so and `average_gradients` the loss's; a cheap guard)."""
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        for name, param in module.named_parameters():
            digest.update(f"{index}.{name}".encode())
            data = param.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            digest.update(data.numpy())
    digests: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) > 1:
        logger.warning("parameters differ across ranks: %s", digests)
    return len(set(digests)) == 1
