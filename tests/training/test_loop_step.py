"""The training step on CPU, pinned for the GPU: no host reads on the device path, the same math
as a plain autograd reference, the embedding head in fp32 under autocast, one persistent loader,
optional torch.compile."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import speakerverify.training.loop as loop
from speakerverify.models import build_model
from speakerverify.testing import make_train_dir
from speakerverify.training.distributed import DistEnv
from speakerverify.training.experiment_config import load_config
from speakerverify.training.resume import Progress
from speakerverify.training.setup import build_loader, build_parts

TINY = Path(__file__).parents[1] / "conf" / "tiny.yaml"
CPU = DistEnv(0, 1, 0, torch.device("cpu"), owns_group=False)
# Python-level host reads of a tensor (what `.item()`, `float(t)`, `if t:` ... go through)
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    return make_train_dir(tmp_path_factory.mktemp("corpus"))


def tiny_config(train_dir: Path, *overrides: str):
    return load_config(TINY, [f"data.train_dir={train_dir}", *overrides])


def first_batch(parts, config):
    parts.sampler.set_epoch(0)
    return next(iter(build_loader(parts.dataset, parts.sampler, 0, config, CPU)))


# The miner's modules: its output sizes are data-dependent by nature (see `losses.mining`).
MINER_MODULES = ("speakerverify.losses.mining", "speakerverify.losses.pairs")


class HostReads:
    """Counts host reads of tensors made by speakerverify code outside the miner."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(name, original))

    def _counting(self, name, original):
        def wrapper(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("speakerverify") and caller not in MINER_MODULES:
                self.calls.append(f"{caller}:{sys._getframe(1).f_lineno} {name}")
            return original(tensor, *args, **kwargs)

        return wrapper


@pytest.mark.parametrize(
    "loss_overrides",
    [
        ["loss.mining=hard_negative", "loss.num_hardest=3", "loss.hard_probability=0.5"],
        ["loss.mining=semi_hard", "loss.semi_hard_fallback=drop"],
        ["loss.mining=batch_all"],
        ["loss.mining=batch_hard", "loss.margin_start=0.05", "loss.margin_warmup_epochs=1"],
    ],
    ids=["hard_negative", "semi_hard_drop", "batch_all", "batch_hard_ramp"],
)
def test_the_step_makes_no_host_read(train_dir, monkeypatch, loss_overrides):
    config = tiny_config(train_dir, "data.speed_perturb=true", *loss_overrides)
    parts = build_parts(config, CPU)
    loss_fn = parts.loss
    batch = first_batch(parts, config)
    reads = HostReads(monkeypatch)
    step = loop._train_step(parts, batch, loss_fn, {"margin": 0.1}, config.optim.grad_clip)
    assert reads.calls == []
    assert isinstance(step.loss, torch.Tensor) and isinstance(step.grad_norm, torch.Tensor)
    # the statistics are there, on the device, for the log to read
    assert torch.is_tensor(step.stats["active_fraction"])


def test_an_epoch_reads_the_device_only_when_it_logs(train_dir, monkeypatch):
    config = tiny_config(train_dir, "train.log_every=1000", "data.num_speakers=2")
    parts = build_parts(config, CPU)
    loss_fn = parts.loss
    parts.sampler.set_epoch(0)
    loader = build_loader(parts.dataset, parts.sampler, 0, config, CPU)
    records = []
    reads = HostReads(monkeypatch)
    outcome = loop.train_one_epoch(parts, loader, loss_fn, config, Progress(), log=records.append)
    steps = len(parts.sampler)
    assert outcome is loop.Outcome.DONE and steps >= 3 and len(records) == 1
    # one read for the record at the epoch's last step, one for the epoch's mean loss
    assert len(reads.calls) == 2, reads.calls


def reference_step(model, frontend, batch, margin, lr, grad_clip):
    """The step written out with plain autograd in float64: batch-hard triplet loss on cosine
    distance, clipping, one SGD step (Nesterov momentum; Adam's first step, about lr·sign(g),
    would compare float32 and float64 by the sign of near-zero gradients)."""
    model = model.double()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    with torch.no_grad():
        feats, _ = frontend(batch["waves"])
    emb = torch.nn.functional.normalize(model(feats.double()), dim=1)
    labels = batch["labels"].tolist()
    distance = 1 - emb @ emb.T
    losses = []
    for a in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        d_ap = max(distance[a, p] for p in positives)
        d_an = min(distance[a, n] for n in negatives)
        losses.append(torch.relu(d_ap - d_an + margin))
    loss = torch.stack(losses).mean()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item(), model


def test_the_step_math_equals_a_plain_autograd_reference(train_dir):
    config = tiny_config(train_dir, "optim.name=sgd", "optim.lr=0.5")
    parts = build_parts(config, CPU)
    reference = copy.deepcopy(parts.model)
    loss_fn = parts.loss
    batch = first_batch(parts, config)
    lr = parts.optimizer.param_groups[0]["lr"]
    step = loop._train_step(parts, batch, loss_fn, {"margin": 0.2}, config.optim.grad_clip)
    expected, reference = reference_step(
        reference, parts.frontend, batch, 0.2, lr, config.optim.grad_clip
    )
    assert step.loss.item() == pytest.approx(expected, abs=1e-5)
    for (name, got), want in zip(
        parts.model.named_parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-4, msg=name)


MODELS = {
    "xvector": {"embed_dim": 16, "channels": 32, "stats_channels": 64},
    "ecapa_tdnn": {"embed_dim": 16, "channels": 32, "aggregate_channels": 96},
    "resnet34": {"embed_dim": 16, "base_channels": 8},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_embedding_head_runs_in_fp32_under_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, feat_dim=24, **MODELS[name])
    dtypes = {}

    def remember(key):
        return lambda module, inputs, output: dtypes.__setitem__(key, output.dtype)

    model.embed_norm.register_forward_hook(remember("norm"))
    head = model.segment if name == "xvector" else model.embedding
    head.register_forward_hook(remember("linear"))
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d))
    first.register_forward_hook(remember("first_layer"))
    feats = torch.randn(4, 60, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats)
    assert dtypes["first_layer"] == torch.bfloat16  # autocast is on for the body
    assert dtypes["linear"] == dtypes["norm"] == out.dtype == torch.float32
    # the same embeddings up to bf16 rounding of the body
    assert torch.nn.functional.cosine_similarity(out, model(feats)).min() > 0.95


def test_one_loader_with_persistent_workers_serves_every_epoch(train_dir, tmp_path, monkeypatch):
    config = tiny_config(train_dir, "train.epochs=3", "data.num_workers=1")
    built, original = [], loop.build_loader

    def counting(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(loop, "build_loader", counting)
    from speakerverify.training.loop import fit

    fit(config, tmp_path / "exp")
    assert len(built) == 1 and built[0].persistent_workers
    checkpoints = sorted((tmp_path / "exp" / "checkpoints").glob("epoch_*.pt"))
    assert len(checkpoints) == 2  # keep_last 2 of 3 epochs: training went through all three


def test_train_compile_wraps_the_model_and_checkpoints_the_encoder(train_dir, monkeypatch):
    compiled = []

    class Compiled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *args):
            return self._orig_mod(*args)

    def fake_compile(model):
        compiled.append(model)
        return Compiled(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain = build_parts(tiny_config(train_dir), CPU)
    assert compiled == [] and plain.encoder is plain.model
    parts = build_parts(tiny_config(train_dir, "train.compile=true"), CPU)
    assert len(compiled) == 1 and isinstance(parts.model, Compiled)
    assert parts.encoder is compiled[0]
    assert "_orig_mod" not in "".join(parts.encoder.state_dict())
