"""Tests for the bundled model (speakerverify.pretrained), its packaging script, the CLI's use of
it by default, and `speakerverify model info`. The bundled-file checks read whatever files are
in speakerverify/pretrained, so they hold for the stand-in and for the real model alike."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import speakerverify.pretrained as pretrained
from speakerverify.backend.calibration import Calibration
from speakerverify.checkpoint import (
    load_checkpoint,
    load_encoder,
    model_fingerprint,
    save_checkpoint,
)
from speakerverify.cli import main
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.testing import random_speaker, speech_like

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_MODEL = ROOT / "recipes" / "mini" / "local" / "package_model.py"
CARD_KEYS = {
    "name", "architecture", "model_args", "embed_dim", "num_parameters", "fingerprint",
    "frontend", "training", "date", "commit", "metrics", "limits",
}  # fmt: skip


def run(args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundled_voices")
    rng = np.random.default_rng(5)
    speaker = random_speaker(rng)
    for i in range(3):
        sf.write(root / f"ann{i}.wav", speech_like(3.0, 16000, speaker, seed=i), 16000)
    return root


# -- the bundled files -----------------------------------------------------------------------


def test_card_describes_the_bundled_checkpoint(bundled_model_files):
    card = pretrained.bundled_card()
    assert set(card) >= CARD_KEYS
    payload = load_checkpoint(pretrained.bundled_checkpoint())
    restored = {
        k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
    }
    assert card["fingerprint"] == payload["fingerprint"]
    assert card["fingerprint"] == model_fingerprint(
        restored, payload["features"], payload["model_args"]
    )
    loaded = load_encoder(pretrained.bundled_checkpoint())
    assert card["embed_dim"] == loaded.embed_dim
    assert card["num_parameters"] == sum(p.numel() for p in loaded.encoder.parameters())
    assert card["architecture"] == payload["model_name"] and card["frontend"] == payload["features"]
    assert card["name"] == pretrained.NAME and "synthetic" in card["limits"].lower()
    assert "espeak" in json.dumps(card["training"]).lower()


def test_bundled_calibration_is_bound_to_the_bundled_model(bundled_model_files):
    calibration = Calibration.load(pretrained.bundled_calibration())
    assert calibration.model_fingerprint == pretrained.bundled_card()["fingerprint"]
    assert calibration.slope > 0 and calibration.norm == "none"


def test_pyproject_ships_the_model_files():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]["speakerverify.pretrained"]
    assert {"*.pt", "*.onnx", "*.json"} <= set(data)


def test_wheel_contains_the_bundled_model(bundled_model_files, tmp_path):
    """A non-editable install gets the files: build the wheel (from a copy, so no build/ litter
    in the tree) and look inside."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "speakerverify", source / "speakerverify",
                    ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("speakerverify-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for suffix in (".pt", ".onnx", ".calibration.json", ".card.json"):
        assert f"speakerverify/pretrained/{pretrained.NAME}{suffix}" in names


# -- packaging -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("to_package")
    torch.manual_seed(1)
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    checkpoint = root / "final.pt"
    fingerprint = save_checkpoint(
        checkpoint,
        model_name="xvector",
        model_args=args,
        model=build_model("xvector", **args).eval(),
        features=FbankConfig().to_dict(),
        train_state={"step": 7},
    )
    calibration = root / "final.calibration.json"
    Calibration(3.0, -1.0, model_fingerprint=fingerprint, num_targets=5, num_nontargets=9).save(
        calibration
    )
    metrics = root / "metrics.json"
    metrics.write_text(json.dumps({"eer": 0.25, "trials": "test"}))
    return checkpoint, calibration, metrics, fingerprint


def _package(trained, out_dir, *extra):
    checkpoint, calibration, metrics, _ = trained
    return subprocess.run(
        [sys.executable, str(PACKAGE_MODEL), str(checkpoint), str(calibration), str(out_dir),
         "--name", "demo", "--metrics", str(metrics), "--training-steps", "228", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_package_model_writes_checkpoint_calibration_and_card(trained, tmp_path):
    proc = _package(trained, tmp_path)
    assert proc.returncode == 0, proc.stderr
    _, _, _, fingerprint = trained
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.calibration.json", "demo.card.json", "demo.onnx", "demo.pt",
    ]  # fmt: skip
    card = json.loads((tmp_path / "demo.card.json").read_text())
    assert set(card) >= CARD_KEYS and card["fingerprint"] == fingerprint
    assert card["num_parameters"] == sum(
        p.numel() for p in load_encoder(tmp_path / "demo.pt").encoder.parameters()
    )
    assert card["embed_dim"] == 16 and card["metrics"] == {"eer": 0.25, "trials": "test"}
    assert card["training"]["steps"] == 228
    payload = load_checkpoint(tmp_path / "demo.pt")
    assert payload["train_state"] is None and payload["fingerprint"] == fingerprint
    assert Calibration.load(tmp_path / "demo.calibration.json").model_fingerprint == fingerprint
    assert (tmp_path / "demo.pt").stat().st_mode & 0o044 == 0o044  # readable once installed
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(tmp_path / "demo.onnx"))
    assert session.get_modelmeta().custom_metadata_map["fingerprint"] == fingerprint
    assert (tmp_path / "demo.onnx").stat().st_mode & 0o044 == 0o044


def test_package_model_fp16_loads_as_float32(trained, tmp_path):
    proc = _package(trained, tmp_path, "--fp16", "--no-onnx")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "demo.onnx").exists()
    payload = load_checkpoint(tmp_path / "demo.pt")
    assert payload["state_dict"]["segment.weight"].dtype == torch.float16
    loaded = load_encoder(tmp_path / "demo.pt")
    assert next(loaded.encoder.parameters()).dtype == torch.float32
    card = json.loads((tmp_path / "demo.card.json").read_text())
    restored = {
        k: v.float() for k, v in loaded.encoder.state_dict().items() if v.is_floating_point()
    }
    restored |= {k: v for k, v in loaded.encoder.state_dict().items() if not v.is_floating_point()}
    assert (
        card["fingerprint"]
        == loaded.fingerprint
        == model_fingerprint(restored, payload["features"], payload["model_args"])
    )
    assert (
        Calibration.load(tmp_path / "demo.calibration.json").model_fingerprint
        == card["fingerprint"]
    )
    full = load_encoder(trained[0])
    feats = torch.randn(1, 300, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(feats), full.encoder(feats), atol=5e-2, rtol=1e-2)


def test_package_model_refuses_a_foreign_calibration(trained, tmp_path):
    checkpoint, _, _, _ = trained
    foreign = tmp_path / "foreign.json"
    Calibration(3.0, -1.0, model_fingerprint="0123456789abcdef").save(foreign)
    proc = subprocess.run(
        [sys.executable, str(PACKAGE_MODEL), str(checkpoint), str(foreign), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "calibration was fitted for model 0123456789abcdef" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_package_model_rerun_on_the_bundled_model_gives_the_same_files(
    bundled_model_files, tmp_path
):
    """The packaging writes through `checkpoint.derive_payload`/`write_checkpoint`; run on the
    bundled files themselves it changes no byte of the checkpoint (weights, keys, records,
    versions) or the calibration."""
    checkpoint, calibration = pretrained.bundled_checkpoint(), pretrained.bundled_calibration()
    proc = subprocess.run(
        [sys.executable, str(PACKAGE_MODEL), str(checkpoint), str(calibration), str(tmp_path),
         "--name", pretrained.NAME, "--no-onnx"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / checkpoint.name).read_bytes() == checkpoint.read_bytes()
    assert (tmp_path / calibration.name).read_bytes() == calibration.read_bytes()


# -- the CLI uses it by default --------------------------------------------------------------


def test_verify_and_enroll_default_to_the_bundled_model(bundled_model_files, voices, tmp_path):
    card = pretrained.bundled_card()
    note = f"using the bundled model {card['name']} (fingerprint {card['fingerprint']})"
    env = {"SPEAKERVERIFY_MODEL": "", "SPEAKERVERIFY_STORE": str(tmp_path / "s.db")}
    pair = run(["verify", voices / "ann0.wav", voices / "ann1.wav", "--json"], env=env)
    assert pair.exit_code in (0, 1), pair.output
    assert pair.stderr.splitlines() == [note]
    payload = json.loads(pair.stdout)  # stdout is exactly the JSON document
    assert payload["model_fingerprint"] == card["fingerprint"]
    assert payload["threshold"]["calibration"] == str(pretrained.bundled_calibration())
    enrolled = run(["enroll", "ann", voices / "ann0.wav", voices / "ann1.wav", "--json"], env=env)
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["model_fingerprint"] == card["fingerprint"]
    named = run(["verify", "ann", voices / "ann2.wav"], env=env)
    assert named.exit_code in (0, 1) and named.stderr == note + "\n"
    assert f"calibration {pretrained.bundled_calibration()}" in named.stdout


def test_missing_bundled_model_is_one_line(voices, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "_directory", lambda: tmp_path)
    for argv in (["verify", voices / "ann0.wav", voices / "ann1.wav"], ["model", "info"]):
        result = run(argv, env={"SPEAKERVERIFY_MODEL": ""})
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == (
            f"error: {tmp_path / 'xvector_synth.pt'}: the bundled model is missing (broken "
            "install?); reinstall speakerverify or pass --model CKPT\n"
        )


def test_embed_command_defaults_to_the_bundled_model(bundled_model_files, voices, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"u{i} {voices}/ann{i}.wav\n" for i in range(3)))
    (data / "utt2spk").write_text("".join(f"u{i} ann\n" for i in range(3)))
    result = run(["embed", data, tmp_path / "emb"], env={"SPEAKERVERIFY_MODEL": ""})
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "emb" / "meta.json").read_text())
    assert meta["model_fingerprint"] == pretrained.bundled_card()["fingerprint"]


# -- model info ------------------------------------------------------------------------------


def test_model_info_bundled(bundled_model_files, tmp_path):
    card = pretrained.bundled_card()
    text = run(["model", "info"], env={"SPEAKERVERIFY_MODEL": ""})
    assert text.exit_code == 0, text.output
    assert f"fingerprint:   {card['fingerprint']}" in text.stdout
    assert f"calibration:   {pretrained.bundled_calibration()}" in text.stdout
    assert f"{card['num_parameters']:,}" in text.stdout and "limits:" in text.stdout
    # one aligned line of metrics, not one row per key (which widened every label)
    assert f"test metrics:  EER {card['metrics']['eer']:.2%}" in text.stdout
    assert "threshold" not in text.stdout and "None" not in text.stdout
    # a fusion: each member's training from its own config (members 1 and 3 kept their frame
    # layers at their initialisation, members 2 and 4 were trained whole; two seeds)
    configs = load_checkpoint(pretrained.bundled_checkpoint())["member_configs"]
    assert [c["train"]["freeze"] for c in configs] == [["frame_layers"], []] * 2
    assert [c["train"]["seed"] for c in configs] == [0, 0, 1, 1]
    assert "member 1: 20 epochs, triplet loss," in text.stdout
    assert "frame_layers frozen; member 2: 6 epochs, speed-perturbed speakers, triplet loss," in (
        text.stdout
    )
    assert "frame_layers frozen; member 4: 6 epochs, speed-perturbed speakers, triplet loss," in (
        text.stdout
    )
    # Regression (issue 24): it said "batch_hard mining"; the config warms up with semi-hard.
    # (stored configs spell the loss either way: flat keys or name + args)
    from speakerverify.config import LossConfig

    for config in configs:
        loss = LossConfig.from_flat(config["loss"])
        assert (loss.mining_warmup, loss.mining_warmup_epochs, loss.args["mining"]) == (
            "semi_hard",
            1,
            "batch_hard",
        )
    assert text.stdout.count("triplet loss, semi-hard mining for 1 epoch, then batch-hard") == 4
    as_json = json.loads(run(["model", "info", "--json"], env={"SPEAKERVERIFY_MODEL": ""}).stdout)
    assert as_json["fingerprint"] == card["fingerprint"] and as_json["card"] == card
    assert as_json["embed_dim"] == card["embed_dim"] and as_json["name"] == card["name"]


@pytest.mark.parametrize(
    ("frontend", "line"),
    [
        (
            {"num_mel_bins": 80, "sample_rate": 16000, "cmn": True},
            "80 log-mel bins at 16000 Hz, CMN on",
        ),
        (
            {"num_mel_bins": 40, "sample_rate": 8000, "cmn": False},
            "40 log-mel bins at 8000 Hz, CMN off",
        ),
        (
            {"num_mel_bins": 80, "sample_rate": 16000, "cmn": True, "num_ceps": 30, "cmn_ceps": 3},
            "30 cepstra of 80 log-mel bins at 16000 Hz, CMN on the first 3 cepstra",
        ),
    ],
)
def test_model_info_describes_the_front_end(frontend, line):
    from speakerverify.cli.model import _frontend_line

    assert _frontend_line(frontend) == line


@pytest.mark.parametrize(
    ("training", "text"),
    [
        ({"mining": "batch_hard", "mining_warmup": None, "mining_warmup_epochs": 0},
         "batch-hard mining"),
        ({"mining": "batch_hard", "mining_warmup": "semi_hard", "mining_warmup_epochs": 3},
         "semi-hard mining for 3 epochs, then batch-hard"),
        ({"mining": "semi_hard", "mining_warmup": "semi_hard", "mining_warmup_epochs": 2},
         "semi-hard mining"),
        ({"mining": None}, ""),
    ],
)  # fmt: skip
def test_model_info_says_which_mining_ran_when(training, text):
    from speakerverify.cli.model import _mining_text

    assert _mining_text(training) == text


def test_model_info_of_a_plain_checkpoint(trained, tmp_path):
    checkpoint, _, _, fingerprint = trained
    result = run(["model", "info", checkpoint, "--json"])
    info = json.loads(result.stdout)
    assert info["fingerprint"] == fingerprint and info["card"] is None
    assert info["embed_dim"] == 16 and info["architecture"] == "xvector"
    assert info["calibration"] == str(checkpoint.with_name("final.calibration.json"))
    assert info["training"]["step"] == 7 and info["versions"]["torch"] == torch.__version__
    text = run(["model", "info", checkpoint]).stdout
    assert "saved:" in text and "calibration:   " in text and "frozen" not in text
    assert info["training"]["frozen"] == [] and info["training"]["speed_perturb"] is False
    assert "speed-perturbed" not in text


def test_model_info_names_speed_perturbed_members():
    from speakerverify.cli.model import _training_line
    from speakerverify.model_card import training_summary

    configs = [
        {"data": {"train_dir": "data/train"}, "train": {"epochs": 20}},
        {"data": {"train_dir": "data/train", "speed_perturb": True}, "train": {"epochs": 6}},
    ]
    summary = training_summary({"member_configs": configs})
    assert [m["speed_perturb"] for m in summary["members"]] == [False, True]
    line = _training_line(summary)
    assert "member 2: 6 epochs, speed-perturbed speakers," in line and line.count("speed") == 1


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_model_info_bad_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    result = run(["model", "info", path])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: ") and "Traceback" not in result.output


def test_readme_bundled_model_table_matches_the_card(bundled_model_files):
    """Once the README's table is filled in, its size and fingerprint must be the card's."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bundled model", 1)[1].split("\n## ", 1)[0]
    assert "synthetic" in section.lower() and "Limits" in section
    if "TBD by lead" in section:
        pytest.skip("README bundled-model table not filled in yet")
    card = pretrained.bundled_card()
    assert card["fingerprint"] in section
    assert f"{card['num_parameters']:,}" in section and str(card["embed_dim"]) in section
