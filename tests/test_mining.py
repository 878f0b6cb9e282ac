"""Miners with speed-perturbed copies (origins), voxceleb_trainer's hard-negative sampling and the
semi-hard "drop" fallback, against brute-force loops in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speakerverify.losses import STRATEGIES, TripletLoss, distance_matrix, mine_triplets


def copies_batch(seed: int, num_items: int = 30, num_speakers: int = 4, dim: int = 5):
    """A batch of speakers and their perturbed copies: label = speaker + copy * num_speakers,
    with each copy's embeddings pulled towards its source speaker's (so, unmasked, copies are
    the hardest negatives)."""
    generator = torch.Generator().manual_seed(seed)
    speaker = torch.randint(0, num_speakers, (num_items,), generator=generator)
    copy = torch.randint(0, 3, (num_items,), generator=generator)
    labels = speaker + copy * num_speakers
    centres = torch.randn(num_speakers, dim, generator=generator, dtype=torch.float64)
    noise = torch.randn(num_items, dim, generator=generator, dtype=torch.float64)
    emb = 3 * centres[speaker] + noise
    distances = distance_matrix(torch.nn.functional.normalize(emb, dim=1))
    return distances, labels, labels % num_speakers


def brute_allowed(labels, origins, a):
    """Positives and negatives of anchor a by plain loops (copies are neither)."""
    positives = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
    negatives = [n for n in range(len(labels)) if origins[n] != origins[a]]
    return positives, negatives


def brute_mined(distances, labels, origins, strategy, margin):
    """Sorted (d_ap, d_an) of what a deterministic strategy keeps, with copies excluded."""
    d = distances.tolist()
    kept = []
    for a in range(len(labels)):
        positives, negatives = brute_allowed(labels, origins, a)
        if not positives or not negatives:
            continue
        if strategy == "batch_hard":
            kept.append((max(d[a][p] for p in positives), min(d[a][n] for n in negatives)))
            continue
        for p in positives:
            window = [d[a][n] for n in negatives if d[a][p] < d[a][n] < d[a][p] + margin]
            if strategy == "batch_all":
                kept += [(d[a][p], d[a][n]) for n in negatives]
            elif strategy == "semi_hard_all":
                kept += [(d[a][p], value) for value in window]
            elif strategy == "hard_negative":
                kept.append((d[a][p], min(d[a][n] for n in negatives)))
            elif window:  # semi_hard, semi_hard_drop
                kept.append((d[a][p], min(window)))
            elif strategy == "semi_hard":
                kept.append((d[a][p], min(d[a][n] for n in negatives)))
    return sorted((round(x, 9), round(y, 9)) for x, y in kept)


def mine(distances, labels, strategy, origins=None, **options):
    fallback = "drop" if strategy == "semi_hard_drop" else "hardest"
    base = "semi_hard" if strategy == "semi_hard_drop" else strategy
    return mine_triplets(
        distances, labels, base, 0.3, semi_hard_fallback=fallback, origins=origins, **options
    )


@pytest.mark.parametrize("strategy", [*STRATEGIES, "semi_hard_drop"])
def test_copies_are_never_negatives(strategy):
    distances, labels, origins = copies_batch(seed=3)
    generator = torch.Generator().manual_seed(0)
    options = {"num_hardest": 3, "hard_probability": 0.5, "generator": generator}
    anchor, positive, negative = mine(distances, labels, strategy, origins, **options)
    assert len(anchor) > 0
    assert (labels[anchor] == labels[positive]).all() and (anchor != positive).all()
    assert (origins[negative] != origins[anchor]).all()
    # without the origins the same batch does mine copies (the test would catch a no-op mask)
    unmasked = mine(distances, labels, strategy, **options | {"generator": generator})
    assert (origins[unmasked[2]] == origins[unmasked[0]]).any()


@pytest.mark.parametrize(
    "strategy",
    ["batch_all", "batch_hard", "semi_hard", "semi_hard_drop", "semi_hard_all", "hard_negative"],
)
def test_deterministic_miners_with_copies_equal_brute_force(strategy):
    distances, labels, origins = copies_batch(seed=11)
    anchor, positive, negative = mine(distances, labels, strategy, origins)
    mined = sorted(
        (round(distances[a, p].item(), 9), round(distances[a, n].item(), 9))
        for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True)
    )
    assert mined == brute_mined(distances, labels.tolist(), origins.tolist(), strategy, 0.3)


def test_triplet_loss_masks_copies_through_its_label_map():
    _, labels, origins = copies_batch(seed=5)
    emb = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(1))
    speaker_of_label = torch.arange(12) % 4
    masked = TripletLoss(mining="batch_hard", speaker_of_label=speaker_of_label)
    unmasked = TripletLoss(mining="batch_hard")
    # the map reaches the miner: same result as mining with the origins directly
    normalized = torch.nn.functional.normalize(emb, dim=1)
    d = distance_matrix(normalized)
    anchor, positive, negative = mine_triplets(d, labels, "batch_hard", 0.2, origins=origins)
    expected = torch.relu(d[anchor, positive] - d[anchor, negative] + 0.2).mean()
    assert masked(emb, labels).value.item() == pytest.approx(expected.item(), abs=1e-6)
    assert unmasked(emb, labels).value.item() != pytest.approx(expected.item(), abs=1e-6)


def test_semi_hard_drop_keeps_only_window_triplets_and_hardest_fills_the_rest():
    distances, labels, origins = copies_batch(seed=7)
    dropped = mine(distances, labels, "semi_hard_drop", origins)
    filled = mine(distances, labels, "semi_hard", origins)
    d_ap, d_an = distances[dropped[0], dropped[1]], distances[dropped[0], dropped[2]]
    assert ((d_an > d_ap) & (d_an < d_ap + 0.3)).all()
    # "hardest" keeps every pair; "drop" only those with a semi-hard negative, a strict subset
    assert 0 < len(dropped[0]) < len(filled[0])
    pairs = set(zip(filled[0].tolist(), filled[1].tolist(), strict=True))
    assert set(zip(dropped[0].tolist(), dropped[1].tolist(), strict=True)) < pairs


def brute_hard_sets(distances, labels, origins, k):
    """Per anchor: its allowed negatives and its k closest of them (ties broken by index)."""
    d = distances.tolist()
    sets = {}
    for a in range(len(labels)):
        _, negatives = brute_allowed(labels, origins, a)
        hard = sorted(negatives, key=lambda n: (d[a][n], n))[:k]
        sets[a] = (set(negatives), set(hard))
    return sets


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_hard_negative_sampling_against_brute_force(probability):
    distances, labels, origins = copies_batch(seed=13, num_items=40, num_speakers=6)
    k = 4
    sets = brute_hard_sets(distances, labels.tolist(), origins.tolist(), k)
    generator = torch.Generator().manual_seed(2)
    in_hard, total, counts = 0, 0, {}
    expected_in_hard = 0.0
    for _ in range(200):
        anchor, _, negative = mine_triplets(
            distances,
            labels,
            "hard_negative",
            0.2,
            num_hardest=k,
            hard_probability=probability,
            generator=generator,
            origins=origins,
        )
        for a, n in zip(anchor.tolist(), negative.tolist(), strict=True):
            allowed, hard = sets[a]
            assert n in allowed
            in_hard += n in hard
            total += 1
            counts[(a, n)] = counts.get((a, n), 0) + 1
            # hard with probability p, else uniform over the allowed (which may be hard too)
            expected_in_hard += probability + (1 - probability) * len(hard) / len(allowed)
    fraction, expected = in_hard / total, expected_in_hard / total
    # binomial standard error over ~total draws; 5 sigma
    assert abs(fraction - expected) < 5 * math.sqrt(expected * (1 - expected) / total) + 1e-12
    if probability == 0.0:  # uniform: every allowed negative of anchor 0 is drawn
        assert {n for (a, n) in counts if a == 0} == sets[0][0]


def test_hard_negative_with_probability_one_is_unchanged_by_the_new_option():
    distances, labels, _ = copies_batch(seed=17)
    old = mine_triplets(
        distances, labels, "hard_negative", 0.2, num_hardest=3,
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    new = mine_triplets(
        distances, labels, "hard_negative", 0.2, num_hardest=3, hard_probability=1.0,
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    assert all(torch.equal(x, y) for x, y in zip(old, new, strict=True))


def test_option_checks():
    distances, labels, origins = copies_batch(seed=1)
    with pytest.raises(ValueError, match="hard_probability"):
        mine_triplets(distances, labels, "hard_negative", 0.2, hard_probability=1.5)
    with pytest.raises(ValueError, match="origins"):
        mine_triplets(distances, labels, "batch_hard", 0.2, origins=origins[:-1])
    with pytest.raises(ValueError, match="semi_hard_fallback"):
        TripletLoss(semi_hard_fallback="nearest")
    with pytest.raises(ValueError, match="hard_probability"):
        TripletLoss(hard_probability=-0.1)


def test_speaker_of_label_maps_perturbed_copies_to_their_source():
    from speakerverify.data import CropDataset, DataDir

    data = DataDir(
        wav={"u1": "a.wav", "u2": "b.wav", "u3": "c.wav"},
        utt2spk={"u1": "s1", "u2": "s2", "u3": "s3"},
    )
    dataset = CropDataset(data, speed_perturb=True)
    labels = np.asarray(dataset.labels)
    assert dataset.speaker_of_label.tolist() == [0, 1, 2] * 3
    source = np.arange(len(labels)) % len(data)  # item of the unperturbed utterance
    assert (dataset.speaker_of_label[labels] == labels[source]).all()
