"""Index files for the augmentation corpora: MUSAN and RIRS_NOISES, in their published layouts.

MUSAN: `musan/{music,speech,noise}/<subset>/*.wav` (e.g. `musan/noise/free-sound/noise-free-sound-
0000.wav`). RIRS_NOISES: `RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/
RoomNNN-NNNNN.wav`. An index is a text file of `kind path` lines (kind: music/speech/noise, or the
room size), written by `speakerverify prepare musan` / `prepare rirs`.
"""

from __future__ import annotations

import os
from pathlib import Path

from speakerverify.data.datadir import DataDirError
from speakerverify.files import utf8_lines, write_atomic

MUSAN_KINDS = ("music", "speech", "noise")
RIR_KINDS = ("smallroom", "mediumroom", "largeroom")


class NoiseIndexError(DataDirError):
    """An augmentation index or corpus tree is malformed; names the file (and line)."""


def _corpus_dir(root: str | os.PathLike, name: str, marker: str) -> Path:
    """`root` itself when it holds `marker`, else `root/name` (accept the corpus or its parent)."""
    base = Path(root)
    if (base / marker).is_dir():
        return base
    if (base / name / marker).is_dir():
        return base / name
    raise NoiseIndexError(f"{root}: not a {name} tree (no {marker}/ in it or in {name}/)")


def scan_musan(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(kind, absolute path) of every `musan/<kind>/<subset>/*.wav`, sorted."""
    base = _corpus_dir(root, "musan", "noise")
    entries = []
    for kind in MUSAN_KINDS:
        if not (base / kind).is_dir():
            continue
        for path in sorted((base / kind).glob("*/*.wav")):
            entries.append((kind, str(path.resolve())))
    if not entries:
        raise NoiseIndexError(f"{base}: no musan/<kind>/<subset>/*.wav files")
    return entries


def scan_rirs(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(room size, absolute path) of every `simulated_rirs/<size>/RoomNNN/*.wav`, sorted."""
    base = _corpus_dir(root, "RIRS_NOISES", "simulated_rirs")
    entries = []
    for kind in RIR_KINDS:
        for path in sorted((base / "simulated_rirs" / kind).glob("Room*/*.wav")):
            entries.append((kind, str(path.resolve())))
    if not entries:
        raise NoiseIndexError(f"{base}: no simulated_rirs/<room size>/RoomNNN/*.wav files")
    return entries


def write_index(path: str | os.PathLike, entries: list[tuple[str, str]]) -> None:
    """Write `kind path` lines atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(f"{kind} {file}\n" for kind, file in entries))


def read_index(
    path: str | os.PathLike, kinds: tuple[str, ...] | None = None
) -> dict[str, list[str]]:
    """kind -> paths from a `kind path` index; `kinds` restricts the allowed kinds."""
    path = Path(path)
    if not path.is_file():
        raise NoiseIndexError(f"{path}: index file not found")
    index: dict[str, list[str]] = {}
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise NoiseIndexError(f"{path}:{lineno}: expected '<kind> <path>': {line.strip()!r}")
        kind, file = parts
        if kinds is not None and kind not in kinds:
            raise NoiseIndexError(
                f"{path}:{lineno}: unknown kind {kind!r}; valid: {', '.join(kinds)}"
            )
        index.setdefault(kind, []).append(file)
    if not index:
        raise NoiseIndexError(f"{path}: empty index")
    return index


def prepare_musan(root: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, int]:
    """Index a MUSAN tree into `out_path`; returns the number of files per kind."""
    entries = scan_musan(root)
    write_index(out_path, entries)
    return _counts(entries)


def prepare_rirs(root: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, int]:
    """Index RIRS_NOISES simulated RIRs into `out_path`; returns files per room size."""
    entries = scan_rirs(root)
    write_index(out_path, entries)
    return _counts(entries)


def _counts(entries: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, _ in entries:
        counts[kind] = counts.get(kind, 0) + 1
    return counts
