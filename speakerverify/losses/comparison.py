"""Comparison losses for ablations against triplet: contrastive, supervised InfoNCE (N-pair),
angular prototypical. Same call shape as triplet:
`loss_fn(embeddings (B, D), labels (B,)) -> LossOutput(value, stats)` (stats include
`embedding_spread`); only the contrastive loss declares a margin (`has_margin`), so only it
takes `margin=`; none mines (`mines`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from speakerverify.losses.distances import check_distance, check_margin, distance_matrix
from speakerverify.losses.output import LossOutput


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    positive = same.clone().fill_diagonal_(False)
    return positive, ~same


def _spread(distances: torch.Tensor) -> float:
    batch = distances.shape[0]
    return float(distances.detach().sum() / max(batch * (batch - 1), 1))


class ContrastiveLoss(nn.Module):
    """Hadsell et al. 2006: y·d² + (1 - y)·max(0, m - d)², averaged over all ordered pairs i ≠ j.

    Args:
        margin: m, the distance beyond which negative pairs stop contributing; the default of
            each call (a margin schedule passes `margin=` per call instead).
        distance: "euclidean" (default, as in the paper), "squared_euclidean" or "cosine".
        normalize: L2-normalise embeddings first.
    """

    has_margin: ClassVar[bool] = True  # forward takes `margin=` (a margin schedule drives it)
    mines: ClassVar[bool] = False

    def __init__(self, margin: float = 1.0, distance: str = "euclidean", normalize: bool = True):
        super().__init__()
        check_distance(distance)
        self.margin = check_margin(margin)
        self.distance = distance
        self.normalize = normalize

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None
    ) -> LossOutput:
        margin = self.margin if margin is None else check_margin(margin)
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=1)
        distances = distance_matrix(embeddings, self.distance)
        positive, negative = _pair_masks(labels)
        per_pair = torch.where(positive, distances.square(), F.relu(margin - distances).square())
        per_pair = per_pair * (positive | negative)
        num_pairs = max(int((positive | negative).sum()), 1)
        with torch.no_grad():
            stats = {
                "num_positive_pairs": float(positive.sum()),
                "num_active_negative_pairs": float((negative & (distances < margin)).sum()),
                "mean_d_pos": float(distances[positive].mean()) if positive.any() else 0.0,
                "mean_d_neg": float(distances[negative].mean()) if negative.any() else 0.0,
                "embedding_spread": _spread(distances),
                "margin": float(margin),
            }
        return LossOutput(per_pair.sum() / num_pairs, stats)


class InfoNceLoss(nn.Module):
    """Supervised InfoNCE over the batch (multi-positive N-pair loss, Khosla et al. 2020).

    For an anchor a with positives P(a): -mean_{p in P(a)} log softmax_{k != a}(cos(a,k)/τ)[p],
    averaged over anchors that have a positive.

    Args:
        temperature: τ.
    """

    has_margin: ClassVar[bool] = False
    mines: ClassVar[bool] = False

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature!r}")
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        embeddings = F.normalize(embeddings, dim=1)
        similarity = embeddings @ embeddings.T / self.temperature
        eye = torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
        log_probability = torch.log_softmax(similarity.masked_fill(eye, float("-inf")), dim=1)
        positive, _ = _pair_masks(labels)
        num_positives = positive.sum(1)
        anchors = num_positives > 0
        per_anchor = -(log_probability.masked_fill(~positive, 0.0)).sum(1)
        per_anchor = per_anchor[anchors] / num_positives[anchors]
        with torch.no_grad():
            stats = {
                "num_anchors": float(anchors.sum()),
                "embedding_spread": _spread(distance_matrix(embeddings.detach())),
            }
        if not anchors.any():
            return LossOutput(embeddings.sum() * 0.0, stats)
        return LossOutput(per_anchor.mean(), stats)


class AngularPrototypicalLoss(nn.Module):
    """Angular prototypical loss (Chung et al. 2020, voxceleb_trainer).

    Per speaker with at least two utterances in the batch, its first utterance is the query and
    the mean of the others the prototype; logits w·cos(query_i, prototype_j) + b with learnable
    w > 0 and b; cross-entropy of each query against its own prototype.

    Args:
        init_scale: initial w.
        init_bias: initial b.
    """

    has_margin: ClassVar[bool] = False
    mines: ClassVar[bool] = False

    def __init__(self, init_scale: float = 10.0, init_bias: float = -5.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init_scale))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        first_of_class = torch.cumsum(counts, 0) - counts
        usable = counts >= 2
        if int(usable.sum()) < 2:
            stats = {"num_speakers": float(usable.sum()), "accuracy": 0.0}
            return LossOutput(embeddings.sum() * 0.0, stats)
        query_index = order[first_of_class[usable]]
        is_query = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        is_query[query_index] = True
        # Prototype of class c: mean of its non-query members.
        classes = torch.nonzero(usable).squeeze(1)
        class_slot = torch.full_like(counts, -1)
        class_slot[classes] = torch.arange(len(classes), device=labels.device)
        members = (~is_query) & (class_slot[inverse] >= 0)
        sums = torch.zeros(len(classes), embeddings.shape[1], dtype=embeddings.dtype)
        sums = sums.to(embeddings.device).index_add(
            0, class_slot[inverse[members]], embeddings[members]
        )
        prototypes = sums / (counts[classes] - 1)[:, None].to(embeddings.dtype)
        queries = embeddings[query_index]
        cosine = F.normalize(queries, dim=1) @ F.normalize(prototypes, dim=1).T
        logits = self.scale.clamp_min(1e-6) * cosine + self.bias
        targets = torch.arange(len(classes), device=labels.device)
        loss = F.cross_entropy(logits, targets)
        with torch.no_grad():
            normalized = F.normalize(embeddings.detach(), dim=1)
            stats = {
                "num_speakers": float(len(classes)),
                "accuracy": float((logits.argmax(1) == targets).float().mean()),
                "embedding_spread": _spread(distance_matrix(normalized)),
            }
        return LossOutput(loss, stats)
