"""Hostile outputs (issue 22, item 1): no `--out`/OUT replaces what is not a regular file.

Every writer goes through `files.write_atomic`, which renames a temp file over its target: pointed
at a FIFO, a device node or a symlink to one, that rename used to replace the node itself
(`speakers export --out /dev/null` run as root turned /dev/null into a file). The "device node"
here is a symlink to a FIFO in the test's temp dir; no test touches a system path.
"""

from __future__ import annotations

import json
import os
import socket
import stat

import numpy as np
import pytest
import soundfile as sf
import torch
from hostile_helpers import assert_one_line_error, run

from speakerverify.backend.embedding_dir import save_embeddings
from speakerverify.checkpoint import load_checkpoint, save_checkpoint
from speakerverify.data import Trials, write_trials
from speakerverify.files import NotRegularFileError, OutputError, write_atomic
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.speakers.store import SpeakerStore
from speakerverify.testing import random_speaker, speech_like


@pytest.fixture
def fifo(tmp_path):
    """A FIFO held open read-write (non-blocking), so a writer that opened it would not hang."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    handle = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    yield path
    os.close(handle)


@pytest.fixture
def device(tmp_path, fifo):
    """What `--out /dev/null` is to the writer: a path that is a symlink to a special file."""
    (tmp_path / "devices").mkdir()
    link = tmp_path / "devices" / "null"
    link.symlink_to(fifo)
    return link


def assert_still_fifo(path):
    assert stat.S_ISFIFO(os.stat(path).st_mode), f"{path} was replaced"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# -- the helper -------------------------------------------------------------------------------


def test_write_atomic_refuses_a_fifo_and_leaves_it(fifo):
    with pytest.raises(NotRegularFileError, match="is a FIFO, not a regular file"):
        write_atomic(fifo, "x")
    assert_still_fifo(fifo)


def test_write_atomic_refuses_a_symlink_to_a_device_and_keeps_the_link(device, fifo):
    with pytest.raises(NotRegularFileError, match=f"{device}: is a FIFO"):
        write_atomic(device, b"x")
    assert device.is_symlink() and device.resolve() == fifo
    assert_still_fifo(fifo)


def test_write_atomic_refuses_a_directory_and_a_socket(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(NotRegularFileError, match="is a directory"):
        write_atomic(tmp_path / "dir", "x")
    assert (tmp_path / "dir").is_dir()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(NotRegularFileError, match="is a socket"):
            write_atomic(tmp_path / "sock", "x")
        assert stat.S_ISSOCK(os.stat(tmp_path / "sock").st_mode)
    finally:
        server.close()


def test_write_atomic_writes_through_a_symlink_to_a_regular_file(tmp_path):
    (tmp_path / "models").mkdir()
    real = tmp_path / "models" / "v1.txt"
    real.write_text("old")
    link = tmp_path / "current.txt"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v1.txt"]


def test_write_atomic_symlink_loop_is_one_clean_error(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OutputError, match="loop: cannot write"):
        write_atomic(loop, "x")
    assert loop.is_symlink()


def test_not_regular_file_error_is_both_a_project_error_and_an_os_error(fifo):
    from speakerverify.errors import SpeakerVerifyError

    with pytest.raises(OSError) as caught:
        write_atomic(fifo, "x")
    assert isinstance(caught.value, SpeakerVerifyError)
    assert caught.value.strerror == "is a FIFO, not a regular file: refusing to replace it"
    assert str(caught.value) == f"{fifo}: is a FIFO, not a regular file: refusing to replace it"


# -- every command that writes an output -------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A checkpoint, a domain of audio, a store, an embedding dir, trials, scores, a data dir."""
    root = tmp_path_factory.mktemp("outputs_inputs")
    torch.manual_seed(0)
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    save_checkpoint(
        root / "model.pt",
        model_name="xvector",
        model_args=args,
        model=build_model("xvector", **args).eval(),
        features=FbankConfig().to_dict(),
    )
    rng = np.random.default_rng(4)
    (root / "domain").mkdir()
    for i in range(2):
        wave = speech_like(3.0, 16000, random_speaker(rng), seed=i)
        sf.write(root / "domain" / f"{i}.wav", wave, 16000)
    with SpeakerStore(root / "speakers.db", create=True) as store:
        store.add("ann", np.ones((2, 4)), 6.0, fingerprint="abcd")
    ids = [f"id{s:05d}/x/{u:05d}" for s in range(3) for u in range(3)]
    save_embeddings(
        root / "emb", ids, rng.standard_normal((len(ids), 8)), {"model_fingerprint": "abcd"}
    )
    enroll = [ids[0], ids[0], ids[3], ids[3], ids[6], ids[6]]
    test = [ids[1], ids[4], ids[4], ids[7], ids[7], ids[1]]
    write_trials(root / "trials.txt", Trials(enroll, test, np.array([1, 0, 1, 0, 1, 0]), "t"))
    values = [0.9, 0.1, 0.8, 0.3, 0.7, 0.2]
    lines = [f"{e} {t} {s}\n" for e, t, s in zip(enroll, test, values, strict=True)]
    (root / "scores.txt").write_text("".join(lines))
    (root / "data").mkdir()
    (root / "data" / "wav.scp").write_text("".join(f"{u} /x/{u}.wav\n" for u in ids))
    (root / "data" / "utt2spk").write_text("".join(f"{u} {u[:7]}\n" for u in ids))
    return root


COMMANDS = {
    "speakers export": lambda d: ["speakers", "export", "--store", d / "speakers.db", "--out"],
    "score": lambda d: ["score", d / "trials.txt", d / "emb", "--out"],
    "calibrate": lambda d: [
        "calibrate",
        d / "trials.txt",
        d / "scores.txt",
        "--model",
        d / "model.pt",
        "--out",
    ],
    "prepare trials": lambda d: ["prepare", "trials", d / "data", "--num-targets", "2"],
    "average": lambda d: ["average", d / "model.pt", "--out"],
    "model export": lambda d: ["model", "export", d / "model.pt", "--onnx"],
    "adapt --out": lambda d: ["adapt", d / "domain", "--model", d / "model.pt", "--out"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_outputs_never_replace_a_device_node(command, inputs, device, fifo):
    before = load_checkpoint(inputs / "model.pt")["fingerprint"]
    result = run([*COMMANDS[command](inputs), device])
    assert_one_line_error(result, str(device), "not a regular file")
    assert device.is_symlink()
    assert_still_fifo(fifo)
    assert load_checkpoint(inputs / "model.pt")["fingerprint"] == before


def test_speakers_export_refuses_a_fifo_given_directly(inputs, fifo):
    result = run(["speakers", "export", "--store", inputs / "speakers.db", "--out", fifo])
    assert_one_line_error(result, f"{fifo}: ", "FIFO")
    assert_still_fifo(fifo)


def test_output_help_says_what_happens_to_a_symlink():
    for args in (["speakers", "export"], ["score"], ["calibrate"], ["average"], ["adapt"]):
        text = " ".join(run([*args, "--help"]).output.split())
        assert "a symlink is written through" in text, args
    text = " ".join(run(["model", "export", "--help"]).output.split())
    assert "a symlink is written through" in text


def test_adapt_out_onto_an_existing_file_says_it_replaced_it(inputs, tmp_path):
    out = tmp_path / "adapted.pt"
    out.write_bytes(b"an older file")
    args = ["adapt", inputs / "domain", "--model", inputs / "model.pt", "--out", out]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (replacing the file that was there)" in result.stdout
    assert load_checkpoint(out)["adaptation"]["method"] == "batchnorm_statistics"
    again = run([*args, "--json"])
    assert json.loads(again.stdout)["replaced"] is True
    fresh = run([*args[:-1], tmp_path / "new.pt", "--json"])
    assert json.loads(fresh.stdout)["replaced"] is False
