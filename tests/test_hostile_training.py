"""Hostile training settings (issue 22): `--set` values that are not numbers, or NaN, are one-line
ConfigErrors before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from speakerverify.cli import main
from speakerverify.config import ConfigError
from speakerverify.training.experiment_config import load_config

TINY = Path(__file__).parent / "conf" / "tiny.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=.nan", "optim.lr: must be a finite number, got nan"),
        ("optim.lr=.inf", "optim.lr: must be a finite number, got inf"),
        ("optim.lr=abc", "optim.lr: must be a number, got 'abc'"),
        ("data.num_speakers=true", "data.num_speakers: must be a number, got True"),
        ("loss.margin=[1]", "loss.margin: must be a number, got [1]"),
    ],
    ids=["nan", "inf", "text", "bool", "list"],
)
def test_set_values_that_are_not_finite_numbers(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(TINY, [override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_train_with_a_nan_learning_rate_writes_nothing(tmp_path):
    exp = tmp_path / "exp"
    result = CliRunner().invoke(
        main, ["train", str(TINY), "--exp-dir", str(exp), "--set", "optim.lr=.nan"]
    )
    assert result.exit_code == 2 and "must be a finite number" in result.stderr
    assert result.stderr.count("\n") == 1 and not exp.exists()


def test_a_refused_init_leaves_no_config_behind(tmp_path):
    import torch

    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.models import build_model

    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}  # not the config's model
    init = tmp_path / "other.pt"
    torch.manual_seed(0)
    save_checkpoint(
        init, model_name="xvector", model_args=args,
        model=build_model("xvector", **args).eval(), features=FbankConfig().to_dict(),
    )  # fmt: skip
    exp = tmp_path / "exp"
    result = CliRunner().invoke(
        main, ["train", str(TINY), "--exp-dir", str(exp), "--init", str(init)]
    )
    assert result.exit_code == 2 and "--init checkpoint is xvector" in result.stderr
    assert not (exp / "config.yaml").exists()
