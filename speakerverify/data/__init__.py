"""Data: Kaldi-style data dirs, VoxCeleb and any-layout scanning, trial lists, crop dataset and the
P×K sampler."""

from speakerverify.data.datadir import DataDir, DataDirError
from speakerverify.data.dataset import CropDataset, collate_crops
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
