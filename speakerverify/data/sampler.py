"""P×K batches for triplet mining: P distinct speakers × K utterances each, DDP-aware, resumable.

An epoch's plan is a pure function of (seed, epoch): every rank builds the same global plan and
takes its own P speakers of each step, so ranks never share a speaker within a step and all ranks
get the same number of batches. Each item carries its own seed, so the crop and augmentation of an
item do not depend on the worker that loads it or on where a run was resumed.

With speaker groups (e.g. language and gender, `data.group_by`), a step's speakers come in blocks
of `group_size` speakers of one group: batch-hard mining then meets impostors who share the
anchor's language and gender in every batch. A uniform draw from a corpus of dozens of languages
seldom brings one (an eSpeak speaker of the bundled model's corpus meets one of its 6 or so
same-language, same-gender peers in about one batch in five), so the hardest negative mining
finds is usually a speaker of another language, and the model learns to tell languages apart
rather than two similar voices of one language, the worst case on real speech.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

SMALL_SPEAKER_POLICIES = ("replace", "exclude")
Batch = list[tuple[int, int]]


def _eligible_speakers(
    labels: Sequence[int], num_utts: int, small_speakers: str
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(speaker labels, utterance counts, item indices of each) of the speakers to sample from:
    those with fewer than K utterances are logged once, and left out under "exclude"."""
    labels_array = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels_array, kind="stable")
    speaker_ids, starts, counts = np.unique(
        labels_array[order], return_index=True, return_counts=True
    )
    groups = [order[s : s + c] for s, c in zip(starts, counts, strict=True)]
    small = counts < num_utts
    if small.any():
        action = "sampled with replacement" if small_speakers == "replace" else "excluded"
        logger.warning(
            "%d of %d speakers have fewer than K=%d utterances: %s",
            int(small.sum()),
            len(counts),
            num_utts,
            action,
        )
        if small_speakers == "exclude":
            keep = ~small
            speaker_ids, counts = speaker_ids[keep], counts[keep]
            groups = [g for g, k in zip(groups, keep, strict=True) if k]
    return speaker_ids, counts, groups


class PKSampler:
    """Batch sampler yielding lists of P*K `(index, item_seed)` tuples.

    Speakers are drawn without replacement within a step (P per rank, P*world_size in all), with
    probability proportional to their number of K-groups, so over an epoch each utterance is seen
    about once. A speaker's utterances are consumed as shuffled K-groups, reshuffled whenever they
    run out. The epoch has `len(self)` batches, fixed from the label counts (the same every epoch).

    Args:
        labels: speaker label of each dataset item.
        num_speakers: P, distinct speakers per batch (per rank).
        num_utts: K >= 2, utterances per speaker.
        seed: base seed; the plan of epoch e depends only on (seed, e).
        rank: this process's rank under DDP.
        world_size: number of DDP processes.
        small_speakers: speakers with fewer than K utterances are sampled with replacement
            ("replace") or left out ("exclude"); logged once.
        num_batches: batches per epoch per rank; default: total K-groups / (P * world_size).
        start_batch: first batch of the next iteration (for resuming mid-epoch); reset to 0 after
            that iteration.
        speaker_groups: group of each speaker label (indexable by label, e.g. a language and
            gender id), or None for a uniform draw. A step is then made of blocks of
            `group_size` speakers of one group: the blocks' groups are drawn without
            replacement with probability proportional to their K-groups, and each block's
            speakers likewise within the group. Groups of fewer than `group_size` eligible
            speakers are pooled into one mixed group (logged once; left out if even the pool is
            smaller than a block).
        group_size: speakers per block; must divide P, so no block straddles two ranks.

    >>> sampler = PKSampler([0, 0, 1, 1, 2, 2, 2, 2], num_speakers=2, num_utts=2, seed=1)
    >>> len(sampler), len(next(iter(sampler)))
    (2, 4)
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_speakers: int,
        num_utts: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        small_speakers: str = "replace",
        num_batches: int | None = None,
        start_batch: int = 0,
        speaker_groups: Sequence[object] | None = None,
        group_size: int = 4,
    ) -> None:
        if num_utts < 2:
            raise ValueError(f"num_utts (K) must be >= 2 for triplets, got {num_utts}")
        if num_speakers < 1:
            raise ValueError(f"num_speakers (P) must be >= 1, got {num_speakers}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        if small_speakers not in SMALL_SPEAKER_POLICIES:
            raise ValueError(
                f"unknown small_speakers {small_speakers!r}; valid: "
                f"{', '.join(SMALL_SPEAKER_POLICIES)}"
            )
        self.num_speakers = num_speakers
        self.num_utts = num_utts
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.small_speakers = small_speakers
        self.group_size = group_size
        self.epoch = 0
        self.start_batch = start_batch

        speaker_ids, counts, groups = _eligible_speakers(labels, num_utts, small_speakers)
        self.speaker_labels = speaker_ids
        self._members = groups  # item indices of each eligible speaker
        self._num_groups = np.maximum(counts // num_utts, 1)
        step_speakers = num_speakers * world_size
        if len(groups) < step_speakers:
            raise ValueError(
                f"{len(groups)} eligible speakers, but a step needs P*world_size = {step_speakers} "
                "distinct speakers; lower num_speakers"
            )
        self._blocks: list[np.ndarray] | None = None
        if speaker_groups is not None:
            self._blocks = self._speaker_blocks(speaker_groups, group_size, step_speakers)
            weights = self._num_groups.astype(np.float64)
            self._block_weights = np.array([weights[b].sum() for b in self._blocks])
        default_batches = int(self._num_groups.sum()) // step_speakers
        self.num_batches = max(1, default_batches) if num_batches is None else num_batches
        self._plan_epoch: int | None = None
        self._plan: np.ndarray | None = None  # (num_batches, P*world_size*K, 2) index, seed

    def _speaker_blocks(
        self, speaker_groups: Sequence[object], group_size: int, step_speakers: int
    ) -> list[np.ndarray]:
        """Positions (into the eligible speakers) of each group's members; small groups pooled."""
        if group_size < 2 or self.num_speakers % group_size:
            raise ValueError(
                f"group_size must be >= 2 and divide P={self.num_speakers}, got {group_size}"
            )
        by_group: dict[object, list[int]] = {}
        for position, label in enumerate(self.speaker_labels):
            by_group.setdefault(speaker_groups[int(label)], []).append(position)
        blocks = [np.array(v) for v in by_group.values() if len(v) >= group_size]
        pooled = [p for v in by_group.values() if len(v) < group_size for p in v]
        if pooled:
            small = sum(1 for v in by_group.values() if len(v) < group_size)
            kept = len(pooled) >= group_size
            logger.warning(
                "%d speaker groups have fewer than %d speakers: their %d speakers %s",
                small,
                group_size,
                len(pooled),
                "are pooled into one mixed group" if kept else "are left out",
            )
            if kept:
                blocks.append(np.array(pooled))
        needed = step_speakers // group_size
        if len(blocks) < needed:
            raise ValueError(
                f"{len(blocks)} speaker groups of >= {group_size} speakers, but a step of "
                f"P*world_size = {step_speakers} speakers needs {needed}; lower group_size or P"
            )
        return blocks

    def __len__(self) -> int:
        """Batches per epoch on this rank (a resumed epoch yields `len - start_batch`)."""
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (reproducible) plan the next iteration follows."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """Where we are: {"epoch", "start_batch", "seed"} (plain ints, checkpoint-safe)."""
        return {"epoch": self.epoch, "start_batch": self.start_batch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration yields epoch `state["epoch"]` from `state["start_batch"]`."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"sampler seed {self.seed} differs from the saved {state['seed']}")
        self.epoch = int(state["epoch"])
        self.start_batch = int(state["start_batch"])

    def __iter__(self) -> Iterator[Batch]:
        start, self.start_batch = self.start_batch, 0
        return self.iter_from(start)

    def iter_from(self, batch_index: int) -> Iterator[Batch]:
        """Batches `batch_index, batch_index + 1, ...` of the current epoch on this rank."""
        if not 0 <= batch_index <= self.num_batches:
            raise ValueError(f"batch_index {batch_index} not in [0, {self.num_batches}]")
        plan = self._epoch_plan()
        per_rank = self.num_speakers * self.num_utts
        lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
        for b in range(batch_index, self.num_batches):
            rows = plan[b, lo:hi]
            yield [(int(i), int(s)) for i, s in rows]

    def _epoch_plan(self) -> np.ndarray:
        if self._plan_epoch == self.epoch and self._plan is not None:
            return self._plan
        rng = np.random.default_rng([self.seed, self.epoch])
        step_speakers = self.num_speakers * self.world_size
        k = self.num_utts
        weights = self._num_groups.astype(np.float64)
        if self._blocks is None:
            chosen = _weighted_draws(rng, weights, self.num_batches, step_speakers)
        else:
            chosen = self._grouped_draws(rng, self._blocks, weights, step_speakers)
        # Each speaker's groups for the epoch at once, then scattered to its slots in batch order.
        flat = chosen.ravel()
        slots = np.argsort(flat, kind="stable")
        counts = np.bincount(flat, minlength=len(weights))
        groups = np.empty((flat.size, k), dtype=np.int64)
        offset = 0
        for spk in np.flatnonzero(counts):
            count = int(counts[spk])
            groups[slots[offset : offset + count]] = self._groups(int(spk), count, rng)
            offset += count
        indices = groups.reshape(self.num_batches, step_speakers * k)
        seeds = rng.integers(0, 2**62, size=indices.shape, dtype=np.int64)
        self._plan = np.stack([indices, seeds], axis=-1)
        self._plan_epoch = self.epoch
        return self._plan

    def _grouped_draws(
        self,
        rng: np.random.Generator,
        blocks: list[np.ndarray],
        weights: np.ndarray,
        step_speakers: int,
    ) -> np.ndarray:
        """`(num_batches, step_speakers)` eligible-speaker positions in blocks of one group."""
        size = self.group_size
        per_step = step_speakers // size
        picked = _weighted_draws(rng, self._block_weights, self.num_batches, per_step)
        chosen = np.empty((self.num_batches, per_step, size), dtype=np.int64)
        for group in np.unique(picked):  # every block of one group at once
            where = picked == group
            members = blocks[group]
            chosen[where] = members[_weighted_draws(rng, weights[members], int(where.sum()), size)]
        return chosen.reshape(self.num_batches, step_speakers)

    def _groups(self, spk: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` K-groups of speaker `spk`: disjoint within each reshuffled pass over its utts."""
        members = self._members[spk]
        k = self.num_utts
        if len(members) < k:
            return rng.choice(members, size=(count, k), replace=True)
        per_pass = len(members) // k
        passes = [
            rng.permutation(members)[: per_pass * k].reshape(per_pass, k)
            for _ in range(-(-count // per_pass))
        ]
        return np.concatenate(passes)[:count]


def _weighted_draws(
    rng: np.random.Generator, weights: np.ndarray, rows: int, size: int
) -> np.ndarray:
    """`(rows, size)` positions drawn without replacement within each row, with probability
    proportional to `weights`, in random order (no id order inside a batch).

    Efraimidis-Spirakis: the `size` largest keys log(u) / w. Chunks of 256 rows keep the key
    matrix small (VoxCeleb2: ~4k batches x 6k speakers).
    """
    out = np.empty((rows, size), dtype=np.int64)
    for lo in range(0, rows, 256):
        hi = min(lo + 256, rows)
        keys = np.log(rng.random((hi - lo, len(weights)))) / weights
        top = np.argpartition(-keys, size - 1, axis=1)[:, :size]
        top.sort(axis=1)
        out[lo:hi] = rng.permuted(top, axis=1)
    return out
