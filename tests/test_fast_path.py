"""The torch-free fast path of enroll/verify/identify: an exported ONNX twin next to the
checkpoint, the numpy front-end and VAD, onnxruntime. Same embeddings (1e-4), scores, decisions
and errors as the torch path, and torch is never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from checkpoint_helpers import save_tiny_xvector
from click.testing import CliRunner

from speakerverify.backend import engine
from speakerverify.backend.embedder import Embedder
from speakerverify.backend.export import export_onnx
from speakerverify.backend.onnx_embedder import OnnxEmbedder
from speakerverify.backend.speaker_model import embed_utterance, load_speaker_model
from speakerverify.checkpoint import load_checkpoint
from speakerverify.cli import main
from speakerverify.testing import random_speaker, speech_like, write_voices

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

ARGS = {"embed_dim": 24, "channels": 32, "stats_channels": 64}
RATES = (8000, 22050, 44100, 48000)  # other than the model's 16 kHz: resampled on both paths


def _save_tiny(path: Path, seed: int = 0) -> str:
    return save_tiny_xvector(path, ARGS, seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint `tiny.pt` with its ONNX twin `tiny.onnx`, and some voices."""
    root = tmp_path_factory.mktemp("fast")
    checkpoint = root / "tiny.pt"
    fingerprint = _save_tiny(checkpoint, seed=3)
    export_onnx(checkpoint, root / "tiny.onnx")
    rng = np.random.default_rng(5)
    files, speakers = write_voices(root, ["ann", "bo"], rng, per_speaker=2, seconds=4.0)
    for rate in RATES:  # the rates phones, desktops and espeak-ng record at
        files[f"ann_{rate}"] = root / f"ann_{rate}.wav"
        sf.write(files[f"ann_{rate}"], speech_like(3.0, rate, speakers["ann"], seed=7), rate)
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
    files["missing"] = root / "missing.wav"
    files["directory"] = root
    return checkpoint, fingerprint, files


def _load(checkpoint, monkeypatch, backend):
    monkeypatch.setenv(engine.BACKEND_ENV, backend)
    return engine.load_command_model(checkpoint)


def test_checkpoint_fingerprint_is_read_without_torch(tiny, tmp_path):
    checkpoint, fingerprint, _ = tiny
    assert engine.checkpoint_fingerprint(checkpoint) == fingerprint
    assert load_checkpoint(checkpoint)["fingerprint"] == fingerprint
    pickled = tmp_path / "evil.pt"
    torch.save({"fingerprint": "x", "model": Path("/tmp")}, pickled)  # refused, never built
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for path in (pickled, text, tmp_path / "none.pt", tmp_path):
        assert engine.checkpoint_fingerprint(path) is None


def test_onnx_embedding_equals_torch(tiny, monkeypatch):
    checkpoint, fingerprint, files = tiny
    fast = _load(checkpoint, monkeypatch, "auto")
    slow = load_speaker_model(checkpoint)
    assert fast.backend == "onnx" and fast.fingerprint == slow.fingerprint == fingerprint
    assert fast.path == str(checkpoint)
    # Other rates are resampled by the same soxr call on both paths, without torch on the fast one.
    for key in ("ann0", "bo1", *(f"ann_{rate}" for rate in RATES)):
        got, expected = embed_utterance(fast, files[key]), embed_utterance(slow, files[key])
        assert got.speech_seconds == expected.speech_seconds and got.warnings == expected.warnings
        np.testing.assert_allclose(got.embedding, expected.embedding, atol=1e-4, rtol=0)


def test_long_input_windows_equal_embedder(tiny):
    checkpoint, _, files = tiny
    fast = OnnxEmbedder(checkpoint.with_suffix(".onnx"), max_seconds=1.5, window_seconds=1.0)
    slow = Embedder.from_checkpoint(checkpoint, max_seconds=1.5, window_seconds=1.0)
    for num_samples in (100, 24000, 24001, 64000, 123457):
        assert fast.windows(num_samples) == slow.windows(num_samples)
    wave = sf.read(files["ann1"], dtype="float32")[0]
    np.testing.assert_allclose(
        fast.embed_waveform(wave), slow.embed_waveform(wave), atol=1e-4, rtol=0
    )


def test_onnx_embedder_refuses_windows_the_torch_embedder_refuses(tiny):
    # The window rule was copied into OnnxEmbedder without its check: a hop longer than the
    # window left gaps in a long input without a word.
    checkpoint, _, _ = tiny
    for options in ({"window_seconds": 2.0, "hop_seconds": 3.0}, {"max_seconds": 1.0,
                    "window_seconds": 2.0}):  # fmt: skip
        with pytest.raises(ValueError, match="hop_seconds <= window_seconds <= max_seconds"):
            OnnxEmbedder(checkpoint.with_suffix(".onnx"), **options)
        with pytest.raises(ValueError, match="hop_seconds <= window_seconds <= max_seconds"):
            Embedder.from_checkpoint(checkpoint, **options)


def _run(args, backend, **env):
    env = {engine.BACKEND_ENV: backend, "SPEAKERVERIFY_MODEL": "", **env}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_cli_scores_and_decisions_equal_torch(tiny, tmp_path):
    checkpoint, _, files = tiny
    store = tmp_path / "s.db"
    common = ["--model", checkpoint, "--store", store]
    enrolled = _run(["enroll", "ann", files["ann0"], "--json", *common], "onnx")
    assert enrolled.exit_code == 0, enrolled.output
    scores = {}
    for backend in ("onnx", "torch"):
        for test in ("ann1", "bo0"):
            out = _run(
                ["verify", "ann", files[test], "--threshold", "0", "--json", *common], backend
            )
            scores[backend, test] = json.loads(out.stdout)["score"]
        pair = _run(["verify", files["bo0"], files["bo1"], "--threshold", "0", "--json",
                     "--model", checkpoint], backend)  # fmt: skip
        scores[backend, "pair"] = json.loads(pair.stdout)["score"]
    for key in ("ann1", "bo0", "pair"):
        assert abs(scores["onnx", key] - scores["torch", key]) < 1e-4, scores
    # A threshold between the target and the non-target score: both engines decide alike.
    threshold = (scores["torch", "ann1"] + scores["torch", "bo0"]) / 2
    codes = {
        (backend, test): _run(
            ["verify", "ann", files[test], "--threshold", threshold, *common], backend
        ).exit_code
        for backend in ("onnx", "torch")
        for test in ("ann1", "bo0")
    }
    assert {codes["torch", "ann1"], codes["torch", "bo0"]} == {0, 1}  # one accept, one reject
    assert all(codes["onnx", test] == codes["torch", test] for test in ("ann1", "bo0")), codes
    identify = {
        backend: json.loads(
            _run(["identify", files["ann1"], "--threshold", "0", "--json", *common], backend).stdout
        )["candidates"][0]
        for backend in ("onnx", "torch")
    }
    assert identify["onnx"]["name"] == identify["torch"]["name"] == "ann"
    assert abs(identify["onnx"]["score"] - identify["torch"]["score"]) < 1e-4


@pytest.mark.parametrize(
    "key", ["missing", "empty", "text", "truncated", "quiet", "short", "directory"]
)
def test_bad_input_gives_the_same_one_line_errors(tiny, tmp_path, key):
    checkpoint, _, files = tiny
    store = tmp_path / "s.db"
    common = ["--model", checkpoint, "--store", store]
    assert _run(["enroll", "ann", files["ann0"], *common], "torch").exit_code == 0
    commands = [
        ["enroll", "ann", files[key]],
        ["verify", "ann", files[key], "--threshold", "0"],
        ["identify", files[key], "--threshold", "0"],
    ]
    for command in commands:
        results = [_run([*command, *common], backend) for backend in ("onnx", "torch")]
        assert results[0].exit_code == results[1].exit_code == 2, results[0].output
        assert results[0].stderr == results[1].stderr, (results[0].stderr, results[1].stderr)
        assert results[0].stderr.startswith("error: ") and results[0].stderr.count("\n") == 1


def test_selection_falls_back_to_torch_quietly(tiny, tmp_path, monkeypatch, caplog):
    checkpoint, _, _ = tiny
    alone = tmp_path / "alone.pt"
    alone.write_bytes(checkpoint.read_bytes())
    assert _load(alone, monkeypatch, "auto").backend == "torch"  # no twin
    stale = tmp_path / "stale.pt"
    _save_tiny(stale, seed=4)
    (tmp_path / "stale.onnx").write_bytes(checkpoint.with_suffix(".onnx").read_bytes())
    assert _load(stale, monkeypatch, "auto").backend == "torch"  # twin of another model
    broken = tmp_path / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes())
    (tmp_path / "broken.onnx").write_text("not onnx")
    assert _load(broken, monkeypatch, "auto").backend == "torch"
    assert _load(checkpoint, monkeypatch, "torch").backend == "torch"  # forced
    monkeypatch.setattr(engine, "onnxruntime_available", lambda: False)
    assert _load(checkpoint, monkeypatch, "auto").backend == "torch"  # not installed
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_forced_onnx_or_a_bad_backend_is_a_one_line_error(tiny, tmp_path):
    checkpoint, _, files = tiny
    stale = tmp_path / "stale.pt"
    _save_tiny(stale, seed=4)
    (tmp_path / "stale.onnx").write_bytes(checkpoint.with_suffix(".onnx").read_bytes())
    alone = tmp_path / "alone.pt"
    alone.write_bytes(checkpoint.read_bytes())
    cases = [(stale, "onnx", "re-export it"), (alone, "onnx", "no ONNX twin"),
             (checkpoint, "gpu", "valid are auto, torch, onnx")]  # fmt: skip
    for model, backend, problem in cases:
        result = _run(["verify", files["ann0"], files["ann1"], "--threshold", "0",
                       "--model", model], backend)  # fmt: skip
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith("error: ") and problem in result.stderr, result.stderr


WRAPPER = """
import sys
from speakerverify.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    code = done.code
assert "torch" not in sys.modules, "torch was imported"
print("exit", code)
"""


def test_onnx_path_never_imports_torch(tiny, tmp_path):
    checkpoint, _, files = tiny
    store = tmp_path / "s.db"
    common = ["--model", str(checkpoint), "--store", str(store)]
    commands = [
        ["enroll", "ann", str(files["ann0"]), *common],
        ["verify", "ann", str(files["ann1"]), "--threshold", "0", *common],
        ["verify", str(files["ann0"]), str(files["bo0"]), "--threshold", "0", *common],
        ["identify", str(files["bo0"]), "--threshold", "0", *common],
        *(
            ["verify", "ann", str(files[f"ann_{rate}"]), "--threshold", "0", *common]
            for rate in RATES  # other rates stay on the fast path
        ),
        ["verify", "ann", str(files["quiet"]), "--threshold", "0", *common],  # an input error
    ]
    env = {**os.environ, engine.BACKEND_ENV: "auto", "SPEAKERVERIFY_MODEL": ""}
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True,
            env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] in ("exit 0", "exit 1", "exit 2", "exit None")


BLAS_THREADS = """
import sys
from speakerverify.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
import threadpoolctl
pools = threadpoolctl.threadpool_info()
print(sorted({pool["num_threads"] for pool in pools if pool["user_api"] == "blas"}))
"""


def test_speaker_commands_give_numpy_one_blas_thread(tiny):
    """Regression: OpenBLAS started a spinning thread per core for one utterance (0.04-0.06 s
    of CPU on each cold verify); OMP_NUM_THREADS still sets it."""
    pytest.importorskip("threadpoolctl")
    checkpoint, _, files = tiny
    command = ["verify", str(files["ann0"]), str(files["ann1"]), "--threshold", "0"]
    command += ["--model", str(checkpoint)]
    env = {k: v for k, v in os.environ.items() if "NUM_THREADS" not in k}
    for omp, expected in ((None, "[1]"), ("2", "[2]")):
        proc = subprocess.run(
            [sys.executable, "-c", BLAS_THREADS, *command], capture_output=True, text=True,
            env={**env, "OMP_NUM_THREADS": omp} if omp else env, timeout=120,
        )  # fmt: skip
        assert proc.stdout.strip().splitlines()[-1] == expected, proc.stderr


COLD_IMPORTS = """
import sys
from speakerverify.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
unused = ("torch", "statistics", "concurrent.futures", "speakerverify.backend.embedding_dir")
print(sorted(m for m in unused if m in sys.modules))
"""


def test_fast_verify_imports_only_what_it_uses(tiny, tmp_path):
    """Regression: cold verify imported embedding dirs, thread pools and `statistics` (with
    decimal and fractions) that only scoring and adapt use: ~0.007 s of CPU."""
    checkpoint, _, files = tiny
    store = tmp_path / "s.db"
    common = ["--model", str(checkpoint), "--store", str(store)]
    assert CliRunner().invoke(main, ["enroll", "ann", str(files["ann0"]), *common]).exit_code == 0
    proc = subprocess.run(
        [sys.executable, "-c", COLD_IMPORTS, "verify", "ann", str(files["ann1"]), "--threshold",
         "0", *common], capture_output=True, text=True, timeout=120,
        env={**os.environ, engine.BACKEND_ENV: "onnx"},
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


def test_help_imports_nothing_new():
    code = (
        "import sys\nfrom speakerverify.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'onnxruntime', 'speakerverify.backend.engine') "
        "if m in sys.modules]\nassert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_too_short_input_is_a_value_error_naming_the_cause(tiny):
    checkpoint, _, _ = tiny
    fast = OnnxEmbedder(checkpoint.with_suffix(".onnx"))
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    with pytest.raises(ValueError, match="shorter than a frame"):
        fast.embed_waveform(noise[:100])
    with pytest.raises(ValueError, match="15-frame context"):
        fast.embed_waveform(noise[:1000])


def test_a_non_finite_onnx_embedding_is_an_error(tiny, monkeypatch):
    checkpoint, _, _ = tiny
    fast = OnnxEmbedder(checkpoint.with_suffix(".onnx"))
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    assert np.isfinite(fast.embed_waveform(noise)).all()
    run = fast.session.run
    monkeypatch.setattr(
        fast, "session", SimpleNamespace(run=lambda *a: [o * np.inf for o in run(*a)])
    )
    with pytest.raises(ValueError, match="non-finite embedding"):
        fast.embed_waveform(noise)
