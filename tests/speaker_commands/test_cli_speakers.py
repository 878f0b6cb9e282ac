"""`speakerverify speakers list | remove | export`: what a store holds, and its JSON.

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from command_helpers import (
    LIST_KEYS,
    SPEAKER_KEYS,
    run,
)


def test_speakers_list_remove_export(enrolled, fake_model, tmp_path):
    listed = run(["speakers", "list", "--store", enrolled, "--json"])
    payload = json.loads(listed.stdout)
    assert set(payload) == LIST_KEYS and payload["num_speakers"] == 3
    assert [s["name"] for s in payload["speakers"]] == ["ann", "bo", "cy"]
    assert all(set(s) == SPEAKER_KEYS for s in payload["speakers"])
    human = run(["speakers", "list", "--store", enrolled])
    assert "3 speaker(s)" in human.stdout and "bo" in human.stdout
    removed = run(["speakers", "remove", "bo", "--store", enrolled, "--json"])
    assert json.loads(removed.stdout)["removed"] == "bo"
    out = tmp_path / "export.json"
    exported = run(["speakers", "export", "--store", enrolled, "--out", out])
    assert exported.exit_code == 0 and "exported 2 speaker(s)" in exported.stdout
    document = json.loads(out.read_text())
    assert document["num_speakers"] == 2 and len(document["speakers"][0]["embedding"]) == 32
    assert np.linalg.norm(document["speakers"][0]["embedding"]) == pytest.approx(1.0, abs=1e-5)
    stdout_doc = json.loads(run(["speakers", "export", "--store", enrolled]).stdout)
    assert stdout_doc == document


def test_export_json_summary_and_remove_json(enrolled, tmp_path):
    out = tmp_path / "e.json"
    summary = json.loads(
        run(["speakers", "export", "--store", enrolled, "--out", out, "--json"]).stdout
    )
    assert summary == {
        "command": "speakers export",
        "version": 1,
        "store": str(enrolled),
        "out": str(out),
        "num_speakers": 3,
    }
    assert set(json.loads(out.read_text())) == LIST_KEYS
    removed = json.loads(run(["speakers", "remove", "cy", "--store", enrolled, "--json"]).stdout)
    assert removed == {
        "command": "speakers remove",
        "version": 1,
        "store": str(enrolled),
        "removed": "cy",
        "num_speakers": 2,
    }
