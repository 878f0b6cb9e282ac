"""A tiny x-vector checkpoint with non-trivial BatchNorm statistics, as after training: shared by
the fast-path and hostile-checkpoint tests (each writes an ONNX twin next to it)."""

from __future__ import annotations

from pathlib import Path

import torch

from speakerverify.checkpoint import save_checkpoint
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model


def save_tiny_xvector(path: Path, args: dict, seed: int = 0) -> str:
    """Write a seeded x-vector of `args` to `path`; returns its fingerprint."""
    torch.manual_seed(seed)
    model = build_model("xvector", **args)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(
        path, model_name="xvector", model_args=args, model=model.eval(),
        features=FbankConfig(noise_floor_db=-30.0).to_dict(),
    )  # fmt: skip
