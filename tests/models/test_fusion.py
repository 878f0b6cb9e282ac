"""The fusion encoder and `fuse_checkpoints`: one model whose cosine score is the average of its
members' cosine scores, written from the members' checkpoints and served by both engines."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from checkpoint_helpers import save_tiny_xvector
from hostile_helpers import assert_one_line_error, run
from torch.nn import functional as F

from speakerverify.backend import engine
from speakerverify.backend.speaker_model import embed_utterance, load_speaker_model
from speakerverify.checkpoint import CheckpointError, load_checkpoint, load_encoder
from speakerverify.checkpoint_combine import fuse_checkpoints
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.testing import random_speaker, speech_like

FROZEN = {"embed_dim": 16, "channels": 24, "stats_channels": 32, "stats_dims": -1,
          "centre_embeddings": False}  # fmt: skip
TRAINED = {"embed_dim": 24, "channels": 32, "stats_channels": 48}


def _cosines(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=1)
    return x @ x.T


def test_fused_cosine_is_the_mean_of_the_members_cosines():
    torch.manual_seed(0)
    members = [{"name": "xvector", "args": FROZEN}, {"name": "xvector", "args": TRAINED}]
    fused = build_model("fusion", feat_dim=20, members=members).eval()
    feats = torch.randn(5, 60, 20)
    with torch.no_grad():
        parts = [member(feats) for member in fused.members]
        out = fused(feats)
    assert out.shape == (5, fused.embed_dim) == (5, parts[0].shape[1] + parts[1].shape[1])
    assert fused.embed_dim == 16 + 64 + 24
    expected = (_cosines(parts[0]) + _cosines(parts[1])) / 2
    torch.testing.assert_close(out @ out.T, expected, atol=1e-6, rtol=0)  # unit norm: a cosine
    assert fused.context == max(m.context for m in fused.members) == 14


@pytest.mark.parametrize(
    "members, needle",
    [
        ([{"name": "xvector", "args": TRAINED}], "at least two members"),
        ([{"name": "xvector", "args": TRAINED}, {"name": "xvector"}], "member 1 must be"),
        ([{"name": "xvector", "args": TRAINED}, {"name": "fusion", "args": {}}], "cannot be a"),
        ([{"name": "xvector", "args": TRAINED}, {"name": "nope", "args": {}}], "valid: ecapa"),
        ([{"name": "xvector", "args": TRAINED}, {"name": "xvector", "args": {"x": 1}}], "x"),
    ],
)
def test_bad_members_are_refused(members, needle):
    with pytest.raises(ValueError, match=needle):
        build_model("fusion", members=members)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    a, b = root / "frozen.pt", root / "trained.pt"
    save_tiny_xvector(a, FROZEN, seed=1)
    save_tiny_xvector(b, TRAINED, seed=2)
    return root, a, b


def test_fused_checkpoint_embeds_as_its_members_side_by_side(members):
    root, a, b = members
    out = root / "fused.pt"
    fingerprint = fuse_checkpoints([a, b], out)
    payload = load_checkpoint(out)
    assert payload["fingerprint"] == fingerprint and payload["model_name"] == "fusion"
    assert payload["fused_from"] == [str(a), str(b)] and payload["train_state"] is None
    assert [m["args"] for m in payload["model_args"]["members"]] == [FROZEN, TRAINED]
    fused, first, second = (load_encoder(p) for p in (out, a, b))
    feats = torch.randn(3, 80, fused.encoder.members[0].frame_layers[0].conv.in_channels)
    with torch.no_grad():
        expected = torch.cat(
            [F.normalize(first.encoder(feats), dim=1), F.normalize(second.encoder(feats), dim=1)],
            dim=1,
        ) / np.sqrt(2)
        torch.testing.assert_close(fused.encoder(feats), expected, atol=1e-6, rtol=0)
    # the members' inference arguments are part of the identity
    changed = dict(payload["model_args"])
    changed["members"] = [dict(m) for m in changed["members"]]
    changed["members"][0] = {"name": "xvector", "args": {**FROZEN, "centre_embeddings": True}}
    from speakerverify.checkpoint import model_fingerprint

    assert model_fingerprint(payload["state_dict"], payload["features"], changed) != fingerprint


def test_fuse_refuses_what_it_cannot_fuse(members, tmp_path):
    _, a, b = members
    with pytest.raises(CheckpointError, match="at least two"):
        fuse_checkpoints([a], tmp_path / "x.pt")
    other = tmp_path / "other_frontend.pt"
    torch.manual_seed(0)
    from speakerverify.checkpoint import save_checkpoint

    save_checkpoint(
        other, model_name="xvector", model_args=TRAINED, model=build_model("xvector", **TRAINED),
        features=FbankConfig(noise_floor_db=-40.0).to_dict(),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="front-end differs"):
        fuse_checkpoints([a, other], tmp_path / "x.pt")
    fused = tmp_path / "fused.pt"
    fuse_checkpoints([a, b], fused)
    with pytest.raises(CheckpointError, match="already a fusion"):
        fuse_checkpoints([fused, a], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    # the CLI: one line, exit 2, nothing written
    assert_one_line_error(run(["fuse", str(a), str(fused), "--out", tmp_path / "y.pt"]), "fusion")
    assert not (tmp_path / "y.pt").exists()
    result = run(["fuse", str(a), str(b), "--out", tmp_path / "z.pt"])
    assert result.exit_code == 0 and load_checkpoint(tmp_path / "z.pt")["model_name"] == "fusion"


def test_the_fast_path_serves_a_fused_model_as_torch_does(members, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from speakerverify.backend.export import export_onnx

    root, a, b = members
    out = root / "served.pt"
    fuse_checkpoints([a, b], out)
    export_onnx(out, root / "served.onnx")
    wav = root / "voice.wav"
    sf.write(wav, speech_like(3.0, 16000, random_speaker(np.random.default_rng(3)), seed=4), 16000)
    monkeypatch.setenv(engine.BACKEND_ENV, "auto")
    fast = engine.load_command_model(out)
    slow = load_speaker_model(out)
    assert fast.backend == "onnx" and fast.fingerprint == slow.fingerprint
    got, expected = embed_utterance(fast, wav), embed_utterance(slow, wav)
    np.testing.assert_allclose(got.embedding, expected.embedding, atol=1e-4, rtol=0)
