"""Score fusion inside one encoder: several encoders on the same features, side by side."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from speakerverify.models.ecapa_tdnn import EcapaTdnn
from speakerverify.models.resnet import ResNet
from speakerverify.models.xvector import XVector

# The encoders a fusion can hold: every registered model but the fusion itself
# (`speakerverify.models.MODELS` is these and "fusion").
MEMBER_MODELS: dict[str, type[nn.Module]] = {
    "xvector": XVector,
    "ecapa_tdnn": EcapaTdnn,
    "resnet34": ResNet,
}


class Fusion(nn.Module):
    """The unit embeddings of several member encoders, concatenated and scaled by 1/sqrt(n).

    The cosine score of two such embeddings is the average of the members' cosine scores: an
    equal-weight score fusion that the store, the scoring commands and the ONNX export see as one
    encoder. The bundled model fuses an x-vector whose frame layers stay at their random
    initialisation (generic spectral statistics, which transfer to real speech) with one whose
    frame layers were trained (which separates similar synthetic voices); see
    recipes/mini/README.md.

    Members are any other registered encoders, trained on their own; a fused
    checkpoint is put together from theirs (`speakerverify fuse`,
    `checkpoint_combine.fuse_checkpoints`).

    Args:
        feat_dim: F, input feature dimension, passed to every member.
        members: one `{"name": MODELS key, "args": {...}}` per member (at least two; a member's
            `feat_dim` is this one's).
    """

    def __init__(self, feat_dim: int = 80, members: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        members = list(members or [])
        if len(members) < 2:
            raise ValueError(f"a fusion needs at least two members, got {len(members)}")
        built = []
        for index, member in enumerate(members):
            if not isinstance(member, dict) or set(member) != {"name", "args"}:
                raise ValueError(f"member {index} must be {{'name': ..., 'args': {{...}}}}")
            if member["name"] not in MEMBER_MODELS:
                raise ValueError(
                    f"member {index}: {member['name']!r} cannot be a member; valid: "
                    f"{', '.join(sorted(MEMBER_MODELS))}"
                )
            args = {**member["args"], "feat_dim": feat_dim}
            try:
                built.append(MEMBER_MODELS[member["name"]](**args))
            except TypeError as error:  # an argument the member does not take
                raise ValueError(f"member {index} ({member['name']}): {error}") from None
        self.members = nn.ModuleList(built)
        self.embed_dim = sum(int(m.embed_dim) for m in built)
        # the shortest input every member takes (`backend.embedder.encoder_min_frames`)
        self.context = max(int(getattr(m, "context", 0)) for m in built)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        parts = [F.normalize(member(feats, lengths), dim=1) for member in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))
