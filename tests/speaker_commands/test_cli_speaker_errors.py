"""Bad input to the speaker commands: one line on stderr naming the file, exit 2, store untouched
(bad audio, unknown speakers, foreign / corrupt / missing stores, foreign checkpoints).

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from command_helpers import (
    assert_clean_error,
    digest,
    run,
)
from speaker_helpers import FP, store_rows


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("text", "not an audio file"),
        ("truncated", ""),
        ("quiet", "no speech found"),
        ("short", "need at least"),
        ("directory", "is a directory"),
    ],
)
def test_bad_audio_is_one_line_and_store_unchanged(enrolled, fake_model, voices, key, problem):
    path = {"missing": enrolled.parent / "missing.wav", "directory": enrolled.parent}.get(key)
    path = path or voices[key]
    before, rows_before = digest(enrolled), store_rows(enrolled)
    commands = [
        ["enroll", "ann", path],
        ["verify", "ann", path, "--threshold", "0"],
        ["identify", path, "--threshold", "0"],
    ]
    if key != "short":  # with ann0, a short file has enough speech in total
        commands.append(["enroll", "newbie", voices["ann0"], path])
    if key != "directory":  # pair mode: a directory as the first argument is its own case
        commands.append(["verify", path, voices["ann0"], "--threshold", "0"])
    for command in commands:
        result = run([*command, "--model", enrolled.parent / "model.pt", "--store", enrolled])
        assert_clean_error(result, Path(path).name, problem)
    assert digest(enrolled) == before and store_rows(enrolled) == rows_before


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("missing", "file not found"),
        ("empty", "empty file (0 bytes)"),
        ("directory", "is a directory"),
        ("text", "not an audio file"),
        ("truncated", "unreadable or corrupt audio header"),
        ("no_frames", "contains no audio samples"),
    ],
)
def test_bad_files_fail_before_the_model_loads(enrolled, voices, monkeypatch, key, problem):
    """Regression (issue 24): a missing or empty file took 2.5-3 s to report on the torch path,
    because the model was loaded before the file was opened."""
    from speakerverify.backend import engine

    path = {"missing": enrolled.parent / "missing.wav", "directory": enrolled.parent / "dir"}.get(
        key, voices.get(key)
    )
    if key == "directory":
        path.mkdir()
    if key == "no_frames":  # a valid header over zero samples
        path = enrolled.parent / "no_frames.wav"
        sf.write(path, np.zeros(0, np.float32), 16000)

    def no_model(path):
        raise AssertionError("the model was loaded before the input files were checked")

    monkeypatch.setattr(engine, "load_command_model", no_model)
    common = ["--model", enrolled.parent / "model.pt", "--store", enrolled]
    commands = [
        ["enroll", "newbie", voices["ann0"], path],
        ["verify", "ann", path, "--threshold", "0"],
        ["verify", voices["ann0"], path, "--threshold", "0"],
        ["identify", path, "--threshold", "0"],
    ]
    if key != "directory":  # pair mode: a directory as the first argument is its own case
        commands.append(["verify", path, voices["ann0"], "--threshold", "0"])
    for command in commands:
        assert_clean_error(run([*command, *common]), f"{path}: {problem}")
    with pytest.raises(AssertionError, match="model was loaded"):  # good files do reach it
        run(["verify", "ann", voices["ann1"], "--threshold", "0", *common])


def test_unknown_speaker(enrolled, fake_model, voices):
    before = digest(enrolled)
    for command in (
        ["verify", "zed", voices["ann2"], "--threshold", "0", "--model", fake_model],
        ["speakers", "remove", "zed"],
    ):
        assert_clean_error(run([*command, "--store", enrolled]), "'zed'", enrolled)
    assert digest(enrolled) == before


def test_store_made_by_another_model(enrolled, fake_model, voices):
    other = enrolled.parent / "other.pt"
    before = digest(enrolled)
    for command in (
        ["enroll", "ann", voices["ann2"]],
        ["verify", "ann", voices["ann2"]],
        ["identify", voices["ann2"]],
    ):
        result = run(
            [*command, "--model", other, "--store", enrolled, "--threshold", "0"]
            if command[0] != "enroll"
            else [*command, "--model", other, "--store", enrolled]
        )
        assert_clean_error(result, enrolled, FP, "0000000000000000")
    assert digest(enrolled) == before


@pytest.mark.parametrize(
    "content", [b"garbage, not sqlite" * 10, b"SQLite format 3\x00" + b"\x01" * 200]
)
def test_corrupt_store_file(fake_model, voices, tmp_path, content):
    store = tmp_path / "broken.db"
    store.write_bytes(content)
    for command in (
        ["enroll", "ann", voices["ann0"], "--model", fake_model],
        ["verify", "ann", voices["ann0"], "--model", fake_model, "--threshold", "0"],
        ["identify", voices["ann0"], "--model", fake_model, "--threshold", "0"],
        ["speakers", "list"],
        ["speakers", "export"],
        ["adapt", tmp_path, "--model", fake_model],
    ):
        assert_clean_error(run([*command, "--store", store]), store)
    assert store.read_bytes() == content


def test_store_is_a_directory(fake_model, voices, tmp_path):
    result = run(["enroll", "ann", voices["ann0"], "--model", fake_model, "--store", tmp_path])
    assert_clean_error(result, tmp_path, "is a directory")


def test_checkpoint_not_ours_or_with_pickled_code(voices, tmp_path):
    """No fake here: the real loader refuses these files before building any model."""
    store = tmp_path / "s.db"
    pickled = tmp_path / "evil.pt"
    torch.save({"model": Path("/tmp")}, pickled)  # a non-tensor object: refused by weights_only
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    cases = [
        (pickled, "pickled"),
        (foreign, "not a speakerverify checkpoint"),
        (text, ""),
        (tmp_path / "none.pt", "no such checkpoint"),
        (tmp_path, "directory"),
    ]
    for checkpoint, problem in cases:
        result = run(["enroll", "ann", voices["ann0"], "--model", checkpoint, "--store", store])
        assert_clean_error(result, checkpoint, problem)
    assert not store.exists()


def test_missing_store_for_verify_and_list(fake_model, voices, tmp_path):
    missing = tmp_path / "none.db"
    assert_clean_error(run(["speakers", "list", "--store", missing]), missing, "no such")
    assert_clean_error(
        run(
            [
                "verify",
                "ann",
                voices["ann0"],
                "--store",
                missing,
                "--model",
                fake_model,
                "--threshold",
                "0",
            ]
        ),
        missing,
    )
    assert_clean_error(
        run(["speakers", "list"], env={"SPEAKERVERIFY_STORE": ""}), "SPEAKERVERIFY_STORE"
    )
    assert not missing.exists()
