"""Kaldi-style data dirs (`wav.scp`, `utt2spk`, optional `utt2dur`; `spk2utt` derived).

The same layout WeSpeaker and ESPnet use, so their tools and ours read each other's data dirs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from speakerverify.data.strings import StringColumn
from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import utf8_lines, write_atomic

logger = logging.getLogger(__name__)


class DataDirError(SpeakerVerifyError, ValueError):
    """A data dir file is malformed or inconsistent; the message names the file and line."""


Value = TypeVar("Value")


class _ColumnMap(Mapping[str, Value]):
    """A read-only mapping view: keys a `StringColumn`, values looked up by row."""

    def __init__(
        self,
        keys: StringColumn,
        value_at: Callable[[int], Value],
        values: Callable[[], Iterable[Value]],
    ) -> None:
        self._keys = keys
        self._value_at = value_at
        self._values = values  # every value in key order, for whole passes (items(), values())

    def __getitem__(self, key: str) -> Value:
        row = self._keys.find(key) if isinstance(key, str) else -1
        if row < 0:
            raise KeyError(key)
        return self._value_at(row)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._keys.find(key) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def values(self) -> Any:  # a list, not a view: one pass over the column, no lookups
        return list(self._values())

    def items(self) -> Any:
        return list(zip(self._keys, self._values(), strict=True))

    def __repr__(self) -> str:
        return f"<{len(self)} entries>"


class DataDir:
    """Utterances with their audio paths, speakers and (optionally) durations.

    Stored as columns (`StringColumn`s and numpy arrays, about 150 bytes an utterance of
    VoxCeleb, against ~400 as dicts of strings), so DataLoader workers forked from the process
    that loaded it share its pages instead of copying them; `wav`, `utt2spk` and `utt2dur` are
    read-only mapping views of the columns.

    Args:
        wav: utt_id -> audio path, in the order files are written in.
        utt2spk: utt_id -> spk_id, same keys as `wav`.
        utt2dur: utt_id -> duration in seconds, same keys as `wav`, or None when unknown.
    """

    def __init__(
        self,
        wav: Mapping[str, str],
        utt2spk: Mapping[str, str],
        utt2dur: Mapping[str, float] | None = None,
    ) -> None:
        missing = [u for u in wav if u not in utt2spk]
        if missing:
            raise DataDirError(
                f"{len(missing)} utterances have no speaker (e.g. {', '.join(missing[:3])})"
            )
        extra = [u for u in utt2spk if u not in wav]
        if extra:
            raise DataDirError(
                f"{len(extra)} utterances in utt2spk have no audio (e.g. {', '.join(extra[:3])})"
            )
        if utt2dur is not None:
            missing = [u for u in wav if u not in utt2dur]
            if missing:
                raise DataDirError(
                    f"{len(missing)} utterances have no duration (e.g. {', '.join(missing[:3])})"
                )
        ids = list(wav)
        speaker_of = [utt2spk[u] for u in ids]
        names = sorted(set(speaker_of))
        label_of = {name: i for i, name in enumerate(names)}
        durations = None
        if utt2dur is not None:
            durations = np.fromiter((utt2dur[u] for u in ids), np.float64, len(ids))
        self._set_columns(
            StringColumn.from_strings(ids),
            StringColumn.from_strings(wav[u] for u in ids),
            names,
            np.fromiter((label_of[s] for s in speaker_of), np.int32, len(ids)),
            durations,
        )

    def _set_columns(
        self,
        utt_ids: StringColumn,
        paths: StringColumn,
        speakers: list[str],
        speaker_labels: np.ndarray,
        durations: np.ndarray | None,
    ) -> None:
        self.utt_id_column = utt_ids
        self.path_column = paths
        self._speakers = speakers
        self.speaker_labels = speaker_labels
        self.durations = durations

    @classmethod
    def from_columns(
        cls,
        utt_ids: StringColumn,
        paths: StringColumn,
        speakers: list[str],
        speaker_labels: np.ndarray,
        durations: np.ndarray | None = None,
    ) -> DataDir:
        """A DataDir of columns: `speakers` sorted, `speaker_labels` (N,) indices into them,
        `durations` (N,) seconds or None (no checks beyond the lengths)."""
        if not len(utt_ids) == len(paths) == len(speaker_labels):
            raise DataDirError("columns of different lengths")
        if durations is not None and len(durations) != len(utt_ids):
            raise DataDirError("durations and utterances differ in length")
        data = cls.__new__(cls)
        data._set_columns(utt_ids, paths, list(speakers), speaker_labels, durations)
        return data

    @property
    def wav(self) -> Mapping[str, str]:
        """utt_id -> audio path (a read-only view)."""
        return _ColumnMap(
            self.utt_id_column, self.path_column.__getitem__, self.path_column.__iter__
        )

    @property
    def utt2spk(self) -> Mapping[str, str]:
        """utt_id -> spk_id (a read-only view)."""
        names = self._speakers
        return _ColumnMap(
            self.utt_id_column,
            lambda row: names[self.speaker_labels[row]],
            lambda: (names[label] for label in self.speaker_labels.tolist()),
        )

    @property
    def utt2dur(self) -> Mapping[str, float] | None:
        """utt_id -> duration in seconds (a read-only view), or None when unknown."""
        durations = self.durations
        if durations is None:
            return None
        return _ColumnMap(self.utt_id_column, lambda row: float(durations[row]), durations.tolist)

    def __len__(self) -> int:
        return len(self.utt_id_column)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataDir):
            return NotImplemented
        return (
            self.utt_id_column == other.utt_id_column
            and self.path_column == other.path_column
            and self.speakers == other.speakers
            and np.array_equal(self.speaker_labels, other.speaker_labels)
            and (self.durations is None) == (other.durations is None)
            and (self.durations is None or np.array_equal(self.durations, other.durations))
        )

    def __repr__(self) -> str:
        with_durations = "" if self.durations is None else ", with durations"
        return f"DataDir({len(self)} utterances, {len(self._speakers)} speakers{with_durations})"

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids in insertion order."""
        return list(self.utt_id_column)

    @property
    def speakers(self) -> list[str]:
        """Sorted speaker ids; a speaker's integer label is its index here."""
        return list(self._speakers)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """spk_id -> its utt_ids (insertion order), speakers sorted."""
        groups: dict[str, list[str]] = {spk: [] for spk in self._speakers}
        for utt, label in zip(self.utt_id_column, self.speaker_labels.tolist(), strict=True):
            groups[self._speakers[label]].append(utt)
        return groups

    def subset(self, utt_ids: Iterable[str]) -> DataDir:
        """A DataDir of only `utt_ids` (in that order); unknown ids raise DataDirError."""
        ids = list(utt_ids)
        rows = [self.utt_id_column.find(u) for u in ids]
        unknown = [u for u, row in zip(ids, rows, strict=True) if row < 0]
        if unknown:
            raise DataDirError(
                f"{len(unknown)} utterances not in the data dir (e.g. {', '.join(unknown[:3])})"
            )
        used, labels = np.unique(self.speaker_labels[rows], return_inverse=True)
        return DataDir.from_columns(
            StringColumn.from_strings(ids),
            self.path_column.take(rows),
            [self._speakers[i] for i in used.tolist()],
            labels.astype(np.int32).reshape(-1),
            None if self.durations is None else self.durations[rows],
        )

    @classmethod
    def load(cls, path: str | os.PathLike, check_files: bool = False) -> DataDir:
        """Read `path/wav.scp`, `path/utt2spk` and, when present, `utt2dur` and `spk2utt`.

        Args:
            path: the data dir.
            check_files: also check that every audio path exists (slow on network disks).

        Raises:
            DataDirError: malformed line, duplicate utt id, utterance without speaker or audio,
                `spk2utt` disagreeing with `utt2spk`, or (with `check_files`) a missing file.
        """
        root = Path(path)
        if not (root / "wav.scp").is_file():
            raise DataDirError(f"{root}: not a data dir (no wav.scp)")
        wav = _read_table(root / "wav.scp", rest_of_line=True)
        for utt, value in wav.items():
            if value.endswith("|"):
                raise DataDirError(
                    f"{root / 'wav.scp'}: {utt}: pipe commands are not supported, give a file path"
                )
        if not (root / "utt2spk").is_file():
            raise DataDirError(f"{root}: no utt2spk next to wav.scp")
        utt2spk = _read_table(root / "utt2spk")
        _check_same_keys(root / "utt2spk", utt2spk, wav, "wav.scp")
        utt2dur = None
        if (root / "utt2dur").is_file():
            raw = _read_table(root / "utt2dur")
            _check_same_keys(root / "utt2dur", raw, wav, "wav.scp")
            utt2dur = {}
            for lineno, (utt, value) in enumerate(raw.items(), 1):
                try:
                    utt2dur[utt] = float(value)
                except ValueError:
                    raise DataDirError(
                        f"{root / 'utt2dur'}:{_line_of(root / 'utt2dur', utt, lineno)}: "
                        f"duration {value!r} is not a number"
                    ) from None
        data = cls(wav=wav, utt2spk=utt2spk, utt2dur=utt2dur)
        if (root / "spk2utt").is_file():
            _check_spk2utt(root / "spk2utt", utt2spk)
        if check_files:
            for lineno, (utt, wav_path) in enumerate(wav.items(), 1):
                if not Path(wav_path).is_file():
                    raise DataDirError(
                        f"{root / 'wav.scp'}:{lineno}: {utt}: audio file {wav_path} does not exist"
                    )
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write `wav.scp`, `utt2spk`, `spk2utt` and (when known) `utt2dur`, each atomically."""
        root = Path(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(root / "wav.scp", "".join(f"{u} {p}\n" for u, p in self.wav.items()))
            write_atomic(root / "utt2spk", "".join(f"{u} {self.utt2spk[u]}\n" for u in self.wav))
            spk2utt = "".join(f"{s} {' '.join(us)}\n" for s, us in self.spk2utt.items())
            write_atomic(root / "spk2utt", spk2utt)
            if self.utt2dur is not None:
                utt2dur = "".join(f"{u} {self.utt2dur[u]:.3f}\n" for u in self.wav)
                write_atomic(root / "utt2dur", utt2dur)
            elif (root / "utt2dur").exists():
                os.remove(root / "utt2dur")  # a stale utt2dur would no longer match wav.scp
        except OSError as error:
            raise DataDirError(f"{root}: cannot write ({error.strerror or error})") from None


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    for lineno, line in utf8_lines(path):
        line = line.strip()
        if line:
            yield lineno, line


def _read_table(path: Path, rest_of_line: bool = False) -> dict[str, str]:
    """`key value` lines; `rest_of_line` keeps spaces in the value (wav.scp paths)."""
    table: dict[str, str] = {}
    for lineno, line in _iter_lines(path):
        parts = line.split(maxsplit=1) if rest_of_line else line.split()
        if len(parts) != 2:
            raise DataDirError(
                f"{path}:{lineno}: expected 2 fields '<utt_id> <value>', got {len(parts)}: {line!r}"
            )
        key, value = parts
        if key in table:
            raise DataDirError(f"{path}:{lineno}: duplicate utterance id {key}")
        table[key] = value.strip()
    return table


def _line_of(path: Path, key: str, default: int) -> int:
    for lineno, line in _iter_lines(path):
        if line.split(maxsplit=1)[0] == key:
            return lineno
    return default


def _check_same_keys(path: Path, table: dict[str, str], wav: dict[str, str], ref: str) -> None:
    for lineno, line in _iter_lines(path):
        utt = line.split(maxsplit=1)[0]
        if utt not in wav:
            raise DataDirError(f"{path}:{lineno}: utterance {utt} is not in {ref}")
    missing = [u for u in wav if u not in table]
    if missing:
        raise DataDirError(
            f"{path}: {len(missing)} utterances of {ref} are missing "
            f"(e.g. {', '.join(missing[:3])})"
        )


def _check_spk2utt(path: Path, utt2spk: dict[str, str]) -> None:
    seen: set[str] = set()
    speakers = set(utt2spk.values())
    for lineno, line in _iter_lines(path):
        spk, *utts = line.split()
        if spk not in speakers:
            raise DataDirError(f"{path}:{lineno}: unknown speaker {spk} (not in utt2spk)")
        for utt in utts:
            if utt2spk.get(utt) != spk:
                raise DataDirError(
                    f"{path}:{lineno}: utterance {utt} is listed under {spk} but utt2spk says "
                    f"{utt2spk.get(utt, 'nothing')}"
                )
            seen.add(utt)
    if len(seen) != len(utt2spk):
        raise DataDirError(f"{path}: lists {len(seen)} utterances, utt2spk has {len(utt2spk)}")
