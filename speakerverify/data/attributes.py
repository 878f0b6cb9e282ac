"""Per-utterance and per-speaker attributes of a data dir: `utt2<name>` and `spk2<name>` files.

Beside the core files (`wav.scp`, `utt2spk`, `spk2utt`, `utt2dur`) a data dir may carry
`utt2sess` (recording session), `utt2genre`, `spk2gender`, `spk2lang`, ... one `key value` line
each. Trial making reads them (`--same gender`); splitting a data dir carries them along.
"""

from __future__ import annotations

import os
from pathlib import Path

from speakerverify.data.datadir import DataDir, DataDirError, _read_table
from speakerverify.files import write_atomic

SESSION_ATTRIBUTE = "sess"
_CORE_FILES = frozenset({"utt2spk", "utt2dur", "spk2utt"})


def attribute_files(path: str | os.PathLike) -> list[Path]:
    """The `utt2<name>` / `spk2<name>` files of a data dir other than the core ones, sorted."""
    root = Path(path)
    found = [
        p
        for p in root.iterdir()
        if p.is_file() and p.name.startswith(("utt2", "spk2")) and p.name not in _CORE_FILES
    ]
    return sorted(found)


def write_attributes(path: str | os.PathLike, attributes: dict[str, dict[str, str]]) -> None:
    """Write each `{file name: {key: value}}` table (e.g. `{"utt2sess": {...}}`) atomically."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name, table in attributes.items():
        write_atomic(root / name, "".join(f"{key} {value}\n" for key, value in table.items()))


def read_utterance_attribute(data: DataDir, path: str | os.PathLike, name: str) -> dict[str, str]:
    """utt_id -> value of attribute `name` from `utt2<name>` or, failing that, `spk2<name>`.

    Raises:
        DataDirError: neither file exists, or it misses utterances / speakers of `data`.
    """
    root = Path(path)
    utt_file, spk_file = root / f"utt2{name}", root / f"spk2{name}"
    if utt_file.is_file():
        table = _read_table(utt_file)
        missing = [u for u in data.wav if u not in table]
        if missing:
            raise DataDirError(
                f"{utt_file}: {len(missing)} utterances have no {name} (e.g. {missing[0]})"
            )
        return {u: table[u] for u in data.wav}
    if spk_file.is_file():
        table = _speaker_table(spk_file, data.speakers, name)
        return {u: table[s] for u, s in data.utt2spk.items()}
    raise DataDirError(f"{root}: no utt2{name} or spk2{name} file")


def _speaker_table(spk_file: Path, speakers: list[str], name: str) -> dict[str, str]:
    """The `spk2<name>` table at `spk_file`, which must name every one of `speakers`."""
    table = _read_table(spk_file)
    missing = [s for s in speakers if s not in table]
    if missing:
        raise DataDirError(
            f"{spk_file}: {len(missing)} speakers have no {name} (e.g. {missing[0]})"
        )
    return table


def read_speaker_groups(
    path: str | os.PathLike, speakers: list[str], names: tuple[str, ...]
) -> list[tuple[str, ...]]:
    """Each speaker's values of the attributes `names`, from the `spk2<name>` files of `path`.

    Raises:
        DataDirError: a file is missing or lacks one of `speakers`.
    """
    root = Path(path)
    columns = []
    for name in names:
        spk_file = root / f"spk2{name}"
        if not spk_file.is_file():
            raise DataDirError(f"{spk_file}: not found (a speaker attribute to group by)")
        table = _speaker_table(spk_file, speakers, name)
        columns.append([table[s] for s in speakers])
    return list(zip(*columns, strict=True)) if columns else [() for _ in speakers]


def read_common_attributes(paths: list[str | os.PathLike]) -> dict[str, dict[str, str]]:
    """The attribute tables every data dir in `paths` has, merged: `{file name: {key: value}}`."""
    if not paths:
        return {}
    common = set.intersection(*({f.name for f in attribute_files(p)} for p in paths))
    tables: dict[str, dict[str, str]] = {}
    for name in sorted(common):
        tables[name] = {}
        for path in paths:
            tables[name].update(_read_table(Path(path) / name))
    return tables


def subset_attributes(
    tables: dict[str, dict[str, str]], data: DataDir
) -> dict[str, dict[str, str]]:
    """`tables` restricted to the utterances (`utt2*`) and speakers (`spk2*`) of `data`."""
    speakers = set(data.speakers)
    subset = {}
    for name, table in tables.items():
        if name.startswith("utt2"):
            subset[name] = {u: table[u] for u in data.wav if u in table}
        else:
            subset[name] = {s: v for s, v in table.items() if s in speakers}
    return subset
