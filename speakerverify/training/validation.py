"""Validation during training: EER/minDCF of an encoder on a trial list, by cosine scoring of
embeddings made with the evaluation `Embedder` (so the figures match `speakerverify evaluate`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["validate"]


def validate(
    encoder: nn.Module,
    features: dict[str, Any],
    valid_dir: str | os.PathLike,
    valid_trials: str | os.PathLike,
    device: str | torch.device = "cpu",
    max_seconds: float = 20.0,
    batch_size: int = 32,
) -> dict[str, float]:
    """EER/minDCF of `encoder` (left in eval mode) on a trial list by cosine scoring.

    The trial utterances are embedded in batches of similar length (`batch_size` at most, as
    `speakerverify embed` batches them); files longer than `max_seconds` are embedded alone in
    windows (`speakerverify.backend.embedder.Embedder`).

    Returns:
        `compute_metrics` output as plain floats (at least "eer" and "min_dcf").
    """
    from speakerverify.backend.embedder import Embedder
    from speakerverify.backend.extraction import embed_data_dir
    from speakerverify.backend.metrics import compute_metrics
    from speakerverify.backend.scoring import l2_normalize
    from speakerverify.data import DataDir, read_trials
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.frontend.features import Fbank

    data_dir = DataDir.load(valid_dir)
    trials = read_trials(valid_trials, data_dir)
    frontend = Fbank(FbankConfig.from_dict(features))
    # The evaluation embedder (eval mode, no dither, long files in windows), so validation EER
    # matches `speakerverify evaluate` on the same checkpoint.
    embedder = Embedder(frontend, encoder, device=str(device), max_seconds=max_seconds)
    utt_ids = sorted(set(trials.enroll) | set(trials.test))
    vectors = l2_normalize(embed_data_dir(data_dir.subset(utt_ids), embedder, batch_size))
    row = {u: i for i, u in enumerate(utt_ids)}
    enroll = vectors[[row[u] for u in trials.enroll]]
    test = vectors[[row[u] for u in trials.test]]
    scores = np.sum(enroll * test, axis=1)
    metrics = compute_metrics(scores, np.asarray(trials.labels))
    result = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number)}
    if "min_dcf" not in result and "min_dcf_0.01" in result:
        result["min_dcf"] = result["min_dcf_0.01"]
    return result
