"""CropDataset: crops read by seeking, wrap padding, seeds, speed perturbation, collation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import speakerverify.data.reading as reading
from speakerverify.data import CropDataset, DataDir, PKSampler, collate_crops

SR = 16000


def write_wav(path, wave):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SR, subtype="FLOAT")
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    """spkA: a 30 s ramp-like noise file and a 0.5 s file; spkB: two 3 s tones (1000 Hz)."""
    rng = np.random.default_rng(0)
    long = (0.5 * rng.uniform(-1, 1, 30 * SR)).astype(np.float32)
    short = (0.5 * rng.uniform(-1, 1, SR // 2)).astype(np.float32)
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(3 * SR) / SR)).astype(np.float32)
    wav = {
        "spkA/long": write_wav(tmp_path / "long.wav", long),
        "spkA/short": write_wav(tmp_path / "short.wav", short),
        "spkB/tone1": write_wav(tmp_path / "tone1.wav", tone),
        "spkB/tone2": write_wav(tmp_path / "tone2.wav", tone),
    }
    data = DataDir(wav=wav, utt2spk={u: u.split("/")[0] for u in wav})
    return data, {"long": long, "short": short, "tone": tone}


def find_offset(full, crop):
    """Start of `crop` inside `full` (exact match), or -1."""
    hits = np.flatnonzero(full[: len(full) - len(crop) + 1] == crop[0])
    for start in hits:
        if np.array_equal(full[start : start + len(crop)], crop):
            return int(start)
    return -1


def test_crop_is_a_seeked_slice_of_the_file(corpus, monkeypatch):
    data, signals = corpus
    requested = []
    real_load = reading.load_audio

    def spy(path, sample_rate=16000, **kwargs):
        requested.append(kwargs.get("duration_seconds"))
        return real_load(path, sample_rate, **kwargs)

    monkeypatch.setattr(reading, "load_audio", spy)
    dataset = CropDataset(data, chunk_seconds=2.0)
    offsets = set()
    for seed in range(5):
        item = dataset[(0, seed)]
        assert item["wave"].shape == (2 * SR,) and item["wave"].dtype == torch.float32
        assert item["utt_id"] == "spkA/long" and item["label"] == 0
        offset = find_offset(signals["long"], item["wave"].numpy())
        assert offset >= 0
        offsets.add(offset)
    assert len(offsets) == 5  # seed moves the crop
    assert requested == [2.0] * 5  # only 2 s of the 30 s file were ever read


def test_same_key_same_crop_and_durations_do_not_change_it(corpus):
    data, _ = corpus
    dataset = CropDataset(data, chunk_seconds=1.0)
    a, b = dataset[(0, 42)], dataset[(0, 42)]
    assert torch.equal(a["wave"], b["wave"])
    assert not torch.equal(a["wave"], dataset[(0, 43)]["wave"])
    durations = {u: 30.0 if "long" in u else 3.0 for u in data.wav}
    durations["spkA/short"] = 0.5  # (a DataDir's mappings are read-only views)
    with_durations = DataDir(wav=data.wav, utt2spk=data.utt2spk, utt2dur=durations)
    assert torch.equal(CropDataset(with_durations, 1.0)[(0, 42)]["wave"], a["wave"])
    assert torch.equal(dataset[0]["wave"], dataset[(0, 0)]["wave"])  # bare index: seed = index


def test_short_file_is_wrap_padded(corpus):
    data, signals = corpus
    item = CropDataset(data, chunk_seconds=1.2)[(1, 0)]
    wave = item["wave"].numpy()
    n = len(signals["short"])
    np.testing.assert_allclose(wave[:n], signals["short"], atol=1e-6)
    np.testing.assert_allclose(wave[n : 2 * n], signals["short"], atol=1e-6)
    np.testing.assert_allclose(wave[2 * n :], signals["short"][: len(wave) - 2 * n], atol=1e-6)


def dominant_hz(wave):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * SR / len(wave)


def test_speed_perturbation_makes_new_speakers(corpus):
    data, _ = corpus
    dataset = CropDataset(data, chunk_seconds=1.0, speed_perturb=True)
    assert len(dataset) == 12 and dataset.num_classes == 6
    assert dataset.speakers == [
        "spkA",
        "spkB",
        "sp0.9-spkA",
        "sp0.9-spkB",
        "sp1.1-spkA",
        "sp1.1-spkB",
    ]
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    plain, slow, fast = dataset[(2, 1)], dataset[(6, 1)], dataset[(10, 1)]
    assert (slow["utt_id"], slow["label"]) == ("sp0.9-spkB/tone1", 3)
    assert (fast["utt_id"], fast["label"]) == ("sp1.1-spkB/tone1", 5)
    assert all(x["wave"].shape == (SR,) for x in (plain, slow, fast))
    assert dominant_hz(plain["wave"].numpy()) == pytest.approx(1000, abs=3)
    assert dominant_hz(slow["wave"].numpy()) == pytest.approx(900, abs=3)  # slower, lower
    assert dominant_hz(fast["wave"].numpy()) == pytest.approx(1100, abs=3)
    assert dataset[(8, 0)]["wave"].shape == (SR,)  # a 0.5 s file at 1.1x still fills the crop


def test_speaker_of_label_maps_perturbed_copies_to_their_source():
    data = DataDir(
        wav={"u1": "a.wav", "u2": "b.wav", "u3": "c.wav"},
        utt2spk={"u1": "s1", "u2": "s2", "u3": "s3"},
    )
    dataset = CropDataset(data, speed_perturb=True)
    labels = np.asarray(dataset.labels)
    assert dataset.speaker_of_label.tolist() == [0, 1, 2] * 3
    source = np.arange(len(labels)) % len(data)  # item of the unperturbed utterance
    assert (dataset.speaker_of_label[labels] == labels[source]).all()


def test_augmenter_gets_the_item_rng(corpus):
    data, _ = corpus
    calls = []

    def augmenter(wave, rng):
        calls.append(wave.shape)
        return wave + np.float32(rng.uniform(0.1, 0.2))

    dataset = CropDataset(data, chunk_seconds=0.5, augmenter=augmenter)
    plain = CropDataset(data, chunk_seconds=0.5)
    a, b = dataset[(3, 9)]["wave"], dataset[(3, 9)]["wave"]
    assert torch.equal(a, b) and calls == [(SR // 2,)] * 2
    shift = (a - plain[(3, 9)]["wave"]).numpy()
    assert np.allclose(shift, shift[0], atol=1e-6) and 0.1 <= shift[0] <= 0.2


def test_collate_and_loader_independent_of_worker_count(corpus):
    data, _ = corpus
    dataset = CropDataset(data, chunk_seconds=0.5, speed_perturb=True)
    sampler = PKSampler(dataset.labels, num_speakers=3, num_utts=2, seed=0)

    def run(num_workers):
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_crops
        )
        return list(loader)

    serial, parallel = run(0), run(2)
    assert len(serial) == len(sampler)
    for x, y in zip(serial, parallel, strict=True):
        assert x["waves"].shape == (6, SR // 2) and x["labels"].dtype == torch.long
        assert torch.equal(x["waves"], y["waves"]) and torch.equal(x["labels"], y["labels"])
        assert x["utt_ids"] == y["utt_ids"] and len(x["utt_ids"]) == 6
        assert len(set(x["labels"].tolist())) == 3


def test_bad_arguments(corpus):
    data, _ = corpus
    with pytest.raises(ValueError, match="chunk_seconds"):
        CropDataset(data, chunk_seconds=0)
    with pytest.raises(IndexError):
        CropDataset(data)[(4, 0)]
