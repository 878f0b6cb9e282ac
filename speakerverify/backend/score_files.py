"""Score files: `enroll test score` lines in trial order, written atomically, read back with
line-numbered errors, and matched to a trial list's labels.

numpy only; `speakerverify.data` (torch) is imported only when a trial list is read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import utf8_lines, write_atomic

if TYPE_CHECKING:
    from speakerverify.data import Trials

__all__ = ["ScoresError", "read_scored_trials", "read_scores", "trial_labels", "write_scores"]


class ScoresError(SpeakerVerifyError, ValueError):
    """A score file is malformed or does not match a trial list; the message names the file."""


def write_scores(
    path: str | os.PathLike, enroll: Sequence[str], test: Sequence[str], scores: np.ndarray
) -> None:
    """Write `enroll test score` lines in trial order (9 significant digits), atomically."""
    scores = np.asarray(scores)
    if not len(enroll) == len(test) == scores.shape[0]:
        raise ValueError("enroll, test and scores differ in length")
    text = "".join(
        f"{e} {t} {s:.9g}\n" for e, t, s in zip(enroll, test, scores.tolist(), strict=True)
    )
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as error:
        raise ScoresError(f"{path}: cannot write ({error.strerror or error})") from None


def read_scores(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Read an `enroll test score` file -> (enroll, test, scores float64 `(N,)`).

    A trial may be scored on two lines only with the same score (a published trial list that
    repeats a line is scored line by line); two different scores would leave the choice to
    whichever line was read last.

    Raises:
        ScoresError: missing file, a malformed line, or a trial scored twice differently (with
            the line numbers).
    """
    path = Path(path)
    if not path.is_file():
        raise ScoresError(f"{path}: score file not found")
    enroll: list[str] = []
    test: list[str] = []
    values: list[float] = []
    seen: dict[tuple[str, str], tuple[int, float]] = {}  # pair -> (line, score) where first
    try:
        for number, line in utf8_lines(path):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ScoresError(f"{path}:{number}: expected 'enroll test score', got {line!r}")
            try:
                value = float(fields[2])
            except ValueError:
                raise ScoresError(f"{path}:{number}: score {fields[2]!r} is not a number") from None
            if math.isnan(value):
                raise ScoresError(f"{path}:{number}: score is NaN")
            first, before = seen.setdefault((fields[0], fields[1]), (number, value))
            if before != value:
                raise ScoresError(
                    f"{path}:{number}: trial '{fields[0]} {fields[1]}' is scored {fields[2]} "
                    f"here but {before!r} on line {first}"
                )
            enroll.append(fields[0])
            test.append(fields[1])
            values.append(value)
    except OSError as error:
        raise ScoresError(f"{path}: {error.strerror or error}") from None
    if not values:
        raise ScoresError(f"{path}: no scores")
    return enroll, test, np.asarray(values, dtype=np.float64)


def trial_labels(
    trials: Trials, enroll: Sequence[str], test: Sequence[str], scores: np.ndarray, path: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Scores `(N,)` in trial order and labels `(N,)` for a score file read by `read_scores`.

    The fast case is a score file in trial order; otherwise trials are matched by (enroll, test)
    (a pair scored twice has the same score both times: `read_scores` refuses two).

    Raises:
        ScoresError: a trial has no score (count and first example).
    """
    if list(enroll) == list(trials.enroll) and list(test) == list(trials.test):
        return np.asarray(scores), np.asarray(trials.labels)
    pairs = zip(enroll, test, strict=True)
    table = dict(zip(pairs, np.asarray(scores).tolist(), strict=True))
    aligned = np.empty(len(trials.enroll), np.float64)
    missing = 0
    first = None
    for i, pair in enumerate(zip(trials.enroll, trials.test, strict=True)):
        value = table.get(pair)
        if value is None:
            missing += 1
            first = first or pair
            continue
        aligned[i] = value
    if missing:
        raise ScoresError(
            f"{path or 'scores'}: {missing} trial(s) have no score, e.g. '{first[0]} {first[1]}'"
        )
    return aligned, np.asarray(trials.labels)


def read_scored_trials(
    trials_path: str | os.PathLike, scores_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Scores `(N,)` in trial order and labels `(N,)` of a trial list and its score file.

    Raises:
        TrialsError, ScoresError: either file is missing or malformed, or a trial has no score.
    """
    from speakerverify.data import read_trials

    trials = read_trials(trials_path)
    enroll, test, values = read_scores(scores_path)
    return trial_labels(trials, enroll, test, values, path=str(scores_path))
