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

__all__ = ["MAX_NAME_CHARS", "DomainMean", "SpeakerRecord", "now_iso", "validate_name"]


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
class DomainMean:
    """What `adapt` saved from unlabelled in-domain audio: the mean embedding and, from 20 files
    on, the adapted decision rule (`speakerverify.speakers.domain`).

    Attributes:
        mean: (D,) float32 mean of L2-normalised embeddings.
        num_embeddings: How many embeddings were averaged.
        source: Where they came from (a directory path).
        updated: ISO 8601 UTC time it was saved.
        cohort: (C, D) float32 centred, L2-normalised in-domain embeddings (the S-Norm cohort),
            or None for a mean saved without a rule.
        top_k: AS-Norm cohort size per side.
        threshold: Accept when the S-normalised score reaches this.
        false_accept: The nominal false-accept rate the threshold stands for.
        pairs_above: Share of adaptation-file pairs at or above the threshold (a check).
    """

    mean: np.ndarray
    num_embeddings: int
    source: str
    updated: str
    cohort: np.ndarray | None = None
    top_k: int = 0
    threshold: float | None = None
    false_accept: float | None = None
    pairs_above: float | None = None

    @property
    def has_rule(self) -> bool:
        """Whether the adapted decision rule is there (a cohort and its threshold)."""
        return self.cohort is not None and self.threshold is not None


def validate_name(name: str) -> str:
    """Return the NFC form of a speaker name, or raise ValueError saying what is wrong.

    Names are arbitrary Unicode of 1..128 characters without control characters or leading or
    trailing whitespace; NFC makes composed and decomposed spellings the same speaker.

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
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"speaker name {name!r} contains control character U+{ord(char):04X}")
    return name


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
