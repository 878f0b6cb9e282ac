"""Making trial lists for any data dir: sampled or exhaustive target / non-target pairs, targets
across sessions when sessions are known, non-targets sharing an attribute (gender, language, ...)
for harder lists, and multi-utterance enrollment models (Kaldi `model test target` + an enroll map).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerverify.data.datadir import DataDir
from speakerverify.data.trials import Trials, TrialsError
from speakerverify.files import write_atomic

__all__ = ["TrialOptions", "make_trials", "prepare_trials", "write_enroll_map"]

Pair = tuple[int, int]
_MAX_ENUMERATED = 2_000_000  # beyond this many candidate pairs, sample by rejection


@dataclass(frozen=True)
class TrialOptions:
    """What list to make.

    Attributes:
        num_targets: target trials to sample.
        num_nontargets: non-target trials to sample (None: as many as targets).
        all_pairs: every valid pair instead of a sample, refused above `max_trials`.
        max_trials: cap on the number of trials of `all_pairs`.
        enroll_utts: utterances per enrollment model (1: single-utterance trials).
        seed: seed of every random choice; the same seed gives the same list.
    """

    num_targets: int = 10000
    num_nontargets: int | None = None
    all_pairs: bool = False
    max_trials: int = 10_000_000
    enroll_utts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_targets < 0 or (self.num_nontargets or 0) < 0 or self.max_trials < 1:
            raise TrialsError("trial counts must be >= 0 and max_trials >= 1")
        if self.enroll_utts < 1:
            raise TrialsError(f"enroll_utts must be >= 1, got {self.enroll_utts}")


@dataclass
class _Side:
    """Enrollment items: single utterances or multi-utterance models, with their tests."""

    ids: list[str]
    spk: np.ndarray  # (E,) speaker code of each item
    group: np.ndarray  # (E,) attribute code of each item
    sessions: list[frozenset[int]]  # sessions an item's utterances come from
    tests: np.ndarray  # utterance indices that may be tested
    models: dict[str, list[str]] | None  # model id -> utt ids (multi-utterance only)


def make_trials(
    data: DataDir,
    options: TrialOptions,
    *,
    sessions: dict[str, str] | None = None,
    same: dict[str, str] | None = None,
    name: str = "trials",
) -> tuple[Trials, dict[str, list[str]] | None]:
    """A trial list over the utterances of `data`, sorted by (enroll, test).

    Args:
        data: the utterances and speakers.
        options: counts, exhaustive or sampled, enrollment size, seed.
        sessions: utt_id -> session; target trials then pair different sessions only.
        same: utt_id -> attribute value; non-target trials then share the value.
        name: the list's name (`Trials.name`).

    Returns:
        The trials, and with `options.enroll_utts > 1` the enroll map (model id -> utt ids;
        model ids are `<speaker>-enroll`), else None.

    Raises:
        TrialsError: no utterances, fewer valid pairs than asked for, more than `max_trials`
            with `all_pairs`, or no speaker with enough utterances to enroll.
    """
    utts = data.utt_ids
    if not utts:
        raise TrialsError(f"{name}: no utterances to make trials from")
    spk = _codes([data.utt2spk[u] for u in utts])
    sess = _codes([sessions[u] for u in utts]) if sessions is not None else None
    group = _codes([same[u] for u in utts]) if same is not None else np.zeros(len(utts), np.int64)
    rng = np.random.default_rng(options.seed)
    if options.enroll_utts == 1:
        side = _single_side(utts, spk, sess, group)
    else:
        side = _model_side(data, utts, spk, sess, group, options.enroll_utts, rng)
    target = _PairSpace(side, spk, sess, group, True)
    nontarget = _PairSpace(side, spk, sess, group, False)
    if options.all_pairs:
        counts = [space.count(options.max_trials) for space in (target, nontarget)]
        total = None if None in counts else sum(c for c in counts if c is not None)
        if total is None or total > options.max_trials:
            found = f"{total} pairs exist" if total else f"over {options.max_trials} pairs exist"
            raise TrialsError(f"{found}, more than the cap of {options.max_trials} (--max-trials)")
        chosen_t, chosen_n = target.enumerate(), nontarget.enumerate()
    else:
        num_nontargets = (
            options.num_targets if options.num_nontargets is None else options.num_nontargets
        )
        chosen_t = target.sample(options.num_targets, rng)
        chosen_n = nontarget.sample(num_nontargets, rng)
    rows = sorted(
        [(side.ids[e], utts[t], 1) for e, t in chosen_t]
        + [(side.ids[e], utts[t], 0) for e, t in chosen_n]
    )
    trials = Trials(
        enroll=[r[0] for r in rows],
        test=[r[1] for r in rows],
        labels=np.asarray([r[2] for r in rows], dtype=np.int8),
        name=name,
    )
    return trials, side.models


def write_enroll_map(path: str | os.PathLike, models: dict[str, list[str]]) -> None:
    """Write `model utt1 utt2 ...` lines (spk2utt style), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(f"{m} {' '.join(us)}\n" for m, us in models.items()))


def _codes(values: list[str]) -> np.ndarray:
    _, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def _single_side(
    utts: list[str], spk: np.ndarray, sess: np.ndarray | None, group: np.ndarray
) -> _Side:
    sessions = [frozenset({int(s)}) for s in sess] if sess is not None else [frozenset()] * len(spk)
    return _Side(list(utts), spk, group, sessions, np.arange(len(utts)), None)


def _model_side(
    data: DataDir,
    utts: list[str],
    spk: np.ndarray,
    sess: np.ndarray | None,
    group: np.ndarray,
    enroll_utts: int,
    rng: np.random.Generator,
) -> _Side:
    """One model per speaker from `enroll_utts` utterances (from its largest sessions first);
    the speaker needs a test utterance left (of another session when sessions are known)."""
    index = {u: i for i, u in enumerate(utts)}
    used: set[int] = set()
    ids, model_spk, model_group, model_sessions, models = [], [], [], [], {}
    for speaker, members in data.spk2utt.items():
        rows = np.asarray([index[u] for u in members])
        rows = rows[rng.permutation(len(rows))]
        if sess is not None:  # the largest sessions first (ties in random order), kept together
            names, counts = np.unique(sess[rows], return_counts=True)
            size = dict(zip(names.tolist(), counts.tolist(), strict=True))
            rank = dict(zip(names.tolist(), rng.permutation(len(names)).tolist(), strict=True))
            sizes = np.asarray([size[int(x)] for x in sess[rows]])
            ranks = np.asarray([rank[int(x)] for x in sess[rows]])
            rows = rows[np.lexsort((ranks, -sizes))]
        chosen, rest = rows[:enroll_utts], rows[enroll_utts:]
        chosen_sessions = (
            frozenset(int(s) for s in sess[chosen]) if sess is not None else frozenset()
        )
        if len(chosen) < enroll_utts or not any(
            sess is None or int(sess[r]) not in chosen_sessions for r in rest
        ):
            continue
        model = f"{speaker}-enroll"
        ids.append(model)
        model_spk.append(spk[chosen[0]])
        model_group.append(group[chosen[0]])
        model_sessions.append(chosen_sessions)
        models[model] = [utts[r] for r in sorted(chosen)]
        used.update(int(r) for r in chosen)
    if not ids:
        raise TrialsError(
            f"no speaker has {enroll_utts} utterances to enroll and one more to test"
            + (" from another session" if sess is not None else "")
        )
    tests = np.asarray([i for i in range(len(utts)) if i not in used], dtype=np.int64)
    return _Side(ids, np.asarray(model_spk), np.asarray(model_group), model_sessions, tests, models)


class _PairSpace:
    """The valid (enroll item, test utterance) pairs of one kind: target or non-target."""

    def __init__(
        self,
        side: _Side,
        spk: np.ndarray,
        sess: np.ndarray | None,
        group: np.ndarray,
        target: bool,
    ) -> None:
        self.side, self.spk, self.sess, self.target = side, spk, sess, target
        self.single = side.models is None
        # candidate tests of an enrollment item: the tests of its speaker or of its group
        key = spk if target else group
        side_key = side.spk if target else side.group
        pool = _group_rows(key[side.tests], side.tests)
        empty = side.tests[:0]
        self.pool_of = [pool.get(int(k), empty) for k in side_key]

    def valid(self, e: int, t: int) -> bool:
        side = self.side
        if self.single and e >= t:  # unordered pairs, each once as (smaller, larger)
            return False
        if self.target:
            return self.sess is None or int(self.sess[t]) not in side.sessions[e]
        return int(self.spk[t]) != int(side.spk[e])

    def candidates(self, e: int) -> Iterable[int]:
        return (int(t) for t in self.pool_of[e] if self.valid(e, int(t)))

    def count(self, limit: int) -> int | None:
        """The number of valid pairs, or None as soon as it exceeds `limit`."""
        total = 0
        for e in range(len(self.side.ids)):
            total += sum(1 for _ in self.candidates(e))
            if total > limit:
                return None
        return total

    def enumerate(self) -> list[Pair]:
        return [(e, t) for e in range(len(self.side.ids)) for t in self.candidates(e)]

    def sample(self, k: int, rng: np.random.Generator) -> list[Pair]:
        """`k` distinct valid pairs: rejection sampling (speaker-balanced for targets), or a
        choice among all pairs when `k` is more than a fraction of them."""
        if k == 0:
            return []
        if self.pool_size(min(50 * k, _MAX_ENUMERATED)) is not None:
            everything = self.enumerate()
            kind = "target" if self.target else "non-target"
            if k > len(everything):
                raise TrialsError(f"asked for {k} {kind} trials, but only {len(everything)} exist")
            if 2 * k > len(everything):
                picked = rng.choice(len(everything), size=k, replace=False)
                return [everything[i] for i in sorted(picked)]
        return self._reject(k, rng)

    def pool_size(self, limit: int) -> int | None:
        """Candidate pairs (a bound on the valid ones) when at most `limit`, else None."""
        total = 0
        for pool in self.pool_of:
            total += len(pool)
            if total > limit:
                return None
        return total

    def _reject(self, k: int, rng: np.random.Generator) -> list[Pair]:
        items = np.asarray([e for e, pool in enumerate(self.pool_of) if len(pool)], np.int64)
        # targets balance speakers: draw a speaker, then one of its enrollment items
        by_spk = list(_group_rows(self.side.spk[items], items).values()) if self.target else [items]

        def draw_item() -> int:
            members = by_spk[rng.integers(len(by_spk))]
            return int(members[rng.integers(len(members))])

        chosen: set[Pair] = set()
        attempts = 0
        while len(chosen) < k:
            attempts += 1
            if attempts > 200 * k + 10000:
                kind = "target" if self.target else "non-target"
                raise TrialsError(f"could not find {k} distinct {kind} pairs (found {len(chosen)})")
            e = draw_item()
            pool = self.pool_of[e]
            t = int(pool[rng.integers(len(pool))])
            if self.single and e > t:
                e, t = t, e
            if self.valid(e, t):
                chosen.add((e, t))
        return sorted(chosen)


def _group_rows(keys: np.ndarray, rows: np.ndarray) -> dict[int, np.ndarray]:
    """key -> the `rows` with that key (in their order), by one stable sort."""
    order = np.argsort(keys, kind="stable")
    values, starts = np.unique(keys[order], return_index=True)
    return {int(v): part for v, part in zip(values, np.split(rows[order], starts[1:]), strict=True)}


def prepare_trials(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    options: TrialOptions,
    *,
    same: str | Sequence[str] | None = None,
    cross_session: bool = True,
    format: str | None = None,
    enroll_out: str | os.PathLike | None = None,
) -> tuple[Trials, dict[str, list[str]] | None]:
    """Make a trial list for the data dir `data_dir` and write it to `out`.

    Sessions come from `utt2sess` when present (targets then cross sessions unless
    `cross_session` is False); `same` names an attribute (`utt2<same>` or `spk2<same>`), or
    several, which non-targets then all share (e.g. `("gender", "language")`).
    Single-utterance lists are written in VoxCeleb format unless `format="kaldi"`;
    multi-utterance ones in Kaldi format, with the enroll map in `enroll_out`
    (default: `enroll` beside `out`).

    Raises:
        DataDirError: unreadable data dir or attribute file.
        TrialsError: see `make_trials`; or VoxCeleb format asked for multi-utterance models.
    """
    from speakerverify.data.attributes import SESSION_ATTRIBUTE, read_utterance_attribute
    from speakerverify.data.trials import write_trials

    data = DataDir.load(data_dir)
    if not len(data):
        raise TrialsError(f"{data_dir}: empty data dir (no utterances in wav.scp)")
    sessions = None
    if cross_session and (Path(data_dir) / f"utt2{SESSION_ATTRIBUTE}").is_file():
        sessions = read_utterance_attribute(data, data_dir, SESSION_ATTRIBUTE)
    names = [same] if isinstance(same, str) else list(same or ())
    groups = None
    if names:
        tables = [read_utterance_attribute(data, data_dir, name) for name in names]
        # one group per combination of values (a tab never occurs inside a value)
        groups = {u: "\t".join(table[u] for table in tables) for u in data.wav}
    multi = options.enroll_utts > 1
    if multi and format == "voxceleb":
        raise TrialsError("multi-utterance enrollment lists are written in Kaldi format only")
    trials, models = make_trials(data, options, sessions=sessions, same=groups, name=Path(out).stem)
    write_trials(out, trials, format=format or ("kaldi" if multi else "voxceleb"))
    if models is not None:
        write_enroll_map(enroll_out or Path(out).parent / "enroll", models)
    return trials, models
