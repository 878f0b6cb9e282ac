"""Fixtures of the speaker-command tests: a fake model standing in for a checkpoint, voices
(and broken files), a store with three enrolled speakers, and a tiny real checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from command_helpers import (
    run,
)
from speaker_helpers import FP, SpectrumEmbedder

from speakerverify.backend import engine
from speakerverify.backend.speaker_model import SpeakerModel
from speakerverify.testing import random_speaker, speech_like, write_voices


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """`--model` paths load the fake embedder; their file name becomes the fingerprint tail."""

    def load(path, device="cpu"):
        fingerprint = FP if Path(path).name == "model.pt" else "0000000000000000"
        return SpeakerModel(SpectrumEmbedder(), fingerprint, 16000, str(path))

    monkeypatch.setattr(engine, "load_speaker_model", load)
    # The fake stands in for the torch loader: keep a bundled ONNX twin from bypassing it.
    monkeypatch.setenv("SPEAKERVERIFY_BACKEND", "torch")
    return tmp_path / "model.pt"


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_voices")
    rng = np.random.default_rng(3)
    files, speakers = write_voices(root, ["ann", "bo", "cy"], rng, per_speaker=3, seconds=3.0)
    # stereo 44.1 kHz and 8 kHz versions of ann
    wave = speech_like(3.0, 44100, speakers["ann"], seed=77)
    files["ann_stereo"] = root / "ann_stereo.flac"
    sf.write(files["ann_stereo"], np.stack([wave, 0.5 * wave], axis=1), 44100)
    files["ann_8k"] = root / "ann_8k.wav"
    sf.write(files["ann_8k"], speech_like(3.0, 8000, speakers["ann"], seed=78), 8000)
    files["quiet"] = root / "quiet.wav"
    sf.write(files["quiet"], (1e-5 * rng.standard_normal(32000)).astype(np.float32), 16000)
    files["short"] = root / "short.wav"
    sf.write(files["short"], speech_like(0.6, 16000, random_speaker(rng), seed=5), 16000)
    files["empty"] = root / "empty.wav"
    files["empty"].write_bytes(b"")
    files["text"] = root / "notes.wav"
    files["text"].write_text("this is not audio\n" * 20)
    files["truncated"] = root / "truncated.wav"
    files["truncated"].write_bytes(files["ann0"].read_bytes()[:30])
    return files


@pytest.fixture
def enrolled(fake_model, voices, tmp_path):
    """A store with ann, bo, cy (two files each)."""
    store = tmp_path / "speakers.db"
    for name in ("ann", "bo", "cy"):
        result = run(
            [
                "enroll",
                name,
                voices[f"{name}0"],
                voices[f"{name}1"],
                "--model",
                fake_model,
                "--store",
                store,
            ]
        )
        assert result.exit_code == 0, result.output
    return store


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny x-vector saved through the training engineer's API (random but fixed weights)."""
    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.models import build_model

    torch.manual_seed(0)
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    fingerprint = save_checkpoint(
        path,
        model_name="xvector",
        model_args=args,
        model=build_model("xvector", **args),
        features=FbankConfig().to_dict(),
    )
    return path, fingerprint
