"""The LOSSES registry and build_loss: one call shape, each class's declared contract, and unknown
names refused with the valid ones."""

from __future__ import annotations

import pytest
from triplet_reference import random_batch

from speakerverify.losses import LOSSES, LossOutput, TripletLoss, build_loss


@pytest.mark.parametrize("name", ["triplet", "contrastive", "info_nce", "angular_prototypical"])
def test_every_loss_returns_value_and_stats_and_only_margin_losses_take_one(name):
    emb, labels = random_batch(seed=2, num_items=12, num_speakers=3)
    output = build_loss(name).double()(emb, labels)
    assert isinstance(output, LossOutput) and output.value.ndim == 0
    assert output.stats["embedding_spread"] > 0
    assert ("margin" in output.stats) == LOSSES[name].has_margin
    if not LOSSES[name].has_margin:
        with pytest.raises(TypeError):
            build_loss(name)(emb, labels, margin=0.2)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_class_declares_its_margin_and_mining_contract(name):
    """`has_margin` and `mines` are stated by each class itself (no side table, no default
    inherited by accident) and match what its forward accepts."""
    import inspect

    cls = LOSSES[name]
    assert isinstance(vars(cls).get("has_margin"), bool)
    assert isinstance(vars(cls).get("mines"), bool)
    parameters = inspect.signature(cls.forward).parameters
    assert ("margin" in parameters) == cls.has_margin
    assert ("mining" in parameters) == cls.mines
    assert {n for n, c in LOSSES.items() if c.has_margin} == {"triplet", "contrastive"}
    assert {n for n, c in LOSSES.items() if c.mines} == {"triplet"}


def test_unknown_names_are_rejected_with_valid_list():
    with pytest.raises(ValueError, match="batch_hard"):
        TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="cosine"):
        TripletLoss(distance="manhattan")
    with pytest.raises(ValueError, match="mean_active"):
        TripletLoss(reduction="sum")
    with pytest.raises(ValueError, match="triplet"):
        build_loss("arcface")
    assert isinstance(build_loss("triplet", mining="batch_hard"), TripletLoss)
