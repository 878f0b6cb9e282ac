"""Hostile checkpoints and calibrations (issue 22, items 2-4 and their tracebacks): a fingerprint
is computed from the weights, never read and trusted; the ONNX twin is the export of its
checkpoint; the checkpoint is checked the same under either engine; calibrations are checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from checkpoint_helpers import save_tiny_xvector
from click.testing import CliRunner

from speakerverify.backend import engine
from speakerverify.checkpoint import (
    CheckpointError,
    build_payload,
    load_checkpoint,
    load_encoder,
)
from speakerverify.checkpoint_rules import MODEL_NAMES, check_payload, read_checkpoint
from speakerverify.cli import main
from speakerverify.errors import SpeakerVerifyError
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import MODELS, build_model
from speakerverify.testing import random_speaker, speech_like

ARGS = {"embed_dim": 16, "channels": 32, "stats_channels": 64}


def run(args, backend="torch"):
    env = {engine.BACKEND_ENV: backend, "SPEAKERVERIFY_MODEL": ""}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def _save(path: Path, seed: int = 0) -> str:
    return save_tiny_xvector(path, ARGS, seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """`tiny.pt` with its ONNX twin `tiny.onnx`, and a voice."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from speakerverify.backend.export import export_onnx

    root = tmp_path_factory.mktemp("hostile_ckpt")
    fingerprint = _save(root / "tiny.pt", seed=3)
    export_onnx(root / "tiny.pt", root / "tiny.onnx")
    voice = root / "ann.wav"
    sf.write(
        voice, speech_like(3.0, 16000, random_speaker(np.random.default_rng(1)), seed=2), 16000
    )
    return root, fingerprint, voice


def _copy(tiny, directory: Path, twin: bool = True) -> Path:
    root, _, _ = tiny
    directory.mkdir(exist_ok=True)
    shutil.copy(root / "tiny.pt", directory / "m.pt")
    if twin:
        shutil.copy(root / "tiny.onnx", directory / "m.onnx")
    return directory / "m.pt"


def _rewrite(path: Path, change) -> None:
    """Load a checkpoint as plain data, change it, write it back: the stored fingerprint stays."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    change(payload)
    torch.save(payload, path)


# -- item 2: fingerprints are computed ---------------------------------------------------------


def test_changed_weights_under_a_kept_fingerprint_are_refused(tiny, tmp_path):
    path = _copy(tiny, tmp_path, twin=False)

    def flip(payload):
        payload["state_dict"]["frame_layers.0.conv.weight"][0, :4] *= -1.0

    _rewrite(path, flip)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "changed after it was written" in message
    assert tiny[1] in message and "\n" not in message


def test_noise_on_every_weight_is_refused_by_enroll_and_model_info(tiny, tmp_path):
    path = _copy(tiny, tmp_path, twin=False)

    def noise(payload):
        for value in payload["state_dict"].values():
            if value.is_floating_point():
                value += 1e-3 * torch.randn_like(value)

    _rewrite(path, noise)
    store = tmp_path / "s.db"
    assert_one_line_error(
        run(["enroll", "ann", tiny[2], "--model", path, "--store", store]), str(path), "refused"
    )
    assert not store.exists()
    assert_one_line_error(run(["model", "info", path]), str(path), "changed after")


def test_forged_checkpoint_is_refused_under_the_onnx_engine_too(tiny, tmp_path, monkeypatch):
    path = _copy(tiny, tmp_path)

    def flip(payload):
        payload["state_dict"]["segment.weight"][0, 0] += 1.0

    _rewrite(path, flip)
    for backend in ("auto", "onnx"):
        monkeypatch.setenv(engine.BACKEND_ENV, backend)
        with pytest.raises(CheckpointError, match="changed after it was written"):
            engine.load_command_model(path)


def test_fingerprint_is_computed_the_same_without_torch(tiny):
    root, fingerprint, _ = tiny
    payload, weights = read_checkpoint(root / "tiny.pt")
    assert check_payload(root / "tiny.pt", payload, weights) == fingerprint
    assert load_checkpoint(root / "tiny.pt")["fingerprint"] == fingerprint


def test_fingerprint_of_views_is_computed_the_same_without_torch(tmp_path):
    """Tensors that share a storage, start inside it or are not contiguous (a writer other than
    `save_checkpoint` may leave views): the torch-free reader slices or copies them as torch."""
    torch.manual_seed(0)
    state = build_model("xvector", **ARGS).state_dict()
    rows, columns = state["segment.weight"].shape
    shared = torch.randn(columns, rows + 8)  # one storage behind three weights
    state["segment.weight"] = shared[:, :rows].t()  # not contiguous
    state["segment.bias"] = shared[1, rows : rows + 8].repeat(2)[:rows].clone()
    state["embed_norm.running_mean"] = shared.reshape(-1)[5 : 5 + rows]  # offset into it
    state["embed_norm.running_var"] = shared[3:4, :rows].reshape(-1)
    assert not state["segment.weight"].is_contiguous()
    payload = build_payload(
        model_name="xvector", model_args=ARGS, state_dict=state, features=FbankConfig().to_dict()
    )
    torch.save(payload, tmp_path / "views.pt")
    expected = load_checkpoint(tmp_path / "views.pt")["fingerprint"]
    assert expected == payload["fingerprint"]
    assert check_payload(tmp_path / "views.pt", *read_checkpoint(tmp_path / "views.pt")) == expected


def test_bundled_model_keeps_its_fingerprint_and_fast_path(bundled_model_files, monkeypatch):
    from speakerverify.pretrained import bundled_card, bundled_checkpoint

    path = bundled_checkpoint()
    card = bundled_card()
    assert card["fingerprint"] == "3173e43d691455b4"
    assert check_payload(path, *read_checkpoint(path)) == card["fingerprint"]
    assert load_encoder(path).fingerprint == card["fingerprint"]
    calibration = json.loads(path.with_name(f"{path.stem}.calibration.json").read_text())
    assert calibration["model_fingerprint"] == card["fingerprint"]
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(engine.BACKEND_ENV, "onnx")
    model = engine.load_command_model(path)
    assert model.backend == "onnx" and model.fingerprint == card["fingerprint"]


def _tamper_twin(twin: Path, change) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(twin))
    for index, tensor in enumerate(proto.graph.initializer):
        if tensor.name == "frame_layers.0.conv.weight":
            array = change(numpy_helper.to_array(tensor))
            proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))
    twin.write_bytes(proto.SerializeToString())


def test_twin_with_random_weights_and_matching_metadata_is_refused(tiny, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    path = _copy(tiny, tmp_path)
    rng = np.random.default_rng(0)
    _tamper_twin(path.with_suffix(".onnx"), lambda a: rng.standard_normal(a.shape).astype(a.dtype))
    for backend in ("auto", "onnx"):
        monkeypatch.setenv(engine.BACKEND_ENV, backend)
        with pytest.raises(SpeakerVerifyError, match="changed after export"):
            engine.load_command_model(path)
    result = run(["enroll", "ann", tiny[2], "--model", path, "--store", tmp_path / "s.db"], "auto")
    assert_one_line_error(result, str(path.with_suffix(".onnx")), "re-export")


def test_twin_exported_without_a_graph_hash_is_not_used(tiny, tmp_path, monkeypatch):
    import onnx

    path = _copy(tiny, tmp_path)
    proto = onnx.load(str(path.with_suffix(".onnx")))
    kept = [p for p in proto.metadata_props if p.key != "graph_sha256"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path.with_suffix(".onnx").write_bytes(proto.SerializeToString())
    monkeypatch.setenv(engine.BACKEND_ENV, "auto")
    assert engine.load_command_model(path).backend == "torch"
    monkeypatch.setenv(engine.BACKEND_ENV, "onnx")
    with pytest.raises(engine.VerificationError, match="without a graph hash"):
        engine.load_command_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format_version=99), "format 99 is newer"),
        (lambda p: p.update(format_version="1"), "format_version '1'"),
        (lambda p: p.update(model_name="bogus"), "unknown model 'bogus'"),
    ],
    ids=["format_version_99", "format_version_string", "unknown_model_name"],
)
def test_checkpoint_is_checked_the_same_when_its_twin_serves(
    tiny, tmp_path, monkeypatch, change, message
):
    path = _copy(tiny, tmp_path)
    _rewrite(path, change)
    for backend in ("torch", "auto", "onnx"):
        monkeypatch.setenv(engine.BACKEND_ENV, backend)
        with pytest.raises(CheckpointError, match=message):
            engine.load_command_model(path)


def test_nan_weights_are_refused_under_either_engine(tiny, tmp_path, monkeypatch):
    path = _copy(tiny, tmp_path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload["state_dict"]
    state["segment.bias"][0] = float("nan")
    # a consistent file: the fingerprint is that of the NaN weights
    torch.save(build_payload(**{k: payload[k] for k in ("model_name", "model_args", "features")},
                             state_dict=state), path)  # fmt: skip
    for backend in ("torch", "auto", "onnx"):
        monkeypatch.setenv(engine.BACKEND_ENV, backend)
        with pytest.raises(CheckpointError, match=r"segment\.bias are not finite"):
            engine.load_command_model(path)


def test_model_names_known_without_torch_are_the_registry():
    assert sorted(MODEL_NAMES) == sorted(MODELS)


def test_fp16_weights_hash_as_their_float32_restoration(tmp_path):
    torch.manual_seed(0)
    model = build_model("xvector", **ARGS).eval()
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    restored = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    features = FbankConfig().to_dict()
    expected = build_payload(
        model_name="xvector", model_args=ARGS, state_dict=restored, features=features
    )["fingerprint"]
    payload = build_payload(
        model_name="xvector", model_args=ARGS, state_dict=half, features=features
    )
    assert payload["fingerprint"] == expected
    torch.save(payload, tmp_path / "half.pt")
    assert load_checkpoint(tmp_path / "half.pt")["fingerprint"] == expected
    assert check_payload(tmp_path / "half.pt", *read_checkpoint(tmp_path / "half.pt")) == expected


# -- item 3: calibrations are checked -----------------------------------------------------------

GOOD_CALIBRATION = {
    "slope": 10.0,
    "offset": -5.0,
    "model_fingerprint": "feedfacefeedface",
    "prior": 0.5,
    "num_targets": 3,
    "num_nontargets": 3,
    "norm": "none",
}


def _calibration_file(path: Path, **fields) -> Path:
    values = {**GOOD_CALIBRATION, **fields}
    path.write_text(json.dumps({k: v for k, v in values.items() if v != "DROP"}))
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"slope": 0.0}, "slope 0 is not positive"),
        ({"slope": -3.0}, "slope -3 is not positive"),
        ({"slope": float("nan")}, "'slope' is not finite"),
        ({"slope": float("inf")}, "'slope' is not finite"),
        ({"prior": 0.0}, "prior 0 is not in (0, 1)"),
        ({"prior": 1.5}, "prior 1.5 is not in (0, 1)"),
        ({"prior": None}, "'prior' must be a number"),
        ({"model_fingerprint": "DROP"}, "missing keys ['model_fingerprint']"),
        ({"model_fingerprint": None}, "no model_fingerprint"),
        ({"model_fingerprint": ""}, "no model_fingerprint"),
        ({"norm": "znorm"}, "unknown norm 'znorm'"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_unsafe_calibration_files_are_refused(tmp_path, fields, message):
    from speakerverify.backend.calibration import Calibration, CalibrationError

    path = _calibration_file(tmp_path / "c.json", **fields)
    with pytest.raises(CalibrationError) as caught:
        Calibration.load(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_good_calibration_file_still_loads(tmp_path):
    from speakerverify.backend.calibration import Calibration

    calibration = Calibration.load(_calibration_file(tmp_path / "c.json"))
    assert calibration.slope == 10.0 and calibration.model_fingerprint == "feedfacefeedface"


def test_an_unbound_calibration_is_never_written(tmp_path):
    from speakerverify.backend.calibration import Calibration, CalibrationError

    with pytest.raises(CalibrationError, match="no model_fingerprint"):
        Calibration(2.0, -1.0).save(tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


@pytest.fixture
def scores_of(tmp_path, tiny):
    """Write a trial list and scores for it; returns (trials, scores, model) paths."""

    def make(values):
        labels = [1, 0] * (len(values) // 2)
        (tmp_path / "trials.txt").write_text(
            "".join(f"e{i} t{i} {'target' if y else 'nontarget'}\n" for i, y in enumerate(labels))
        )
        lines = [f"e{i} t{i} {v!r}\n" for i, v in enumerate(values)]
        (tmp_path / "scores.txt").write_text("".join(lines))
        return tmp_path / "trials.txt", tmp_path / "scores.txt", tiny[0] / "tiny.pt"

    return make


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0.5] * 8, "cannot separate targets from non-targets"),
        ([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.15, 0.85], "do not separate targets"),  # reversed
        ([1e308, -1e308] * 4, "too large to calibrate"),
    ],
    ids=["constant_scores", "reversed_scores", "scores_1e308"],
)
def test_calibrate_refuses_scores_it_cannot_separate(scores_of, tmp_path, values, message):
    trials, scores, model = scores_of(values)
    out = tmp_path / "cal.json"
    result = run(["calibrate", trials, scores, "--model", model, "--out", out])
    assert_one_line_error(result, message)
    assert not out.exists()


def test_calibrate_without_a_model_is_refused(scores_of, tmp_path):
    trials, scores, _ = scores_of([0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.95, 0.4])
    out = tmp_path / "cal.json"
    assert_one_line_error(run(["calibrate", trials, scores, "--out", out]), "give --model CKPT")
    assert not out.exists()


def test_broken_sibling_calibration_does_not_block_an_explicit_threshold(tmp_path):
    from speaker_helpers import FP, SpectrumEmbedder

    from speakerverify.backend.speaker_model import SpeakerModel, VerificationError
    from speakerverify.speakers.decision import resolve_decision_rule

    model = SpeakerModel(SpectrumEmbedder(), FP, 16000, str(tmp_path / "model.pt"))
    sibling = tmp_path / "model.calibration.json"
    for broken in ('{"slope": 1.0, ', json.dumps({**GOOD_CALIBRATION, "slope": 0.0})):
        sibling.write_text(broken)
        rule = resolve_decision_rule(model, threshold=0.3)
        assert (rule.source, rule.threshold, rule.calibration) == ("threshold", 0.3, None)
        with pytest.raises(VerificationError, match=r"model\.calibration\.json"):
            resolve_decision_rule(model)  # no threshold: the calibration is needed, and broken
        with pytest.raises(VerificationError, match=r"model\.calibration\.json"):
            resolve_decision_rule(model, threshold=0.3, calibration_path=sibling)  # asked for


# -- item 4: the unsafe-pickle message ---------------------------------------------------------


class _CallsSystem:
    def __reduce__(self):
        import os

        return (os.system, ("echo PWNED",))


@pytest.mark.parametrize("protocol", [2, 4], ids=["protocol_2", "protocol_4"])
def test_pickle_calling_os_system_is_refused_without_suggesting_weights_only_false(
    tmp_path, protocol, capfd
):
    path = tmp_path / "evil.pt"
    torch.save({"x": _CallsSystem()}, path, pickle_protocol=protocol)
    result = run(["model", "info", path])
    assert_one_line_error(result, f"{path}: refused: it contains pickled code (posix.system)")
    assert "weights_only" not in result.output.lower() and "PWNED" not in result.output
    assert "UserWarning" not in capfd.readouterr().err
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert "weights_only" not in str(caught.value).lower()


def test_pickled_code_is_refused_under_the_onnx_engine_too(tiny, tmp_path, monkeypatch):
    path = _copy(tiny, tmp_path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["config"] = {"hook": _CallsSystem()}
    torch.save(payload, path)
    monkeypatch.setenv(engine.BACKEND_ENV, "auto")
    with pytest.raises(CheckpointError, match="refused: it contains pickled code"):
        engine.load_command_model(path)


# -- the API's device ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("bogus", "cannot load on device 'bogus'"),
        ("meta", "use cpu, cuda or mps"),
        ("cuda", "CUDA is not available"),
    ],
)
def test_load_model_on_a_device_this_machine_lacks(tiny, device, message):
    import speakerverify

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CheckpointError) as caught:
        speakerverify.load_model(tiny[0] / "tiny.pt", device=device)
    assert str(tiny[0] / "tiny.pt") in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)
