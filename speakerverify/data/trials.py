"""Verification trial lists: VoxCeleb (`1 enroll.wav test.wav`) and Kaldi (`enroll test target`).

The format is detected from the first line. The published VoxCeleb1 lists are recognised by file
name and their trial counts checked, so a truncated download cannot pass as Vox1-O/E/H. A trial
is listed once: a repeated pair would count twice in EER and minDCF (or, with another label,
contradict itself), so it is refused with both line numbers; only the published lists may
repeat a line, as their published results count every line as it stands.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerverify.data.datadir import DataDir
from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import utf8_lines, write_atomic

logger = logging.getLogger(__name__)

FORMATS = ("voxceleb", "kaldi")


@dataclass(frozen=True)
class KnownList:
    name: str
    num_trials: int
    cleaned: bool


# file name -> the published list (counts from the VoxCeleb meta pages)
KNOWN_LISTS: dict[str, KnownList] = {
    "veri_test2.txt": KnownList("vox1_o", 37611, True),
    "list_test_all2.txt": KnownList("vox1_e", 579818, True),
    "list_test_hard2.txt": KnownList("vox1_h", 550894, True),
    "veri_test.txt": KnownList("vox1_o_uncleaned", 37720, False),
    "list_test_all.txt": KnownList("vox1_e_uncleaned", 581480, False),
    "list_test_hard.txt": KnownList("vox1_h_uncleaned", 552536, False),
}

_KALDI_LABELS = {"target": 1, "nontarget": 0}
_STRIP_EXTENSIONS = (".wav", ".m4a", ".flac")


class TrialsError(SpeakerVerifyError, ValueError):
    """A trial list is malformed or does not match the data; the message names file and line."""


@dataclass
class Trials:
    """A list of (enroll, test, label) trials.

    Attributes:
        enroll: enrollment utt ids (no extension), one per trial.
        test: test utt ids (no extension), one per trial.
        labels: (N,) int8, 1 for target (same speaker), 0 for non-target.
        name: "vox1_o", "vox1_e", "vox1_h" for the published lists, else the file stem.
    """

    enroll: list[str]
    test: list[str]
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.enroll)

    @property
    def utt_ids(self) -> list[str]:
        """Every utt id the trials name, each once, in first-use order."""
        pairs = zip(self.enroll, self.test, strict=True)
        return list(dict.fromkeys(u for pair in pairs for u in pair))


def read_trials(
    path: str | os.PathLike, data_dir: DataDir | None = None, *, check_known: bool = True
) -> Trials:
    """Read a VoxCeleb or Kaldi trial list (detected from the first non-empty line).

    Args:
        path: the trial list.
        data_dir: when given, every utt id in the trials must be in it.
        check_known: for the published VoxCeleb1 lists (by file name), check the trial count.

    Raises:
        TrialsError: malformed line (with line number), mixed formats, a count that differs from
            the published list, or utterances missing from `data_dir` (how many, first few).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("1 id10270/a/00001.wav id10270/b/00002.wav\\n0 id10270/a/00001.wav id10300/c/00001.wav\\n")
    >>> t = read_trials(p)
    >>> t.enroll[0], t.test[1], t.labels.tolist(), t.name
    ('id10270/a/00001', 'id10300/c/00001', [1, 0], 't')
    """  # noqa: E501
    path = Path(path)
    known = KNOWN_LISTS.get(path.name)
    enroll, test, labels = _read_trial_lines(path, allow_repeats=known is not None)
    if known and check_known:
        _check_published(path, known, len(labels))
    name = known.name if known else path.stem
    trials = Trials(enroll=enroll, test=test, labels=np.asarray(labels, dtype=np.int8), name=name)
    if data_dir is not None:
        missing = [u for u in trials.utt_ids if u not in data_dir.wav]
        if missing:
            raise TrialsError(
                f"{path}: {len(missing)} utterances are not in the data dir "
                f"(first: {', '.join(missing[:5])})"
            )
    return trials


def _read_trial_lines(
    path: Path, *, allow_repeats: bool = False
) -> tuple[list[str], list[str], list[int]]:
    """Enroll ids, test ids and 0/1 labels in file order; every line in the first line's format,
    every (enroll, test) pair once (`allow_repeats`: the same line may repeat)."""
    enroll: list[str] = []
    test: list[str] = []
    labels: list[int] = []
    seen: dict[tuple[str, str], tuple[int, int]] = {}  # pair -> (line, label) where first listed
    fmt = None
    try:
        lines = utf8_lines(path)
        for lineno, line in lines:
            fields = line.split()
            if not fields:
                continue
            line_fmt = _line_format(f"{path}:{lineno}", line, fields)
            if fmt is None:
                fmt = line_fmt
            elif line_fmt != fmt:
                raise TrialsError(f"{path}:{lineno}: {line_fmt} line in a {fmt} trial list")
            if fmt == "voxceleb":
                labels.append(int(fields[0]))
                enroll.append(_strip_extension(fields[1]))
                test.append(_strip_extension(fields[2]))
            else:
                enroll.append(fields[0])
                test.append(fields[1])
                labels.append(_KALDI_LABELS[fields[2]])
            pair = (enroll[-1], test[-1])
            before = seen.setdefault(pair, (lineno, labels[-1]))
            if before[0] != lineno and not (allow_repeats and before[1] == labels[-1]):
                _refuse_repeat(f"{path}:{lineno}", pair, before, labels[-1])
    except OSError as error:
        raise TrialsError(f"{path}: {error.strerror or error}") from None
    if fmt is None:
        raise TrialsError(f"{path}: no trials")
    return enroll, test, labels


def _refuse_repeat(where: str, pair: tuple[str, str], before: tuple[int, int], label: int) -> None:
    """Refuse a trial listed a second time (`before`: the line and label of the first)."""
    trial = f"trial '{pair[0]} {pair[1]}'"
    if before[1] != label:
        kinds = ("nontarget", "target")
        raise TrialsError(
            f"{where}: {trial} is a {kinds[label]} trial here but a {kinds[before[1]]} trial on "
            f"line {before[0]}"
        )
    raise TrialsError(
        f"{where}: {trial} is already on line {before[0]}: each trial is listed once (it "
        "would count twice)"
    )


def _line_format(where: str, line: str, fields: list[str]) -> str:
    """The format of a trial line ("voxceleb" or "kaldi"); anything else is a TrialsError."""
    if len(fields) != 3:
        raise TrialsError(f"{where}: expected 3 fields, got {len(fields)}: {line.strip()!r}")
    line_fmt = _detect(fields)
    if line_fmt is None:
        raise TrialsError(
            f"{where}: neither VoxCeleb '<0|1> <enroll> <test>' nor Kaldi "
            f"'<enroll> <test> <target|nontarget>': {line.strip()!r}"
        )
    return line_fmt


def _check_published(path: Path, known: KnownList, num_trials: int) -> None:
    """Refuse a copy of a published list with another trial count; warn about an uncleaned one."""
    if num_trials != known.num_trials:
        raise TrialsError(
            f"{path}: {num_trials} trials, but the published {path.name} has "
            f"{known.num_trials} (truncated or edited copy?)"
        )
    if not known.cleaned:
        logger.warning(
            "%s is the uncleaned list with errors in its labels; use %s instead",
            path,
            path.name.replace(".txt", "2.txt"),
        )


def write_trials(path: str | os.PathLike, trials: Trials, format: str = "voxceleb") -> None:
    """Write `trials` atomically as VoxCeleb (`1 a.wav b.wav`) or Kaldi (`a b target`) lines."""
    if format not in FORMATS:
        raise ValueError(f"unknown trial format {format!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = zip(trials.enroll, trials.test, trials.labels.tolist(), strict=True)
    if format == "voxceleb":
        lines = (f"{int(lab)} {e}.wav {t}.wav\n" for e, t, lab in rows)
    else:
        lines = (f"{e} {t} {'target' if lab else 'nontarget'}\n" for e, t, lab in rows)
    write_atomic(path, "".join(lines))


def _detect(fields: list[str]) -> str | None:
    if fields[0] in ("0", "1"):
        return "voxceleb"
    if fields[2] in _KALDI_LABELS:
        return "kaldi"
    return None


def _strip_extension(name: str) -> str:
    for ext in _STRIP_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def read_enroll_map(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read an enroll map: `model utt1 utt2 ...` lines (spk2utt style), as `prepare trials
    --enroll-utts N` writes; a trailing audio extension on an utt id is dropped.

    Raises:
        TrialsError: a line without utterances, or a model listed twice (with line numbers).
    """
    path = Path(path)
    models: dict[str, list[str]] = {}
    for lineno, line in utf8_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise TrialsError(f"{path}:{lineno}: expected 'model utt...', got {line.strip()!r}")
        if fields[0] in models:
            raise TrialsError(f"{path}:{lineno}: model {fields[0]} listed twice")
        models[fields[0]] = [_strip_extension(u) for u in fields[1:]]
    if not models:
        raise TrialsError(f"{path}: no enrollment models")
    return models
