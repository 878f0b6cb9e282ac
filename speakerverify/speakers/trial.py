"""One verification trial as `speakerverify verify` states it, and one identification as
`speakerverify identify` states it, callable from Python as well: for verify, the first input is
an enrolled speaker's name or an audio file, which is decided here; the cheap checks run before
the model loads, then the decision rule is resolved and the trial scored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from speakerverify.backend.speaker_model import SpeakerModel, VerificationError
from speakerverify.backend.speech_limits import MIN_SPEECH_SECONDS
from speakerverify.frontend.audio import AUDIO_EXTENSIONS, check_audio_file
from speakerverify.speakers.results import IdentifyResult, VerifyResult
from speakerverify.speakers.store import SpeakerStore, UnknownSpeakerError
from speakerverify.speakers.verification import (
    identify,
    resolve_store_rule,
    store_domain,
    verify_against,
    verify_pair,
)

__all__ = ["StoreNotGiven", "identify_trial", "verify_trial"]


class StoreNotGiven(VerificationError):
    """The first input is no file, so it names a speaker, and no store was given to look it up."""


def verify_trial(
    first: str | os.PathLike,
    test_path: str | os.PathLike,
    model: SpeakerModel | Callable[[], SpeakerModel],
    *,
    store_path: str | os.PathLike | None = None,
    threshold: float | None = None,
    calibration_path: str | os.PathLike | None = None,
    p_target: float | None = None,
    min_speech_seconds: float = MIN_SPEECH_SECONDS,
) -> VerifyResult:
    """Is `test_path` spoken by the enrolled speaker `first`, or by the speaker of file `first`?

    An existing path `first` is a pair trial (the store, if given, only lends its domain
    adaptation); anything else is a name looked up in the store at `store_path`. The name, the
    store and the audio files are checked before `model` is called when it is a loader, so bad
    input fails without loading a model. The rule comes from `resolve_store_rule`.

    Raises:
        StoreNotGiven: `first` is no file and `store_path` is empty.
        VerificationError, audio.AudioError, StoreError (UnknownSpeakerError for a name).
    """
    pair = os.path.exists(first)  # False, not OSError, for a name too long to be a file
    if pair and os.path.isdir(first):
        raise VerificationError(f"{first}: is a directory, not an audio file")
    if not pair:
        if not store_path:
            raise StoreNotGiven(f"{first}: no such file, and no speaker store to look it up in")
        if not Path(store_path).exists():
            raise VerificationError(
                f"{first}: no such file, and no speaker store {store_path} to look it up in"
            )
        _check_speaker(store_path, str(first))
    for path in [first, test_path] if pair else [test_path]:
        check_audio_file(path)
    model, rule = _model_and_rule(model, store_path, threshold, calibration_path, p_target)
    if not pair:
        return verify_against(
            store_path, model, rule, first, test_path, min_speech_seconds=min_speech_seconds
        )
    domain = store_domain(store_path, model)  # a given store centres the pair on its domain
    return verify_pair(
        model, rule, first, test_path, min_speech_seconds=min_speech_seconds, domain=domain
    )


def identify_trial(
    test_path: str | os.PathLike,
    model: SpeakerModel | Callable[[], SpeakerModel],
    *,
    store_path: str | os.PathLike,
    threshold: float | None = None,
    calibration_path: str | os.PathLike | None = None,
    p_target: float | None = None,
    top_k: int = 5,
    min_speech_seconds: float = MIN_SPEECH_SECONDS,
) -> IdentifyResult:
    """Who in the store at `store_path` speaks in `test_path`? "unknown" (None) when the best
    enrolled speaker is rejected by the rule (`resolve_store_rule`, made stricter with the
    number of enrolled speakers: `DecisionRule.for_identification`).

    The store and the audio file are checked before `model` is called when it is a loader, so
    bad input fails without loading a model.

    Raises:
        VerificationError, audio.AudioError, StoreError.
    """
    with SpeakerStore(store_path, read_only=True):
        pass  # a missing, foreign-format or corrupt store fails here, in 0.2 s
    check_audio_file(test_path)
    model, rule = _model_and_rule(model, store_path, threshold, calibration_path, p_target)
    return identify(
        store_path, model, rule, test_path, top_k=top_k, min_speech_seconds=min_speech_seconds
    )


def _model_and_rule(model, store_path, threshold, calibration_path, p_target):
    """The model (loaded now if `model` is a loader, after the cheap checks) and its rule."""
    model = model() if callable(model) else model
    rule = resolve_store_rule(
        model,
        store_path,
        threshold=threshold,
        calibration_path=calibration_path,
        p_target=p_target,
    )
    return model, rule


def _check_speaker(store_path: str | os.PathLike, name: str) -> None:
    """Open the store and find `name`; a path-like unknown name is reported as a missing file."""
    with SpeakerStore(store_path, read_only=True) as store:
        try:
            store.get(name)
        except UnknownSpeakerError:
            if os.sep in name or Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                raise VerificationError(
                    f"{name}: file not found (and no enrolled speaker of that name in {store_path})"
                ) from None
            raise
