"""Miners against brute-force loops in float64: the triplets each strategy selects (with and
without speed-perturbed copies), the random miners' invariants, voxceleb_trainer's hard-negative
sampling, the semi-hard "drop" fallback, and the one call shape of the registry."""

from __future__ import annotations

import math

import pytest
import torch
from triplet_reference import (
    DETERMINISTIC,
    DISTANCES,
    brute_allowed,
    brute_mined,
    brute_triplets,
    copies_batch,
    mine,
    random_batch,
)

from speakerverify.losses import (
    MINERS,
    STRATEGIES,
    MinerOptions,
    TripletLoss,
    distance_matrix,
    mine_triplets,
)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("strategy", DETERMINISTIC)
def test_mine_triplets_selects_the_brute_force_triplets(strategy, distance):
    emb, labels = random_batch(seed=17, num_items=22, num_speakers=5)
    normalized = torch.nn.functional.normalize(emb, dim=1)
    distances = distance_matrix(normalized, distance)
    fallback = "drop" if strategy == "semi_hard_drop" else "hardest"
    base = "semi_hard" if strategy == "semi_hard_drop" else strategy
    anchor, positive, negative = mine_triplets(
        distances, labels, base, 0.2, semi_hard_fallback=fallback
    )
    lab = labels.tolist()
    for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True):
        assert a != p and lab[a] == lab[p] and lab[n] != lab[a]
    mined = sorted(
        (round(distances[a, p].item(), 9), round(distances[a, n].item(), 9))
        for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True)
    )
    kept, _ = brute_triplets(emb.tolist(), lab, strategy, distance, 0.2)
    assert mined == sorted((round(d_ap, 9), round(d_an, 9)) for d_ap, d_an in kept)
    if base in ("batch_all", "semi_hard_all"):  # no ties to break: the exact index triplets
        triplets = set(zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True))
        assert len(triplets) == len(anchor)


def test_every_miner_has_the_one_signature_and_mine_triplets_dispatches_to_it():
    emb, labels = random_batch(seed=19, num_items=16, num_speakers=4)
    distances = distance_matrix(torch.nn.functional.normalize(emb, dim=1))
    assert tuple(MINERS) == STRATEGIES
    for strategy, miner in MINERS.items():
        options = MinerOptions(num_hardest=2, generator=torch.Generator().manual_seed(0))
        direct = miner(distances, labels, 0.2, options)
        generator = torch.Generator().manual_seed(0)
        via = mine_triplets(distances, labels, strategy, 0.2, num_hardest=2, generator=generator)
        assert all(torch.equal(a, b) for a, b in zip(direct, via, strict=True)), strategy


def test_batch_hard_doctest_case_and_batch_all_count():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    distances = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    anchor, positive, negative = mine_triplets(distances, labels, "batch_all", 0.2)
    # anchors of speaker 0: 3×2 pairs × 3 negatives; speaker 1: 2×1 pairs × 4 negatives
    assert len(anchor) == 3 * 2 * 3 + 2 * 1 * 4
    assert len(set(zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True))) == 26


def valid_pairs(labels):
    return {
        (a, p)
        for a in range(len(labels))
        for p in range(len(labels))
        if a != p and labels[a] == labels[p] and any(lab != labels[a] for lab in labels)
    }


@pytest.mark.parametrize("strategy", ["random", "hard_negative"])
def test_random_miners_invariants_and_seeded_determinism(strategy):
    emb, labels = random_batch(seed=5, num_items=24, num_speakers=5)
    distances = distance_matrix(torch.nn.functional.normalize(emb, dim=1))
    num_hardest = 3

    def mine(seed):
        generator = torch.Generator().manual_seed(seed)
        return mine_triplets(
            distances, labels, strategy, 0.2, num_hardest=num_hardest, generator=generator
        )

    anchor, positive, negative = mine(0)
    lab = labels.tolist()
    pairs = list(zip(anchor.tolist(), positive.tolist(), strict=True))
    assert sorted(pairs) == sorted(valid_pairs(lab))  # each valid pair exactly once
    for a, n in zip(anchor.tolist(), negative.tolist(), strict=True):
        assert lab[n] != lab[a]
        if strategy == "hard_negative":
            negatives = sorted(distances[a, j].item() for j in range(len(lab)) if lab[j] != lab[a])
            assert distances[a, n].item() <= negatives[num_hardest - 1]
    again = mine(0)
    assert all(torch.equal(x, y) for x, y in zip((anchor, positive, negative), again, strict=True))
    others = [mine(seed)[2] for seed in range(1, 6)]
    assert any(not torch.equal(negative, other) for other in others)


def test_random_miner_covers_all_negatives():
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    distances = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(60):
        seen |= set(
            mine_triplets(distances, labels, "random", 0.2, generator=generator)[2].tolist()
        )
    assert seen == {2, 3, 4, 5}


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
