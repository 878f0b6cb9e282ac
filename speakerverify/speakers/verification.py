"""Enroll, verify, identify and adapt: the library behind the speaker commands of the CLI.

Decisions come from a calibration at a stated operating point or from an explicit threshold on
the raw cosine score, never from a constant in the code; every result says which. The decision
rule lives in `speakerverify.speakers.decision`, the embedding of one file in
`speakerverify.backend.speaker_model` and the result types in `speakerverify.speakers.results`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speakerverify.backend.speaker_model import (
    SpeakerModel,
    Utterance,
    VerificationError,
    embed_speech,
    embed_utterance,
    find_audio_files,
    load_speech,
)
from speakerverify.checkpoint_rules import model_mismatch
from speakerverify.speakers.decision import (
    DecisionRule,
    adapted_rule,
    centring_caveat,
    open_set_caveat,
    resolve_decision_rule,
    score_against,
)
from speakerverify.speakers.domain import MIN_COHORT, estimate_domain
from speakerverify.speakers.records import DomainMean, validate_name
from speakerverify.speakers.results import AdaptResult, EnrollResult, IdentifyResult, VerifyResult
from speakerverify.speakers.store import SpeakerStore, StoreError

__all__ = [
    "adapt",
    "enroll_speaker",
    "identify",
    "rank_speakers",
    "resolve_store_rule",
    "store_domain",
    "verify_against",
    "verify_pair",
]

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
    store = SpeakerStore(store_path, read_only=True)
    try:
        store.check_model(model.fingerprint, source=f"checkpoint {model.path}")
    except StoreError:
        store.close()
        raise
    return store


def store_domain(store_path: str | os.PathLike | None, model: SpeakerModel) -> DomainMean | None:
    """The domain adaptation of the store at `store_path` (None without a store or adaptation),
    after checking the store was made by `model`."""
    if not store_path or not Path(store_path).exists():
        return None
    with _open_existing(store_path, model) as store:
        return store.domain_mean


def resolve_store_rule(
    model: SpeakerModel,
    store_path: str | os.PathLike | None,
    *,
    threshold: float | None = None,
    calibration_path: str | os.PathLike | None = None,
    p_target: float | None = None,
) -> DecisionRule:
    """`resolve_decision_rule` for trials against the store at `store_path` (if any), whose
    adapted rule decides when the model has no calibration."""
    return resolve_decision_rule(
        model,
        threshold=threshold,
        calibration_path=calibration_path,
        p_target=p_target,
        domain=lambda: store_domain(store_path, model),
    )


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
    sample_rate: int | None = None,
) -> VerifyResult:
    """Score two files (or waveforms at `sample_rate` Hz) against each other (no store) and
    decide with `rule`."""
    options = {"min_speech_seconds": min_speech_seconds, "sample_rate": sample_rate}
    first = embed_utterance(model, enroll_path, **options)
    second = embed_utterance(model, test_path, **options)
    warnings = list(first.warnings + second.warnings)
    return _verify("pair", first.path, first.embedding, second, rule, domain, model, warnings)


def _verify(mode, enroll, enroll_embedding, test, rule, domain, model, warnings) -> VerifyResult:
    scored = score_against(rule, domain, enroll_embedding, test.embedding)
    llr = None if scored.llrs is None else float(scored.llrs[0])
    warnings = warnings + centring_caveat(scored.rule, domain)
    return VerifyResult(
        mode,
        enroll,
        test.path,
        float(scored.scores[0]),
        llr,
        bool(scored.accepted[0]),
        scored.rule,
        domain,
        model.fingerprint,
        warnings,
        normalised=float(scored.values[0]) if scored.rule.scale == "snorm" else None,
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
    """Open-set identification of `test` against enrolled embeddings `(N, D)`: the best-scoring
    speaker if the rule accepts it, else "unknown" (None). A default rule is made stricter
    with the number of enrolled speakers (`DecisionRule.for_identification`)."""
    rule = rule.for_domain(domain).for_identification(len(names))
    scored = score_against(rule, domain, matrix, test.embedding)
    ranking = scored.values if scored.rule.scale == "snorm" else scored.scores
    order = np.argsort(-ranking, kind="stable")[:top_k]
    candidates = [
        {
            "rank": rank + 1,
            "name": names[i],
            "score": float(scored.scores[i]),
            "llr": None if scored.llrs is None else float(scored.llrs[i]),
            "normalised": float(scored.values[i]) if scored.rule.scale == "snorm" else None,
            "accepted": bool(scored.accepted[i]),
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
        scored.rule,
        domain,
        fingerprint,
        list(test.warnings) + centring_caveat(scored.rule, domain) + open_set_caveat(rule, names),
    )


def adapt(
    store_path: str | os.PathLike,
    *,
    model: SpeakerModel | None = None,
    audio_dir: str | os.PathLike | None = None,
    embeddings_dir: str | os.PathLike | None = None,
    min_speech_seconds: float = 1.0,
    whiten: bool = True,
) -> AdaptResult:
    """Estimate the adapted decision rule from unlabelled in-domain audio and save it in the store.

    The rule (`speakerverify.speakers.domain`): scores are cosines of embeddings centred on the
    in-domain mean (and, with `whiten` and at least `domain.MIN_WHITENING` files, whitened in
    two folds, each half of the files whitening the other), S-normalised against in-domain
    embeddings, and accepted at the standard normal quantile of a nominal 1 % false-accept
    rate. `verify` and `identify` on the store use
    it unless told otherwise (--threshold, --calibration, --p-target).

    Give either `audio_dir` (embedded with `model`) or `embeddings_dir` (an `embed` output whose
    meta names the model fingerprint), with at least `domain.MIN_COHORT` files. Files with no
    speech are errors, like everywhere else.
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
        _check_domain_size(audio_dir, len(paths))
        utterances = []
        for begin in range(0, len(paths), _ADAPT_BATCH):
            speeches = [
                load_speech(model, path, min_speech_seconds=min_speech_seconds)
                for path in paths[begin : begin + _ADAPT_BATCH]
            ]
            utterances += embed_speech(model, speeches)
        warnings += [w for u in utterances for w in u.warnings]
        embeddings = np.stack([u.embedding for u in utterances]).astype(np.float64)
        fingerprint, source = model.fingerprint, str(audio_dir)
    else:
        embeddings, fingerprint = _read_embedding_store(embeddings_dir)
        if model is not None:
            mismatch = model_mismatch(
                f"{embeddings_dir}: embeddings were made by",
                fingerprint,
                f"checkpoint {model.path}",
                model.fingerprint,
            )
            if mismatch:
                raise VerificationError(mismatch)
        source = str(embeddings_dir)
        _check_store_early(store_path, fingerprint, source)
        _check_domain_size(source, len(embeddings))
    domain = estimate_domain(embeddings, source, whiten=whiten)
    if len(embeddings) < 100:
        warnings.append(
            f"{source}: the adapted rule comes from only {len(embeddings)} files; a few hundred "
            "in-domain recordings of many speakers give a stable estimate"
        )
    with SpeakerStore(store_path, create=True) as store:
        store.check_model(fingerprint, source=source)
        saved = store.set_domain(domain, fingerprint=fingerprint)
    return AdaptResult(
        str(store_path),
        source,
        len(embeddings),
        float(np.linalg.norm(saved.mean)),
        fingerprint,
        warnings,
        rule=adapted_rule(saved).to_json(),
    )


_ADAPT_BATCH = 16  # files per forward pass


def _check_domain_size(source: str | os.PathLike, count: int) -> None:
    if count < MIN_COHORT:
        raise VerificationError(
            f"{source}: only {count} files; adapt needs at least {MIN_COHORT} in-domain "
            "recordings (of several speakers) to estimate a decision rule"
        )


def _read_embedding_store(directory: str | os.PathLike) -> tuple[np.ndarray, str]:
    from speakerverify.backend.embedding_dir import EmbeddingStoreError, load_embeddings

    directory = Path(directory)
    if not directory.is_dir():
        raise VerificationError(f"{directory}: not an embedding directory")
    try:
        loaded = load_embeddings(directory, mmap=False)
    # load_embeddings' own EmbeddingStoreError; OSError and EOFError from numpy reading a
    # missing or truncated embeddings.npy; UnicodeDecodeError from text files that are not UTF-8.
    # Anything else is a bug and shows as a traceback.
    except (EmbeddingStoreError, OSError, EOFError, UnicodeDecodeError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VerificationError(f"{directory}: cannot read embeddings ({cause})") from None
    meta = loaded.meta or {}
    fingerprint = meta.get("model_fingerprint") or meta.get("fingerprint")
    if not fingerprint:
        raise VerificationError(f"{directory}/meta.json: no model fingerprint")
    embeddings = np.asarray(loaded.embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise VerificationError(f"{directory}: no embeddings")
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if bad.size:  # refused here, before the store is opened (or created)
        raise VerificationError(
            f"{directory}: embedding of {loaded.utt_ids[bad[0]]} (row {bad[0]}) is not finite; "
            f"{bad.size} such row(s)"
        )
    return embeddings, str(fingerprint)
