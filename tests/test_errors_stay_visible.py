"""Regression (issue 25, item 4): `except Exception` around the calibration and embedding-store
readers turned any bug inside them into "not a usable calibration" / "cannot read embeddings"
(exit 2). They now translate only the errors of a bad file; a bug is a traceback."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import speakerverify.backend.calibration as calibration_module
import speakerverify.backend.embedding_dir as embedding_dir_module
from speakerverify.backend.calibration import Calibration
from speakerverify.backend.embedding_dir import save_embeddings
from speakerverify.backend.speaker_model import VerificationError
from speakerverify.speakers.decision import _load_calibration
from speakerverify.speakers.verification import _read_embedding_store

FP = "1" * 16


def test_bad_calibration_files_are_input_errors(tmp_path):
    good = tmp_path / "good.json"
    Calibration(2.0, -1.0, model_fingerprint=FP).save(good)
    assert _load_calibration(good, FP).slope == 2.0
    cases = {
        "json.json": "{not json",
        "negative.json": json.dumps({"slope": -1.0, "offset": 0.0, "model_fingerprint": FP}),
        "text.json": json.dumps({"slope": "a", "offset": 0.0, "model_fingerprint": FP}),
        "list.json": "[1, 2]",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(VerificationError, match=re.escape(name)):
            _load_calibration(tmp_path / name, FP)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(VerificationError, match=r"binary\.json"):
        _load_calibration(tmp_path / "binary.json", FP)


def test_a_bug_in_the_calibration_reader_is_a_traceback(tmp_path, monkeypatch):
    path = tmp_path / "cal.json"
    Calibration(2.0, -1.0, model_fingerprint=FP).save(path)

    def broken(cls, path):
        raise TypeError("a bug, not a bad file")

    monkeypatch.setattr(calibration_module.Calibration, "load", classmethod(broken))
    with pytest.raises(TypeError, match="a bug"):
        _load_calibration(path, FP)


def test_bad_embedding_stores_are_input_errors(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    save_embeddings(tmp_path / "good", ["a", "b", "c"], vectors, {"model_fingerprint": FP})
    embeddings, fingerprint = _read_embedding_store(tmp_path / "good")
    assert fingerprint == FP and embeddings.shape == (3, 3)
    broken = {
        "truncated": lambda d: (d / "embeddings.npy").write_bytes(b""),
        "meta_list": lambda d: (d / "meta.json").write_text("[]"),
        "meta_binary": lambda d: (d / "meta.json").write_bytes(b"\xff\xfe"),
        "ids_binary": lambda d: (d / "utt_ids.txt").write_bytes(b"\xff\xfe\n"),
    }
    for name, damage in broken.items():
        directory = tmp_path / name
        save_embeddings(directory, ["a", "b", "c"], vectors, {"model_fingerprint": FP})
        damage(directory)
        with pytest.raises(VerificationError, match=f"{name}: cannot read embeddings"):
            _read_embedding_store(directory)


def test_a_bug_in_the_embedding_store_reader_is_a_traceback(tmp_path, monkeypatch):
    save_embeddings(tmp_path / "emb", ["a"], np.ones((1, 2), np.float32), {"model_fingerprint": FP})

    def broken(path, mmap=True):
        raise KeyError("a bug, not a bad store")

    monkeypatch.setattr(embedding_dir_module, "load_embeddings", broken)
    with pytest.raises(KeyError, match="a bug"):
        _read_embedding_store(tmp_path / "emb")


# -- embedding: "cannot embed" is for inputs, not for bugs in an encoder --------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from checkpoint_helpers import save_tiny_xvector

    from speakerverify.backend.speaker_model import load_speaker_model
    from speakerverify.testing import random_speaker, speech_like

    root = tmp_path_factory.mktemp("embed")
    save_tiny_xvector(root / "tiny.pt", {"embed_dim": 8, "channels": 16, "stats_channels": 32})
    speaker = random_speaker(np.random.default_rng(0))
    waves = [speech_like(2.0, 16000, speaker, seed=seed) for seed in (1, 2)]
    return load_speaker_model(root / "tiny.pt"), waves


@pytest.mark.parametrize("bug", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                 IndexError("index 3 is out of bounds")])  # fmt: skip
def test_a_bug_inside_the_encoder_is_a_traceback_not_cannot_embed(tiny_model, monkeypatch, bug):
    # embed_speech caught ValueError/RuntimeError and said "cannot embed" (exit 2): a shape bug
    # in a new encoder looked like bad input.
    from speakerverify.backend.speaker_model import embed_utterance

    model, waves = tiny_model

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(model.embedder.encoder, "forward", broken)
    with pytest.raises(type(bug), match=str(bug)):
        embed_utterance(model, waves[0], sample_rate=16000)
    with pytest.raises(type(bug), match=str(bug)):  # the batched path too
        _embed_batch(model, waves)


def _embed_batch(model, waves):
    from speakerverify.backend.speaker_model import embed_speech, load_speech

    return embed_speech(model, [load_speech(model, w, sample_rate=16000) for w in waves])


def test_an_input_shorter_than_the_encoders_context_still_cannot_be_embedded(tiny_model):
    # What the RuntimeError handler was for: the torch embedder now says it, as the ONNX one does.
    from speakerverify.backend.embedder import EmbedError

    model, waves = tiny_model
    context = model.embedder.min_frames
    assert context > 1
    with pytest.raises(EmbedError, match=f"shorter than the model's {context}-frame context"):
        model.embedder.embed_waveform(waves[0][: 160 * (context - 2) + 400])


# -- one identity check: every "made by another model" message has one shape ----------------


def test_model_mismatch_is_one_rule_with_one_message_shape(tmp_path):
    from speakerverify.backend.calibration import load_calibration
    from speakerverify.backend.embedding_dir import EmbeddingStoreError
    from speakerverify.backend.scoring_steps import _check_same_model
    from speakerverify.checkpoint_rules import model_mismatch
    from speakerverify.speakers.store import SpeakerStore, StoreError

    assert model_mismatch("x", None, "y", FP) is None  # nothing recorded: nothing to compare
    assert model_mismatch("x", FP, "y", FP) is None
    assert model_mismatch("x", "", "y", FP) == f"x model , but y is model {FP}"
    other = "2" * 16
    shape = rf"was (made by|fitted for) model {other}, but .* is model {FP}"
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        store._bind(other, 3)
        with pytest.raises(StoreError, match=shape):
            store.check_model(FP, source="checkpoint m.pt")
    Calibration(2.0, -1.0, model_fingerprint=other).save(tmp_path / "cal.json")
    with pytest.raises(VerificationError, match=shape):
        _load_calibration(tmp_path / "cal.json", FP)
    with pytest.raises(calibration_module.CalibrationError, match=shape):
        load_calibration(tmp_path / "cal.json", FP, "none")
    with pytest.raises(EmbeddingStoreError, match=shape):
        _check_same_model("--mean-store m", other, FP)
