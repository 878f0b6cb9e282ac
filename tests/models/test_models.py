"""Encoders: registry, shapes at two lengths, padding, save/load, TorchScript and ONNX export."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from speakerverify.models import MODELS, EcapaTdnn, ResNet, XVector, build_model

FEAT_DIM = 20
SMALL = {
    "xvector": {"feat_dim": FEAT_DIM, "embed_dim": 16, "channels": 32, "stats_channels": 48},
    "ecapa_tdnn": {
        "feat_dim": FEAT_DIM,
        "embed_dim": 16,
        "channels": 32,
        "aggregate_channels": 48,
        "scale": 4,
        "se_channels": 8,
        "attention_channels": 8,
    },
    "resnet34": {"feat_dim": FEAT_DIM, "embed_dim": 16, "base_channels": 4},
}


def small_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, **SMALL[name])
    # Non-trivial BatchNorm statistics so eval mode is not the identity.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def feats(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, FEAT_DIM, generator=torch.Generator().manual_seed(seed))


# Single encoders; the fusion of several is tested in test_fusion.py.
ENCODERS = sorted(set(MODELS) - {"fusion"})


def test_registry_names_and_errors():
    assert set(MODELS) == {"xvector", "ecapa_tdnn", "resnet34", "fusion"}
    with pytest.raises(ValueError, match="ecapa_tdnn, fusion, resnet34, xvector"):
        build_model("tdnn")
    with pytest.raises(ValueError, match="xvector"):
        build_model("xvector", hidden=3)


@pytest.mark.parametrize("name", ENCODERS)
def test_two_lengths_and_padding_mask(name):
    model = small_model(name)
    short, long = feats(1, 37, seed=2), feats(1, 64, seed=3)
    for x in (short, long):
        out = model(x)
        assert out.shape == (1, model.embed_dim) == (1, 16)
        assert torch.isfinite(out).all()
    # A padded batch gives each utterance the embedding it gets alone, whatever the padding.
    batch = torch.cat([torch.cat([short, 100 * feats(1, 27, seed=4)], dim=1), long])
    out = model(batch, torch.tensor([37, 64]))
    torch.testing.assert_close(out[0], model(short)[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1], model(long)[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name", ENCODERS)
def test_save_load_round_trip(name, tmp_path):
    model = small_model(name, seed=0)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    other = small_model(name, seed=1)
    x = feats(2, 45)
    assert not torch.allclose(model(x), other(x))
    other.load_state_dict(torch.load(path, weights_only=True))
    other.eval()
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ENCODERS)
def test_torchscript_export_matches_eager(name, tmp_path):
    model = small_model(name)
    scripted = torch.jit.script(model)
    path = tmp_path / "model.ts"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    for frames in (33, 71):
        x = feats(2, frames)
        lengths = torch.tensor([frames, frames - 10])
        torch.testing.assert_close(loaded(x, lengths), model(x, lengths), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_export_with_dynamic_length():
    # torch.export is what torch.onnx.export (dynamo) builds on; one model keeps the suite fast.
    model = small_model("xvector")
    frames = torch.export.Dim("frames", min=20, max=2000)
    program = torch.export.export(
        model, (feats(2, 50), torch.tensor([50, 40])), dynamic_shapes=({1: frames}, None)
    )
    x, lengths = feats(2, 77), torch.tensor([77, 60])
    torch.testing.assert_close(program.module()(x, lengths), model(x, lengths))


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx/onnxscript/onnxruntime not installed (the dev extra has them)",
)
@pytest.mark.parametrize("name", [*ENCODERS, "xvector+stats", "xvector+pooled"])
def test_onnx_export(name, tmp_path):
    import onnx
    import onnxruntime

    if name.startswith("xvector+"):  # the fused statistics branch traces, projected or not
        torch.manual_seed(0)
        stats_dims = 8 if name == "xvector+stats" else -1
        model = build_model("xvector", **SMALL["xvector"], stats_dims=stats_dims).eval()
    else:
        model = small_model(name)
    path = tmp_path / "model.onnx"
    x, lengths = feats(2, 40), torch.tensor([40, 30])
    torch.onnx.export(model, (x, lengths), str(path))
    onnx.checker.check_model(onnx.load(str(path)))
    # The exported graph must compute what the module computes, padding mask included.
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    (out,) = session.run(None, dict(zip(names, (x.numpy(), lengths.numpy()), strict=True)))
    torch.testing.assert_close(torch.from_numpy(out), model(x, lengths), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ENCODERS)
def test_training_mode_gradients_and_centred_embeddings(name):
    model = small_model(name).train()
    out = model(feats(6, 30))
    # The affine-free BatchNorm on the embedding centres every dimension over the batch.
    torch.testing.assert_close(out.mean(0), torch.zeros(16), rtol=0, atol=1e-5)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_xvector_rejects_inputs_shorter_than_its_context():
    model = small_model("xvector")
    with pytest.raises(ValueError, match="14 frames"):
        model(feats(1, 14))
    assert model(feats(1, 15)).shape == (1, 16)


def test_full_size_parameter_counts():
    counts = {
        "xvector": sum(p.numel() for p in XVector().parameters()),
        "ecapa_512": sum(p.numel() for p in EcapaTdnn(channels=512).parameters()),
        "ecapa_1024": sum(p.numel() for p in EcapaTdnn(channels=1024).parameters()),
        "resnet34": sum(p.numel() for p in ResNet().parameters()),
    }
    # Snyder et al. 2018 report ~4.2 M (24-dim input); 80-dim fbank adds 0.17 M to layer 1.
    assert counts["xvector"] == 4_354_964
    assert counts == {
        "xvector": 4_354_964,
        "ecapa_512": 6_194_048,
        "ecapa_1024": 14_660_416,
        "resnet34": 6_634_336,
    }
    assert XVector().embed_dim == 512 and EcapaTdnn().embed_dim == 192
    assert ResNet().embed_dim == 256


@pytest.mark.parametrize("name", ENCODERS)
def test_uncentred_embeddings_are_the_centred_ones_shifted_back(name):
    """centre_embeddings=False changes inference only: the same weights give the centred
    embedding plus running_mean / running_std, and training mode is unchanged."""
    centred = small_model(name)
    torch.manual_seed(0)
    uncentred = build_model(name, **SMALL[name], centre_embeddings=False)
    uncentred.load_state_dict(centred.state_dict())  # BatchNorm1d's keys: either loads
    uncentred.eval()
    norm = centred.embed_norm
    x, lengths = feats(3, 40), torch.tensor([40, 33, 25])
    shift = norm.running_mean / torch.sqrt(norm.running_var + norm.eps)
    with torch.no_grad():
        torch.testing.assert_close(uncentred(x, lengths), centred(x, lengths) + shift)
        assert not torch.allclose(uncentred(x, lengths), centred(x, lengths), atol=1e-3)
        torch.testing.assert_close(uncentred.train()(x, lengths), centred.train()(x, lengths))


def test_embedding_norm_is_batchnorm_when_centred():
    from speakerverify.models.embedding_norm import EmbeddingNorm

    ours, reference = EmbeddingNorm(5), torch.nn.BatchNorm1d(5, affine=False)
    for step in range(3):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step)) * 3 + step
        torch.testing.assert_close(ours(x), reference(x))
    assert torch.equal(ours.num_batches_tracked, reference.num_batches_tracked)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    ours.eval(), reference.eval()
    assert torch.equal(ours(x), reference(x))  # the very same computation, not just close


@pytest.mark.parametrize("stats_dims", [24, -1])
def test_xvector_stats_branch_fuses_two_cosines(stats_dims):
    """stats_dims: the embedding is [a/|a|, p/|p|]/sqrt(2), so its cosine is the mean of the
    trained embedding's and the statistics' cosines. N > 0 projects the statistics by a fixed,
    seeded buffer that takes no gradient and leaves the rest of the initialisation unchanged;
    -1 takes them as they are (no buffer)."""
    plain = small_model("xvector")
    torch.manual_seed(0)
    fused = build_model("xvector", **SMALL["xvector"], stats_dims=stats_dims)
    extra = set(fused.state_dict()) - set(plain.state_dict())
    size = 2 * SMALL["xvector"]["stats_channels"] if stats_dims == -1 else stats_dims
    assert fused.embed_dim == 16 + size
    assert extra == ({"stats_projection"} if stats_dims > 0 else set())
    fused.load_state_dict({**plain.state_dict(), **{k: fused.state_dict()[k] for k in extra}})
    fused.eval()
    if stats_dims > 0:
        again = build_model("xvector", **SMALL["xvector"], stats_dims=stats_dims)
        assert torch.equal(again.stats_projection, fused.stats_projection)
        assert "stats_projection" not in dict(fused.named_parameters())
    x, lengths = feats(4, 50), torch.tensor([50, 41, 30, 22])
    with torch.no_grad():
        out = fused(x, lengths)
        trained = torch.nn.functional.normalize(plain(x, lengths), dim=1)
        hidden = x.transpose(1, 2)
        for layer in plain.frame_layers:
            hidden = layer(hidden)
        mask = torch.arange(hidden.shape[2])[None, :] < (lengths - plain.context)[:, None]
        pooled = plain.pool(hidden, mask)
        if stats_dims > 0:
            pooled = pooled @ fused.stats_projection
        stats = torch.nn.functional.normalize(pooled, dim=1)
    assert out.shape == (4, 16 + size)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(out @ out.T, (trained @ trained.T + stats @ stats.T) / 2)


def test_xvector_stats_dims_rejects_other_negative_sizes():
    with pytest.raises(ValueError, match=r"stats_dims must be -1 \(all\), 0 \(none\) or a pos"):
        build_model("xvector", **SMALL["xvector"], stats_dims=-2)
