"""P×K sampler invariants, in the style of pytorch-metric-learning's MPerClassSampler test."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from speakerverify.data import PKSampler


def make_labels(rng, num_speakers=30, low=2, high=12):
    counts = rng.integers(low, high + 1, size=num_speakers)
    labels = np.repeat(np.arange(num_speakers), counts)
    return rng.permutation(labels).tolist()


@pytest.mark.parametrize(("p", "k"), [(4, 2), (5, 3), (8, 4)])
def test_every_batch_has_p_distinct_speakers_times_k_distinct_utts(rng, p, k):
    labels = make_labels(rng)
    sampler = PKSampler(labels, num_speakers=p, num_utts=k, seed=3, small_speakers="exclude")
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == p * k
        indices = [i for i, _ in batch]
        per_speaker = Counter(labels[i] for i in indices)
        assert len(per_speaker) == p and set(per_speaker.values()) == {k}
        assert len(set(indices)) == p * k  # no utterance twice (all speakers here have >= k)
        for j in range(p):  # each speaker's K items are contiguous
            assert len({labels[i] for i in indices[j * k : (j + 1) * k]}) == 1


def test_length_is_groups_over_p_and_epoch_covers_most_utterances():
    labels = np.repeat(np.arange(20), 10).tolist()  # 20 speakers x 10 utts, K=2 -> 100 groups
    sampler = PKSampler(labels, num_speakers=4, num_utts=2, seed=0)
    assert len(sampler) == 100 // 4
    seen = {i for batch in sampler for i, _ in batch}
    assert len(seen) >= 0.75 * len(labels)  # about one pass over the data per epoch
    assert PKSampler(labels, num_speakers=4, num_utts=2, num_batches=7).__len__() == 7


def test_reproducible_per_epoch_and_different_across_epochs(rng):
    labels = make_labels(rng)
    a = PKSampler(labels, num_speakers=4, num_utts=2, seed=7)
    b = PKSampler(labels, num_speakers=4, num_utts=2, seed=7)
    epoch0 = list(a)
    assert epoch0 == list(b) == list(a)  # same seed, same epoch -> same batches, also re-iterated
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0
    b.set_epoch(1)
    assert list(b) == epoch1
    assert list(PKSampler(labels, num_speakers=4, num_utts=2, seed=8)) != epoch0
    seeds = [s for batch in epoch0 + epoch1 for _, s in batch]
    assert len(set(seeds)) == len(seeds)  # every item gets its own crop/augmentation seed


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_speakers_and_equal_batch_counts(rng, world_size):
    labels = make_labels(rng, num_speakers=40)
    samplers = [
        PKSampler(labels, num_speakers=4, num_utts=2, seed=1, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for sampler in samplers:
        sampler.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    assert len({len(batches) for batches in per_rank}) == 1
    assert len(per_rank[0]) == len(samplers[0])
    for step in zip(*per_rank, strict=True):
        speakers = [{labels[i] for i, _ in batch} for batch in step]
        assert all(len(s) == 4 for s in speakers)
        assert len(set().union(*speakers)) == 4 * world_size  # disjoint across ranks
    single = PKSampler(labels, num_speakers=4, num_utts=2, seed=1)
    single.set_epoch(2)
    assert list(single) != per_rank[0]  # a rank is not a copy of the single-process run


def test_resume_from_batch_equals_tail_of_full_epoch(rng):
    labels = make_labels(rng)
    sampler = PKSampler(labels, num_speakers=4, num_utts=2, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    for start in (0, 1, len(full) // 2, len(full) - 1, len(full)):
        assert list(sampler.iter_from(start)) == full[start:]
    # through a checkpointed state and a fresh sampler (what training resume does)
    sampler.start_batch = 4
    state = sampler.state_dict()
    fresh = PKSampler(labels, num_speakers=4, num_utts=2, seed=5)
    fresh.load_state_dict(state)
    assert list(fresh) == full[4:]
    assert list(fresh) == full  # start_batch applies to one iteration only
    with pytest.raises(ValueError, match="batch_index"):
        list(sampler.iter_from(len(full) + 1))
    with pytest.raises(ValueError, match="seed"):
        PKSampler(labels, num_speakers=4, num_utts=2, seed=6).load_state_dict(state)


def test_small_speakers_replace_or_exclude_logged_once(caplog):
    labels = [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]  # speaker 0 has one utterance
    with caplog.at_level(logging.WARNING, logger="speakerverify.data.sampler"):
        replace = PKSampler(labels, num_speakers=5, num_utts=3, seed=0)
        for epoch in range(3):
            replace.set_epoch(epoch)
            batches = list(replace)
    assert len(caplog.records) == 1
    assert "2 of 5 speakers have fewer than K=3" in caplog.records[0].getMessage()
    for batch in batches:  # all 5 speakers every step; speaker 0's one utterance K times
        counts = Counter(labels[i] for i, _ in batch)
        assert counts == dict.fromkeys(range(5), 3)
        assert [i for i, _ in batch].count(0) == 3
    exclude = PKSampler(labels, num_speakers=3, num_utts=3, seed=0, small_speakers="exclude")
    used = {labels[i] for batch in exclude for i, _ in batch}
    assert used == {1, 2, 3}
    with pytest.raises(ValueError, match="3 eligible speakers"):
        PKSampler(labels, num_speakers=4, num_utts=3, small_speakers="exclude")


def test_invalid_arguments():
    labels = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="K"):
        PKSampler(labels, num_speakers=2, num_utts=1)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(labels, num_speakers=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="valid: replace, exclude"):
        PKSampler(labels, num_speakers=2, small_speakers="drop")


def test_plan_for_voxceleb2_sized_labels_is_fast():
    import time

    labels = np.repeat(np.arange(5994), 182)  # ~VoxCeleb2 dev: 1.09 M utterances
    sampler = PKSampler(labels, num_speakers=128, num_utts=2, seed=0)
    start = time.perf_counter()
    first = next(iter(sampler))
    elapsed = time.perf_counter() - start
    assert len(sampler) == 5994 * 91 // 128 and len(first) == 256
    assert elapsed < 20.0, f"epoch plan took {elapsed:.1f} s"


def grouped_labels(rng, sizes):
    """Labels of speakers 0..N-1 (3-9 utterances each) and the group of each speaker: group g
    holds `sizes[g]` speakers."""
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = make_labels(rng, num_speakers=len(groups), low=3, high=9)
    return labels, [f"lang{g}" for g in groups]


@pytest.mark.parametrize(("world_size", "size"), [(1, 2), (1, 4), (2, 4)])
def test_grouped_steps_are_blocks_of_one_group_split_whole_between_ranks(rng, world_size, size):
    labels, groups = grouped_labels(rng, [5, 9, 4, 12, 7, 6])
    samplers = [
        PKSampler(
            labels,
            num_speakers=8,
            num_utts=2,
            seed=4,
            rank=r,
            world_size=world_size,
            speaker_groups=groups,
            group_size=size,
        )
        for r in range(world_size)
    ]
    uniform = PKSampler(labels, num_speakers=8, num_utts=2, seed=4, world_size=world_size)
    assert len(samplers[0]) == len(uniform)  # grouping changes which speakers, not how many
    for step in zip(*(list(s) for s in samplers), strict=True):
        seen = []
        for batch in step:
            items = [labels[i] for i, _ in batch]
            assert items[::2] == items[1::2]  # each speaker's K=2 items are adjacent
            speakers = items[::2]
            for lo in range(0, 8, size):  # a rank holds whole blocks, each of one group
                assert len({groups[s] for s in speakers[lo : lo + size]}) == 1
            seen += speakers
        assert len(set(seen)) == 8 * world_size  # distinct speakers across the whole step


def test_grouped_draw_reaches_every_speaker_in_proportion_and_is_reproducible(rng):
    labels, groups = grouped_labels(rng, [6, 10, 8, 4])
    sampler = PKSampler(labels, num_speakers=4, num_utts=2, seed=2, speaker_groups=groups)
    counts = Counter()
    for epoch in range(200):
        sampler.set_epoch(epoch)
        counts.update(labels[i] for batch in sampler for i, _ in batch[::2])
    per_utt = Counter(labels)
    k_groups = {s: per_utt[s] // 2 for s in per_utt}
    # every speaker is drawn, about in proportion to its K-groups as in the uniform draw
    share = np.array([counts[s] / sum(counts.values()) for s in sorted(k_groups)])
    expected = np.array([k_groups[s] / sum(k_groups.values()) for s in sorted(k_groups)])
    assert share.min() > 0
    assert np.abs(share - expected).max() < 0.35 * expected.max()
    again = PKSampler(labels, num_speakers=4, num_utts=2, seed=2, speaker_groups=groups)
    again.set_epoch(199)
    assert list(again) == list(sampler)


def test_grouped_draw_pools_small_groups_and_refuses_too_few(rng, caplog):
    labels, groups = grouped_labels(rng, [6, 6, 1, 2, 1])  # 3, 4 speakers: one pool of 4
    with caplog.at_level(logging.WARNING, logger="speakerverify.data.sampler"):
        sampler = PKSampler(labels, num_speakers=8, num_utts=2, speaker_groups=groups)
    assert "3 speaker groups have fewer than 4 speakers: their 4 speakers are pooled" in caplog.text
    pooled = {"lang2", "lang3", "lang4"}
    for batch in sampler:
        speakers = [labels[i] for i, _ in batch][::2]
        for lo in (0, 4):
            block = {groups[s] for s in speakers[lo : lo + 4]}
            assert len(block) == 1 or block <= pooled
    three = ["a"] * 6 + ["b"] * 6 + ["c"] * 4
    with pytest.raises(ValueError, match=r"3 speaker groups of >= 4 speakers, .* needs 4"):
        PKSampler(labels, num_speakers=16, num_utts=2, speaker_groups=three)
    with pytest.raises(ValueError, match="divide P=6"):
        PKSampler(labels, num_speakers=6, num_utts=2, speaker_groups=groups, group_size=4)
