"""Tests for ONNX export (speakerverify.backend.export, `speakerverify model export`):
onnxruntime gives the torch embedding within 1e-4 on a few seconds of speech, at any length and
batch size."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from speakerverify.backend.export import export_onnx
from speakerverify.checkpoint import load_encoder, save_checkpoint
from speakerverify.cli import main
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.pretrained import bundled_card
from speakerverify.testing import speech_like

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    args = {"embed_dim": 24, "channels": 32, "stats_channels": 64}
    model = build_model("xvector", **args)
    for module in model.modules():  # non-trivial statistics, as after training
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.pt"
    fingerprint = save_checkpoint(
        path, model_name="xvector", model_args=args, model=model.eval(),
        features=FbankConfig().to_dict(),
    )  # fmt: skip
    return path, fingerprint


def _features(loaded, seconds, seed):
    wave = torch.from_numpy(speech_like(seconds, 16000, seed=seed))
    with torch.no_grad():
        feats, _ = loaded.frontend(wave[None])
    return feats


def test_onnxruntime_equals_torch(checkpoint, tmp_path):
    path, fingerprint = checkpoint
    out = tmp_path / "encoder.onnx"
    result = export_onnx(path, out)
    assert result.fingerprint == fingerprint and result.embed_dim == 24 and result.min_frames == 15
    loaded = load_encoder(path)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for seconds, seed in [(3.0, 1), (4.7, 2), (0.5, 3)]:  # dynamic time axis
        feats = _features(loaded, seconds, seed)
        with torch.no_grad():
            expected = loaded.encoder(feats).numpy()
        got = session.run(["embedding"], {"feats": feats.numpy()})[0]
        assert got.shape == expected.shape == (1, 24)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    batch = torch.cat([_features(loaded, 3.0, 4), _features(loaded, 3.0, 5)])  # dynamic batch
    with torch.no_grad():
        expected = loaded.encoder(batch).numpy()
    np.testing.assert_allclose(session.run(None, {"feats": batch.numpy()})[0], expected, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["fingerprint"] == fingerprint
    assert json.loads(meta["frontend"]) == FbankConfig().to_dict()


def test_cli_exports_the_bundled_model_by_default(bundled_model_files, tmp_path):
    out = tmp_path / "bundled.onnx"
    result = CliRunner().invoke(
        main, ["model", "export", "--onnx", str(out), "--json"], env={"SPEAKERVERIFY_MODEL": ""}
    )
    assert result.exit_code == 0, result.output
    card = bundled_card()
    payload = json.loads(result.stdout)
    assert (
        payload["fingerprint"] == card["fingerprint"] and payload["embed_dim"] == card["embed_dim"]
    )
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feat_dim = FbankConfig.from_dict(card["frontend"]).feat_dim  # cepstra or log-mel bins
    feats = np.random.default_rng(0).standard_normal((1, 250, feat_dim)).astype(np.float32)
    assert session.run(None, {"feats": feats})[0].shape == (1, card["embed_dim"])


@pytest.mark.parametrize("problem", ["missing_dir", "is_dir", "bad_checkpoint"])
def test_export_bad_inputs_are_one_line(checkpoint, tmp_path, problem):
    path, _ = checkpoint
    out = {"missing_dir": tmp_path / "nowhere" / "x.onnx", "is_dir": tmp_path}.get(
        problem, tmp_path / "x.onnx"
    )
    if problem == "bad_checkpoint":
        path = tmp_path / "broken.pt"
        path.write_bytes(b"nope")
    result = CliRunner().invoke(main, ["model", "export", str(path), "--onnx", str(out)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("ecapa_tdnn", {"embed_dim": 16, "channels": 32, "aggregate_channels": 64, "scale": 4,
                        "se_channels": 8, "attention_channels": 8}),
        ("resnet34", {"embed_dim": 16, "base_channels": 4, "num_blocks": [1, 1, 1, 1]}),
    ],
)  # fmt: skip
def test_other_encoders_export_too(tmp_path, name, args):
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(
        path, model_name=name, model_args=args, model=build_model(name, **args).eval(),
        features=FbankConfig().to_dict(),
    )  # fmt: skip
    export_onnx(path, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(
        str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    loaded = load_encoder(path)
    feats = _features(loaded, 3.0, 6)
    with torch.no_grad():
        expected = loaded.encoder(feats).numpy()
    np.testing.assert_allclose(session.run(None, {"feats": feats.numpy()})[0], expected, atol=1e-4)


def test_export_failure_is_an_export_error(checkpoint, tmp_path, monkeypatch):
    from speakerverify.backend.export import ExportError

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::mystery\nlong details")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=r"cannot export xvector to ONNX \(unsupported operator"):
        export_onnx(checkpoint[0], tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_packages_is_one_line(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails
    result = CliRunner().invoke(
        main, ["model", "export", str(checkpoint[0]), "--onnx", str(tmp_path / "x.onnx")]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: ONNX export needs the onnx and onnxscript packages: "
        "pip install 'speakerverify[onnx]'\n"
    )
