"""The brute-force reference of the triplet tests: plain loops over every (anchor, positive,
negative) in float64, and the batches and loss set-ups the test modules share.

A test strategy is a `MINERS` name or "semi_hard_drop" (semi_hard with the "drop" fallback).
"""

from __future__ import annotations

import math

import pytest
import torch

from speakerverify.losses import DEFAULT_REDUCTION, TripletLoss, distance_matrix, mine_triplets

DETERMINISTIC = ["batch_all", "batch_hard", "semi_hard", "semi_hard_drop", "semi_hard_all"]
DETERMINISTIC += ["hard_negative"]
DISTANCES = ["cosine", "euclidean", "squared_euclidean"]


def base_and_fallback(strategy: str) -> tuple[str, str]:
    """The `MINERS` strategy and semi-hard fallback of a test strategy."""
    if strategy == "semi_hard_drop":
        return "semi_hard", "drop"
    return strategy, "hardest"


# ---------------------------------------------------------------- plain loops
def brute_distance(x: list[float], y: list[float], distance: str) -> float:
    if distance == "cosine":
        return 1.0 - float(sum(a * b for a, b in zip(x, y, strict=True)))
    squared = float(sum((a - b) ** 2 for a, b in zip(x, y, strict=True)))
    return squared if distance == "squared_euclidean" else math.sqrt(squared)


def unit(rows: list[list[float]]) -> list[list[float]]:
    return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in rows]


def brute_allowed(labels: list[int], origins: list[int] | None, a: int):
    """Positives and negatives of anchor a: other items with its label, and items of another
    origin (the labels when None: a speaker's speed-perturbed copies are neither)."""
    origins = labels if origins is None else origins
    positives = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
    negatives = [n for n in range(len(labels)) if origins[n] != origins[a]]
    return positives, negatives


def brute_kept(d, labels, strategy, margin, origins=None) -> list[tuple[float, float]]:
    """(d_ap, d_an) of every triplet a deterministic strategy keeps, from the distances `d`
    (nested lists), by plain loops."""
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
    return kept


def brute_triplets(emb, labels, strategy, distance, margin):
    """Distances of the triplets a strategy keeps on L2-normalised `emb`, and the mean distance
    between distinct items (the embedding spread)."""
    e = unit(emb)
    n_items = len(labels)
    d = [[brute_distance(e[i], e[j], distance) for j in range(n_items)] for i in range(n_items)]
    spread = sum(d[i][j] for i in range(n_items) for j in range(n_items) if i != j)
    return brute_kept(d, labels, strategy, margin), spread / (n_items * (n_items - 1))


def brute_mined(distances, labels, origins, strategy, margin):
    """Sorted (d_ap, d_an) of what a deterministic strategy keeps, rounded to 1e-9."""
    kept = brute_kept(distances.tolist(), labels, strategy, margin, origins)
    return sorted((round(x, 9), round(y, 9)) for x, y in kept)


def brute_loss(emb, labels, strategy, distance, margin, soft, reduction):
    kept, spread = brute_triplets(emb, labels, strategy, distance, margin)
    losses = []
    for d_ap, d_an in kept:
        z = d_ap - d_an + margin
        losses.append(math.log1p(math.exp(z)) if soft else max(0.0, z))
    nonzero = sum(1 for value in losses if value > 0)
    denominator = len(losses) if reduction == "mean" else nonzero
    loss = sum(losses) / denominator if denominator else 0.0
    stats = {
        "num_valid": len(kept),
        "num_active": sum(1 for d_ap, d_an in kept if d_ap - d_an + margin > 0),
        "mean_d_ap": sum(k[0] for k in kept) / len(kept) if kept else 0.0,
        "mean_d_an": sum(k[1] for k in kept) / len(kept) if kept else 0.0,
        "frac_semi_hard": (
            sum(1 for a, n in kept if a < n < a + margin) / len(kept) if kept else 0.0
        ),
        "frac_hard": sum(1 for a, n in kept if n < a) / len(kept) if kept else 0.0,
        "embedding_spread": spread,
    }
    return loss, stats


# ---------------------------------------------------------------- batches
def random_batch(seed, num_items, num_speakers, dim=6, singleton=True):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_speakers, (num_items,), generator=generator)
    if singleton:  # one speaker with a single utterance
        labels[0] = num_speakers
    emb = torch.randn(num_items, dim, generator=generator, dtype=torch.float64)
    return emb, labels


def copies_batch(seed: int, num_items: int = 30, num_speakers: int = 4, dim: int = 5):
    """A batch of speakers and their perturbed copies: label = speaker + copy * num_speakers,
    with each copy's embeddings pulled towards its source speaker's (so, unmasked, copies are
    the hardest negatives). Returns distances, labels and origins."""
    generator = torch.Generator().manual_seed(seed)
    speaker = torch.randint(0, num_speakers, (num_items,), generator=generator)
    copy = torch.randint(0, 3, (num_items,), generator=generator)
    labels = speaker + copy * num_speakers
    centres = torch.randn(num_speakers, dim, generator=generator, dtype=torch.float64)
    noise = torch.randn(num_items, dim, generator=generator, dtype=torch.float64)
    emb = 3 * centres[speaker] + noise
    distances = distance_matrix(torch.nn.functional.normalize(emb, dim=1))
    return distances, labels, labels % num_speakers


# ---------------------------------------------------------------- the code under test
def make_loss(strategy, **args):
    base, fallback = base_and_fallback(strategy)
    return TripletLoss(mining=base, semi_hard_fallback=fallback, **args)


def mine(distances, labels, strategy, origins=None, **options):
    base, fallback = base_and_fallback(strategy)
    return mine_triplets(
        distances, labels, base, 0.3, semi_hard_fallback=fallback, origins=origins, **options
    )


def check_against_brute(emb, labels, strategy, distance, soft, reduction, margin=0.2):
    loss_fn = make_loss(
        strategy, margin=margin, distance=distance, soft_margin=soft, reduction=reduction
    )
    value, got = loss_fn(emb, labels)
    base, _ = base_and_fallback(strategy)
    expected, stats = brute_loss(
        emb.tolist(), labels.tolist(), strategy, distance, margin, soft, loss_fn.reduction
    )
    assert loss_fn.reduction == (reduction or DEFAULT_REDUCTION[base])
    assert value.item() == pytest.approx(expected, abs=1e-9, rel=0)
    for key, reference in stats.items():
        assert got[key] == pytest.approx(reference, abs=1e-9), key
    return value, loss_fn
