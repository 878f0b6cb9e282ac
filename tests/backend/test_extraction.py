"""Embedder determinism, long-file windowing, batching, and sharded/resumable extraction."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from speakerverify.backend.embedder import Embedder, EmbedError, plan_batches
from speakerverify.backend.embedding_dir import load_embeddings
from speakerverify.backend.extraction import (
    _job_slice,
    _make_plan,
    _run_shards,
    extract_embeddings,
)
from speakerverify.data import DataDir
from speakerverify.frontend.features import Fbank
from speakerverify.testing import random_speaker, speech_like


class TinyEncoder(nn.Module):
    """Frame-wise MLP + masked mean/std pooling: follows the encoder interface, runs in ms."""

    def __init__(self, feat_dim: int = 80, embed_dim: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.frame = nn.Sequential(nn.Linear(feat_dim, 32), nn.ReLU())
        self.out = nn.Linear(64, embed_dim)
        self.calls = 0

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        hidden = self.frame(feats)
        if lengths is None:
            lengths = torch.full((feats.shape[0],), feats.shape[1])
        mask = (torch.arange(feats.shape[1])[None] < lengths[:, None]).float()[..., None]
        count = mask.sum(1)
        mean = (hidden * mask).sum(1) / count
        std = ((((hidden - mean[:, None]) ** 2) * mask).sum(1) / count).clamp_min(1e-8).sqrt()
        return self.out(torch.cat([mean, std], dim=1))


def make_embedder(**options) -> Embedder:
    torch.manual_seed(0)
    return Embedder(Fbank(), TinyEncoder(), fingerprint="tiny0001", **options)


@pytest.fixture
def corpus(tmp_path):
    """7 utterances of 0.4-2.5 s from 2 speakers, written as 16 kHz wav."""
    rng = np.random.default_rng(3)
    speakers = [random_speaker(rng) for _ in range(2)]
    wav, utt2spk = {}, {}
    for i, seconds in enumerate([1.0, 0.4, 2.5, 1.2, 0.7, 1.9, 1.0]):
        utt = f"id1000{i % 2}/s/{i:05d}"
        path = tmp_path / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speech_like(seconds, 16000, speakers[i % 2], seed=i), 16000)
        wav[utt] = str(path)
        utt2spk[utt] = utt.split("/")[0]
    return DataDir(wav, utt2spk)


def test_same_file_twice_gives_identical_vectors(corpus):
    embedder = make_embedder()
    path = next(iter(corpus.wav.values()))
    first, second = embedder.embed_file(path), embedder.embed_file(path)
    assert first.dtype == np.float32 and first.shape == (16,)
    assert np.array_equal(first, second)
    # dither in the config must not leak in: eval mode
    assert not embedder.frontend.training and not embedder.encoder.training


def test_short_input_is_one_window_equal_to_whole_file(corpus):
    embedder = make_embedder()
    wave = torch.from_numpy(sf.read(corpus.wav["id10000/s/00002"], dtype="float32")[0])
    assert embedder.windows(wave.shape[0]) == [(0, wave.shape[0])]
    with torch.inference_mode():
        feats, lengths = embedder.frontend(wave[None])
        whole = embedder.encoder(feats, lengths)[0].numpy()
    assert np.array_equal(embedder.embed_waveform(wave), whole)
    # with windowing configured but the input under the limit, nothing changes
    windowed = make_embedder(max_seconds=3.0, window_seconds=1.0, hop_seconds=0.5)
    assert np.array_equal(windowed.embed_waveform(wave), whole)


def test_long_input_is_the_weighted_mean_of_windows(corpus, tmp_path):
    embedder = make_embedder(max_seconds=1.0, window_seconds=0.8, hop_seconds=0.5)
    path = corpus.wav["id10000/s/00002"]  # 2.5 s
    wave = torch.from_numpy(sf.read(path, dtype="float32")[0])
    windows = embedder.windows(wave.shape[0])
    assert windows[0] == (0, 12800) and windows[-1] == (40000 - 12800, 12800)
    assert all(b[0] - a[0] == 8000 for a, b in itertools.pairwise(windows[:-1]))
    reference = np.mean(
        [make_embedder().embed_waveform(wave[s : s + n]) for s, n in windows], axis=0
    )
    np.testing.assert_allclose(embedder.embed_waveform(wave), reference, rtol=1e-5, atol=1e-6)
    # the file path reads window by window and agrees
    np.testing.assert_allclose(embedder.embed_file(path), reference, rtol=1e-5, atol=1e-6)


def test_batched_equals_one_by_one(corpus):
    embedder = make_embedder()
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in corpus.wav.values()]
    batched = embedder.embed_waveforms(waves, batch_size=3)
    single = np.stack([embedder.embed_waveform(w) for w in waves])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)


def test_too_short_input_is_an_error():
    with pytest.raises(EmbedError, match="shorter than a frame"):
        make_embedder().embed_waveform(torch.zeros(100))


class InfEncoder(TinyEncoder):
    """Overflows on the utterance whose features are the loudest of the batch."""

    def forward(self, feats, lengths=None):
        out = super().forward(feats, lengths)
        loudest = feats.mean(dim=(1, 2)).argmax()
        return torch.where(torch.arange(len(out))[:, None] == loudest, torch.inf, out)


def test_a_non_finite_embedding_is_an_error_naming_the_file(corpus, tmp_path):
    embedder = Embedder(Fbank(), InfEncoder(), fingerprint="inf00001")
    with pytest.raises(EmbedError, match="non-finite embedding"):
        embedder.embed_file(next(iter(corpus.wav.values())))
    with pytest.raises(EmbedError, match=r"\.wav \(id1000\d/s/\d{5}\): .*non-finite"):
        extract_embeddings(corpus, tmp_path / "store", embedder, batch_size=3, shard_size=2)
    assert not (tmp_path / "store" / "embeddings.npy").exists()


def test_plan_batches_groups_similar_lengths():
    lengths = [100, 5000, 120, 4900, 110, 99999]
    batches = plan_batches(lengths, max_samples=10000, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [5]  # too long: alone (windowed)
    assert [1, 3] in [sorted(b) for b in batches]


def test_extract_embeddings_store(corpus, tmp_path):
    embedder = make_embedder()
    store = extract_embeddings(corpus, tmp_path / "store", embedder, batch_size=3, shard_size=2)
    assert store.utt_ids == corpus.utt_ids
    assert store.embeddings.shape == (7, 16) and store.embeddings.dtype == np.float32
    assert store.meta["model_fingerprint"] == "tiny0001"
    assert store.meta["frontend"]["num_mel_bins"] == 80
    assert not (tmp_path / "store" / ".shards").exists()
    reloaded = load_embeddings(tmp_path / "store")
    assert isinstance(reloaded.embeddings, np.memmap)
    expected = np.stack([embedder.embed_file(p) for p in corpus.wav.values()])
    np.testing.assert_allclose(reloaded.embeddings, expected, rtol=1e-4, atol=1e-5)
    # a finished store from the same model is reused without any forward pass
    embedder.encoder.calls = 0
    extract_embeddings(corpus, tmp_path / "store", embedder, batch_size=3, shard_size=2)
    assert embedder.encoder.calls == 0


def test_resume_and_ranks_reuse_finished_shards(corpus, tmp_path):
    out = tmp_path / "store"
    embedder = make_embedder()
    whole = extract_embeddings(corpus, tmp_path / "whole", embedder, batch_size=2, shard_size=2)
    plan, _ = _make_plan(corpus, embedder, 2, 2)
    assert len(plan.shards) >= 3
    (out / ".shards").mkdir(parents=True)
    # "rank 1 of 2" finished its shards earlier (or a crashed run left them)
    _run_shards(embedder, corpus, out, plan, rank=1, world_size=2, resume=True, progress=False)
    done = sorted(p.name for p in (out / ".shards").iterdir())
    assert len(done) == len(plan.shards) // 2
    embedder.encoder.calls = 0
    store = extract_embeddings(
        corpus, out, embedder, batch_size=2, shard_size=2, rank=0, world_size=2
    )
    rank0_batches = sum(len(plan.shards[k]) for k in range(0, len(plan.shards), 2))
    assert embedder.encoder.calls <= rank0_batches + 2  # only rank 0's shards were embedded
    np.testing.assert_array_equal(np.asarray(store.embeddings), np.asarray(whole.embeddings))


def test_jobs_give_the_same_store(corpus, tmp_path):
    embedder = make_embedder()
    one = extract_embeddings(corpus, tmp_path / "one", embedder, batch_size=2, shard_size=2)
    two = extract_embeddings(
        corpus, tmp_path / "two", embedder, batch_size=2, shard_size=2, num_jobs=2
    )
    assert two.utt_ids == one.utt_ids
    np.testing.assert_allclose(two.embeddings, one.embeddings, rtol=1e-5, atol=1e-6)


LEAK_SCRIPT = """
import json, sys
import torch
from speakerverify.backend.embedder import Embedder
from speakerverify.backend.extraction import extract_embeddings
from speakerverify.data import DataDir
from speakerverify.frontend.features import Fbank
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model

if __name__ == "__main__":
    wav, utt2spk, out = json.loads(sys.argv[1])
    torch.manual_seed(0)
    encoder = build_model("xvector", feat_dim=24, embed_dim=8, channels=16, stats_channels=16)
    embedder = Embedder(Fbank(FbankConfig(num_mel_bins=24)), encoder, fingerprint="tiny0002")
    data = DataDir(wav, utt2spk)
    store = extract_embeddings(data, out, embedder, shard_size=2, num_jobs=2, progress=True)
    print(len(store.utt_ids))
"""


def test_jobs_exit_cleanly_without_leaked_semaphores(corpus, tmp_path):
    """The worker processes are closed and joined, not terminated: nothing is left for the
    resource tracker to warn about when the command exits."""
    script = tmp_path / "embed_jobs.py"
    script.write_text(LEAK_SCRIPT)
    spec = json.dumps([dict(corpus.wav), dict(corpus.utt2spk), str(tmp_path / "out")])
    result = subprocess.run(
        [sys.executable, str(script), spec], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7"]
    assert "leaked" not in result.stderr and "Traceback" not in result.stderr


# -- one extraction job per visible GPU -------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 4])
def test_cuda_extraction_starts_one_job_per_visible_gpu(monkeypatch, count):
    from speakerverify.backend.extraction import job_devices, rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    expected = [f"cuda:{index}" for index in range(count)]
    assert job_devices("cuda", 1) == expected
    assert job_devices("cuda", 16) == expected  # a CPU count never stacks contexts on cuda:0
    assert job_devices("cuda:0", 16) == ["cuda:0"]
    assert job_devices("cpu", 3) == ["cpu"] * 3
    assert [rank_device("cuda", rank) for rank in range(count)] == expected
    assert rank_device("cpu", 1) == "cpu"


def test_cuda_without_a_visible_gpu_is_an_embed_error(monkeypatch):
    from speakerverify.backend.extraction import job_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(EmbedError, match="no CUDA device"):
        job_devices("cuda", 4)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [({}, ["cuda:0", "cuda:1", "cuda:2"]), ({"WORLD_SIZE": "3", "LOCAL_RANK": "2"}, ["cuda:2"])],
)
def test_embed_command_passes_one_device_per_job(monkeypatch, tmp_path, environment, expected):
    """`speakerverify embed --device cuda --jobs 8` (stage 4's call on a GPU box) loads the model
    on the CPU and hands one job per visible GPU to the extraction; under torchrun, the rank's."""
    from click.testing import CliRunner

    import speakerverify.backend.extraction as extraction
    from speakerverify.cli import main

    data = tmp_path / "data"
    DataDir(wav={"u": "u.wav"}, utt2spk={"u": "s"}).save(data)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    calls = {}

    def fake_load(path, device="cpu", **options):
        calls["load_device"] = device
        return make_embedder()

    class Store:
        dim = 16

        def __len__(self):
            return 1

    def fake_extract(data_dir, out, embedder, **options):
        calls["devices"] = options["devices"]
        return Store()

    monkeypatch.setattr(Embedder, "from_checkpoint", staticmethod(fake_load))
    monkeypatch.setattr(extraction, "extract_embeddings", fake_extract)
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    args = ["embed", "--model", str(model), "--device", "cuda", "--jobs", "8"]
    result = CliRunner().invoke(main, [*args, str(data), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert calls["devices"] == expected
    assert calls["load_device"] == ("cpu" if len(expected) > 1 else expected[0])


def test_jobs_on_listed_devices_give_the_same_store(corpus, tmp_path):
    embedder = make_embedder()
    one = extract_embeddings(corpus, tmp_path / "one", embedder, batch_size=2, shard_size=2)
    two = extract_embeddings(
        corpus, tmp_path / "two", make_embedder(), batch_size=2, shard_size=2,
        devices=["cpu", "cpu"],
    )  # fmt: skip
    np.testing.assert_array_equal(one.embeddings, two.embeddings)


def test_spawned_jobs_receive_only_their_slice_of_the_data_dir(corpus):
    plan, _ = _make_plan(corpus, make_embedder(), batch_size=2, shard_size=2)
    utt_ids = corpus.utt_ids
    assert len(plan.shards) >= 3
    for job in (1, 2):
        part, job_plan, rows = _job_slice(corpus, plan, job, 3)
        mine = range(job, len(plan.shards), 3)
        expected = sorted(i for k in mine for batch in plan.shards[k] for i in batch)
        assert rows.tolist() == expected and len(part) == len(expected) < len(corpus)
        assert list(part.utt_id_column) == [utt_ids[row] for row in expected]
        assert list(part.path_column) == [corpus.wav[utt_ids[row]] for row in expected]
        for k, shard in enumerate(job_plan.shards):
            if k % 3 != job:
                assert shard == []
            else:  # the same batches, numbered in the slice
                assert [[int(rows[i]) for i in batch] for batch in shard] == plan.shards[k]
