"""`speakerverify adapt`: a domain mean from audio or from an embedding dir, and what verify
says once scores are centred.

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import json

import numpy as np
from command_helpers import (
    ADAPT_KEYS,
    assert_clean_error,
    run,
)
from speaker_helpers import FP, write_domain_audio


def test_adapt_then_verify_says_centred(enrolled, fake_model, voices, tmp_path):
    domain = tmp_path / "domain"
    write_domain_audio(domain)
    result = run(["adapt", domain, "--model", fake_model, "--store", enrolled, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == ADAPT_KEYS and payload["num_embeddings"] == 24
    verdict = run(
        [
            "verify",
            "ann",
            voices["ann2"],
            "--model",
            fake_model,
            "--store",
            enrolled,
            "--threshold",
            "-1",
        ]
    )
    assert "cosine of centred embeddings; domain of 24 embeddings" in verdict.stdout
    listed = json.loads(run(["speakers", "list", "--store", enrolled, "--json"]).stdout)
    assert listed["domain_mean"]["num_embeddings"] == 24
    assert listed["domain_mean"]["rule"]["cohort_size"] == 24
    assert listed["domain_mean"]["rule"]["top_k"] == 10
    assert payload["rule"]["source"] == "adapted" and payload["rule"]["value"] > 2.32
    # the default rule of an adapted store is the adapted one, and the output says so
    adapted = run(["verify", "ann", voices["ann2"], "--model", fake_model, "--store", enrolled])
    assert adapted.exit_code in (0, 1), adapted.output
    assert (
        "S-norm" in adapted.stdout
        and "adapted: S-norm against 24 in-domain files" in adapted.stdout
    )
    found = run(["identify", voices["ann2"], "--model", fake_model, "--store", enrolled, "--json"])
    assert json.loads(found.stdout)["threshold"]["source"] == "adapted"


def test_adapt_from_embeddings_needs_no_model(enrolled, tmp_path):
    from speakerverify.backend.embedding_dir import save_embeddings

    vectors = np.random.default_rng(0).standard_normal((100, 32)).astype(np.float32)
    save_embeddings(
        tmp_path / "emb", [f"u{i}" for i in range(100)], vectors, {"model_fingerprint": FP}
    )
    result = run(
        ["adapt", "--embeddings", tmp_path / "emb", "--store", enrolled, "--json"],
        env={"SPEAKERVERIFY_MODEL": ""},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_embeddings"] == 100 and result.stderr == ""
    both = run(["adapt", tmp_path, "--embeddings", tmp_path / "emb", "--store", enrolled])
    assert_clean_error(both, "either AUDIO_DIR or --embeddings")


def test_adapt_whitens_from_100_files_and_says_so_unless_told_not_to(
    enrolled, fake_model, voices, tmp_path
):
    domain = tmp_path / "domain"
    write_domain_audio(domain, num_speakers=25, files_each=4)
    adapted = run(["adapt", domain, "--model", fake_model, "--store", enrolled, "--json"])
    assert adapted.exit_code == 0, adapted.output
    folds = json.loads(adapted.stdout)["rule"]["adapted"]["whitening"]
    assert len(folds) == 2 and sum(fold["files"] for fold in folds) == 100
    assert [fold["files"] for fold in folds] == [fold["cohort_files"] for fold in folds[::-1]]
    verdict = run(["verify", "ann", voices["ann2"], "--model", fake_model, "--store", enrolled])
    assert verdict.exit_code in (0, 1), verdict.output
    assert "adapted: whitened in two halves of" in verdict.stdout
    assert "cosine of centred and whitened embeddings; domain of 100" in verdict.stdout
    listed = json.loads(run(["speakers", "list", "--store", enrolled, "--json"]).stdout)
    assert listed["domain_mean"]["rule"]["whitening"] == folds
    told = run(["adapt", domain, "--model", fake_model, "--store", enrolled])
    assert "note: whitening assumes the audio holds many speakers" in told.stdout
    plain = run(
        ["adapt", domain, "--no-whiten", "--model", fake_model, "--store", enrolled, "--json"]
    )
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["rule"]["adapted"]["whitening"] is None
    verdict = run(["verify", "ann", voices["ann2"], "--model", fake_model, "--store", enrolled])
    assert "adapted: S-norm against 100 in-domain files" in verdict.stdout
    assert "cosine of centred embeddings" in verdict.stdout
