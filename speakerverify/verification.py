"""Enroll, verify, identify and adapt: the library behind the speaker commands of the CLI.

Decisions come from a calibration at a stated operating point or from an explicit threshold on
the raw cosine score, never from a constant in the code; every result says which.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speakerverify.store import (
    DomainMean,
    SpeakerStore,
    StoreError,
    l2_normalize,
    validate_name,
)

logger = logging.getLogger(__name__)

RECOMMENDED_SAMPLE_RATE = 16000
# Shorter speech makes a meaningless embedding (and may be shorter than the encoder's context).
MIN_FILE_SPEECH_SECONDS = 0.5


class VerificationError(Exception):
    """Input the commands cannot use (too little speech, no threshold, ...); one line."""


class WaveformEmbedder(Protocol):
    def embed_waveform(self, wave: Any) -> np.ndarray: ...


@dataclass
class SpeakerModel:
    """What the commands need from a checkpoint.

    Attributes:
        embedder: Anything with `embed_waveform(wave (S,)) -> (D,)` (normally `embed.Embedder`).
        fingerprint: The checkpoint's model fingerprint.
        sample_rate: Rate the front-end expects, Hz.
        path: The checkpoint path (for messages and the default calibration file).
    """

    embedder: WaveformEmbedder
    fingerprint: str
    sample_rate: int = RECOMMENDED_SAMPLE_RATE
    path: str = ""


def load_speaker_model(path: str | os.PathLike, device: str = "cpu") -> SpeakerModel:
    """Load a checkpoint for inference (`checkpoint.CheckpointError` when it is not usable)."""
    from speakerverify.checkpoint import CheckpointError, load_model

    if Path(path).is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    loaded = load_model(path, device=device)
    from speakerverify.embed import Embedder

    embedder = Embedder(
        loaded.frontend, loaded.encoder, fingerprint=loaded.fingerprint, device=device
    )
    return SpeakerModel(embedder, loaded.fingerprint, loaded.sample_rate, str(path))


# -- decisions -------------------------------------------------------------------------------


def bayes_llr_threshold(p_target: float) -> float:
    """LLR above which accepting minimises the expected cost with equal costs: −logit(p_target).

    >>> bayes_llr_threshold(0.5), round(bayes_llr_threshold(0.01), 3)
    (0.0, 4.595)
    """
    return math.log((1.0 - p_target) / p_target)


@dataclass(frozen=True)
class DecisionRule:
    """How a score becomes accept/reject, and where that came from.

    Attributes:
        source: "calibration" (LLR against the Bayes threshold at `p_target`) or "threshold"
            (the user's `--threshold` on the raw cosine score).
        threshold: The threshold on `scale`.
        scale: "llr" or "score".
        p_target: Prior of a target trial for the calibration rule (else None).
        calibration: The loaded `scoring.Calibration` (also reports LLRs under "threshold").
        calibration_path: Where it was loaded from.
        score_threshold: The raw score at which the decision flips.
    """

    source: str
    threshold: float
    scale: str
    p_target: float | None = None
    calibration: Any = None
    calibration_path: str | None = None
    score_threshold: float | None = None

    def llr(self, scores: np.ndarray) -> np.ndarray | None:
        """Calibrated log-likelihood ratios `(N,)`, or None without a calibration."""
        if self.calibration is None:
            return None
        return np.asarray(self.calibration.apply(np.asarray(scores, dtype=np.float64)), float)

    def accept(self, scores: np.ndarray) -> np.ndarray:
        """Boolean decisions `(N,)` for raw scores `(N,)`."""
        scores = np.asarray(scores, dtype=np.float64)
        values = self.llr(scores) if self.scale == "llr" else scores
        return np.asarray(values >= self.threshold)

    def describe(self) -> str:
        """One line saying where the threshold came from."""
        if self.source == "calibration":
            text = (
                f"calibration {self.calibration_path} at p_target={self.p_target:g}: accept when "
                f"LLR >= {self.threshold:.3f} (Bayes threshold, equal miss/false-alarm costs)"
            )
            if self.score_threshold is not None:
                text += f", i.e. score >= {self.score_threshold:.4f}"
            return text
        return f"--threshold: accept when cosine score >= {self.threshold:.4f} (no calibration)"

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "value": self.threshold,
            "scale": self.scale,
            "p_target": self.p_target,
            "calibration": self.calibration_path,
            "score_threshold": self.score_threshold,
            "description": self.describe(),
        }


def default_calibration_path(model_path: str | os.PathLike) -> Path:
    """`<dir>/<checkpoint stem>.calibration.json`, where `calibrate` puts it next to a model."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.calibration.json")


def resolve_decision_rule(
    model: SpeakerModel,
    *,
    threshold: float | None = None,
    calibration_path: str | os.PathLike | None = None,
    p_target: float = 0.5,
) -> DecisionRule:
    """Pick the decision rule: explicit `threshold` first, else the model's calibration.

    The calibration is `calibration_path` or, when None, the default file next to the checkpoint
    (if present); it must have been fitted for this model's fingerprint.

    Raises:
        VerificationError: bad `p_target`, unreadable or foreign calibration, or neither a
            calibration nor a threshold.
    """
    if not 0.0 < p_target < 1.0:
        raise VerificationError(f"--p-target must be in (0, 1), got {p_target}")
    if threshold is not None and not math.isfinite(threshold):
        raise VerificationError(f"--threshold must be a finite number, got {threshold}")
    explicit = calibration_path is not None
    path = Path(calibration_path) if explicit else default_calibration_path(model.path)
    calibration = None
    if explicit or path.is_file():
        calibration = _load_calibration(path, model.fingerprint)
    if threshold is not None:
        return DecisionRule(
            "threshold",
            float(threshold),
            "score",
            calibration=calibration,
            calibration_path=None if calibration is None else str(path),
            score_threshold=float(threshold),
        )
    if calibration is None:
        raise VerificationError(
            f"{model.path}: no decision threshold: the model has no calibration ({path} not "
            "found); pass --calibration FILE (from `speakerverify calibrate`) or --threshold SCORE"
        )
    llr_threshold = bayes_llr_threshold(p_target)
    try:
        score_threshold = float(calibration.score_threshold(p_target))
    except (ValueError, ZeroDivisionError, AttributeError):
        score_threshold = None
    return DecisionRule(
        "calibration",
        llr_threshold,
        "llr",
        p_target=p_target,
        calibration=calibration,
        calibration_path=str(path),
        score_threshold=score_threshold,
    )


def _load_calibration(path: Path, fingerprint: str) -> Any:
    if path.is_dir():
        raise VerificationError(f"{path}: is a directory, not a calibration file")
    if not path.is_file():
        raise VerificationError(f"{path}: calibration file not found")
    from speakerverify.scoring import Calibration

    try:
        calibration = Calibration.load(path)
    except Exception as error:  # any parse failure: a bad file
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        if str(path) in cause:
            raise VerificationError(cause) from None
        raise VerificationError(f"{path}: not a usable calibration ({cause})") from None
    bound = getattr(calibration, "model_fingerprint", "") or ""
    if bound and bound != fingerprint:
        raise VerificationError(
            f"{path}: calibration was fitted for model {bound}, but the model is {fingerprint}"
        )
    norm = getattr(calibration, "norm", "none") or "none"
    if norm != "none":
        raise VerificationError(
            f"{path}: calibration was fitted on {norm}-normalised scores, but verify scores plain "
            "cosine; calibrate without score normalisation or pass --threshold"
        )
    return calibration


def _centring_caveat(rule: DecisionRule, domain: DomainMean | None) -> list[str]:
    if domain is None or rule.calibration is None:
        return []
    return [
        f"{rule.calibration_path}: the calibration was not fitted on scores centred on this "
        "domain mean, so its LLRs are approximate; re-calibrate on in-domain trials if you can"
    ]


# -- scoring ---------------------------------------------------------------------------------


def cosine_scores(enroll: np.ndarray, test: np.ndarray, mean: np.ndarray | None = None):
    """Cosine of each enrollment embedding `(N, D)` with one test embedding `(D,)` -> `(N,)`.

    With `mean` `(D,)`, both sides are centred first (cosine after subtracting the domain mean).

    >>> cosine_scores(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([3.0, 3.0])).round(4)
    array([0.7071, 0.7071])
    """
    enroll = np.atleast_2d(np.asarray(enroll, dtype=np.float64))
    test = np.asarray(test, dtype=np.float64)
    if mean is not None:
        enroll = enroll - mean
        test = test - mean
    return l2_normalize(enroll) @ l2_normalize(test)


# -- audio -> embedding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One file's embedding and how much speech it held.

    Attributes:
        path: The file.
        embedding: (D,) float32, L2-normalised.
        speech_seconds: Voiced seconds found by the energy VAD.
        sample_rate: The file's own rate in Hz (None when not known without decoding).
        warnings: Things the user should know (e.g. 8 kHz input).
    """

    path: str
    embedding: np.ndarray
    speech_seconds: float
    sample_rate: int | None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "speech_seconds": round(self.speech_seconds, 3),
            "sample_rate": self.sample_rate,
        }


def embed_utterance(
    model: SpeakerModel,
    path: str | os.PathLike,
    *,
    min_speech_seconds: float = MIN_FILE_SPEECH_SECONDS,
) -> Utterance:
    """Load `path`, keep its voiced frames and embed them.

    Raises:
        audio.AudioError: missing, empty, directory, corrupt or non-audio file.
        VerificationError: no speech, or less than `min_speech_seconds` of it.
    """
    from speakerverify.audio import (
        SOUNDFILE_EXTENSIONS,
        audio_info,
        load_audio,
        speech_mask,
        trim_silence,
    )

    warnings: list[str] = []
    file_rate = None
    if Path(path).suffix.lower() in SOUNDFILE_EXTENSIONS:
        file_rate = audio_info(path).sample_rate  # header only; ffmpeg formats would decode
        if file_rate < RECOMMENDED_SAMPLE_RATE:
            warnings.append(
                f"{path}: {file_rate} Hz audio is upsampled to {model.sample_rate} Hz; the model "
                "was trained on wideband speech, so accuracy drops"
            )
    wave = load_audio(path, model.sample_rate)
    if not bool(speech_mask(wave, model.sample_rate).any()):
        raise VerificationError(f"{path}: no speech found (silence or noise only)")
    speech = trim_silence(wave, model.sample_rate)
    speech_seconds = speech.shape[0] / model.sample_rate
    min_speech_seconds = max(min_speech_seconds, MIN_FILE_SPEECH_SECONDS)
    if speech_seconds < min_speech_seconds:
        raise VerificationError(
            f"{path}: only {speech_seconds:.2f} s of speech, need at least "
            f"{min_speech_seconds:g} s (--min-speech)"
        )
    try:
        embedding = model.embedder.embed_waveform(speech)
    except (ValueError, RuntimeError) as error:  # EmbedError, or too short for the encoder
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VerificationError(f"{path}: cannot embed ({cause})") from None
    embedding = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(embedding)) or not np.any(embedding):
        raise VerificationError(f"{path}: the model produced an unusable (zero/NaN) embedding")
    logger.debug("%s: %.2f s of speech embedded", path, speech_seconds)
    return Utterance(
        str(path),
        l2_normalize(embedding).astype(np.float32),
        speech_seconds,
        file_rate,
        tuple(warnings),
    )


# -- results ---------------------------------------------------------------------------------


def _centring_json(domain: DomainMean | None) -> dict | None:
    if domain is None:
        return None
    return {
        "num_embeddings": domain.num_embeddings,
        "source": domain.source,
        "updated": domain.updated,
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

    def to_json(self) -> dict:
        return {
            "command": "verify",
            "version": 1,
            "mode": self.mode,
            "enroll": self.enroll,
            "test": self.test,
            "score": self.score,
            "score_kind": "centred_cosine" if self.centring else "cosine",
            "llr": self.llr,
            "threshold": self.rule.to_json(),
            "decision": "accept" if self.accepted else "reject",
            "accepted": self.accepted,
            "centring": _centring_json(self.centring),
            "model_fingerprint": self.model_fingerprint,
            "warnings": self.warnings,
        }


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
        return {
            "command": "identify",
            "version": 1,
            "test": self.test,
            "identified": self.identified,
            "decision": "accept" if self.identified is not None else "unknown",
            "candidates": self.candidates,
            "num_enrolled": self.num_enrolled,
            "score_kind": "centred_cosine" if self.centring else "cosine",
            "threshold": self.rule.to_json(),
            "centring": _centring_json(self.centring),
            "model_fingerprint": self.model_fingerprint,
            "warnings": self.warnings,
        }


@dataclass
class AdaptResult:
    """The domain mean `adapt` saved."""

    store: str
    source: str
    num_embeddings: int
    mean_norm: float
    model_fingerprint: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "command": "adapt",
            "version": 1,
            "store": self.store,
            "source": self.source,
            "num_embeddings": self.num_embeddings,
            "mean_norm": round(self.mean_norm, 6),
            "model_fingerprint": self.model_fingerprint,
            "warnings": self.warnings,
        }


# -- the operations --------------------------------------------------------------------------


def _check_store_early(store_path: str | os.PathLike, fingerprint: str, source: str) -> None:
    """Fail on a foreign, corrupt or unwritable store before the slow embedding work."""
    path = Path(store_path)
    if path.exists():
        with SpeakerStore(path) as store:
            store.check_model(fingerprint, source=source)
    elif not path.parent.is_dir():
        raise StoreError(f"{path}: directory {path.parent} does not exist")


def _open_existing(store_path: str | os.PathLike, model: SpeakerModel) -> SpeakerStore:
    store = SpeakerStore(store_path, create=False)
    try:
        store.check_model(model.fingerprint, source=f"checkpoint {model.path}")
    except StoreError:
        store.close()
        raise
    return store


def enroll_speaker(
    store_path: str | os.PathLike,
    model: SpeakerModel,
    name: str,
    audio_paths: Sequence[str | os.PathLike],
    *,
    min_speech_seconds: float = 3.0,
    replace: bool = False,
) -> EnrollResult:
    """Embed the voiced speech of `audio_paths` and add it to `name` in the store.

    Everything is checked and embedded before the store is opened for writing, and the write is
    one transaction, so any failure leaves the store as it was (a missing store stays missing).

    Raises:
        VerificationError, audio.AudioError, StoreError.
    """
    try:
        name = validate_name(name)
    except ValueError as error:
        raise VerificationError(str(error)) from None
    if not audio_paths:
        raise VerificationError("no audio files to enroll")
    _check_store_early(store_path, model.fingerprint, f"checkpoint {model.path}")
    utterances = [embed_utterance(model, path) for path in audio_paths]
    total = sum(u.speech_seconds for u in utterances)
    if total < min_speech_seconds:
        files = ", ".join(str(p) for p in audio_paths)
        raise VerificationError(
            f"{files}: only {total:.2f} s of speech in total, need at least "
            f"{min_speech_seconds:g} s (--min-speech)"
        )
    with SpeakerStore(store_path, create=True) as store:
        store.check_model(model.fingerprint, source=f"checkpoint {model.path}")
        record = store.add(
            name,
            np.stack([u.embedding for u in utterances]),
            total,
            fingerprint=model.fingerprint,
            replace=replace,
        )
    warnings = [w for u in utterances for w in u.warnings]
    return EnrollResult(
        str(store_path), record.summary(), utterances, replace, model.fingerprint, warnings
    )


def verify_against(
    store_path: str | os.PathLike,
    model: SpeakerModel,
    rule: DecisionRule,
    name: str,
    test_path: str | os.PathLike,
    *,
    min_speech_seconds: float = 1.0,
) -> VerifyResult:
    """Score `test_path` against the enrolled speaker `name` and decide with `rule`."""
    with _open_existing(store_path, model) as store:
        record = store.get(name)
        domain = store.domain_mean
    test = embed_utterance(model, test_path, min_speech_seconds=min_speech_seconds)
    return _verify(
        "store", record.name, record.embedding, test, rule, domain, model, list(test.warnings)
    )


def verify_pair(
    model: SpeakerModel,
    rule: DecisionRule,
    enroll_path: str | os.PathLike,
    test_path: str | os.PathLike,
    *,
    min_speech_seconds: float = 1.0,
    domain: DomainMean | None = None,
) -> VerifyResult:
    """Score two files against each other (no store) and decide with `rule`."""
    first = embed_utterance(model, enroll_path, min_speech_seconds=min_speech_seconds)
    second = embed_utterance(model, test_path, min_speech_seconds=min_speech_seconds)
    warnings = list(first.warnings + second.warnings)
    return _verify("pair", first.path, first.embedding, second, rule, domain, model, warnings)


def _verify(mode, enroll, enroll_embedding, test, rule, domain, model, warnings) -> VerifyResult:
    mean = None if domain is None else domain.mean
    score = float(cosine_scores(enroll_embedding, test.embedding, mean)[0])
    llr = rule.llr(np.array([score]))
    accepted = bool(rule.accept(np.array([score]))[0])
    llr_value = None if llr is None else float(llr[0])
    warnings = warnings + _centring_caveat(rule, domain)
    return VerifyResult(
        mode,
        enroll,
        test.path,
        score,
        llr_value,
        accepted,
        rule,
        domain,
        model.fingerprint,
        warnings,
    )


def identify(
    store_path: str | os.PathLike,
    model: SpeakerModel,
    rule: DecisionRule,
    test_path: str | os.PathLike,
    *,
    top_k: int = 5,
    min_speech_seconds: float = 1.0,
) -> IdentifyResult:
    """Rank the enrolled speakers for `test_path`; "unknown" (None) when the best is rejected."""
    if top_k < 1:
        raise VerificationError(f"--top must be at least 1, got {top_k}")
    with _open_existing(store_path, model) as store:
        names, matrix = store.matrix()
        domain = store.domain_mean
    if not names:
        raise VerificationError(f"{store_path}: no speakers enrolled")
    test = embed_utterance(model, test_path, min_speech_seconds=min_speech_seconds)
    return rank_speakers(names, matrix, test, rule, domain, model.fingerprint, top_k=top_k)


def rank_speakers(
    names: list[str],
    matrix: np.ndarray,
    test: Utterance,
    rule: DecisionRule,
    domain: DomainMean | None,
    fingerprint: str,
    *,
    top_k: int = 5,
) -> IdentifyResult:
    """Open-set identification of `test` against enrolled embeddings `(N, D)`."""
    scores = cosine_scores(matrix, test.embedding, None if domain is None else domain.mean)
    accepted = rule.accept(scores)
    llrs = rule.llr(scores)
    order = np.argsort(-scores, kind="stable")[:top_k]
    candidates = [
        {
            "rank": rank + 1,
            "name": names[i],
            "score": float(scores[i]),
            "llr": None if llrs is None else float(llrs[i]),
            "accepted": bool(accepted[i]),
        }
        for rank, i in enumerate(order)
    ]
    best = candidates[0]
    identified = best["name"] if best["accepted"] else None
    return IdentifyResult(
        test.path,
        identified,
        candidates,
        len(names),
        rule,
        domain,
        fingerprint,
        list(test.warnings) + _centring_caveat(rule, domain),
    )


AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".mp3",
        ".aiff",
        ".aif",
        ".au",
        ".caf",
        ".w64",
        ".m4a",
        ".aac",
        ".mp4",
        ".opus",
        ".webm",
        ".wma",
    }
)


def find_audio_files(directory: str | os.PathLike) -> list[Path]:
    """Audio files under `directory` (recursive, sorted), by extension."""
    directory = Path(directory)
    if not directory.exists():
        raise VerificationError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise VerificationError(f"{directory}: not a directory")
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )


def adapt(
    store_path: str | os.PathLike,
    *,
    model: SpeakerModel | None = None,
    audio_dir: str | os.PathLike | None = None,
    embeddings_dir: str | os.PathLike | None = None,
    min_speech_seconds: float = 1.0,
) -> AdaptResult:
    """Save the mean of in-domain embeddings in the store (for centred scoring).

    Give either `audio_dir` (embedded with `model`) or `embeddings_dir` (an `embed` output whose
    meta names the model fingerprint). Files with no speech are errors, like everywhere else.
    """
    if (audio_dir is None) == (embeddings_dir is None):
        raise VerificationError("give either an audio directory or --embeddings, not both")
    warnings: list[str] = []
    if audio_dir is not None:
        if model is None:
            raise VerificationError("adapt AUDIO_DIR needs a model (--model)")
        _check_store_early(store_path, model.fingerprint, f"checkpoint {model.path}")
        paths = find_audio_files(audio_dir)
        if not paths:
            raise VerificationError(f"{audio_dir}: no audio files found")
        utterances = []
        for path in paths:
            utterance = embed_utterance(model, path, min_speech_seconds=min_speech_seconds)
            utterances.append(utterance)
            warnings.extend(utterance.warnings)
        embeddings = np.stack([u.embedding for u in utterances]).astype(np.float64)
        fingerprint, source = model.fingerprint, str(audio_dir)
    else:
        embeddings, fingerprint = _read_embedding_store(embeddings_dir)
        if model is not None and model.fingerprint != fingerprint:
            raise VerificationError(
                f"{embeddings_dir}: embeddings were made by model {fingerprint}, but "
                f"checkpoint {model.path} is model {model.fingerprint}"
            )
        source = str(embeddings_dir)
    mean = l2_normalize(embeddings).mean(axis=0)
    if len(embeddings) < 20:
        warnings.append(
            f"{source}: the domain mean comes from only {len(embeddings)} embeddings; "
            "use a few hundred in-domain recordings for a stable estimate"
        )
    with SpeakerStore(store_path, create=True) as store:
        store.check_model(fingerprint, source=source)
        store.set_domain_mean(mean, len(embeddings), source, fingerprint=fingerprint)
    return AdaptResult(
        str(store_path),
        source,
        len(embeddings),
        float(np.linalg.norm(mean)),
        fingerprint,
        warnings,
    )


def _read_embedding_store(directory: str | os.PathLike) -> tuple[np.ndarray, str]:
    from speakerverify.embed import load_embeddings

    directory = Path(directory)
    if not directory.is_dir():
        raise VerificationError(f"{directory}: not an embedding directory")
    try:
        loaded = load_embeddings(directory, mmap=False)
    except Exception as error:  # any read failure: a bad input
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VerificationError(f"{directory}: cannot read embeddings ({cause})") from None
    meta = loaded.meta or {}
    fingerprint = meta.get("model_fingerprint") or meta.get("fingerprint")
    if not fingerprint:
        raise VerificationError(f"{directory}/meta.json: no model fingerprint")
    embeddings = np.asarray(loaded.embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise VerificationError(f"{directory}: no embeddings")
    return embeddings, str(fingerprint)
