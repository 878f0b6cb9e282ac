"""TripletLoss against the brute-force loop over all (anchor, positive, negative): values,
statistics, reductions, per-call margin and mining, edge cases, and a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from triplet_reference import (
    DETERMINISTIC,
    DISTANCES,
    brute_loss,
    check_against_brute,
    copies_batch,
    make_loss,
    random_batch,
)

from speakerverify.losses import (
    STAT_KEYS,
    STRATEGIES,
    TripletLoss,
    build_loss,
    distance_matrix,
    mine_triplets,
)


@pytest.mark.parametrize("soft", [False, True], ids=["hinge", "soft"])
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("strategy", DETERMINISTIC)
@pytest.mark.parametrize("reduction", [None, "mean", "mean_active"])
def test_loss_equals_brute_force(strategy, distance, soft, reduction):
    emb, labels = random_batch(seed=len(strategy) + len(distance), num_items=20, num_speakers=5)
    check_against_brute(emb, labels, strategy, distance, soft, reduction)


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


def test_loss_seed_makes_random_mining_reproducible():
    emb, labels = random_batch(seed=2, num_items=24, num_speakers=4)
    values = [TripletLoss(mining="random", seed=9)(emb, labels).value.item() for _ in range(2)]
    assert values[0] == values[1]


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
