"""Experiment configs: defaults, YAML round trip, overrides, and one-line errors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from speakerverify.config import ConfigError
from speakerverify.training.experiment_config import (
    Config,
    apply_overrides,
    load_config,
    save_config,
)
from speakerverify.training.schedules import mining_at

MINIMAL = {"data": {"train_dir": "data/train"}}


def write(tmp_path, payload, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(payload) if not isinstance(payload, str) else payload)
    return path


def test_defaults_and_sections(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.data.train_dir == "data/train"
    assert cfg.model.name == "xvector"
    assert cfg.loss.name == "triplet" and mining_at(cfg.loss, 0) == "semi_hard"
    assert cfg.optim.name == "adam" and cfg.optim.scheduler == "cosine"
    assert cfg.train.device == "auto" and cfg.train.amp == "none"
    assert set(cfg.to_dict()) == {"data", "features", "augment", "model", "loss", "optim", "train"}


def test_round_trip_through_yaml(tmp_path):
    raw = {
        "data": {
            "train_dir": "d",
            "num_speakers": 8,
            "num_utts": 3,
            "valid_trials": "t",
            "valid_dir": "v",
        },
        "features": {"num_mel_bins": 40, "spec_augment": True},
        "model": {"name": "xvector", "args": {"embed_dim": 64}},
        "loss": {
            "margin": 0.3,
            "mining": "batch_hard",
            "mining_warmup": "semi_hard",
            "mining_warmup_epochs": 2,
            "margin_start": 0.1,
            "margin_warmup_epochs": 1.5,
        },
        "optim": {"name": "sgd", "lr": 0.1, "warmup_epochs": 0.5, "scheduler": "exponential"},
        "train": {"epochs": 3, "seed": 7, "amp": "bf16", "max_steps": 10},
    }
    cfg = load_config(write(tmp_path, raw))
    out = tmp_path / "exp" / "config.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert again.model.args["embed_dim"] == 64
    assert cfg.features.fbank_dict()["num_mel_bins"] == 40
    assert "spec_augment" not in cfg.features.fbank_dict()


def test_frozen(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.model.args["embed_dim"] = 3  # read-only mapping


def test_overrides_are_yaml_typed(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(
        path,
        [
            "optim.lr=0.01",
            "loss.margin=0.3",
            "train.max_steps=null",
            "data.speed_perturb=true",
            "model.args.embed_dim=96",
        ],
    )
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.loss.args["margin"] == 0.3
    assert cfg.train.max_steps is None
    assert cfg.data.speed_perturb is True
    assert cfg.model.args == {"embed_dim": 96}
    replaced = cfg.replace(["train.epochs=2"])
    assert replaced.train.epochs == 2 and cfg.train.epochs == 10


def test_apply_overrides_does_not_mutate_input():
    raw = {"optim": {"lr": 0.1}}
    out = apply_overrides(raw, ["optim.lr=0.5"])
    assert raw == {"optim": {"lr": 0.1}} and out == {"optim": {"lr": 0.5}}


@pytest.mark.parametrize(
    ("payload", "overrides", "needle"),
    [
        ({**MINIMAL, "optimizer": {}}, [], "unknown sections ['optimizer']; valid: data, features"),
        (
            {**MINIMAL, "optim": {"learning_rate": 1}},
            [],
            "unknown keys in optim: ['learning_rate']",
        ),
        (
            {**MINIMAL, "optim": {"name": "adagrad"}},
            [],
            "optim.name: unknown value 'adagrad'; valid: adam",
        ),
        (
            {**MINIMAL, "model": {"name": "wav2vec"}},
            [],
            "model.name: unknown value 'wav2vec'; valid:",
        ),
        (
            {**MINIMAL, "model": {"args": {"embed_dimension": 3}}},
            [],
            "model.args (xvector): unknown keys",
        ),
        ({**MINIMAL, "loss": {"mining": "hardest"}}, [], "loss.mining: unknown value 'hardest'"),
        ({**MINIMAL, "loss": {"name": "arcface"}}, [], "loss.name: unknown value 'arcface'"),
        (
            {**MINIMAL, "loss": {"name": "info_nce", "args": {"temp": 1}}},
            [],
            "loss.args (info_nce): unknown keys ['temp']; valid: temperature",
        ),
        (
            {**MINIMAL, "loss": {"name": "info_nce", "margin": 0.2}},
            [],
            "loss.margin: loss 'info_nce' has no margin",
        ),
        (
            {**MINIMAL, "loss": {"margin_start": 0.1, "margin_warmup_epochs": 1}},
            [],
            "loss.margin: required when margin_start is set",
        ),
        (
            {**MINIMAL, "loss": {"name": "contrastive", "margin": 1, "args": {"margin": 2}}},
            [],
            "not both",
        ),
        ({**MINIMAL, "train": {"amp": "fp8"}}, [], "train.amp: unknown value 'fp8'"),
        (MINIMAL, ["loss.semi_hard_fallback=nearest"], "loss.semi_hard_fallback: unknown value"),
        (MINIMAL, ["loss.hard_probability=2"], "loss.hard_probability: must be in [0, 1]"),
        (MINIMAL, ["loss.num_hardest=0"], "loss.num_hardest: must be >= 1"),
        (
            {**MINIMAL, "loss": {"name": "info_nce", "num_hardest": 3}},
            [],
            "loss.num_hardest: only the triplet loss mines",
        ),
        (
            {**MINIMAL, "loss": {"num_hardest": 3, "args": {"num_hardest": 2}}},
            [],
            "not both",
        ),
        # the loss class checks its own arguments; the message names the argument
        (
            {**MINIMAL, "loss": {"args": {"mining": "hardest"}}},
            [],
            "loss.mining: unknown value 'hardest'; valid: batch_all",
        ),
        (
            {**MINIMAL, "loss": {"args": {"distance": "manhattan"}}},
            [],
            "loss.distance: unknown value 'manhattan'; valid: cosine",
        ),
        (MINIMAL, ["loss.args.margin=[1]"], "loss.margin: must be a number, got [1]"),
        (MINIMAL, ["loss.args.margin=-0.1"], "loss.margin: must be >= 0, got -0.1"),
        (MINIMAL, ["loss.args.num_hardest=0"], "loss.num_hardest: must be >= 1"),
        (
            {**MINIMAL, "loss": {"name": "info_nce", "args": {"temperature": 0}}},
            [],
            "loss.temperature: must be > 0, got 0",
        ),
        (
            {**MINIMAL, "loss": {"name": "info_nce", "args": {"margin": 0.2}}},
            [],
            "loss.margin: loss 'info_nce' has no margin",
        ),
        (MINIMAL, ["loss.mining_warmup=hardest"], "loss.mining_warmup: unknown value 'hardest'"),
        (
            {**MINIMAL, "loss": {"mining": "batch_hard", "args": {"mining": "batch_all"}}},
            [],
            "loss: give mining as loss.mining or loss.args.mining, not both",
        ),
        ({**MINIMAL, "data": {"train_dir": "d", "num_utts": 1}}, [], "data.num_utts: must be >= 2"),
        (MINIMAL, ["data.group_by=[{a: 1}]"], "data.group_by: expected a list of attribute"),
        (MINIMAL, ["data.group_by=[lang]", "data.group_size=5"], "must be >= 2 and divide"),
        (MINIMAL, ["data.group_size=two"], "data.group_size: must be an integer, got 'two'"),
        ({**MINIMAL, "optim": {"warmup_steps": 5, "warmup_epochs": 1}}, [], "not both"),
        ({"data": {}}, [], "data.train_dir: required"),
        ({**MINIMAL, "data": {"train_dir": "d", "valid_trials": "t"}}, [], "data.valid_dir"),
        (MINIMAL, ["optim.lr"], "expected section.key=value"),
        (MINIMAL, ["trainer.epochs=3"], "unknown section 'trainer'"),
        (MINIMAL, ["train.epochs=0"], "train.epochs: must be > 0"),
        (MINIMAL, ["train.epochs=[1, 2]"], "train"),
    ],
)
def test_errors_are_one_line_and_name_the_problem(tmp_path, payload, overrides, needle):
    path = write(tmp_path, payload)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


# The loss section of the VoxCeleb recipes, spelled as before issue 25 and as now.
OLDER_LOSS = {
    "name": "triplet",
    "margin": 0.05,
    "margin_start": 0.025,
    "margin_warmup_epochs": 2,
    "mining": "hard_negative",
    "num_hardest": 10,
    "hard_probability": 0.5,
    "mining_warmup": "semi_hard",
    "mining_warmup_epochs": 2,
    "semi_hard_fallback": "drop",
    "distance": "cosine",
    "gather_distributed": True,
}
SCHEDULES = ("margin_start", "margin_warmup_epochs", "mining_warmup", "mining_warmup_epochs")
LOSS = {
    "name": "triplet",
    "args": {key: value for key, value in OLDER_LOSS.items() if key not in ("name", *SCHEDULES)},
    **{key: OLDER_LOSS[key] for key in SCHEDULES},
}


def test_the_loss_section_is_name_args_and_schedules_and_reads_its_older_spelling(tmp_path):
    older = load_config(write(tmp_path, {**MINIMAL, "loss": OLDER_LOSS}))
    current = load_config(write(tmp_path, {**MINIMAL, "loss": LOSS}, "current.yaml"))
    assert older == current and older.to_dict()["loss"] == LOSS  # written in the new spelling
    assert load_config(write(tmp_path, older.to_dict(), "again.yaml")) == older
    # what every config saved then carried beside a loss that does not mine means nothing to it
    saved = {"name": "contrastive", "margin": 0.5, "mining": "semi_hard", "distance": "cosine",
             "soft_margin": False, "reduction": None, "gather_distributed": False,
             "margin_start": None, "margin_warmup_epochs": 0.0, "mining_warmup": None,
             "mining_warmup_epochs": 0, "semi_hard_fallback": None, "num_hardest": None,
             "hard_probability": None, "args": {}}  # fmt: skip
    contrastive = load_config(write(tmp_path, {**MINIMAL, "loss": saved}, "contrastive.yaml"))
    assert contrastive.loss.args == {"margin": 0.5}  # ContrastiveLoss keeps its own distance
    assert mining_at(contrastive.loss, 0) is None


def test_the_recipe_configs_spell_the_loss_as_name_args_and_schedules():
    from speakerverify.config import LossConfig

    paths = sorted((Path(__file__).parents[1] / "recipes").glob("*/conf/*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        section = yaml.safe_load(path.read_text())["loss"]
        assert set(section) <= {f.name for f in dataclasses.fields(LossConfig)}, path
        assert load_config(path).to_dict()["loss"]["args"] == section["args"], path


def test_the_configs_stored_in_the_bundled_model_still_read_as_they_trained(bundled_model_files):
    """Checkpoints keep the config they were trained with, in the spelling of their day."""
    from speakerverify import pretrained
    from speakerverify.checkpoint import load_checkpoint
    from speakerverify.training.schedules import margin_at

    for stored in load_checkpoint(pretrained.bundled_checkpoint())["member_configs"]:
        loss = Config.from_dict(stored).loss
        # the flat keys of older configs, or name + args
        spelled = {**stored["loss"], **stored["loss"].get("args", {})}
        assert loss.name == spelled["name"] == "triplet"
        assert [mining_at(loss, epoch) for epoch in range(3)] == [
            spelled["mining_warmup"],
            spelled["mining"],
            spelled["mining"],
        ]
        assert margin_at(loss, 0.0) == spelled["margin"]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "data:\n  train_dir: d\noptim:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_from_dict_equals_load(tmp_path):
    assert Config.from_dict(MINIMAL) == load_config(write(tmp_path, MINIMAL))


def test_features_section_mirrors_fbank_config_exactly():
    # The features section is composed from FbankConfig (torch-free), so a new or changed
    # front-end default or option cannot drift between the two.
    from speakerverify.config import FeaturesConfig
    from speakerverify.frontend.fbank_config import FbankConfig

    assert FeaturesConfig().fbank_dict() == FbankConfig().to_dict()


def test_every_fbank_option_is_a_features_key_and_round_trips(tmp_path):
    from speakerverify.frontend.fbank_config import FbankConfig

    options = {f.name for f in dataclasses.fields(FbankConfig)}
    cfg = load_config(write(tmp_path, MINIMAL))
    assert set(cfg.to_dict()["features"]) == options | {"spec_augment", "spec_augment_args"}
    changed = {"window_type": "hamming", "low_freq": 40.0, "snip_edges": False}
    cfg = load_config(write(tmp_path, {**MINIMAL, "features": changed}))
    assert cfg.features.fbank == FbankConfig(**changed)
    assert load_config(write(tmp_path, cfg.to_dict(), "again.yaml")) == cfg


def test_fbank_validation_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="features: window_type 'kaiser'"):
        load_config(write(tmp_path, {**MINIMAL, "features": {"window_type": "kaiser"}}))
    with pytest.raises(ConfigError, match=r"features\.num_mel_bins: must be > 0"):
        load_config(write(tmp_path, {**MINIMAL, "features": {"num_mel_bins": 0}}))


def test_importing_the_config_module_does_not_import_torch():
    # Registry names are checked when a config is built (that imports the registries); the
    # modules themselves (the sections and the YAML loader), and with them FbankConfig, stay
    # torch-free.
    import subprocess
    import sys

    modules = "speakerverify.config, speakerverify.training.experiment_config"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
