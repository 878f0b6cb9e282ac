"""Tests for label-free BatchNorm adaptation (speakerverify.speakers.adaptation, `adapt --out`): the
statistics against a hand computation, everything else untouched, a new fingerprint that old
stores refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from speakerverify.backend.speaker_model import (
    SpeakerModel,
    VerificationError,
    load_speaker_model,
    load_speech,
)
from speakerverify.checkpoint import (
    load_checkpoint,
    load_encoder,
    model_fingerprint,
    save_checkpoint,
)
from speakerverify.cli import main
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.speakers.adaptation import adapt_batchnorm, split_crops
from speakerverify.speakers.decision import resolve_decision_rule
from speakerverify.speakers.store import StoreError
from speakerverify.speakers.verification import enroll_speaker, verify_against
from speakerverify.testing import random_speaker, speech_like

STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny x-vector whose BatchNorm statistics come from other (louder, lower) audio."""
    torch.manual_seed(0)
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    model = build_model("xvector", **args)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("parent") / "parent.pt"
    save_checkpoint(
        path,
        model_name="xvector",
        model_args=args,
        model=model.eval(),
        features=FbankConfig().to_dict(),
    )
    return path


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("domain")
    rng = np.random.default_rng(21)
    (root / "sub").mkdir()  # files are found recursively
    for i, seconds in enumerate([3.0, 2.0, 8.5]):  # the 8.5 s file is cut into two crops
        wave = speech_like(seconds, 16000, random_speaker(rng), seed=i)
        sf.write(root / ("sub" if i == 2 else ".") / f"{i}.wav", wave, 16000)
    return root


@pytest.fixture(scope="module")
def adapted(parent, domain, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "adapted.pt"
    result = adapt_batchnorm(parent, domain, out, crop_seconds=5.0)
    return out, result


def _crops_features(parent, domain, crop_seconds=5.0):
    loaded = load_encoder(parent)
    reader = SpeakerModel(None, loaded.fingerprint, 16000, str(parent))
    feats = []
    for path in sorted(domain.rglob("*.wav")):
        speech = load_speech(reader, path)
        for start, length in split_crops(speech.wave.shape[0], round(crop_seconds * 16000)):
            feats.append(loaded.frontend(speech.wave[start : start + length][None])[0])
    return feats


def test_first_layer_statistics_equal_a_hand_computation(parent, domain, adapted):
    out, result = adapted
    encoder = load_encoder(parent).encoder
    first = encoder.frame_layers[0]
    with torch.no_grad():
        frames = torch.cat(
            [
                torch.relu(first.conv(f.transpose(1, 2)))[0].T
                for f in _crops_features(parent, domain)
            ]
        ).double()  # (all frames of all crops, C): the layer's inputs over the adaptation audio
    new = load_checkpoint(out)["state_dict"]
    assert result.num_crops == 4 and result.num_files == 3
    torch.testing.assert_close(
        new["frame_layers.0.norm.running_mean"].double(), frames.mean(0), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        new["frame_layers.0.norm.running_var"].double(), frames.var(0), rtol=1e-5, atol=1e-6
    )
    assert int(new["frame_layers.0.norm.num_batches_tracked"]) == 4


def test_only_batchnorm_statistics_change(parent, adapted):
    out, result = adapted
    old, new = load_checkpoint(parent), load_checkpoint(out)
    assert set(old["state_dict"]) == set(new["state_dict"])
    changed = []
    for key, value in old["state_dict"].items():
        if key.rsplit(".", 1)[-1] in STATS:
            changed.append(not torch.equal(value, new["state_dict"][key]))
        else:
            assert torch.equal(value, new["state_dict"][key]), key
    assert all(changed) and len(changed) == 3 * len(result.layers) == 18
    assert new["model_name"] == old["model_name"] and new["features"] == old["features"]


def test_new_fingerprint_and_record(parent, domain, adapted):
    out, result = adapted
    old, new = load_checkpoint(parent), load_checkpoint(out)
    assert new["fingerprint"] != old["fingerprint"]
    assert new["fingerprint"] == model_fingerprint(new["state_dict"], new["features"])
    assert result.fingerprint == new["fingerprint"]
    record = new["adaptation"]
    assert record["num_files"] == 3 and record["source"] == str(domain.resolve())
    assert record["parent_fingerprint"] == old["fingerprint"]
    assert record["speech_seconds"] == pytest.approx(result.speech_seconds, abs=1e-3)
    assert 10.0 < result.speech_seconds <= 13.5 and record["date"].startswith("20")


def test_store_of_the_old_model_refuses_the_adapted_one(parent, adapted, domain, tmp_path):
    out, _ = adapted
    store = tmp_path / "s.db"
    old_model = load_speaker_model(parent)
    enroll_speaker(store, old_model, "ann", [domain / "0.wav"], min_speech_seconds=1)
    new_model = load_speaker_model(out)
    rule = resolve_decision_rule(new_model, threshold=0.0)
    with pytest.raises(StoreError, match=r"store was made by model .* but checkpoint .* is model"):
        verify_against(store, new_model, rule, "ann", domain / "1.wav")
    cli = CliRunner().invoke(
        main,
        ["verify", "ann", str(domain / "1.wav"), "--model", str(out), "--store", str(store),
         "--threshold", "0"],
    )  # fmt: skip
    assert cli.exit_code == 2 and cli.stderr.count("\n") == 1
    assert cli.stderr.startswith(f"error: {store}: store was made by model")


def test_cli_adapt_out_json(parent, domain, tmp_path):
    out = tmp_path / "new.pt"
    result = CliRunner().invoke(
        main, ["adapt", str(domain), "--out", str(out), "--model", str(parent), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["mode"] == "batchnorm" and payload["out"] == str(out)
    assert payload["model_fingerprint"] == load_checkpoint(out)["fingerprint"]
    assert payload["num_layers"] == 6 and payload["num_files"] == 3
    assert "warning: " in result.stderr and "s of speech; statistics from a few" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--embeddings", "EMB"], "give AUDIO_DIR, not --embeddings"),
        (["EMPTY"], "no audio files found"),
        (["DOMAIN", "--out-is-model"], "would overwrite the model it adapts"),
        (["DOMAIN", "--out-missing-dir"], "does not exist"),
    ],
)
def test_cli_adapt_out_bad_inputs(parent, domain, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "new.pt")
    replace = {"EMB": str(tmp_path), "EMPTY": str(tmp_path / "empty"), "DOMAIN": str(domain)}
    argv = ["adapt", *(replace.get(a, a) for a in args if not a.startswith("--out-"))]
    if "--out-is-model" in args:
        out = str(parent)
    if "--out-missing-dir" in args:
        out = str(tmp_path / "nowhere" / "new.pt")
    before = load_checkpoint(parent)["fingerprint"]
    result = CliRunner().invoke(main, [*argv, "--out", out, "--model", str(parent)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.output
    assert load_checkpoint(parent)["fingerprint"] == before


def test_split_crops_cover_without_overlap():
    for total, crop in [(1, 5), (10, 5), (11, 5), (96000, 80000)]:
        crops = split_crops(total, crop)
        assert sum(length for _, length in crops) == total
        assert all(0 < length <= crop for _, length in crops)
        assert [s for s, _ in crops] == list(np.cumsum([0] + [n for _, n in crops[:-1]]))


def test_one_crop_is_too_little(parent, domain, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "0.wav").write_bytes((domain / "0.wav").read_bytes())
    with pytest.raises(VerificationError, match="too little"):
        adapt_batchnorm(parent, one, tmp_path / "x.pt")


ENCODERS = [
    ("xvector", {"embed_dim": 16, "channels": 32, "stats_channels": 64}),
    ("ecapa_tdnn", {"embed_dim": 16, "channels": 32, "aggregate_channels": 64, "scale": 4,
                    "se_channels": 8, "attention_channels": 8}),
    ("resnet34", {"embed_dim": 16, "base_channels": 4, "num_blocks": [1, 1, 1, 1]}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args"), ENCODERS)
def test_every_layer_matches_its_inputs_at_inference(domain, tmp_path, name, args):
    """For every encoder, each BatchNorm's new statistics are the mean and variance of the inputs
    it gets when the adapted model runs in eval mode on the adaptation crops."""
    from torch.nn.modules.batchnorm import _BatchNorm

    torch.manual_seed(0)
    parent = tmp_path / "parent.pt"
    save_checkpoint(
        parent, model_name=name, model_args=args, model=build_model(name, **args).eval(),
        features=FbankConfig().to_dict(),
    )  # fmt: skip
    result = adapt_batchnorm(parent, domain, tmp_path / "new.pt", crop_seconds=5.0)
    encoder = load_encoder(tmp_path / "new.pt").encoder
    layers = {m: n for n, m in encoder.named_modules() if isinstance(m, _BatchNorm)}
    assert set(result.layers) == set(layers.values())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in layers.values()}

    def keep(module, inputs):
        x = inputs[0].detach().double().transpose(0, 1)  # channels first
        seen[layers[module]].append(x.reshape(x.shape[0], -1))

    handles = [m.register_forward_pre_hook(keep) for m in layers]
    with torch.no_grad():
        for feats in _crops_features(parent, domain):
            encoder(feats)
    for handle in handles:
        handle.remove()
    for module, layer in layers.items():
        x = torch.cat(seen[layer], dim=1)
        torch.testing.assert_close(module.running_mean.double(), x.mean(1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(module.running_var.double(), x.var(1), rtol=1e-4, atol=1e-5)
