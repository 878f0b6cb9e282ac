"""Signals (issue 22, signals surface): Ctrl-C is not "rejected", and SIGTERM cleans up what
Ctrl-C cleans up (the temp file of an atomic write)."""

from __future__ import annotations

import os
import signal

import pytest
from click.testing import CliRunner

import speakerverify.data.noise as noise
from speakerverify.cli import main
from speakerverify.files import write_atomic


def _musan(tmp_path):
    return ["prepare", "musan", str(tmp_path), str(tmp_path / "index.txt")]


def test_ctrl_c_exits_130_not_1_which_means_rejected(monkeypatch, tmp_path):
    def interrupted(root, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(noise, "prepare_musan", interrupted)
    result = CliRunner().invoke(main, _musan(tmp_path))
    assert result.exit_code == 130 and result.stderr == "error: interrupted\n"


def test_sigterm_mid_write_exits_143_and_leaves_no_temp_file(monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    def killed_while_writing(root, path):
        def write(stream):
            stream.write(b"half")
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, mid-write
            stream.write(b"never")

        write_atomic(out / "index.txt", write)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(noise, "prepare_musan", killed_while_writing)
    result = CliRunner().invoke(main, _musan(tmp_path))
    assert result.exit_code == 143
    assert list(out.iterdir()) == []  # neither the output nor its .tmp
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the command


@pytest.mark.parametrize("command", ["verify", "identify"])
def test_help_of_verify_and_identify_names_the_interrupted_status(command):
    text = CliRunner().invoke(main, [command, "--help"]).output
    assert "130 interrupted" in " ".join(text.split())
