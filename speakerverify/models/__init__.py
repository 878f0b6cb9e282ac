"""Speaker encoders behind one interface: `forward(feats (B, T, F), lengths=None) -> (B, D)`.

`build_model(name, **args)` builds one from the `MODELS` registry; every model has `.embed_dim`.
"""

from __future__ import annotations

from torch import nn

from speakerverify.models.ecapa_tdnn import EcapaTdnn
from speakerverify.models.fusion import MEMBER_MODELS, Fusion
from speakerverify.models.pooling import AttentiveStatsPool, StatsPool, lengths_to_mask
from speakerverify.models.resnet import ResNet
from speakerverify.models.xvector import XVector

MODELS: dict[str, type[nn.Module]] = {**MEMBER_MODELS, "fusion": Fusion}


def build_model(name: str, **args: object) -> nn.Module:
    """Build a registered encoder by name.

    Args:
        name: a key of `MODELS`.
        **args: constructor arguments (`feat_dim=80`, `embed_dim=...`, ...).

    Raises:
        ValueError: for an unknown name (listing the valid ones) or an unknown argument.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**args)
    except TypeError as error:
        raise ValueError(f"bad arguments for model {name!r}: {error}") from None


__all__ = [
    "MODELS",
    "AttentiveStatsPool",
    "EcapaTdnn",
    "Fusion",
    "ResNet",
    "StatsPool",
    "XVector",
    "build_model",
    "lengths_to_mask",
]
