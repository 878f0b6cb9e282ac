"""`speakerverify verify`: a thin Click wrapper over `speakerverify.speakers.trial.verify_trial`
(an enrolled name or a second file); exit status 0 accepted, 1 rejected, 2 usage or input error.
"""

from __future__ import annotations

import os
import sys

import click

from speakerverify.cli.common import EXIT_OK, EXIT_REJECTED, echo_json
from speakerverify.cli.speaker_options import (
    EXIT_STATUS_HELP,
    centring_line,
    command_model,
    decision_options,
    json_option,
    model_option,
    print_warnings,
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
    from speakerverify.speakers.trial import StoreNotGiven, verify_trial

    try:  # the model loads after the checks of names, store and files: bad input fails fast
        result = verify_trial(
            first,
            test,
            lambda: command_model(model_path),
            store_path=os.path.expanduser(store_path) if store_path else None,
            threshold=threshold,
            calibration_path=calibration_path,
            p_target=p_target,
            min_speech_seconds=min_speech,
        )
    except StoreNotGiven:
        store_path_or_fail(None)
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
