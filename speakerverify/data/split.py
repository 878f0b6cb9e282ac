"""Split data dirs by speaker: training speakers and held-out speakers (for calibration).

Calibration has to be fitted on speakers the encoder never saw (scores of training speakers are
overconfident) but from the training domain, so recipes hold out a few training speakers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speakerverify.data.attributes import (
    read_common_attributes,
    subset_attributes,
    write_attributes,
)
from speakerverify.data.datadir import DataDir, DataDirError

__all__ = ["SpeakerSplit", "merge_data_dirs", "prepare_split", "save_split", "split_speakers"]


@dataclass
class SpeakerSplit:
    """The two sides of a split (speakers disjoint)."""

    train: DataDir
    heldout: DataDir


def merge_data_dirs(paths: Sequence[str | os.PathLike]) -> DataDir:
    """One DataDir of several (e.g. CN-Celeb1 dev + CN-Celeb2); utt ids must be disjoint.

    utt2dur is kept only when every input has it.

    Raises:
        DataDirError: an unreadable data dir, or an utt id in two of them.
    """
    if not paths:
        raise DataDirError("no data dirs to merge")
    data = DataDir.load(paths[0])
    for path in paths[1:]:
        more = DataDir.load(path)
        clash = sorted(set(more.wav) & set(data.wav))
        if clash:
            raise DataDirError(
                f"{path}: {len(clash)} utterance ids also in {paths[0]} (e.g. {clash[0]})"
            )
        both = data.utt2dur is not None and more.utt2dur is not None
        data = DataDir(
            wav={**data.wav, **more.wav},
            utt2spk={**data.utt2spk, **more.utt2spk},
            utt2dur={**data.utt2dur, **more.utt2dur} if both else None,  # type: ignore[dict-item]
        )
    return data


def split_speakers(data: DataDir, num_heldout: int, *, seed: int = 0) -> SpeakerSplit:
    """Hold out `num_heldout` speakers drawn at random among those with >= 2 utterances.

    Raises:
        DataDirError: too few eligible speakers, or fewer than 2 left for training.
    """
    spk2utt = data.spk2utt
    eligible = [s for s in data.speakers if len(spk2utt[s]) >= 2]
    if num_heldout < 1 or len(eligible) < num_heldout or len(spk2utt) - num_heldout < 2:
        raise DataDirError(
            f"{len(spk2utt)} speakers ({len(eligible)} with >= 2 utterances) cannot spare "
            f"{num_heldout} for held-out and keep 2 for training"
        )
    rng = np.random.default_rng(seed)
    held = set(rng.choice(eligible, size=num_heldout, replace=False).tolist())
    return SpeakerSplit(
        train=data.subset(u for u in data.utt_ids if data.utt2spk[u] not in held),
        heldout=data.subset(u for u in data.utt_ids if data.utt2spk[u] in held),
    )


def save_split(
    split: SpeakerSplit,
    sources: Sequence[str | os.PathLike],
    train_out: str | os.PathLike,
    heldout_out: str | os.PathLike,
) -> None:
    """Write both sides, each with the attribute files (`utt2sess`, `spk2gender`, ...) that every
    source data dir has, restricted to its utterances and speakers."""
    tables = read_common_attributes(list(sources))
    for side, out in ((split.train, train_out), (split.heldout, heldout_out)):
        side.save(out)
        write_attributes(out, subset_attributes(tables, side))


def _check_outputs(
    sources: Sequence[str | os.PathLike],
    train_out: str | os.PathLike,
    heldout_out: str | os.PathLike,
) -> None:
    """Refuse outputs that are the same directory, or a source, before anything is read."""
    real = {os.path.realpath(source): str(source) for source in sources}
    if os.path.realpath(train_out) == os.path.realpath(heldout_out):
        raise DataDirError(
            f"{train_out}: --train-out and --heldout-out are one directory; the held-out side "
            "would replace the training side"
        )
    for out in (train_out, heldout_out):
        source = real.get(os.path.realpath(out))
        if source is not None:
            raise DataDirError(f"{out}: is the input data dir {source}; choose a new directory")


def prepare_split(
    sources: Sequence[str | os.PathLike],
    train_out: str | os.PathLike,
    heldout_out: str | os.PathLike,
    num_heldout: int,
    *,
    seed: int = 0,
) -> SpeakerSplit:
    """Merge the data dirs `sources`, hold out `num_heldout` speakers and write both sides.

    Raises:
        DataDirError: unreadable sources, too few speakers, or outputs that are one directory
            or a source (the second write would replace the first, or the input).
    """
    _check_outputs(sources, train_out, heldout_out)
    split = split_speakers(merge_data_dirs(sources), num_heldout, seed=seed)
    save_split(split, sources, train_out, heldout_out)
    return split
