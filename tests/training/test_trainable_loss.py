"""Regression (issue 25): a loss's own parameters (AngularPrototypicalLoss's scale w and bias b)
were left out of the optimizer, which was built from the encoder before the loss existed, so
they never trained. They now train, are saved with the train state and restored on resume; a
checkpoint written before they were saved still resumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import speakerverify.training.loop as loop
from speakerverify.checkpoint import load_checkpoint
from speakerverify.losses import LOSSES, build_loss
from speakerverify.testing import make_train_dir
from speakerverify.training.distributed import DistEnv
from speakerverify.training.experiment_config import load_config
from speakerverify.training.loop import fit
from speakerverify.training.resume import Progress, load_train_state, save_train_checkpoint
from speakerverify.training.setup import build_loader, build_parts

TINY = Path(__file__).parents[1] / "conf" / "tiny.yaml"
CPU = DistEnv(0, 1, 0, torch.device("cpu"), owns_group=False)
# Every registered loss that has parameters of its own (today: angular_prototypical).
WITH_PARAMETERS = sorted(name for name, cls in LOSSES.items() if list(cls().parameters()))


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    return make_train_dir(tmp_path_factory.mktemp("corpus"))


def loss_config(train_dir: Path, name: str, *overrides: str):
    return load_config(
        TINY, [f"data.train_dir={train_dir}", f"loss.name={name}", "loss.margin=null", *overrides]
    )


def first_batch(parts, config):
    parts.sampler.set_epoch(0)
    return next(iter(build_loader(parts.dataset, parts.sampler, 0, config, CPU)))


def loss_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_angular_prototypical_loss_is_among_the_losses_with_parameters():
    assert "angular_prototypical" in WITH_PARAMETERS


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_loss_parameters_change_after_one_training_step(train_dir, name):
    config = loss_config(train_dir, name)
    parts = build_parts(config, CPU)
    optimized = {id(p) for group in parts.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in parts.loss.parameters())
    before = loss_state(parts.loss)
    assert same(before, loss_state(build_loss(name)))  # built with its constructor defaults
    step = loop._train_step(parts, first_batch(parts, config), parts.loss, {}, 5.0)
    assert math.isfinite(step.loss.item())
    after = loss_state(parts.loss)
    for key, value in before.items():
        assert not torch.equal(after[key], value), key  # every parameter moved
        assert torch.isfinite(after[key]).all(), key


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_checkpoint_round_trip_of_the_loss_state(train_dir, tmp_path, name):
    config = loss_config(train_dir, name)
    parts = build_parts(config, CPU)
    loop._train_step(parts, first_batch(parts, config), parts.loss, {}, 5.0)
    trained = loss_state(parts.loss)
    save_train_checkpoint(tmp_path / "a.pt", config, parts, Progress(epoch=0, batch=1, step=1))
    saved = load_checkpoint(tmp_path / "a.pt")["train_state"]["loss"]
    assert same(saved, trained)
    fresh = build_parts(config, CPU)
    assert not same(loss_state(fresh.loss), trained)
    progress = Progress()
    load_train_state(tmp_path / "a.pt", config, fresh, progress)
    assert progress.step == 1
    assert same(loss_state(fresh.loss), trained)
    # the optimizer's moments of the loss's parameters came back too
    for old, new in zip(parts.loss.parameters(), fresh.loss.parameters(), strict=True):
        old_state, new_state = parts.optimizer.state[old], fresh.optimizer.state[new]
        assert old_state.keys() == new_state.keys() and old_state
        assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_resume_restores_the_loss_parameters(train_dir, tmp_path, name):
    config = loss_config(train_dir, name, "train.epochs=3", "data.num_speakers=4")
    straight = load_checkpoint(fit(config, tmp_path / "straight"))["train_state"]
    assert straight["global_step"] == 6  # 8 speakers / P=4: 2 steps per epoch
    interrupted = fit(config.replace(["train.max_steps=3"]), tmp_path / "resumed")
    assert load_checkpoint(interrupted)["train_state"]["batch_in_epoch"] == 1  # mid-epoch
    resumed = load_checkpoint(fit(config, tmp_path / "resumed", resume=True))["train_state"]
    assert resumed["global_step"] == 6
    initial = loss_state(build_loss(name))
    for key, value in straight["loss"].items():
        assert not torch.equal(value, initial[key]), key  # they trained
        # an interrupted run ends where the uninterrupted one does (CPU is deterministic)
        torch.testing.assert_close(resumed["loss"][key], value, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_a_checkpoint_without_loss_state_still_resumes(train_dir, tmp_path, name):
    """A checkpoint written before the loss state was saved: no `train_state["loss"]`, and an
    optimizer that never held the loss's parameters. The loss starts from its defaults."""
    config = loss_config(train_dir, name)
    parts = build_parts(config, CPU)
    loop._train_step(parts, first_batch(parts, config), parts.loss, {}, 5.0)
    save_train_checkpoint(tmp_path / "new.pt", config, parts, Progress(epoch=0, batch=1, step=1))
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    state = payload["train_state"]
    del state["loss"]
    num_loss_parameters = len(list(parts.loss.parameters()))
    (group,) = state["optimizer"]["param_groups"]
    old_ids = group["params"][:-num_loss_parameters]  # the encoder's, in the same order
    group["params"] = old_ids
    state["optimizer"]["state"] = {i: s for i, s in state["optimizer"]["state"].items()
                                   if i in old_ids}  # fmt: skip
    torch.save(payload, tmp_path / "old.pt")

    fresh = build_parts(config, CPU)
    load_train_state(tmp_path / "old.pt", config, fresh, Progress())
    assert same(loss_state(fresh.loss), loss_state(build_loss(name)))
    encoder_old = dict(parts.encoder.named_parameters())
    for key, value in fresh.encoder.named_parameters():
        assert torch.equal(value, encoder_old[key]), key
    loop._train_step(fresh, first_batch(fresh, config), fresh.loss, {}, 5.0)
    assert not same(loss_state(fresh.loss), loss_state(build_loss(name)))  # now they train
