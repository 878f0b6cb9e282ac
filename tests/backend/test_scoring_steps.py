"""Tests for `backend.scoring_steps.evaluate_scores`, the library behind `speakerverify evaluate`:
its document is `compute_metrics` of the files plus minCllr, with None for infinite thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from speakerverify.backend.calibration import min_cllr
from speakerverify.backend.metrics import compute_metrics
from speakerverify.backend.scoring_steps import evaluate_scores


def test_evaluate_scores_is_compute_metrics_of_the_files(tmp_path):
    labels = np.array([1, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.2, 0.7, 0.4, 0.3, 0.5])
    trials = tmp_path / "trials.txt"
    trials.write_text("".join(f"{y} e{i}.wav t{i}.wav\n" for i, y in enumerate(labels)))
    score_file = tmp_path / "scores.txt"
    score_file.write_text("".join(f"e{i} t{i} {s}\n" for i, s in enumerate(scores)))
    result = evaluate_scores(trials, score_file, llr=True)
    expected = compute_metrics(scores, labels)
    for key, value in expected.items():
        assert result[key] == (pytest.approx(value) if np.isfinite(value) else None), key
    assert result["min_cllr"] == pytest.approx(min_cllr(scores, labels))
    assert {"cllr", "act_dcf_0.01", "act_dcf_0.05"} <= set(result) and "plots" not in result
