"""What the speaker commands return: enroll, verify, identify and adapt results and their JSON
(the `--json` output of the CLI, version 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from speakerverify.backend.speaker_model import Utterance
from speakerverify.speakers.decision import DecisionRule
from speakerverify.speakers.records import DomainMean


def _centring_json(domain: DomainMean | None) -> dict | None:
    if domain is None:
        return None
    return {
        "num_embeddings": domain.num_embeddings,
        "source": domain.source,
        "updated": domain.updated,
        "whitened": domain.whitened,
    }


def _score_kind(domain: DomainMean | None) -> str:
    if domain is None:
        return "cosine"
    return "whitened_cosine" if domain.whitened else "centred_cosine"


def _decision_json(
    command: str,
    fields: dict,
    domain: DomainMean | None,
    model_fingerprint: str,
    warnings: list[str],
) -> dict:
    """The JSON of a verify/identify result: its own `fields` between the shared head and tail."""
    return {
        "command": command,
        "version": 1,
        **fields,
        "centring": _centring_json(domain),
        "model_fingerprint": model_fingerprint,
        "warnings": warnings,
    }


@dataclass
class EnrollResult:
    """What `enroll_speaker` stored."""

    store: str
    speaker: dict
    utterances: list[Utterance]
    replaced: bool
    model_fingerprint: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "command": "enroll",
            "version": 1,
            "store": self.store,
            "model_fingerprint": self.model_fingerprint,
            "speaker": self.speaker,
            "added_utterances": len(self.utterances),
            "added_speech_seconds": round(sum(u.speech_seconds for u in self.utterances), 3),
            "files": [u.to_json() for u in self.utterances],
            "replaced": self.replaced,
            "warnings": self.warnings,
        }


@dataclass
class VerifyResult:
    """A verification decision and everything that went into it."""

    mode: str  # "store" or "pair"
    enroll: str  # speaker name or first file
    test: str
    score: float
    llr: float | None
    accepted: bool
    rule: DecisionRule
    centring: DomainMean | None
    model_fingerprint: str
    warnings: list[str] = field(default_factory=list)
    normalised: float | None = None  # the S-normalised score under the adapted rule

    @property
    def decision(self) -> str:
        """Either "accept" or "reject"."""
        return "accept" if self.accepted else "reject"

    def to_json(self) -> dict:
        return _decision_json(
            "verify",
            {
                "mode": self.mode,
                "enroll": self.enroll,
                "test": self.test,
                "score": self.score,
                "score_kind": _score_kind(self.centring),
                "normalised_score": self.normalised,
                "llr": self.llr,
                "threshold": self.rule.to_json(),
                "decision": self.decision,
                "accepted": self.accepted,
            },
            self.centring,
            self.model_fingerprint,
            self.warnings,
        )


@dataclass
class IdentifyResult:
    """The ranked speakers for one test file; `identified` is None for "unknown"."""

    test: str
    identified: str | None
    candidates: list[dict]
    num_enrolled: int
    rule: DecisionRule
    centring: DomainMean | None
    model_fingerprint: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return _decision_json(
            "identify",
            {
                "test": self.test,
                "identified": self.identified,
                "decision": "accept" if self.identified is not None else "unknown",
                "candidates": self.candidates,
                "num_enrolled": self.num_enrolled,
                "score_kind": _score_kind(self.centring),
                "threshold": self.rule.to_json(),
            },
            self.centring,
            self.model_fingerprint,
            self.warnings,
        )


@dataclass
class AdaptResult:
    """The domain mean `adapt` saved."""

    store: str
    source: str
    num_embeddings: int
    mean_norm: float
    model_fingerprint: str
    warnings: list[str] = field(default_factory=list)
    rule: dict | None = None  # the adapted decision rule's JSON

    def to_json(self) -> dict:
        return {
            "command": "adapt",
            "version": 1,
            "store": self.store,
            "source": self.source,
            "num_embeddings": self.num_embeddings,
            "mean_norm": round(self.mean_norm, 6),
            "model_fingerprint": self.model_fingerprint,
            "rule": self.rule,
            "warnings": self.warnings,
        }
