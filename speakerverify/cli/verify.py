"""`speakerverify verify`: a thin Click wrapper over `speakerverify.speakers.verification`
(`verify_against` for an enrolled name, `verify_pair` for two files); exit status 0 accepted,
1 rejected, 2 usage or input error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from speakerverify.cli.common import EXIT_OK, EXIT_REJECTED, echo_json, fail
from speakerverify.cli.speaker_options import (
    EXIT_STATUS_HELP,
    centring_line,
    check_audio_files,
    command_model,
    decision_options,
    json_option,
    model_option,
    print_warnings,
    store_domain,
    store_option,
    store_path_or_fail,
    table,
)


@click.command(epilog=EXIT_STATUS_HELP)
@click.argument("first", metavar="NAME|WAV1")
@click.argument("test", metavar="WAV")
@model_option
@store_option
@decision_options
@json_option
def verify(
    first, test, model_path, store_path, threshold, calibration_path, p_target, min_speech, as_json
) -> None:
    """Is WAV spoken by enrolled speaker NAME, or by the speaker of WAV1?

    When FIRST is an existing file the two files are compared (no store needed; a store's
    domain mean is used if --store is given). Otherwise FIRST is a speaker name in the store.
    The decision comes from the store's adapted rule (after `adapt`), else the model's
    calibration at its default operating point (or --p-target), or from --threshold.
    Runs on one CPU thread unless OMP_NUM_THREADS is set.
    """
    from speakerverify.backend.speaker_model import VerificationError
    from speakerverify.speakers.decision import resolve_decision_rule
    from speakerverify.speakers.verification import verify_pair

    pair = os.path.exists(first)  # False, not OSError, for a name too long to be a file
    if pair and os.path.isdir(first):
        fail(f"{first}: is a directory, not an audio file")
    if not pair:
        store_path = store_path_or_fail(store_path)
        if not Path(store_path).exists():
            raise VerificationError(
                f"{first}: no such file, and no speaker store {store_path} to look it up in"
            )
        _check_speaker(store_path, first)  # before the model: bad names fail in 0.2 s
    check_audio_files([first, test] if pair else [test])  # and so do bad files
    model = command_model(model_path)
    rule = resolve_decision_rule(
        model,
        threshold=threshold,
        calibration_path=calibration_path,
        p_target=p_target,
        domain=lambda: store_domain(store_path, model),
    )
    if pair:
        domain = store_domain(store_path, model)
        result = verify_pair(model, rule, first, test, min_speech_seconds=min_speech, domain=domain)
    else:
        result = _verify_name(store_path, model, rule, first, test, min_speech)
    print_warnings(result.warnings)
    payload = result.to_json()
    if as_json:
        echo_json(payload)
    else:
        enroll_label = "speaker" if result.mode == "store" else "enroll"
        rows = [(enroll_label, result.enroll), ("test", result.test)]
        rows.append(("score", f"{result.score:.4f} ({centring_line(payload['centring'])})"))
        if result.normalised is not None:
            rows.append(("S-norm", f"{result.normalised:.3f}"))
        if result.llr is not None:
            rows.append(("LLR", f"{result.llr:.3f} (calibration {result.rule.calibration_path})"))
        rows.append(("threshold", result.rule.describe()))
        rows.append(("decision", "ACCEPT" if result.accepted else "REJECT"))
        table(rows)
    sys.exit(EXIT_OK if result.accepted else EXIT_REJECTED)


def _check_speaker(store_path: str, name: str) -> None:
    """Open the store and find `name`; a path-like unknown name is reported as a missing file."""
    from speakerverify.backend.speaker_model import VerificationError
    from speakerverify.frontend.audio import AUDIO_EXTENSIONS
    from speakerverify.speakers.store import SpeakerStore, UnknownSpeakerError

    with SpeakerStore(store_path, read_only=True) as store:
        try:
            store.get(name)
        except UnknownSpeakerError:
            if os.sep in name or Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                raise VerificationError(
                    f"{name}: file not found (and no enrolled speaker of that name in {store_path})"
                ) from None
            raise


def _verify_name(store_path, model, rule, name, test, min_speech):
    from speakerverify.speakers.verification import verify_against

    return verify_against(store_path, model, rule, name, test, min_speech_seconds=min_speech)
