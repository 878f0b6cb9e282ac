"""Data: Kaldi-style data dirs, VoxCeleb and any-layout scanning, trial lists, crop dataset, the
P×K sampler, and the augmentation and channel simulation of training crops (`augment`,
`simulate`)."""

from __future__ import annotations

from typing import Any

from speakerverify.data.datadir import DataDir, DataDirError
from speakerverify.data.layout import prepare_dir, scan_tree
from speakerverify.data.sampler import PKSampler
from speakerverify.data.trials import Trials, TrialsError, read_trials, write_trials
from speakerverify.data.voxceleb import prepare_voxceleb, scan_voxceleb

__all__ = [
    "CropDataset",
    "DataDir",
    "DataDirError",
    "PKSampler",
    "Trials",
    "TrialsError",
    "collate_crops",
    "prepare_dir",
    "prepare_voxceleb",
    "read_trials",
    "scan_tree",
    "scan_voxceleb",
    "write_trials",
]


def __getattr__(name: str) -> Any:
    """The crop dataset needs torch: imported on first use, so commands that only read data
    dirs and trial lists (`score`, `evaluate`, `prepare`) start without torch."""
    if name in ("CropDataset", "collate_crops"):
        from speakerverify.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
