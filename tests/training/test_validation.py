"""Per-epoch validation embeds the trial utterances in batches, with the same figures as embedding
them file by file."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerverify.backend.embedder import Embedder
from speakerverify.backend.metrics import compute_metrics
from speakerverify.data import DataDir, Trials, write_trials
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.frontend.features import Fbank
from speakerverify.models import build_model
from speakerverify.testing import random_speaker, speech_like
from speakerverify.training.validation import validate


@pytest.fixture(scope="module")
def trial_set(tmp_path_factory):
    """4 speakers × 3 files of 1.0-2.6 s (different lengths, so batches need padding)."""
    root = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    wav, utt2spk = {}, {}
    for spk in range(4):
        speaker = random_speaker(rng)
        for utt in range(3):
            seconds = 1.0 + 0.2 * (3 * spk + utt) % 1.6
            path = root / f"s{spk}_{utt}.wav"
            sf.write(path, speech_like(seconds, 16000, speaker, seed=10 * spk + utt), 16000)
            wav[f"s{spk}_{utt}"], utt2spk[f"s{spk}_{utt}"] = str(path), f"s{spk}"
    DataDir(wav=wav, utt2spk=utt2spk).save(root / "data")
    pairs = list(itertools.combinations(sorted(wav), 2))
    labels = np.array([utt2spk[a] == utt2spk[b] for a, b in pairs], dtype=np.int8)
    trials = Trials([a for a, _ in pairs], [b for _, b in pairs], labels, name="valid")
    write_trials(root / "trials.txt", trials)
    return root, trials


def test_validation_embeds_in_batches_with_the_file_by_file_figures(trial_set, monkeypatch):
    root, trials = trial_set
    torch.manual_seed(0)
    encoder = build_model("xvector", feat_dim=24, embed_dim=16, channels=32, stats_channels=64)
    features = FbankConfig(num_mel_bins=24).to_dict()
    batch_sizes, files = [], []
    embed_batch, embed_file = Embedder._embed_batch, Embedder.embed_file

    def counting_batch(self, waves):
        batch_sizes.append(len(waves))
        return embed_batch(self, waves)

    def counting_file(self, path):
        files.append(path)
        return embed_file(self, path)

    monkeypatch.setattr(Embedder, "_embed_batch", counting_batch)
    monkeypatch.setattr(Embedder, "embed_file", counting_file)
    got = validate(encoder, features, root / "data", root / "trials.txt", batch_size=8)
    assert sum(batch_sizes) + len(files) == 12 and max(batch_sizes) > 1 and not files
    # reference: one file at a time, the way validation embedded before
    embedder = Embedder(Fbank(FbankConfig.from_dict(features)), encoder, device="cpu")
    data = DataDir.load(root / "data")
    vectors = {u: embed_file(embedder, data.wav[u]) for u in data.wav}
    vectors = {u: v / np.linalg.norm(v) for u, v in vectors.items()}
    pairs = zip(trials.enroll, trials.test, strict=True)
    scores = np.array([vectors[a] @ vectors[b] for a, b in pairs])
    expected = compute_metrics(scores, np.asarray(trials.labels))
    assert got["eer"] == pytest.approx(float(expected["eer"]), abs=1e-6)
