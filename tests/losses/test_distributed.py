"""Global mining under DDP: two gloo ranks give the single-process loss, statistics and (after
DDP's averaging) gradients."""

from __future__ import annotations

import pytest
import torch
from triplet_reference import random_batch

from speakerverify.losses import TripletLoss

DDP_STRATEGIES = ("batch_hard", "semi_hard_all", "random")


def _ddp_worker(rank, world_size, port, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        emb, labels = random_batch(seed=21, num_items=24, num_speakers=6, singleton=False)
        local = slice(rank * 12, (rank + 1) * 12)
        results = {}
        for strategy in DDP_STRATEGIES:
            mine = emb[local].clone().requires_grad_(True)
            loss_fn = TripletLoss(mining=strategy, gather_distributed=True, seed=3)
            value, stats = loss_fn(mine, labels[local])
            value.backward()
            results[strategy] = {"loss": value.detach(), "grad": mine.grad, **stats}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_distributed_global_mining_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    world_size = 2
    args = (world_size, _free_port(), str(tmp_path))
    # spawn, not fork: once autograd has run in this process (any earlier test), forked
    # children cannot run backward ("Unable to handle autograd's threading ... fork").
    mp.start_processes(_ddp_worker, args=args, nprocs=world_size, start_method="spawn")
    emb, labels = random_batch(seed=21, num_items=24, num_speakers=6, singleton=False)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for strategy in DDP_STRATEGIES:
        full = emb.clone().requires_grad_(True)
        loss_fn = TripletLoss(mining=strategy, seed=3)
        expected, stats = loss_fn(full, labels)
        expected.backward()
        assert stats["num_valid"] > 0
        for rank, result in enumerate(results):
            got = result[strategy]
            torch.testing.assert_close(got["loss"], expected.detach(), rtol=0, atol=1e-12)
            # all_gather's backward sums every rank's (identical) global-loss gradient;
            # DDP's averaging then restores the single-process gradient.
            local_grad = full.grad[rank * 12 : (rank + 1) * 12]
            torch.testing.assert_close(got["grad"] / world_size, local_grad, rtol=0, atol=1e-12)
            assert float(got["num_valid"]) == float(stats["num_valid"])
            # statistics are device tensors (read when logged)
            assert float(got["mean_d_an"]) == pytest.approx(float(stats["mean_d_an"]), abs=1e-12)
