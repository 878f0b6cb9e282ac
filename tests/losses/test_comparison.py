"""The comparison losses (contrastive, InfoNCE, angular prototypical) against brute-force loops,
and their gradients."""

from __future__ import annotations

import math

import pytest
import torch
from triplet_reference import brute_distance, random_batch, unit

from speakerverify.losses import build_loss


def test_contrastive_loss_equals_brute_force():
    emb, labels = random_batch(seed=8, num_items=12, num_speakers=4)
    loss_fn = build_loss("contrastive", margin=1.2)
    output = loss_fn(emb, labels)
    value = output.value.item()
    e, lab = unit(emb.tolist()), labels.tolist()
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
    e, lab = unit(emb.tolist()), labels.tolist()
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
    q, p = unit(queries), unit(prototypes)
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
