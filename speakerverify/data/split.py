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
        data = _join(data, DataDir.load(path), source=path, other=paths[0])
    return data


def _join(
    first: DataDir, second: DataDir, *, source: str | os.PathLike, other: str | os.PathLike
) -> DataDir:
    """Two DataDirs with disjoint utterance ids as one; utt2dur is kept only if both have it.

    Raises:
        DataDirError: an utterance id in both, named as "`source`: N utterance ids also in
            `other`".
    """
    clash = sorted(set(first.wav) & set(second.wav))
    if clash:
        raise DataDirError(
            f"{source}: {len(clash)} utterance ids also in {other} (e.g. {clash[0]})"
        )
    both = first.utt2dur is not None and second.utt2dur is not None
    return DataDir(
        wav={**first.wav, **second.wav},
        utt2spk={**first.utt2spk, **second.utt2spk},
        utt2dur={**first.utt2dur, **second.utt2dur} if both else None,  # type: ignore[dict-item]
    )


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
    train_sources: Sequence[str | os.PathLike] = (),
    heldout_sources: Sequence[str | os.PathLike] = (),
) -> SpeakerSplit:
    """Merge the data dirs `sources`, hold out `num_heldout` speakers and write both sides.

    Every speaker of `train_sources` joins the training side and every speaker of
    `heldout_sources` (data dirs made for calibration, e.g. speakers synthesised apart from the
    training pool) the held-out side, whole, without taking part in the draw: the draw from
    `sources` stays the same when either grows. `num_heldout` may be 0 when `heldout_sources`
    are given.

    Raises:
        DataDirError: unreadable sources, too few speakers, a speaker in two of the three
            groups, or outputs that are one directory or a source (the second write would
            replace the first, or the input).
    """
    everything = [*sources, *train_sources, *heldout_sources]
    _check_outputs(everything, train_out, heldout_out)
    pool = merge_data_dirs(sources)
    to_train = merge_data_dirs(train_sources) if train_sources else None
    to_heldout = merge_data_dirs(heldout_sources) if heldout_sources else None
    groups = [(sources[0], pool)]
    if to_train is not None:
        groups.append((train_sources[0], to_train))
    if to_heldout is not None:
        groups.append((heldout_sources[0], to_heldout))
    for i, (name, data) in enumerate(groups):
        for other_name, other in groups[:i]:
            shared = sorted(set(data.speakers) & set(other.speakers))
            if shared:
                raise DataDirError(
                    f"{name}: {len(shared)} speakers also in {other_name} (e.g. {shared[0]}); "
                    "the training and held-out sides must not share a speaker"
                )
    if num_heldout == 0 and to_heldout is not None:
        split = SpeakerSplit(train=pool, heldout=to_heldout)
    else:
        split = split_speakers(pool, num_heldout, seed=seed)
        if to_heldout is not None:
            joined = _join(split.heldout, to_heldout, source=heldout_sources[0], other=sources[0])
            split = SpeakerSplit(split.train, joined)
    if to_train is not None:
        joined = _join(split.train, to_train, source=train_sources[0], other=sources[0])
        split = SpeakerSplit(joined, split.heldout)
    save_split(split, everything, train_out, heldout_out)
    return split
