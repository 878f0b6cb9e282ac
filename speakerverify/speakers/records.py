"""What the enrollment store holds, without the store: a speaker's record, the domain mean saved
by `adapt`, the rule for speaker names, and the timestamps they carry.

Plain dataclasses and functions (no SQLite), so decisions and results can use them without
opening a store (`speakerverify.speakers.store`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

MAX_NAME_CHARS = 128

__all__ = [
    "MAX_NAME_CHARS",
    "CohortFold",
    "DomainMean",
    "SpeakerRecord",
    "now_iso",
    "validate_name",
]


@dataclass(frozen=True)
class SpeakerRecord:
    """One enrolled speaker.

    Attributes:
        name: The speaker's name (NFC-normalised Unicode).
        embedding: (D,) float32, L2-normalised mean of the enrollment utterance embeddings.
        num_utterances: Number of enrollment utterances averaged into `embedding`.
        speech_seconds: Total voiced seconds over those utterances.
        created: ISO 8601 UTC time of the first enrollment.
        updated: ISO 8601 UTC time of the last enrollment.
    """

    name: str
    embedding: np.ndarray
    num_utterances: int
    speech_seconds: float
    created: str
    updated: str

    def summary(self) -> dict:
        """JSON-able fields without the embedding."""
        return {
            "name": self.name,
            "num_utterances": self.num_utterances,
            "speech_seconds": round(self.speech_seconds, 3),
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True)
class CohortFold:
    """One half of the adapted rule's scoring: a cohort, and the whitening scores go through.

    Attributes:
        cohort: (C, D) float32 in-domain embeddings as this fold scores them: centred on the
            domain mean, whitened when the fold whitens, and L2-normalised.
        whitening: (R, D) float32 orthonormal principal directions of the other adaptation
            files (centred on the domain mean), or None: centring only.
        whitening_scale: (R,) float32 share of each direction's component taken away (0..1).
        shrinkage: The Ledoit-Wolf shrinkage the whitening was estimated with.
        whitening_files: How many adaptation files estimated the whitening (none of them is
            in this fold's cohort).
    """

    cohort: np.ndarray
    whitening: np.ndarray | None = None
    whitening_scale: np.ndarray | None = None
    shrinkage: float | None = None
    whitening_files: int = 0


@dataclass(frozen=True)
class DomainMean:
    """What `adapt` saved from unlabelled in-domain audio: the mean embedding and, from 20 files
    on, the adapted decision rule (`speakerverify.speakers.domain`).

    Attributes:
        mean: (D,) float32 mean of L2-normalised embeddings.
        num_embeddings: How many embeddings were averaged.
        source: Where they came from (a directory path).
        updated: ISO 8601 UTC time it was saved.
        folds: The rule's scoring folds: one centred cohort of every file, or two whitened
            halves, each whitened by the other's covariance; empty for a mean saved without a
            rule.
        top_k: AS-Norm cohort size per side.
        threshold: Accept when the S-normalised score (averaged over the folds) reaches this.
        false_accept: The nominal false-accept rate the threshold stands for.
        pairs_above: Share of adaptation-file pairs at or above the threshold (a check).
    """

    mean: np.ndarray
    num_embeddings: int
    source: str
    updated: str
    folds: tuple[CohortFold, ...] = ()
    top_k: int = 0
    threshold: float | None = None
    false_accept: float | None = None
    pairs_above: float | None = None

    @property
    def has_rule(self) -> bool:
        """Whether the adapted decision rule is there (a cohort and its threshold)."""
        return bool(self.folds) and self.threshold is not None

    @property
    def cohort_size(self) -> int:
        """Cohort files over all folds."""
        return sum(len(fold.cohort) for fold in self.folds)

    @property
    def whitened(self) -> bool:
        """Whether scores are whitened (the folds then whiten each other's halves)."""
        return any(fold.whitening is not None for fold in self.folds)


def validate_name(name: str, *, existing: bool = False) -> str:
    """Return the NFC form of a speaker name, or raise ValueError saying what is wrong.

    Names are arbitrary Unicode of 1..128 characters without control characters or leading or
    trailing whitespace; NFC makes composed and decomposed spellings the same speaker. Names
    must also print as what they are: invisible format characters (Unicode category Cf: the
    bidi embeddings and overrides U+202A-202E and isolates U+2066-2069, zero-width spaces and
    joiners, the BOM, ...) and line/paragraph separators are refused, as "ann\u202e" or
    "a\u200bnn" would show as another speaker's name; a joiner inside an emoji ZWJ sequence is
    the one exception.

    Args:
        existing: the name is looked up, not added: format characters are let through, so a
            speaker enrolled before this rule can still be verified and removed.

    >>> validate_name("Zoë O'Brien; DROP TABLE speakers")
    "Zoë O'Brien; DROP TABLE speakers"
    """
    if not isinstance(name, str):
        raise ValueError(f"speaker name must be a string, got {type(name).__name__}")
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise ValueError("speaker name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"speaker name has {len(name)} characters (at most {MAX_NAME_CHARS})")
    if name != name.strip():
        raise ValueError(f"speaker name {name!r} has leading or trailing whitespace")
    for index, char in enumerate(name):
        category = unicodedata.category(char)
        if category in ("Cc", "Cs"):
            raise ValueError(f"speaker name {name!r} contains control character U+{ord(char):04X}")
        if category in ("Cf", "Zl", "Zp") and not existing and not _joins_emoji(name, index):
            label = unicodedata.name(char, "a format character").lower()
            raise ValueError(
                f"speaker name {name!r} contains U+{ord(char):04X} ({label}), which does not "
                "print as itself (it hides or reorders text); use visible characters only"
            )
    return name


def _joins_emoji(name: str, index: int) -> bool:
    """Whether `name[index]` is a zero-width joiner inside an emoji ZWJ sequence (a symbol,
    maybe with a variation selector or skin tone, then ZWJ, then a symbol: "🙂\u200d↔️"), which
    prints as one emoji rather than hiding anything."""
    if name[index] != "\u200d" or index + 1 >= len(name):
        return False
    before = index - 1
    while before >= 0 and (name[before] == "\ufe0f" or unicodedata.category(name[before]) == "Sk"):
        before -= 1
    symbols = ("So", "Sm")
    return (
        before >= 0
        and unicodedata.category(name[before]) in symbols
        and unicodedata.category(name[index + 1]) in symbols
    )


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
