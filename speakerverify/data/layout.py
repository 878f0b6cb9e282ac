"""Any tree of audio files -> a Kaldi data dir: speaker (and session) from the path.

Three ways to say who speaks: a layout template (`{speaker}/{session}/{utt}`, the default
`{speaker}/**/{utt}`), a regular expression with named groups (`speaker`, optional `session`),
or a two-column list file (`path speaker`). The utt id is the path relative to the root without
extension (`id10270/x6uYqmx31kE/00001`, as for VoxCeleb), so ids are sorted and deterministic.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speakerverify.data.attributes import SESSION_ATTRIBUTE, write_attributes
from speakerverify.data.datadir import DataDir, DataDirError
from speakerverify.files import utf8_lines
from speakerverify.frontend.audio import AUDIO_EXTENSIONS

logger = logging.getLogger(__name__)

DEFAULT_LAYOUT = "{speaker}/**/{utt}"
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RESERVED = frozenset({"spk", "utt", "dur"})  # utt2spk/utt2utt/utt2dur would clash


@dataclass
class Corpus:
    """A scanned corpus: the data dir plus per-utterance attributes (`sess`, `genre`, ...).

    Attributes:
        data: wav.scp / utt2spk / utt2dur, sorted by utt id, absolute paths.
        attributes: attribute name -> utt_id -> value, e.g. `{"sess": {...}}`.
        num_skipped: audio files left out because the layout or pattern missed them
            (`skip_unmatched`).
    """

    data: DataDir
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    num_skipped: int = 0

    @property
    def num_sessions(self) -> int | None:
        """Distinct (speaker, session) pairs, or None when the layout names no session."""
        sessions = self.attributes.get(SESSION_ATTRIBUTE)
        if sessions is None:
            return None
        return len({(self.data.utt2spk[u], s) for u, s in sessions.items()})

    @property
    def hours(self) -> float | None:
        durations = self.data.utt2dur
        return None if durations is None else sum(durations.values()) / 3600

    def save(self, path: str | os.PathLike) -> None:
        """Write the data dir and one `utt2<name>` file per attribute (`utt2sess`, ...)."""
        self.data.save(path)
        write_attributes(path, {f"utt2{name}": t for name, t in self.attributes.items()})


def layout_regex(layout: str) -> re.Pattern[str]:
    """Compile a layout template into a regex over `/`-separated relative paths (no extension).

    `{name}` matches one run of characters within a path component (a repeated name must match
    the same text again), `*` anything within a component, a `**` component any number of
    directories. `{speaker}` is required; `{session}` becomes the session, `{utt}` is a
    placeholder, any other `{name}` an attribute written as `utt2<name>`.

    >>> layout_regex("{speaker}/{session}/{speaker}-{session}-{utt}").fullmatch(
    ...     "103/1240/103-1240-0000").group("speaker", "session")
    ('103', '1240')
    """
    seen: set[str] = set()
    parts = []
    components = layout.strip("/").split("/")
    for i, component in enumerate(components):
        last = i == len(components) - 1
        if component == "**":
            if last:
                raise DataDirError(f"layout {layout!r}: '**' cannot be the last component")
            parts.append("(?:[^/]+/)*")
            continue
        pieces, pos = [], 0
        for found in _FIELD.finditer(component):
            pieces.append(re.escape(component[pos : found.start()]).replace(r"\*", "[^/]*"))
            name = found.group(1)
            pieces.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+)")
            seen.add(name)
            pos = found.end()
        pieces.append(re.escape(component[pos:]).replace(r"\*", "[^/]*"))
        parts.append("".join(pieces) + ("" if last else "/"))
    if "speaker" not in seen:
        raise DataDirError(f"layout {layout!r} has no {{speaker}} field")
    _check_names(seen, f"layout {layout!r}")
    return re.compile("".join(parts))


def _check_names(names: set[str], where: str) -> None:
    clash = sorted(names & _RESERVED - {"utt"})
    if clash:
        raise DataDirError(f"{where}: field names {clash} are reserved")


def iter_audio_files(
    root: Path, extensions: Collection[str] = AUDIO_EXTENSIONS, progress: bool = False
) -> Iterator[Path]:
    """Audio files under `root` (symlinks followed, each real directory once), sorted per dir:
    the one walk of an audio tree, for `prepare dir` and for the speaker commands.

    A symlink back to a directory above it (a cycle) is skipped. A directory or file reached by
    two routes (a link inside one speaker's folder to another's) is refused: its files would be
    labelled by whichever route came first, and the other speaker would lose them.

    Raises:
        DataDirError: a directory or audio file reached twice, naming both paths.
    """
    from tqdm import tqdm

    wanted = {f".{e.lower().lstrip('.')}" for e in extensions}
    directories: dict[tuple[int, int], Path] = {}
    files: dict[tuple[int, int], Path] = {}
    bar = tqdm(desc="scanning", unit="file", disable=not progress)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        stat = os.stat(dirpath)
        first = directories.setdefault((stat.st_dev, stat.st_ino), here)
        if first != here:
            if here.is_relative_to(first):  # a cycle: a link back to a directory above
                dirnames[:] = []
                continue
            raise DataDirError(_twice(here, first))
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in wanted:
                path = here / name
                try:
                    stat = os.stat(path)
                except OSError:  # a broken link: reading it later says what is wrong
                    stat = None
                seen = path if stat is None else files.setdefault((stat.st_dev, stat.st_ino), path)
                if seen != path:
                    raise DataDirError(_twice(path, seen))
                bar.update(1)
                yield path
    bar.close()


def _twice(second: Path, first: Path) -> str:
    return (
        f"{second}: is {first} again (through a symlink); a file reached twice would be "
        "counted twice or labelled by the first route only: remove the link"
    )


def scan_tree(
    root: str | os.PathLike,
    *,
    layout: str | None = None,
    pattern: str | None = None,
    list_file: str | os.PathLike | None = None,
    extensions: Collection[str] = AUDIO_EXTENSIONS,
    speakers: set[str] | None = None,
    skip_unmatched: bool = False,
    with_durations: bool = True,
    progress: bool = False,
) -> Corpus:
    """Index every audio file under `root` as a Corpus (one of layout, pattern or list_file).

    Args:
        root: the corpus root; utt ids are paths relative to it without extension.
        layout: a template such as `{speaker}/{session}/{utt}` (see `layout_regex`);
            the default when neither `pattern` nor `list_file` is given.
        pattern: a regex searched in the relative path without extension, with a group
            `speaker`, optionally `session` and other named groups (attributes).
        list_file: `path speaker` lines, paths relative to `root` (or absolute, under it).
        extensions: audio extensions to index (case-insensitive, no dot).
        speakers: keep only these speakers (e.g. a corpus's official training list).
        skip_unmatched: skip files the layout/pattern does not match instead of failing.
        with_durations: read each header for utt2dur (skipped when ffmpeg formats are present).
        progress: tqdm bars while scanning and reading durations.

    Raises:
        DataDirError: no audio files, a file matching no speaker, a duplicate utt id, a bad list
            line (with its line number) or nothing left after `speakers`.
        DataDirError: a bad layout or pattern, or more than one of layout/pattern/list_file.
    """
    root = Path(root)
    if sum(x is not None for x in (layout, pattern, list_file)) > 1:
        raise DataDirError("give only one of layout, pattern and list file")
    if not root.is_dir():
        raise DataDirError(f"{root}: not a directory")
    skipped = 0
    if list_file is not None:
        entries = _entries_from_list(root, Path(list_file), extensions)
    else:
        regex = _regex_of(layout, pattern)
        files = iter_audio_files(root, extensions, progress)
        how = pattern if pattern is not None else layout or DEFAULT_LAYOUT
        entries, skipped = _entries_from_paths(
            root, files, regex, how, pattern is None, skip_unmatched
        )
    if not entries:
        raise DataDirError(f"{root}: no audio files with extensions {_names(extensions)}")
    if speakers is not None:
        entries = {u: e for u, e in entries.items() if e[1]["speaker"] in speakers}
        if not entries:
            raise DataDirError(f"{root}: none of the {len(speakers)} listed speakers found")
    entries = dict(sorted(entries.items()))
    wav = {u: path for u, (path, _) in entries.items()}
    utt2spk = {u: fields["speaker"] for u, (_, fields) in entries.items()}
    durations = read_durations(wav, progress) if with_durations else None
    data = DataDir(wav=wav, utt2spk=utt2spk, utt2dur=durations)
    return Corpus(data, _attributes(entries), num_skipped=skipped)


def _attributes(entries: dict[str, tuple[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """utt_id -> value per named field other than speaker and utt (`session` saved as `sess`)."""
    names = sorted({n for _, fields in entries.values() for n in fields} - {"speaker", "utt"})
    return {  # an optional group that did not match leaves the utterance out
        ("sess" if name == "session" else name): {
            u: f[name] for u, (_, f) in entries.items() if name in f
        }
        for name in names
    }


def prepare_dir(root: str | os.PathLike, out_dir: str | os.PathLike, **options: Any) -> Corpus:
    """`scan_tree(root, **options)` and write the result as a data dir in `out_dir`."""
    corpus = scan_tree(root, **options)
    corpus.save(out_dir)
    return corpus


def _regex_of(layout: str | None, pattern: str | None) -> re.Pattern[str]:
    if pattern is None:
        return layout_regex(layout or DEFAULT_LAYOUT)
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise DataDirError(f"pattern {pattern!r}: {error}") from None
    if "speaker" not in regex.groupindex:
        raise DataDirError(f"pattern {pattern!r} has no (?P<speaker>...) group")
    _check_names(set(regex.groupindex), f"pattern {pattern!r}")
    return regex


def _check_id(utt: str, where: str) -> None:
    if not utt or any(c.isspace() for c in utt):
        raise DataDirError(f"{where}: utterance id {utt!r} is empty or contains whitespace")


def _entries_from_paths(
    root: Path,
    files: Iterator[Path],
    regex: re.Pattern[str],
    how: str,
    whole_path: bool,
    skip_unmatched: bool,
) -> tuple[dict[str, tuple[str, dict[str, str]]], int]:
    """Entries and the number of files skipped as unmatched. Layouts match the whole relative
    path, patterns anywhere in it (anchor them at will)."""
    entries: dict[str, tuple[str, dict[str, str]]] = {}
    base = str(root.resolve())
    skipped = 0
    for path in files:
        relative = path.relative_to(root).with_suffix("").as_posix()
        found = regex.fullmatch(relative) if whole_path else regex.search(relative)
        if found is None or not found.group("speaker"):
            if skip_unmatched:
                skipped += 1
                continue
            raise DataDirError(f"{path}: {relative!r} does not match {how!r} (no speaker)")
        _check_id(relative, str(path))
        fields = {k: v for k, v in found.groupdict().items() if v is not None}
        _add(entries, relative, os.path.join(base, path.relative_to(root)), fields, str(path))
    if skipped:
        logger.info("skipped %d files that do not match %s", skipped, how)
    return entries, skipped


def _entries_from_list(
    root: Path, list_file: Path, extensions: Collection[str]
) -> dict[str, tuple[str, dict[str, str]]]:
    entries: dict[str, tuple[str, dict[str, str]]] = {}
    base = root.resolve()
    wanted = {f".{e.lower().lstrip('.')}" for e in extensions}
    try:
        lines = [line for _, line in utf8_lines(list_file)]
    except OSError as error:
        raise DataDirError(f"{list_file}: cannot read: {error.strerror or error}") from None
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{list_file}:{lineno}"
        if len(fields) != 2:
            raise DataDirError(f"{where}: expected 'path speaker', got {len(fields)} fields")
        name, speaker = fields
        path = Path(name) if os.path.isabs(name) else root / name
        if not path.is_file():
            raise DataDirError(f"{where}: {path} does not exist")
        if path.suffix.lower() not in wanted:
            raise DataDirError(f"{where}: {path} is not one of {_names(extensions)}")
        relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
        if relative.parts[0] == "..":
            raise DataDirError(f"{where}: {path} is not under {root}")
        utt = relative.with_suffix("").as_posix()
        _check_id(utt, where)
        _add(entries, utt, str(base / relative), {"speaker": speaker}, where)
    return entries


def _names(extensions: Collection[str]) -> str:
    return ", ".join(sorted({e.lower().lstrip(".") for e in extensions}))


def _add(
    entries: dict[str, tuple[str, dict[str, str]]],
    utt: str,
    path: str,
    fields: dict[str, str],
    where: str,
) -> None:
    if utt in entries:
        raise DataDirError(f"{where}: utterance id {utt} also comes from {entries[utt][0]}")
    entries[utt] = (path, fields)


def read_durations(wav: dict[str, str], progress: bool = False) -> dict[str, float] | None:
    """utt2dur from each file's header, or None when a file only ffmpeg decodes (m4a, ...): its
    duration would cost decoding the whole file.

    Raises:
        DataDirError: a file that cannot be read as audio, naming it.
    """
    from tqdm import tqdm

    from speakerverify.frontend.audio import SOUNDFILE_EXTENSIONS, AudioError, audio_info

    if any(os.path.splitext(p)[1].lower() not in SOUNDFILE_EXTENSIONS for p in wav.values()):
        logger.info("files that only ffmpeg decodes (m4a, ...): no utt2dur (convert to wav first)")
        return None
    durations = {}
    for utt, path in tqdm(wav.items(), desc="durations", unit="file", disable=not progress):
        try:
            durations[utt] = audio_info(path).duration_seconds
        except AudioError as error:
            raise DataDirError(str(error)) from None
    return durations
