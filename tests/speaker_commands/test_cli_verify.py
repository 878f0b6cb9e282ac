"""`speakerverify verify`: store mode and pair mode, the decision rule it needs, models and
stores from the environment, and pair-mode argument errors.

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import json

from command_helpers import (
    THRESHOLD_KEYS,
    VERIFY_KEYS,
    assert_clean_error,
    digest,
    run,
)

from speakerverify.pretrained import bundled_checkpoint


def test_verify_store_mode_accepts_and_rejects(enrolled, fake_model, voices):
    base = ["--model", fake_model, "--store", enrolled]
    same = run(["verify", "ann", voices["ann2"], *base, "--threshold", "-1", "--json"])
    assert same.exit_code == 0, same.output
    payload = json.loads(same.stdout)
    assert set(payload) == VERIFY_KEYS and set(payload["threshold"]) == THRESHOLD_KEYS
    assert payload["mode"] == "store" and payload["decision"] == "accept"
    assert payload["threshold"]["source"] == "threshold" and payload["llr"] is None
    other = run(["verify", "ann", voices["bo2"], *base, "--threshold", "-1", "--json"])
    threshold = (payload["score"] + json.loads(other.stdout)["score"]) / 2
    accepted = run(["verify", "ann", voices["ann2"], *base, "--threshold", threshold])
    rejected = run(["verify", "ann", voices["bo2"], *base, "--threshold", threshold])
    assert (accepted.exit_code, rejected.exit_code) == (0, 1)
    assert "decision:  ACCEPT" in accepted.stdout and "decision:  REJECT" in rejected.stdout
    assert "--threshold: accept when cosine score >=" in rejected.stdout


def test_verify_pair_mode(fake_model, voices):
    result = run(
        [
            "verify",
            voices["ann0"],
            voices["ann1"],
            "--model",
            fake_model,
            "--threshold",
            "0.0",
            "--json",
        ]
    )
    assert result.exit_code in (0, 1)
    payload = json.loads(result.stdout)
    assert payload["mode"] == "pair" and payload["enroll"] == str(voices["ann0"])
    assert payload["accepted"] == (result.exit_code == 0) == (payload["score"] >= 0.0)


def test_verify_without_threshold_or_calibration_tells_what_to_pass(enrolled, fake_model, voices):
    result = run(["verify", "ann", voices["ann2"], "--model", fake_model, "--store", enrolled])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "--calibration FILE" in result.stderr and "--threshold" in result.stderr


def test_model_and_store_from_environment(bundled_model_files, enrolled, fake_model, voices):
    env = {"SPEAKERVERIFY_MODEL": str(fake_model), "SPEAKERVERIFY_STORE": str(enrolled)}
    result = run(["verify", "ann", voices["ann2"], "--threshold", "-1"], env=env)
    assert result.exit_code == 0, result.output
    # Without a model the bundled one is used, said once; the fake loader gives it the
    # fingerprint 0000..., which this store refuses (its calibration, foreign to 0000..., is
    # not used under --threshold).
    bundled = run(
        ["verify", "ann", voices["ann2"], "--threshold", "-1"],
        env={"SPEAKERVERIFY_MODEL": "", "SPEAKERVERIFY_STORE": str(enrolled)},
    )
    assert bundled.exit_code == 2
    note, error = bundled.stderr.splitlines()
    assert note.startswith("using the bundled model xvector_synth (fingerprint ")
    assert error.startswith(f"error: {enrolled}: store was made by model")
    assert f"{bundled_checkpoint()} is model 0000000000000000" in error


def test_pair_with_directory_and_bad_names(enrolled, fake_model, voices):
    before = digest(enrolled)
    pair = run(
        ["verify", enrolled.parent, voices["ann0"], "--model", fake_model, "--threshold", "0"]
    )
    assert_clean_error(pair, enrolled.parent, "is a directory")
    for name, problem in (
        ("x" * 129, "129 characters"),
        ("a\tb", "control character"),
        ("", "empty"),
    ):
        result = run(["enroll", name, voices["ann0"], "--model", fake_model, "--store", enrolled])
        assert_clean_error(result, problem)
    assert digest(enrolled) == before
