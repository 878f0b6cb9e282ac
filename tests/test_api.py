"""Tests for the Python API (speakerverify.load_model / speakerverify.api.Model) and the README
example, against the bundled model: whatever files are in speakerverify/pretrained."""

from __future__ import annotations

import doctest
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import speakerverify
from speakerverify.api import Model
from speakerverify.backend.calibration import Calibration
from speakerverify.backend.speaker_model import VerificationError
from speakerverify.checkpoint import CheckpointError
from speakerverify.cli import main
from speakerverify.frontend.audio import AudioError
from speakerverify.pretrained import bundled_calibration, bundled_card
from speakerverify.testing import random_speaker, speech_like

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def model(bundled_model_files) -> Model:
    return speakerverify.load_model()


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_audio")
    rng = np.random.default_rng(11)
    ann, bo = random_speaker(rng), random_speaker(rng)
    files = {
        "a": (root / "a.wav", speech_like(3.0, 16000, ann, seed=1)),
        "b": (root / "b.wav", speech_like(4.5, 16000, ann, seed=2)),
        "c": (root / "c.wav", speech_like(2.0, 16000, bo, seed=3)),
    }
    for path, wave in files.values():
        sf.write(path, wave, 16000)
    sf.write(root / "quiet.wav", (1e-5 * rng.standard_normal(32000)).astype(np.float32), 16000)
    return {key: path for key, (path, _) in files.items()} | {"quiet": root / "quiet.wav"}


def test_import_is_cheap_and_torch_free():
    code = (
        "import time; start = time.perf_counter()\n"
        "import speakerverify, sys\n"
        "elapsed = time.perf_counter() - start\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert callable(speakerverify.load_model)\n"
        "print(elapsed)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 0.2


def test_bundled_model_is_the_card(model):
    card = bundled_card()
    assert model.fingerprint == card["fingerprint"]
    assert model.embed_dim == card["embed_dim"] and model.name == card["name"]
    assert model.sample_rate == 16000


def test_embed_file_waveform_and_tensor_agree(model, audio):
    e = model.embed(audio["a"])
    assert e.shape == (model.embed_dim,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-6)
    wave, rate = sf.read(audio["a"], dtype="float32")
    np.testing.assert_allclose(model.embed(wave, sample_rate=rate), e, atol=1e-6)
    np.testing.assert_allclose(model.embed(torch.from_numpy(wave), sample_rate=rate), e, atol=1e-6)
    np.testing.assert_allclose(model.embed(str(audio["a"])), e, atol=0)


def test_a_waveform_without_its_rate_is_an_error_that_says_what_to_pass(model, audio):
    """Regression (issue 24): a 22.05 kHz waveform embedded as if it were 16 kHz, silently."""
    wave, _ = sf.read(audio["a"], dtype="float32")
    for call in (
        lambda: model.embed(wave),
        lambda: model.embed_batch([audio["a"], wave]),
        lambda: model.score(audio["a"], wave),
        lambda: model.verify(audio["a"], wave),
    ):
        with pytest.raises(AudioError) as raised:
            call()
        assert str(raised.value) == (
            "waveform: pass sample_rate= with a waveform (its rate in Hz, e.g. the rate "
            "soundfile.read returns); it is resampled to the model's 16000 Hz"
        )
    for bad in (0, -16000, 16000.5, "16k"):
        with pytest.raises(AudioError, match="sample_rate must be a positive whole number"):
            model.embed(wave, sample_rate=bad)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_a_waveform_with_its_rate_embeds_as_its_file(model, tmp_path, rate):
    path = tmp_path / f"voice_{rate}.wav"
    voice = random_speaker(np.random.default_rng(rate))
    sf.write(path, speech_like(3.0, rate, voice, seed=4), rate)
    from_file = model.embed(path)
    wave, read_rate = sf.read(path)  # float64, as soundfile returns by default
    assert read_rate == rate
    np.testing.assert_allclose(model.embed(wave, sample_rate=rate), from_file, atol=1e-5, rtol=0)
    batch = model.embed_batch([wave, path], sample_rate=rate)
    np.testing.assert_allclose(batch, np.stack([from_file, from_file]), atol=1e-5, rtol=0)
    assert model.score(wave, path, sample_rate=rate) == pytest.approx(1.0, abs=1e-5)
    pair = model.verify(path, wave, sample_rate=rate, threshold=0.5)
    assert pair.score == pytest.approx(1.0, abs=1e-5)
    narrowband = [w for w in pair.warnings if "upsampled" in w]
    assert len(narrowband) == (2 if rate < 16000 else 0)


def test_embed_and_verify_need_the_same_speech(model):
    """Regression (issue 24): `embed` needed 0.5 s of speech and `verify` 1 s, so a file that
    embedded could not be verified. One constant is the default of both, API and CLI."""
    from speakerverify.backend.speech_limits import MIN_SPEECH_SECONDS
    from speakerverify.cli.verify import verify as verify_command

    defaults = {
        name: inspect.signature(getattr(Model, name)).parameters["min_speech_seconds"].default
        for name in ("embed", "embed_batch", "score", "verify")
    }
    assert set(defaults.values()) == {MIN_SPEECH_SECONDS}
    option = next(p for p in verify_command.params if p.name == "min_speech")
    assert option.default == MIN_SPEECH_SECONDS
    short = speech_like(0.8, 16000, random_speaker(np.random.default_rng(2)), seed=9)
    with pytest.raises(VerificationError, match=f"need at least {MIN_SPEECH_SECONDS:g} s"):
        model.embed(short, sample_rate=16000)
    assert model.embed(short, sample_rate=16000, min_speech_seconds=0.5).shape == (model.embed_dim,)


def test_every_file_is_checked_before_any_is_embedded(model, audio, tmp_path, monkeypatch):
    embedder = model.speaker_model.embedder
    calls = []
    monkeypatch.setattr(embedder, "embed_waveform", lambda wave: calls.append(wave))
    monkeypatch.setattr(embedder, "embed_waveforms", lambda waves: calls.append(waves))
    (tmp_path / "empty.wav").write_bytes(b"")
    for call, message in [
        (lambda: model.embed_batch([audio["a"], tmp_path / "missing.wav"]), "file not found"),
        (lambda: model.score(audio["a"], tmp_path / "empty.wav"), "empty file (0 bytes)"),
        (
            lambda: model.verify(audio["a"], tmp_path, threshold=0.5),
            "is a directory, not an audio file",
        ),
    ]:
        with pytest.raises(AudioError) as raised:
            call()
        assert str(raised.value).endswith(message)
    assert calls == []


def test_embed_batch_equals_one_by_one(model, audio):
    files = [audio["a"], audio["b"], audio["c"]]  # different lengths: padded in one batch
    batch = model.embed_batch(files)
    single = np.stack([model.embed(f) for f in files])
    assert batch.shape == (3, model.embed_dim) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert model.embed_batch([]).shape == (0, model.embed_dim)


def test_embed_batch_really_batches(model, audio, monkeypatch):
    embedder = model.speaker_model.embedder
    calls = []
    original = embedder._forward
    monkeypatch.setattr(
        embedder,
        "_forward",
        lambda waves, lengths: calls.append(len(waves)) or original(waves, lengths),
    )
    model.embed_batch([audio["a"], audio["b"]])
    assert calls == [2]


def test_score_is_cosine_of_embeddings(model, audio):
    a, b = model.embed(audio["a"]), model.embed(audio["b"])
    assert model.score(audio["a"], audio["b"]) == pytest.approx(float(a @ b), abs=1e-6)


def test_verify_uses_bundled_calibration(model, audio):
    calibration = Calibration.load(bundled_calibration())
    result = model.verify(audio["a"], audio["b"])
    # the default operating point is the one stored with the calibration
    point = calibration.default_p_target or 0.5
    assert result.rule.source == "calibration" and result.rule.p_target == point
    assert result.rule.calibration_path == str(bundled_calibration())
    assert result.llr == pytest.approx(calibration.slope * result.score + calibration.offset)
    assert result.accepted == (result.llr >= np.log((1 - point) / point))
    strict = model.verify(audio["a"], audio["b"], p_target=0.01)
    assert strict.rule.threshold == pytest.approx(np.log(99))
    explicit = model.verify(audio["a"], audio["b"], threshold=result.score + 1e-3)
    assert explicit.rule.source == "threshold" and explicit.decision == "reject"


def test_verify_matches_the_cli(model, audio):
    cli = CliRunner().invoke(
        main,
        ["verify", str(audio["a"]), str(audio["c"]), "--json"],
        env={"SPEAKERVERIFY_MODEL": ""},
    )
    assert cli.exit_code in (0, 1), cli.output
    payload = json.loads(cli.stdout)
    api = model.verify(audio["a"], audio["c"]).to_json()
    assert api["score"] == pytest.approx(payload["score"], abs=1e-6)
    assert (api["decision"], api["threshold"]["source"]) == (
        payload["decision"],
        payload["threshold"]["source"],
    )


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("missing.wav", AudioError, "missing.wav: file not found"),
        (np.zeros((2, 16000), np.float32), AudioError, "expected a 1-D waveform (S,)"),
        (np.zeros(16000, np.int16), AudioError, "expected float samples"),
        (np.array([0.1, np.nan], np.float32), AudioError, "NaN or infinite"),
        (np.zeros(0, np.float32), AudioError, "empty"),
        (np.zeros(32000, np.float32), VerificationError, "no speech found"),
    ],
)
def test_bad_input_raises_project_errors(model, bad, error, message):
    with pytest.raises(error) as raised:
        model.embed(bad, sample_rate=16000)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_bad_input_message_is_the_clis(model, audio):
    with pytest.raises(VerificationError) as raised:
        model.verify(audio["quiet"], audio["a"])
    cli = CliRunner().invoke(
        main,
        ["verify", str(audio["quiet"]), str(audio["a"])],
        env={"SPEAKERVERIFY_MODEL": ""},
    )
    assert cli.exit_code == 2
    assert cli.stderr.splitlines()[-1] == f"error: {raised.value}"


def test_too_little_speech_and_bad_checkpoint(model, audio, tmp_path):
    with pytest.raises(VerificationError, match=r"only 2\.\d+ s of speech, need at least 5 s"):
        model.embed(audio["c"], min_speech_seconds=5)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        speakerverify.load_model(tmp_path / "nope.pt")
    with pytest.raises(TypeError):
        model.embed_batch(str(audio["a"]))


def test_readme_python_example_runs(bundled_model_files, audio, monkeypatch):
    """The README's Python API section is a doctest; run it on two files of one speaker."""
    monkeypatch.chdir(Path(audio["a"]).parent)
    start = time.perf_counter()
    result = doctest.testfile(
        str(README),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=True,
        verbose=False,
    )
    assert result.attempted >= 10, "the README lost its Python example"
    assert result.failed == 0, f"README doctest: {result.failed} failure(s)"
    assert time.perf_counter() - start < 60
