"""`speakerverify identify`: ranked candidates, and "unknown" when nobody passes.

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import json

from command_helpers import (
    IDENTIFY_KEYS,
    run,
)


def test_identify_ranks_and_answers_unknown(enrolled, fake_model, voices):
    base = ["--model", fake_model, "--store", enrolled, "--json"]
    found = run(["identify", voices["cy2"], "--top", "2", "--threshold", "-1", *base])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert set(payload) == IDENTIFY_KEYS and payload["identified"] == "cy"
    assert [c["rank"] for c in payload["candidates"]] == [1, 2]
    assert set(payload["candidates"][0]) == {
        "rank",
        "name",
        "score",
        "llr",
        "normalised",
        "accepted",
    }
    unknown = run(["identify", voices["cy2"], "--threshold", "1.01", *base[:-1]])
    assert unknown.exit_code == 1 and "identified: unknown (of 3 enrolled)" in unknown.stdout
