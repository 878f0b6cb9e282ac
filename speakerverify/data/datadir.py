"""Kaldi-style data dirs (`wav.scp`, `utt2spk`, optional `utt2dur`; `spk2utt` derived).

The same layout WeSpeaker and ESPnet use, so their tools and ours read each other's data dirs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import utf8_lines, write_atomic

logger = logging.getLogger(__name__)


class DataDirError(SpeakerVerifyError, ValueError):
    """A data dir file is malformed or inconsistent; the message names the file and line."""


@dataclass
class DataDir:
    """Utterances with their audio paths, speakers and (optionally) durations.

    Attributes:
        wav: utt_id -> audio path, in insertion order (the order files are written in).
        utt2spk: utt_id -> spk_id, same keys as `wav`.
        utt2dur: utt_id -> duration in seconds, same keys as `wav`, or None when unknown.
    """

    wav: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] | None = field(default=None)

    def __post_init__(self) -> None:
        missing = [u for u in self.wav if u not in self.utt2spk]
        if missing:
            raise DataDirError(
                f"{len(missing)} utterances have no speaker (e.g. {', '.join(missing[:3])})"
            )
        extra = [u for u in self.utt2spk if u not in self.wav]
        if extra:
            raise DataDirError(
                f"{len(extra)} utterances in utt2spk have no audio (e.g. {', '.join(extra[:3])})"
            )
        if self.utt2dur is not None:
            missing = [u for u in self.wav if u not in self.utt2dur]
            if missing:
                raise DataDirError(
                    f"{len(missing)} utterances have no duration (e.g. {', '.join(missing[:3])})"
                )

    def __len__(self) -> int:
        return len(self.wav)

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids in insertion order."""
        return list(self.wav)

    @property
    def speakers(self) -> list[str]:
        """Sorted speaker ids; a speaker's integer label is its index here."""
        return sorted(set(self.utt2spk.values()))

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """spk_id -> its utt_ids (insertion order), speakers sorted."""
        groups: dict[str, list[str]] = {spk: [] for spk in self.speakers}
        for utt, spk in self.utt2spk.items():
            groups[spk].append(utt)
        return groups

    def subset(self, utt_ids: Iterable[str]) -> DataDir:
        """A DataDir of only `utt_ids` (in that order); unknown ids raise DataDirError."""
        ids = list(utt_ids)
        unknown = [u for u in ids if u not in self.wav]
        if unknown:
            raise DataDirError(
                f"{len(unknown)} utterances not in the data dir (e.g. {', '.join(unknown[:3])})"
            )
        return DataDir(
            wav={u: self.wav[u] for u in ids},
            utt2spk={u: self.utt2spk[u] for u in ids},
            utt2dur=None if self.utt2dur is None else {u: self.utt2dur[u] for u in ids},
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
