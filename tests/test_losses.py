"""Triplet loss and miners against a brute-force loop over all (anchor, positive, negative)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import speakerverify.losses.objective as objective_module
from speakerverify.losses import (
    DEFAULT_REDUCTION,
    LOSSES,
    MINERS,
    STAT_KEYS,
    STRATEGIES,
    LossOutput,
    MinerOptions,
    TripletLoss,
    build_loss,
    distance_matrix,
    mine_triplets,
    pair_distances,
)

DETERMINISTIC = ["batch_all", "batch_hard", "semi_hard", "semi_hard_drop", "semi_hard_all"]
DETERMINISTIC += ["hard_negative"]
DISTANCES = ["cosine", "euclidean", "squared_euclidean"]


# ---------------------------------------------------------------- brute-force reference
def brute_distance(x: np.ndarray, y: np.ndarray, distance: str) -> float:
    if distance == "cosine":
        return 1.0 - float(sum(a * b for a, b in zip(x, y, strict=True)))
    squared = float(sum((a - b) ** 2 for a, b in zip(x, y, strict=True)))
    return squared if distance == "squared_euclidean" else math.sqrt(squared)


def brute_triplets(emb, labels, strategy, distance, margin):
    """Distances of the triplets a strategy keeps, enumerated by plain loops."""
    e = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in emb]
    n_items = len(labels)
    d = [[brute_distance(e[i], e[j], distance) for j in range(n_items)] for i in range(n_items)]
    kept = []  # (d_ap, d_an)
    for a in range(n_items):
        positives = [p for p in range(n_items) if p != a and labels[p] == labels[a]]
        negatives = [n for n in range(n_items) if labels[n] != labels[a]]
        if not positives or not negatives:
            continue
        if strategy == "batch_hard":
            kept.append((max(d[a][p] for p in positives), min(d[a][n] for n in negatives)))
            continue
        for p in positives:
            if strategy == "batch_all":
                kept += [(d[a][p], d[a][n]) for n in negatives]
            elif strategy == "semi_hard_all":
                kept += [
                    (d[a][p], d[a][n]) for n in negatives if d[a][p] < d[a][n] < d[a][p] + margin
                ]
            elif strategy == "hard_negative":
                kept.append((d[a][p], min(d[a][n] for n in negatives)))
            else:  # semi_hard / semi_hard_drop
                window = [d[a][n] for n in negatives if d[a][p] < d[a][n] < d[a][p] + margin]
                if window:
                    kept.append((d[a][p], min(window)))
                elif strategy == "semi_hard":
                    kept.append((d[a][p], min(d[a][n] for n in negatives)))
    spread = sum(d[i][j] for i in range(n_items) for j in range(n_items) if i != j)
    return kept, spread / (n_items * (n_items - 1))


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


def make_loss(strategy, **args):
    if strategy == "semi_hard_drop":
        return TripletLoss(mining="semi_hard", semi_hard_fallback="drop", **args)
    return TripletLoss(mining=strategy, **args)


def random_batch(seed, num_items, num_speakers, dim=6, singleton=True):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_speakers, (num_items,), generator=generator)
    if singleton:  # one speaker with a single utterance
        labels[0] = num_speakers
    emb = torch.randn(num_items, dim, generator=generator, dtype=torch.float64)
    return emb, labels


def check_against_brute(emb, labels, strategy, distance, soft, reduction, margin=0.2):
    loss_fn = make_loss(
        strategy, margin=margin, distance=distance, soft_margin=soft, reduction=reduction
    )
    value, got = loss_fn(emb, labels)
    base = "semi_hard" if strategy == "semi_hard_drop" else strategy
    expected, stats = brute_loss(
        emb.tolist(), labels.tolist(), strategy, distance, margin, soft, loss_fn.reduction
    )
    assert loss_fn.reduction == (reduction or DEFAULT_REDUCTION[base])
    assert value.item() == pytest.approx(expected, abs=1e-9, rel=0)
    for key, reference in stats.items():
        assert got[key] == pytest.approx(reference, abs=1e-9), key
    return value, loss_fn


# ---------------------------------------------------------------- exact values
@pytest.mark.parametrize("soft", [False, True], ids=["hinge", "soft"])
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("strategy", DETERMINISTIC)
@pytest.mark.parametrize("reduction", [None, "mean", "mean_active"])
def test_loss_equals_brute_force(strategy, distance, soft, reduction):
    emb, labels = random_batch(seed=len(strategy) + len(distance), num_items=20, num_speakers=5)
    check_against_brute(emb, labels, strategy, distance, soft, reduction)


@pytest.mark.parametrize("path_ratio", [0, 10**9], ids=["matrix_path", "pair_path"])
@pytest.mark.parametrize("strategy", DETERMINISTIC)
def test_both_gradient_paths_equal_brute_force(monkeypatch, strategy, path_ratio):
    monkeypatch.setattr(objective_module, "PAIR_PATH_RATIO", path_ratio)
    emb, labels = random_batch(seed=7, num_items=30, num_speakers=6)
    emb.requires_grad_(True)
    value, _ = check_against_brute(emb, labels, strategy, "euclidean", False, None)
    value.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_no_semi_hard_negative_falls_back_or_drops():
    # Tiny margin: the semi-hard window d_ap < d_an < d_ap + m is empty for every pair.
    emb, labels = random_batch(seed=3, num_items=16, num_speakers=4)
    for strategy in ("semi_hard", "semi_hard_drop", "semi_hard_all"):
        check_against_brute(emb, labels, strategy, "cosine", False, None, margin=1e-12)
    dropped = make_loss("semi_hard_drop", margin=1e-12)
    value, stats = dropped(emb, labels)
    assert stats["num_valid"] == 0 and value.item() == 0.0
    fallback = make_loss("semi_hard", margin=1e-12)
    _, stats = fallback(emb, labels)
    assert stats["num_valid"] > 0 and stats["frac_semi_hard"] == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_zero_losses_give_zero_and_zero_gradient(strategy):
    # Two tight, far-apart clusters: every triplet satisfies the margin.
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    noise = 1e-3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0)).double()
    emb = (centres[labels] + noise).requires_grad_(True)
    loss_fn = TripletLoss(mining=strategy, margin=0.2, seed=0)
    value, stats = loss_fn(emb, labels)
    value.backward()
    assert value.item() == 0.0 and stats["num_active"] == 0
    # semi_hard_all keeps only margin violators, so it mines nothing here
    assert (stats["num_valid"] == 0) == (strategy == "semi_hard_all")
    assert torch.equal(emb.grad, torch.zeros_like(emb))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_without_triplets(strategy):
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    for labels in (torch.zeros(5, dtype=torch.long), torch.arange(5)):  # no negative / positive
        loss_fn = TripletLoss(mining=strategy, seed=0)
        value, stats = loss_fn(emb, labels)
        value.backward()
        assert value.item() == 0.0 and stats["num_valid"] == 0
        assert set(STAT_KEYS) <= set(stats)


def test_pair_distances_match_the_matrix():
    emb = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    first, second = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 1, 4, 0])
    for distance in DISTANCES:
        matrix = distance_matrix(emb, distance)
        torch.testing.assert_close(
            pair_distances(emb[first], emb[second], distance), matrix[first, second]
        )


def test_squared_euclidean_is_facenet_form():
    a, p, n = torch.eye(3, dtype=torch.float64)
    emb = torch.stack([a, p * 0.6 + a * 0.8, n])
    loss_fn = TripletLoss(margin=1.8, mining="batch_all", distance="squared_euclidean")
    value, _ = loss_fn(emb, torch.tensor([0, 0, 1]))
    d_ap, d_an = ((emb[0] - emb[1]) ** 2).sum(), ((emb[0] - emb[2]) ** 2).sum()
    # batch_all over the two anchors with a positive: (0,1,2) and (1,0,2)
    d_pn = ((emb[1] - emb[2]) ** 2).sum()
    expected = (torch.relu(d_ap - d_an + 1.8) + torch.relu(d_ap - d_pn + 1.8)).item() / 2
    assert d_ap.item() == pytest.approx(0.4) and d_an.item() == pytest.approx(2.0)
    assert value.item() == pytest.approx(expected, abs=1e-12)
    assert value.item() == pytest.approx(0.2, abs=1e-12)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("path_ratio", [0, 10**9], ids=["matrix_path", "pair_path"])
@pytest.mark.parametrize("soft", [False, True], ids=["hinge", "soft"])
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("strategy", DETERMINISTIC)
def test_gradcheck(monkeypatch, strategy, distance, soft, path_ratio):
    monkeypatch.setattr(objective_module, "PAIR_PATH_RATIO", path_ratio)
    emb, labels = random_batch(seed=11, num_items=8, num_speakers=3, dim=4, singleton=False)
    emb.requires_grad_(True)
    loss_fn = make_loss(strategy, margin=0.3, distance=distance, soft_margin=soft)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels).value, (emb,), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- miners
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


def test_loss_seed_makes_random_mining_reproducible():
    emb, labels = random_batch(seed=2, num_items=24, num_speakers=4)
    values = [TripletLoss(mining="random", seed=9)(emb, labels).value.item() for _ in range(2)]
    assert values[0] == values[1]


def test_batch_hard_doctest_case_and_batch_all_count():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    distances = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
    anchor, positive, negative = mine_triplets(distances, labels, "batch_all", 0.2)
    # anchors of speaker 0: 3×2 pairs × 3 negatives; speaker 1: 2×1 pairs × 4 negatives
    assert len(anchor) == 3 * 2 * 3 + 2 * 1 * 4
    assert len(set(zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True))) == 26


def test_margin_is_settable_and_validated():
    loss_fn = TripletLoss(margin=0.1)
    loss_fn.margin = 0.3
    emb, labels = random_batch(seed=1, num_items=12, num_speakers=3)
    _, stats = loss_fn(emb, labels)
    assert stats["margin"] == 0.3
    with pytest.raises(ValueError, match="margin"):
        loss_fn.margin = -1.0


def test_margin_per_call_is_used_and_leaves_the_default():
    emb, labels = random_batch(seed=1, num_items=12, num_speakers=3)
    loss_fn = TripletLoss(margin=0.1, mining="batch_all")
    value, stats = loss_fn(emb, labels, margin=0.3)
    expected, _ = brute_loss(
        emb.tolist(), labels.tolist(), "batch_all", "cosine", 0.3, False, "mean_active"
    )
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert stats["margin"] == 0.3 and loss_fn.margin == 0.1
    assert loss_fn(emb, labels).stats["margin"] == 0.1
    contrastive = build_loss("contrastive")
    assert contrastive(emb, labels).stats["margin"] == 1.0
    assert contrastive(emb, labels, margin=0.5).stats["margin"] == 0.5


@pytest.mark.parametrize("name", ["triplet", "contrastive", "info_nce", "angular_prototypical"])
def test_every_loss_returns_value_and_stats_and_only_margin_losses_take_one(name):
    emb, labels = random_batch(seed=2, num_items=12, num_speakers=3)
    output = build_loss(name).double()(emb, labels)
    assert isinstance(output, LossOutput) and output.value.ndim == 0
    assert output.stats["embedding_spread"] > 0
    assert ("margin" in output.stats) == LOSSES[name].has_margin
    if not LOSSES[name].has_margin:
        with pytest.raises(TypeError):
            build_loss(name)(emb, labels, margin=0.2)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_class_declares_its_margin_and_mining_contract(name):
    """`has_margin` and `mines` are stated by each class itself (no side table, no default
    inherited by accident) and match what its forward accepts."""
    import inspect

    cls = LOSSES[name]
    assert isinstance(vars(cls).get("has_margin"), bool)
    assert isinstance(vars(cls).get("mines"), bool)
    parameters = inspect.signature(cls.forward).parameters
    assert ("margin" in parameters) == cls.has_margin
    assert ("mining" in parameters) == cls.mines
    assert {n for n, c in LOSSES.items() if c.has_margin} == {"triplet", "contrastive"}
    assert {n for n, c in LOSSES.items() if c.mines} == {"triplet"}


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


def test_unknown_names_are_rejected_with_valid_list():
    with pytest.raises(ValueError, match="batch_hard"):
        TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="cosine"):
        TripletLoss(distance="manhattan")
    with pytest.raises(ValueError, match="mean_active"):
        TripletLoss(reduction="sum")
    with pytest.raises(ValueError, match="triplet"):
        build_loss("arcface")
    assert isinstance(build_loss("triplet", mining="batch_hard"), TripletLoss)


# ---------------------------------------------------------------- pytorch-metric-learning
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("strategy", ["batch_all", "batch_hard", "semi_hard_all"])
def test_matches_pytorch_metric_learning(strategy, distance):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
    pml_distance = {
        "cosine": pml_distances.CosineSimilarity(),
        "euclidean": pml_distances.LpDistance(),
        "squared_euclidean": pml_distances.LpDistance(power=2),
    }[distance]
    emb, labels = random_batch(seed=4, num_items=32, num_speakers=8, dim=8, singleton=False)
    miner = {
        "batch_all": None,
        "batch_hard": pml_miners.BatchHardMiner(distance=pml_distance),
        "semi_hard_all": pml_miners.TripletMarginMiner(
            margin=0.2, type_of_triplets="semihard", distance=pml_distance
        ),
    }[strategy]
    pml_loss = pml_losses.TripletMarginLoss(margin=0.2, distance=pml_distance)
    indices = miner(emb, labels) if miner is not None else None
    expected = pml_loss(emb, labels, indices).item()
    ours = TripletLoss(margin=0.2, mining=strategy, distance=distance, reduction="mean_active")
    assert ours(emb, labels).value.item() == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- global mining under DDP
DDP_STRATEGIES = ("batch_hard", "semi_hard_all", "random")


def _ddp_worker(rank, world_size, port, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        emb, labels = random_batch(seed=21, num_items=24, num_speakers=6, singleton=False)
        local = slice(rank * 12, (rank + 1) * 12)
        results = {}
        for strategy in DDP_STRATEGIES:
            mine = emb[local].clone().requires_grad_(True)
            loss_fn = TripletLoss(mining=strategy, gather_distributed=True, seed=3)
            value, stats = loss_fn(mine, labels[local])
            value.backward()
            results[strategy] = {"loss": value.detach(), "grad": mine.grad, **stats}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_distributed_global_mining_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    world_size = 2
    args = (world_size, _free_port(), str(tmp_path))
    # spawn, not fork: once autograd has run in this process (any earlier test), forked
    # children cannot run backward ("Unable to handle autograd's threading ... fork").
    mp.start_processes(_ddp_worker, args=args, nprocs=world_size, start_method="spawn")
    emb, labels = random_batch(seed=21, num_items=24, num_speakers=6, singleton=False)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for strategy in DDP_STRATEGIES:
        full = emb.clone().requires_grad_(True)
        loss_fn = TripletLoss(mining=strategy, seed=3)
        expected, stats = loss_fn(full, labels)
        expected.backward()
        assert stats["num_valid"] > 0
        for rank, result in enumerate(results):
            got = result[strategy]
            torch.testing.assert_close(got["loss"], expected.detach(), rtol=0, atol=1e-12)
            # all_gather's backward sums every rank's (identical) global-loss gradient;
            # DDP's averaging then restores the single-process gradient.
            local_grad = full.grad[rank * 12 : (rank + 1) * 12]
            torch.testing.assert_close(got["grad"] / world_size, local_grad, rtol=0, atol=1e-12)
            assert float(got["num_valid"]) == float(stats["num_valid"])
            # statistics are device tensors (read when logged)
            assert float(got["mean_d_an"]) == pytest.approx(float(stats["mean_d_an"]), abs=1e-12)


# ---------------------------------------------------------------- training stability
def _synthetic_log_mel(num_speakers, utts_per_speaker, seconds, seed):
    import torchaudio

    from speakerverify import testing

    rng = np.random.default_rng(seed)
    speakers = [testing.random_speaker(rng) for _ in range(num_speakers)]
    waves = [
        testing.speech_like(seconds, speaker=speaker, seed=seed + 100 * index + utt)
        for index, speaker in enumerate(speakers)
        for utt in range(utts_per_speaker)
    ]
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, hop_length=160, n_mels=24
    )
    feats = (mel(torch.from_numpy(np.stack(waves))) + 1e-6).log().transpose(1, 2)
    labels = torch.arange(num_speakers).repeat_interleave(utts_per_speaker)
    return feats - feats.mean(dim=1, keepdim=True), labels


def test_batch_hard_training_from_scratch_does_not_collapse():
    """Regression: batch-hard from scratch collapsed a small TDNN (all embeddings parallel).

    The encoder's affine-free BatchNorm on the embedding keeps the batch spread; the stats make
    collapse visible (embedding_spread -> 0, d_ap ≈ d_an, loss stuck at the margin).
    """
    from speakerverify.models import XVector

    torch.manual_seed(0)
    feats, labels = _synthetic_log_mel(num_speakers=10, utts_per_speaker=5, seconds=0.8, seed=0)
    model = XVector(feat_dim=24, embed_dim=32, channels=64, stats_channels=128)
    loss_fn = TripletLoss(margin=0.2, mining="batch_hard")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    spreads, losses = [], []
    for _ in range(40):
        speakers = torch.randperm(10, generator=generator)[:6]
        utts = torch.stack([torch.randperm(5, generator=generator)[:4] for _ in speakers])
        index = (speakers[:, None] * 5 + utts).flatten()
        crop = int(torch.randint(0, 15, (1,), generator=generator))
        loss, stats = loss_fn(model(feats[index, crop : crop + 64]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        spreads.append(stats["embedding_spread"])
        losses.append(loss.item())
    assert min(spreads) > 0.3, spreads
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    # Held-out check on all utterances: same-speaker pairs are closer than different-speaker ones.
    model.eval()
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model(feats), dim=1)
    distances = distance_matrix(emb)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    assert distances[same & off_diagonal].mean() + 0.2 < distances[~same].mean()
    assert distances[~same].mean() > 0.5  # not collapsed at inference either


# ---------------------------------------------------------------- comparison losses
def _unit(rows):
    return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in rows]


def test_contrastive_loss_equals_brute_force():
    emb, labels = random_batch(seed=8, num_items=12, num_speakers=4)
    loss_fn = build_loss("contrastive", margin=1.2)
    output = loss_fn(emb, labels)
    value = output.value.item()
    e, lab = _unit(emb.tolist()), labels.tolist()
    total, count = 0.0, 0
    for i in range(len(lab)):
        for j in range(len(lab)):
            if i == j:
                continue
            d = brute_distance(e[i], e[j], "euclidean")
            total += d * d if lab[i] == lab[j] else max(0.0, 1.2 - d) ** 2
            count += 1
    assert value == pytest.approx(total / count, abs=1e-9)
    assert output.stats["embedding_spread"] > 0


def test_info_nce_equals_brute_force():
    emb, labels = random_batch(seed=9, num_items=12, num_speakers=4)
    loss_fn = build_loss("info_nce", temperature=0.5)
    value = loss_fn(emb, labels).value.item()
    e, lab = _unit(emb.tolist()), labels.tolist()
    per_anchor = []
    for a in range(len(lab)):
        positives = [p for p in range(len(lab)) if p != a and lab[p] == lab[a]]
        if not positives:
            continue
        sims = {k: (1 - brute_distance(e[a], e[k], "cosine")) / 0.5 for k in range(len(lab))}
        log_norm = math.log(sum(math.exp(sims[k]) for k in range(len(lab)) if k != a))
        per_anchor.append(-sum(sims[p] - log_norm for p in positives) / len(positives))
    assert value == pytest.approx(sum(per_anchor) / len(per_anchor), abs=1e-9)


def test_angular_prototypical_equals_brute_force():
    emb, labels = random_batch(seed=10, num_items=14, num_speakers=4)  # + a singleton
    loss_fn = build_loss("angular_prototypical")
    loss_fn.double()
    value, stats = loss_fn(emb, labels)
    lab = labels.tolist()
    speakers = sorted(s for s in set(lab) if lab.count(s) >= 2)
    queries, prototypes = [], []
    for s in speakers:
        members = [i for i in range(len(lab)) if lab[i] == s]
        queries.append(emb[members[0]].tolist())
        others = [emb[i].tolist() for i in members[1:]]
        prototypes.append([sum(col) / len(others) for col in zip(*others, strict=True)])
    q, p = _unit(queries), _unit(prototypes)
    total = 0.0
    for i in range(len(speakers)):
        logits = [10.0 * (1 - brute_distance(q[i], p[j], "cosine")) - 5.0 for j in range(len(p))]
        total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    assert value.item() == pytest.approx(total / len(speakers), abs=1e-9)
    value.backward()
    assert loss_fn.scale.grad is not None and stats["num_speakers"] == len(speakers)


@pytest.mark.parametrize("name", ["contrastive", "info_nce", "angular_prototypical"])
def test_comparison_losses_gradcheck(name):
    emb, labels = random_batch(seed=12, num_items=8, num_speakers=3, dim=4, singleton=False)
    loss_fn = build_loss(name).double()
    emb.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels).value, (emb,), eps=1e-6, atol=1e-6)


def test_mining_is_switchable_per_call_for_warm_up_and_default_reduction_follows():
    """A mining schedule passes `mining=` per call (one loss instance, no setter); the defaulted
    reduction follows the call's strategy, an explicit one stays."""
    loss_fn = TripletLoss(mining="batch_all")
    assert loss_fn.reduction == "mean_active"
    assert loss_fn.reduction_for("batch_hard") == "mean"
    emb, labels = random_batch(seed=1, num_items=12, num_speakers=3)
    expected, _ = brute_loss(
        emb.tolist(), labels.tolist(), "batch_hard", "cosine", 0.2, False, "mean"
    )
    assert loss_fn(emb, labels, mining="batch_hard").value.item() == pytest.approx(
        expected, abs=1e-9
    )
    default, _ = brute_loss(
        emb.tolist(), labels.tolist(), "batch_all", "cosine", 0.2, False, "mean_active"
    )
    assert loss_fn(emb, labels).value.item() == pytest.approx(default, abs=1e-9)
    assert loss_fn.mining == "batch_all"  # the call left the default alone
    pinned = TripletLoss(mining="batch_all", reduction="mean")
    assert pinned.reduction_for("semi_hard_all") == "mean"
    pinned_expected, _ = brute_loss(
        emb.tolist(), labels.tolist(), "semi_hard_all", "cosine", 0.2, False, "mean"
    )
    assert pinned(emb, labels, mining="semi_hard_all").value.item() == pytest.approx(
        pinned_expected, abs=1e-9
    )
    with pytest.raises(ValueError, match="batch_hard"):
        loss_fn(emb, labels, mining="hardest")
    with pytest.raises(ValueError, match="batch_hard"):
        TripletLoss(mining="hardest")
    with pytest.raises(AttributeError):
        loss_fn.mining = "batch_hard"  # one way to switch: the per-call argument


@pytest.mark.parametrize("strategy", ["batch_hard", "semi_hard", "semi_hard_all"])
def test_half_precision_embeddings_are_mined_in_float32(strategy):
    emb, labels = random_batch(seed=13, num_items=24, num_speakers=6)
    half = emb.to(torch.bfloat16).requires_grad_(True)
    value, _ = TripletLoss(mining=strategy)(half, labels)
    value.backward()
    expected, _ = TripletLoss(mining=strategy)(half.detach().float(), labels)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(expected.item(), abs=1e-6)
    assert half.grad.dtype == torch.bfloat16 and torch.isfinite(half.grad.float()).all()


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
