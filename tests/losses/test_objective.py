"""The analytic triplet backward: both gradient paths (per pair, one matrix product) give the
brute-force loss and pass gradcheck for every strategy, distance and hinge/soft margin."""

from __future__ import annotations

import pytest
import torch
from triplet_reference import DETERMINISTIC, DISTANCES, check_against_brute, make_loss, random_batch

import speakerverify.losses.objective as objective_module


@pytest.mark.parametrize("path_ratio", [0, 10**9], ids=["matrix_path", "pair_path"])
@pytest.mark.parametrize("strategy", DETERMINISTIC)
def test_both_gradient_paths_equal_brute_force(monkeypatch, strategy, path_ratio):
    monkeypatch.setattr(objective_module, "PAIR_PATH_RATIO", path_ratio)
    emb, labels = random_batch(seed=7, num_items=30, num_speakers=6)
    emb.requires_grad_(True)
    value, _ = check_against_brute(emb, labels, strategy, "euclidean", False, None)
    value.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


@pytest.mark.parametrize("path_ratio", [0, 10**9], ids=["matrix_path", "pair_path"])
@pytest.mark.parametrize("soft", [False, True], ids=["hinge", "soft"])
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("strategy", DETERMINISTIC)
def test_gradcheck(monkeypatch, strategy, distance, soft, path_ratio):
    monkeypatch.setattr(objective_module, "PAIR_PATH_RATIO", path_ratio)
    emb, labels = random_batch(seed=11, num_items=8, num_speakers=3, dim=4, singleton=False)
    emb.requires_grad_(True)
    loss_fn = make_loss(strategy, margin=0.3, distance=distance, soft_margin=soft)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels).value, (emb,), eps=1e-6, atol=1e-6)
