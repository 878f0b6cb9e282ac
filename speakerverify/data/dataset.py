"""Training crops: random `chunk_seconds` windows of each utterance, optionally augmented.

Items are fetched by `(index, item_seed)` keys (as `PKSampler` yields them): every random choice
(crop offset, augmentation) comes from `np.random.default_rng(item_seed)`, so a batch is the same
whatever the number of loader workers or the batch a run was resumed from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from speakerverify.data.datadir import DataDir
from speakerverify.data.reading import fit_length, num_samples_of, read_random_crop, read_segment

logger = logging.getLogger(__name__)

# Speed factors of the perturbed copies; each copy is a new speaker (Kaldi/WeSpeaker practice).
SPEED_FACTORS = (1.0, 0.9, 1.1)


class CropDataset(torch.utils.data.Dataset):
    """Random crops of the utterances of a DataDir.

    Args:
        data_dir: the utterances; `utt2dur` avoids opening each header (else read per item).
        chunk_seconds: crop length in seconds; shorter files are wrap-padded.
        sample_rate: rate of the returned waves in Hz.
        augmenter: called as `augmenter(wave (S,), rng) -> (S,)` on each crop, or None.
        speed_perturb: add 0.9x and 1.1x speed copies of every utterance as new speakers:
            items `[N, 2N)` are the 0.9x copies (labels + num_speakers), `[2N, 3N)` the 1.1x copies
            (labels + 2 * num_speakers).

    Attributes:
        labels: (num items,) int64 speaker label of each item.
        speakers: class names, `speakers[label]`; perturbed copies are named `sp0.9-<spk_id>`.
        num_classes: `len(speakers)`.
        speaker_of_label: (num_classes,) int64, the original speaker of each label (a perturbed
            copy's label maps to its source speaker's): what a miner needs so that a speaker's
            copies are never mined as its negatives.
    """

    def __init__(
        self,
        data_dir: DataDir,
        chunk_seconds: float = 2.0,
        sample_rate: int = 16000,
        augmenter: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        speed_perturb: bool = False,
    ) -> None:
        if chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
        if len(data_dir) == 0:
            raise ValueError("empty data dir")
        self.data_dir = data_dir
        self.chunk_seconds = chunk_seconds
        self.sample_rate = sample_rate
        self.num_samples = round(chunk_seconds * sample_rate)
        self.augmenter = augmenter
        self.speed_perturb = speed_perturb
        # Columns and arrays, not lists of python objects: forked loader workers share them
        self.utt_ids = data_dir.utt_id_column
        self.paths = data_dir.path_column
        base_speakers = data_dir.speakers
        base_labels = data_dir.speaker_labels.astype(np.int64)
        self.factors = SPEED_FACTORS if speed_perturb else SPEED_FACTORS[:1]
        num_speakers = len(base_speakers)
        self.speakers: list[str] = []
        for factor in self.factors:
            prefix = "" if factor == 1.0 else f"sp{factor}-"
            self.speakers += [prefix + spk for spk in base_speakers]
        copies = [base_labels + copy * num_speakers for copy in range(len(self.factors))]
        self.labels: np.ndarray = np.concatenate(copies)
        self.num_classes = len(self.speakers)
        self.speaker_of_label = np.arange(self.num_classes, dtype=np.int64) % num_speakers
        self.total_samples: np.ndarray | None = None
        if data_dir.durations is not None:
            self.total_samples = (data_dir.durations * sample_rate).astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        """Crop for `key = (index, item_seed)` (a bare index uses `item_seed = index`).

        Returns:
            {"wave": float32 Tensor (S,), "label": int, "utt_id": str}; perturbed copies have
            utt ids `sp0.9-<utt_id>` / `sp1.1-<utt_id>`.
        """
        index, item_seed = (key, key) if isinstance(key, int | np.integer) else key
        index = int(index)
        if not 0 <= index < len(self.labels):
            raise IndexError(f"item {index} out of range for {len(self.labels)} items")
        rng = np.random.default_rng(int(item_seed))
        base = index % len(self.utt_ids)
        factor = self.factors[index // len(self.utt_ids)]
        wave = self._crop(base, factor, rng)
        if self.augmenter is not None:
            wave = self.augmenter(wave, rng)
        utt_id = self.utt_ids[base]
        if factor != 1.0:
            utt_id = f"sp{factor}-{utt_id}"
        return {
            "wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            "label": int(self.labels[index]),
            "utt_id": utt_id,
        }

    def _crop(self, base: int, factor: float, rng: np.random.Generator) -> np.ndarray:
        path = self.paths[base]
        total = None if self.total_samples is None else int(self.total_samples[base])
        if factor == 1.0:
            return read_random_crop(path, self.num_samples, rng, self.sample_rate,
                                    total_samples=total)  # fmt: skip
        # Speed change by resampling: play `factor` times faster -> read factor*S source samples
        # and squeeze them into S (pitch and tempo change together, like `sox speed`).
        import torchaudio.functional as taf

        source_samples = int(np.ceil(self.num_samples * factor)) + 16
        if total is None:
            total = num_samples_of(path, self.sample_rate)
        if total <= source_samples:
            wave = read_segment(path, 0, total, self.sample_rate)
        else:
            offset = int(rng.integers(0, total - source_samples + 1))
            wave = read_segment(path, offset, source_samples, self.sample_rate)
        orig, new = round(factor * 100), 100
        squeezed = taf.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig, new)
        return fit_length(squeezed.numpy(), self.num_samples)


def collate_crops(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack equal-length crops.

    Returns:
        {"waves": (B, S) float32, "labels": (B,) int64, "utt_ids": list of B str}.
    """
    return {
        "waves": torch.stack([item["wave"] for item in items]),
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "utt_ids": [item["utt_id"] for item in items],
    }
