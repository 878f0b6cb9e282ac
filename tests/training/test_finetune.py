"""Fine-tuning (`speakerverify train --init CKPT`): the run starts from the checkpoint's weights
with a fresh optimizer, takes its architecture, refuses another one in one line, and
`train.freeze` keeps named layers as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from speakerverify.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from speakerverify.cli import main
from speakerverify.config import ConfigError
from speakerverify.data import prepare_voxceleb
from speakerverify.models import build_model
from speakerverify.testing import make_voxceleb_corpus
from speakerverify.training.distributed import init_distributed
from speakerverify.training.experiment_config import load_config
from speakerverify.training.finetune import (
    checkpoint_sections,
    freeze_parameters,
    load_init_weights,
)
from speakerverify.training.setup import build_parts

TINY = Path(__file__).parents[1] / "conf" / "tiny.yaml"
MODEL_ARGS = {"feat_dim": 24, "embed_dim": 32, "channels": 64, "stats_channels": 128}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_voxceleb_corpus(root, num_speakers=8, sessions_per_speaker=1, utts_per_session=2,
                         seconds=1.2, seed=5)  # fmt: skip
    prepare_voxceleb(root, root / "train")
    return root / "train"


def make_checkpoint(path: Path, seed: int = 123, **args) -> Path:
    torch.manual_seed(seed)  # weights unlike the ones a fresh run (seed 0) initialises
    model_args = {**MODEL_ARGS, **args}
    config = load_config(TINY, ["data.train_dir=x"])
    save_checkpoint(path, model_name="xvector", model_args=model_args,
                    model=build_model("xvector", **model_args),
                    features=config.features.fbank_dict())  # fmt: skip
    return path


def write_config_without_model(tmp_path: Path) -> Path:
    text = TINY.read_text()
    start = text.index("model:")
    end = text.index("loss:")
    path = tmp_path / "finetune.yaml"
    path.write_text(text[:start] + text[end:])
    return path


def test_weights_equal_the_checkpoint_at_step_0_with_a_fresh_optimizer(train_dir, tmp_path):
    init = make_checkpoint(tmp_path / "init.pt")
    config = load_config(TINY, [f"data.train_dir={train_dir}", "data.num_speakers=4"])
    env = init_distributed("cpu")
    parts = build_parts(config, env, init=init)
    expected = load_checkpoint(init)["state_dict"]
    state = parts.model.state_dict()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    assert parts.optimizer.state_dict()["state"] == {}
    assert parts.scheduler.last_epoch == 0
    fresh = build_parts(config, env)
    assert not torch.equal(fresh.model.state_dict()["segment.weight"], expected["segment.weight"])


def test_cli_takes_the_architecture_from_the_checkpoint_and_freezes(train_dir, tmp_path):
    init = make_checkpoint(tmp_path / "init.pt", embed_dim=16)
    config = write_config_without_model(tmp_path)
    result = CliRunner().invoke(main, [
        "train", str(config), "--exp-dir", str(tmp_path / "exp"), "--init", str(init),
        "--set", f"data.train_dir={train_dir}", "data.num_speakers=4", "train.max_steps=2",
        "train.freeze=[frame_layers.0, frame_layers.1]",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(next((tmp_path / "exp" / "checkpoints").glob("epoch_*.pt")))
    assert saved["model_args"]["embed_dim"] == 16
    assert saved["train_state"]["global_step"] == 2
    before = load_checkpoint(init)["state_dict"]
    for name, tensor in saved["state_dict"].items():
        frozen = name.startswith(("frame_layers.0.", "frame_layers.1."))
        if frozen and "running" not in name and "num_batches" not in name:
            assert torch.equal(tensor, before[name]), name
    assert not torch.equal(saved["state_dict"]["segment.weight"], before["segment.weight"])


def test_cli_refuses_another_architecture_in_one_line(train_dir, tmp_path):
    init = make_checkpoint(tmp_path / "init.pt", embed_dim=16)
    result = CliRunner().invoke(main, [
        "train", str(TINY), "--exp-dir", str(tmp_path / "exp"), "--init", str(init),
        "--set", f"data.train_dir={train_dir}",
    ])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {init}: --init checkpoint is xvector")
    assert "'embed_dim': 16" in result.output and "'embed_dim': 32" in result.output
    assert result.output.count("\n") == 1


def test_checkpoint_sections_and_freeze_errors(tmp_path):
    init = make_checkpoint(tmp_path / "init.pt")
    sections = checkpoint_sections(init)
    assert sections["model"] == {"name": "xvector", "args": {k: v for k, v in MODEL_ARGS.items()
                                                             if k != "feat_dim"}}  # fmt: skip
    assert sections["features"]["num_mel_bins"] == 24
    model = build_model("xvector", **MODEL_ARGS)
    with pytest.raises(ConfigError, match="'frame' names no parameter; top-level modules: "):
        freeze_parameters(model, ["frame"])
    with pytest.raises(ConfigError, match="expected a list of names"):
        load_config(TINY, ["data.train_dir=x", "train.freeze=3"])


def test_init_from_a_checkpoint_older_than_a_front_end_option(tmp_path):
    """A checkpoint written before `cvn` existed has no such key: that is the default front-end,
    so --init accepts it; a real difference (the mel bins) is still refused."""
    config = load_config(TINY, ["data.train_dir=x"])
    features = config.features.fbank_dict()
    old = dict(features)
    del old["cvn"]
    path = tmp_path / "old.pt"
    save_checkpoint(path, model_name="xvector", model_args=MODEL_ARGS,
                    model=build_model("xvector", **MODEL_ARGS), features=old)  # fmt: skip
    model = build_model("xvector", **MODEL_ARGS)
    expected = load_checkpoint(path)["fingerprint"]
    assert load_init_weights(model, path, "xvector", MODEL_ARGS, features) == expected
    with pytest.raises(CheckpointError, match="another front-end \\(num_mel_bins differ"):
        load_init_weights(model, path, "xvector", MODEL_ARGS, {**features, "num_mel_bins": 40})
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, model_name="xvector", model_args=MODEL_ARGS,
                    model=build_model("xvector", **MODEL_ARGS),
                    features={**features, "warp": 1.1})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"newer\.pt: --init checkpoint's front-end: .*warp"):
        load_init_weights(model, newer, "xvector", MODEL_ARGS, features)
    with pytest.raises(CheckpointError, match=r"newer\.pt: --init checkpoint's front-end: .*warp"):
        checkpoint_sections(newer)


def test_checkpoint_sections_take_the_input_size_from_the_front_end(tmp_path):
    """feat_dim is left out of the model section when the front-end gives it (log-mel bins, or
    cepstra with num_ceps), and kept when the checkpoint's encoder was built otherwise."""
    features = load_config(TINY, ["data.train_dir=x"]).features.fbank_dict()
    for name, front, feat_dim, kept in [
        ("mel", {}, features["num_mel_bins"], False),
        ("ceps", {"num_ceps": 20}, 20, False),
        ("odd", {"num_ceps": 20}, features["num_mel_bins"], True),
    ]:
        args = {**MODEL_ARGS, "feat_dim": feat_dim}
        path = tmp_path / f"{name}.pt"
        model = build_model("xvector", **args)
        save_checkpoint(
            path, model_name="xvector", model_args=args, model=model, features={**features, **front}
        )
        sections = checkpoint_sections(path)
        assert ("feat_dim" in sections["model"]["args"]) == kept, name
        assert sections["features"] == {**features, **front}
