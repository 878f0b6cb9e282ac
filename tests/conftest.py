"""Shared test set-up: one torch thread per xdist worker."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def bundled_model_files():
    """Skip, saying why, when the bundled model is not in the tree: the trained files are added
    apart from the code (`recipes/mini/local/package_model.py ... speakerverify/pretrained`)."""
    from pathlib import Path

    import speakerverify.pretrained as pretrained

    directory = Path(pretrained.__file__).parent
    missing = [
        name
        for name in (f"{pretrained.NAME}{s}" for s in (".pt", ".calibration.json", ".card.json"))
        if not (directory / name).is_file()
    ]
    if missing:
        pytest.skip(f"bundled model files missing from {directory}: {', '.join(missing)}")
