"""Checkpoints: save -> load -> same outputs for every model, fingerprints, refusal of pickled
objects and non-checkpoints, atomic writes, weight averaging, one payload for every writer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerverify.checkpoint import (
    FORMAT_VERSION,
    PAYLOAD_KEYS,
    CheckpointError,
    build_payload,
    derive_payload,
    load_checkpoint,
    load_encoder,
    model_fingerprint,
    save_checkpoint,
)
from speakerverify.checkpoint_combine import average_checkpoints, fuse_checkpoints
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.speakers.adaptation import adapt_batchnorm
from speakerverify.testing import random_speaker, speech_like

TINY_ARGS = {
    "xvector": {"feat_dim": 24, "embed_dim": 16, "channels": 32, "stats_channels": 48},
    "ecapa_tdnn": {"feat_dim": 24, "embed_dim": 16, "channels": 32, "aggregate_channels": 64,
                   "se_channels": 16, "attention_channels": 16, "scale": 4},
    "resnet34": {"feat_dim": 24, "embed_dim": 16, "base_channels": 4, "num_blocks": [1, 1, 1, 1]},
}  # fmt: skip
FEATURES = FbankConfig(num_mel_bins=24).to_dict()


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, **TINY_ARGS[name])
    # Non-trivial BatchNorm statistics, so buffers are part of what must survive the round trip.
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 60, 24))
    return model.eval()


def save(path, model, name="xvector", **extra):
    return save_checkpoint(path, model_name=name, model_args=TINY_ARGS[name], model=model,
                           features=FEATURES, **extra)  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_save_load_same_embeddings(tmp_path, name):
    model = tiny_model(name)
    path = tmp_path / "model.pt"
    fingerprint = save(path, model, name)
    loaded = load_encoder(path)
    assert loaded.fingerprint == fingerprint and len(fingerprint) == 16
    int(fingerprint, 16)
    assert loaded.model_name == name and loaded.embed_dim == 16 and loaded.sample_rate == 16000
    assert not loaded.encoder.training and not loaded.frontend.training
    feats = torch.randn(3, 70, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(feats), model(feats), rtol=0, atol=0)
    wave = torch.randn(16000)
    feats_loaded, _ = loaded.frontend(wave[None])
    assert feats_loaded.shape[-1] == 24


def test_payload_is_plain_and_weights_only_loadable(tmp_path):
    path = tmp_path / "model.pt"
    train_state = {"epoch": 2, "rng": {"torch": torch.get_rng_state()}, "best_eer": float("inf")}
    save(path, tiny_model("xvector"), config={"train": {"epochs": 3}}, train_state=train_state)
    payload = torch.load(path, weights_only=True)  # must not raise
    assert payload["model_name"] == "xvector" and payload["model_args"] == TINY_ARGS["xvector"]
    assert payload["features"] == FEATURES
    assert payload["config"] == {"train": {"epochs": 3}}
    assert payload["train_state"]["epoch"] == 2
    assert set(payload["versions"]) == {"speakerverify", "torch"}
    assert type(payload["versions"]["torch"]) is str
    assert load_checkpoint(path)["fingerprint"] == payload["fingerprint"]


def test_fingerprint_tracks_weights_and_frontend():
    state = tiny_model("xvector").state_dict()
    base = model_fingerprint(state, FEATURES)
    reordered = dict(reversed(list(state.items())))
    assert model_fingerprint(reordered, FEATURES) == base
    assert model_fingerprint(state, {**FEATURES, "num_mel_bins": 40}) != base
    changed = {k: v.clone() for k, v in state.items()}
    key = next(k for k, v in changed.items() if v.is_floating_point())
    changed[key].view(-1)[0] += 1e-6
    assert model_fingerprint(changed, FEATURES) != base
    # An argument that changes what the weights compute counts, but only away from its default,
    # so checkpoints written before it existed keep their fingerprints.
    assert model_fingerprint(state, FEATURES, {"channels": 8, "centre_embeddings": True}) == base
    assert model_fingerprint(state, FEATURES, {"centre_embeddings": False}) != base


class Payload:  # a class a malicious checkpoint could smuggle in
    def __reduce__(self):
        return (print, ("pwned",))


def test_tampered_checkpoint_with_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    good = tmp_path / "good.pt"
    save(good, tiny_model("xvector"))
    payload = torch.load(good, weights_only=True)
    payload["config"] = {"hook": Payload()}
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert (
        str(path) in message
        and "refused: it contains pickled code" in message
        and "\n" not in message
    )
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(CheckpointError):
        load_encoder(path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"hello, not a checkpoint\n", "not a readable checkpoint"),
        (pickle.dumps([1, 2, 3]), "not a"),  # a plain pickle, not a torch file
        (None, "missing"),  # a torch file that is a dict but not ours
        ("truncated", "not a readable checkpoint"),
    ],
)
def test_non_checkpoints_are_errors_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "thing.pt"
    if content is None:
        torch.save({"state_dict": {}}, path)
    elif content == "truncated":
        save(tmp_path / "full.pt", tiny_model("xvector"))
        path.write_bytes((tmp_path / "full.pt").read_bytes()[:2000])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_write_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "model.pt"
    first = save(path, tiny_model("xvector", seed=0))
    second = save(path, tiny_model("xvector", seed=1))
    assert first != second and load_checkpoint(path)["fingerprint"] == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp files left


def test_average_is_the_mean_of_weights(tmp_path):
    models = [tiny_model("xvector", seed=s) for s in range(3)]
    paths = [tmp_path / f"epoch_{i}.pt" for i in range(3)]
    for path, model in zip(paths, models, strict=True):
        save(path, model, train_state={"epoch": 1})
    out = tmp_path / "avg.pt"
    fingerprint = average_checkpoints(paths, out)
    payload = load_checkpoint(out)
    assert payload["fingerprint"] == fingerprint and payload["train_state"] is None
    states = [m.state_dict() for m in models]
    for key, value in payload["state_dict"].items():
        if value.is_floating_point():
            expected = sum(s[key].double() for s in states) / 3
            torch.testing.assert_close(value, expected.float())
        else:
            assert torch.equal(value, states[-1][key])
    assert load_encoder(out).fingerprint == fingerprint


def test_average_refuses_different_models(tmp_path):
    save(tmp_path / "a.pt", tiny_model("xvector"))
    save(tmp_path / "b.pt", tiny_model("ecapa_tdnn"), "ecapa_tdnn")
    with pytest.raises(CheckpointError, match="differs"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    with pytest.raises(CheckpointError, match="no checkpoints"):
        average_checkpoints([], tmp_path / "avg.pt")


def test_load_model_with_mismatched_weights_is_checkpoint_error(tmp_path):
    path = tmp_path / "model.pt"
    save(path, tiny_model("xvector"))
    payload = torch.load(path, weights_only=True)
    payload["model_args"] = {**payload["model_args"], "embed_dim": 8}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="cannot rebuild the model"):
        load_encoder(path)


# -- one payload for every writer ----------------------------------------------------------------


def test_every_writer_writes_the_standard_keys_then_only_its_records(tmp_path):
    """Training (`save_checkpoint` with a train state), `average`, `fuse` and `adapt --out` all
    build through `build_payload`: the same keys in the same order, then their own records (an
    adapted fusion keeps the fusion's); each file opens with `torch.load(weights_only=True)` and
    states the fingerprint of its weights."""
    trained = [tmp_path / f"epoch_{i}.pt" for i in range(2)]
    for seed, path in enumerate(trained):
        save(path, tiny_model("xvector", seed), config={"train": {"epochs": 2}},
             train_state={"epoch": seed + 1, "rng": {"torch": torch.get_rng_state()}})  # fmt: skip
    domain = tmp_path / "domain"
    domain.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        sf.write(domain / f"{i}.wav", speech_like(3.0, 16000, random_speaker(rng), seed=i), 16000)
    average_checkpoints(trained, tmp_path / "averaged.pt")
    fuse_checkpoints(trained, tmp_path / "fused.pt")
    adapt_batchnorm(trained[0], domain, tmp_path / "adapted.pt")
    adapt_batchnorm(tmp_path / "fused.pt", domain, tmp_path / "fused_adapted.pt")
    records = {
        "epoch_0.pt": [],
        "averaged.pt": ["averaged_from"],
        "fused.pt": ["fused_from", "member_configs"],
        "adapted.pt": ["adaptation"],
        "fused_adapted.pt": ["fused_from", "member_configs", "adaptation"],
    }
    for name, expected in records.items():
        payload = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        assert list(payload) == [*PAYLOAD_KEYS, *expected], name
        assert payload["format_version"] == FORMAT_VERSION
        assert set(payload["versions"]) == {"speakerverify", "torch"}
        assert payload["fingerprint"] == model_fingerprint(
            payload["state_dict"], payload["features"], payload["model_args"]
        )
        assert load_checkpoint(tmp_path / name)["fingerprint"] == payload["fingerprint"]
        assert (payload["train_state"] is None) == (name != "epoch_0.pt"), name
    adapted = load_checkpoint(tmp_path / "adapted.pt")
    assert adapted["config"] == {"train": {"epochs": 2}}  # derived: the source's config


def test_derived_payload_keeps_the_source_and_replaces_a_record_in_place(tmp_path):
    save(tmp_path / "a.pt", tiny_model("xvector"), train_state={"epoch": 1})
    source = load_checkpoint(tmp_path / "a.pt")
    source["versions"] = {"speakerverify": "0.0.1", "torch": "1.0"}  # what it was trained with
    first = derive_payload(source, source["state_dict"], packaged={"name": "a"}, note="kept")
    assert list(first) == [*PAYLOAD_KEYS, "packaged", "note"]
    assert first["versions"] == source["versions"] and first["train_state"] is None
    assert first["fingerprint"] == source["fingerprint"]
    again = derive_payload(first, first["state_dict"], packaged={"name": "b"})
    assert list(again) == [*PAYLOAD_KEYS, "packaged", "note"]  # in its place
    assert again["packaged"] == {"name": "b"} and again["note"] == "kept"


def test_a_record_cannot_replace_a_standard_key():
    state = tiny_model("xvector").state_dict()
    with pytest.raises(ValueError, match=r"cannot replace its keys \['fingerprint'\]"):
        build_payload(model_name="xvector", model_args=TINY_ARGS["xvector"], state_dict=state,
                      features=FEATURES, records={"fingerprint": "0" * 16})  # fmt: skip
