"""`speakerverify enroll`: its JSON document and its human output (8 kHz warning).

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import json

import pytest
from command_helpers import (
    ENROLL_KEYS,
    SPEAKER_KEYS,
    run,
)
from speaker_helpers import FP


def test_enroll_json_schema(fake_model, voices, tmp_path):
    store = tmp_path / "s.db"
    result = run(
        [
            "enroll",
            "Zoë",
            voices["ann0"],
            voices["ann_stereo"],
            "--model",
            fake_model,
            "--store",
            store,
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == ENROLL_KEYS and set(payload["speaker"]) == SPEAKER_KEYS
    assert payload["speaker"]["name"] == "Zoë" and payload["added_utterances"] == 2
    assert payload["model_fingerprint"] == FP and payload["files"][1]["sample_rate"] == 44100
    assert payload["speaker"]["speech_seconds"] == pytest.approx(
        sum(f["speech_seconds"] for f in payload["files"]), abs=1e-2
    )


def test_enroll_human_output_and_8k_warning(fake_model, voices, tmp_path):
    store = tmp_path / "s.db"
    result = run(
        ["enroll", "ann", voices["ann0"], voices["ann_8k"], "--model", fake_model, "--store", store]
    )
    assert result.exit_code == 0
    assert "enrolled 'ann'" in result.stdout and "now 2 utterance(s)" in result.stdout
    assert "warning:" in result.stderr and "8000 Hz" in result.stderr
    assert result.stderr.endswith(
        "8000 Hz audio is upsampled to 16000 Hz; it has nothing above 4 kHz, so accuracy may be "
        "lower than on wideband speech\n"
    )
