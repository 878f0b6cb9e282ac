"""Helpers of the speaker-command tests: run a command in-process, hash a file, the JSON key
sets of each command's document, and the one-line-error check."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from click.testing import CliRunner

from speakerverify.cli import main

SPEAKERVERIFY = [str(Path(sys.executable).parent / "speakerverify")]


def run(args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ENROLL_KEYS = {
    "command",
    "version",
    "store",
    "model_fingerprint",
    "speaker",
    "added_utterances",
    "added_speech_seconds",
    "files",
    "replaced",
    "warnings",
}


SPEAKER_KEYS = {"name", "num_utterances", "speech_seconds", "created", "updated"}


THRESHOLD_KEYS = {
    "source",
    "value",
    "scale",
    "p_target",
    "calibration",
    "score_threshold",
    "description",
}


VERIFY_KEYS = {
    "command",
    "version",
    "mode",
    "enroll",
    "test",
    "score",
    "score_kind",
    "normalised_score",
    "llr",
    "threshold",
    "decision",
    "accepted",
    "centring",
    "model_fingerprint",
    "warnings",
}


IDENTIFY_KEYS = {
    "command",
    "version",
    "test",
    "identified",
    "decision",
    "candidates",
    "num_enrolled",
    "score_kind",
    "threshold",
    "centring",
    "model_fingerprint",
    "warnings",
}


LIST_KEYS = {
    "command",
    "version",
    "store",
    "model_fingerprint",
    "embed_dim",
    "domain_mean",
    "num_speakers",
    "speakers",
}


ADAPT_KEYS = {
    "command",
    "version",
    "store",
    "source",
    "num_embeddings",
    "mean_norm",
    "model_fingerprint",
    "warnings",
    "rule",
}


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert str(fragment) in result.stderr, (fragment, result.stderr)


KILL_IN_TRANSACTION = """
import sys
from speakerverify.cli import main
from speakerverify.speakers.store import SpeakerStore
from store_faults import kill_process, trapped_connect
SpeakerStore._connect = trapped_connect(kill_process)
main(sys.argv[1:])
"""
