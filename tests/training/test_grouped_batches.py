"""`data.group_by`: training batches in blocks of speakers who share an attribute, read from the
train dir's `spk2<name>` files; speed copies stay in their speaker's group."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speakerverify.config import ConfigError
from speakerverify.data import DataDir
from speakerverify.testing import make_train_dir
from speakerverify.training.distributed import DistEnv
from speakerverify.training.experiment_config import load_config
from speakerverify.training.setup import build_parts

TINY = Path(__file__).parents[1] / "conf" / "tiny.yaml"
CPU = DistEnv(0, 1, 0, torch.device("cpu"), owns_group=False)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    path = make_train_dir(tmp_path_factory.mktemp("corpus"))
    speakers = DataDir.load(path).speakers
    # two languages of four speakers, each two women and two men
    lang = {s: "lv" if i < 4 else "sw" for i, s in enumerate(speakers)}
    gender = {s: "f" if i % 2 else "m" for i, s in enumerate(speakers)}
    (path / "spk2lang").write_text("".join(f"{s} {v}\n" for s, v in lang.items()))
    (path / "spk2gender").write_text("".join(f"{s} {v}\n" for s, v in gender.items()))
    return path


def attribute(path: Path, name: str) -> dict[str, str]:
    return dict(line.split() for line in (path / f"spk2{name}").read_text().splitlines())


def test_batches_come_in_blocks_of_one_language_and_speed_copies_keep_it(train_dir):
    config = load_config(
        TINY,
        [f"data.train_dir={train_dir}", "data.group_by=[lang]", "data.speed_perturb=true"],
    )
    parts = build_parts(config, CPU)
    dataset, lang = parts.dataset, attribute(train_dir, "lang")
    base = dataset.speakers[:8]
    blocks_seen, copies_seen = set(), 0
    for epoch in range(3):
        parts.sampler.set_epoch(epoch)
        for batch in parts.sampler:
            labels = [int(dataset.labels[i]) for i, _ in batch][::2]
            names = [base[dataset.speaker_of_label[label]] for label in labels]
            for lo in (0, 4):
                block = {lang[n] for n in names[lo : lo + 4]}
                assert len(block) == 1
                blocks_seen |= block
            copies_seen += sum(dataset.speakers[label].startswith("sp") for label in labels)
    assert blocks_seen == {"lv", "sw"} and copies_seen > 0  # speed copies were drawn, in blocks


def test_two_attributes_make_their_combinations_the_groups(train_dir):
    config = load_config(
        TINY,
        [
            f"data.train_dir={train_dir}",
            "data.group_by=[lang, gender]",
            "data.group_size=2",
            "data.speed_perturb=true",
        ],
    )
    parts = build_parts(config, CPU)
    dataset = parts.dataset
    lang, gender = attribute(train_dir, "lang"), attribute(train_dir, "gender")
    base = dataset.speakers[:8]
    parts.sampler.set_epoch(0)
    for batch in parts.sampler:
        labels = [int(dataset.labels[i]) for i, _ in batch][::2]
        names = [base[dataset.speaker_of_label[label]] for label in labels]
        for lo in range(0, 8, 2):
            assert len({(lang[n], gender[n]) for n in names[lo : lo + 2]}) == 1


def test_a_missing_attribute_file_is_a_one_line_config_error(train_dir):
    config = load_config(TINY, [f"data.train_dir={train_dir}", "data.group_by=[accent]"])
    with pytest.raises(ConfigError) as info:
        build_parts(config, CPU)
    message = str(info.value)
    assert message.startswith("data.group_by: ") and "spk2accent: not found" in message
    assert "\n" not in message
