"""Hostile inputs to `score`, `evaluate` and `calibrate` (issue 22, scoring surface): one line
naming the file and line, exit 2, no traceback."""

from __future__ import annotations

from hostile_helpers import assert_one_line_error, run


def test_a_trial_list_that_is_not_utf8(tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_bytes(b"1 a/1.wav b/1.wav\n0 a/\xe9.wav c/1.wav\n")
    scores = tmp_path / "scores.txt"
    scores.write_text("a/1 b/1 0.9\na/x c/1 0.1\n")
    result = run(["evaluate", trials, scores])
    assert_one_line_error(result, "trials.txt:2: not UTF-8 text (byte 0xe9 at column 5)")


def test_a_score_file_that_is_not_utf8(tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/1.wav b/1.wav\n0 a/2.wav c/1.wav\n")
    scores = tmp_path / "scores.txt"
    scores.write_bytes(b"a/1 b/1 0.9\na/2 c/1 \xff0.1\n")
    result = run(["evaluate", trials, scores])
    assert_one_line_error(result, "scores.txt:2: not UTF-8 text (byte 0xff at column 9)")


def test_conflicting_duplicate_score_lines_are_refused(tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/1.wav b/1.wav\n0 a/2.wav c/1.wav\n")
    scores = tmp_path / "scores.txt"
    scores.write_text("a/2 c/1 0.1\na/1 b/1 0.9\na/2 c/1 0.95\n")  # the last used to win
    result = run(["evaluate", trials, scores])
    assert_one_line_error(
        result, "scores.txt:3: trial 'a/2 c/1' is scored 0.95 here but 0.1 on line 1"
    )
    scores.write_text("a/2 c/1 0.1\na/1 b/1 0.9\na/2 c/1 0.1\n")  # the same twice is fine
    assert run(["evaluate", trials, scores]).exit_code == 0


def test_duplicate_trials_are_refused_not_counted_twice(tmp_path):
    trials = tmp_path / "trials.txt"
    scores = tmp_path / "scores.txt"
    scores.write_text("a/1 b/1 0.9\na/2 c/1 0.1\n")
    trials.write_text("1 a/1.wav b/1.wav\n0 a/2.wav c/1.wav\n\n1 a/1.wav b/1.wav\n")  # EER 0 %
    result = run(["evaluate", trials, scores])
    assert_one_line_error(result, "trials.txt:4: trial 'a/1 b/1' is already on line 1")
    trials.write_text("a/1 b/1 target\na/2 c/1 nontarget\na/2 c/1 target\n")
    result = run(["score", trials, tmp_path / "emb", "--out", tmp_path / "out.txt"])
    assert_one_line_error(
        result,
        "trials.txt:3: trial 'a/2 c/1' is a target trial here but a nontarget trial on line 2",
    )


def test_score_with_a_nan_embedding_writes_no_nan_scores(tmp_path):
    import numpy as np

    from speakerverify.backend.embedding_dir import save_embeddings

    ids = ["a/1", "b/1", "a/2", "c/1"]
    vectors = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    vectors[3] = np.nan
    save_embeddings(tmp_path / "emb", ids, vectors, {"model_fingerprint": "abcd"})
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/1.wav b/1.wav\n0 a/2.wav c/1.wav\n")
    out = tmp_path / "scores.txt"
    result = run(["score", trials, tmp_path / "emb", "--out", out])
    assert_one_line_error(result, "1 trial(s) score NaN or infinity, e.g. 'a/2 c/1'")
    assert not out.exists()
