"""`speakerverify identify`: a thin Click wrapper over `speakerverify.speakers.trial`
(`identify_trial`); exit status 0 identified, 1 unknown, 2 usage or input error.
"""

from __future__ import annotations

import sys

import click

from speakerverify.cli.common import EXIT_OK, EXIT_REJECTED, echo_json
from speakerverify.cli.speaker_options import (
    centring_line,
    command_model,
    decision_options,
    json_option,
    model_option,
    print_warnings,
    store_option,
    store_path_or_fail,
)


@click.command()
@click.argument("test", metavar="WAV")
@click.option("--top", "top_k", type=int, default=5, show_default=True, help="Speakers to list.")
@model_option
@store_option
@decision_options
@json_option
def identify(
    test, top_k, model_path, store_path, threshold, calibration_path, p_target, min_speech, as_json
) -> None:
    """Who in the store speaks in WAV? Answers "unknown" when nobody passes the threshold.

    A stranger meets every enrolled speaker, so the default rule holds each of the N
    comparisons to the calibration's (or the adapted rule's) false-accept rate divided by N:
    the whole search keeps the rate of one `verify` claim. --threshold and --p-target decide
    exactly as given.

    \b
    Exit status: 0 identified, 1 unknown, 2 usage or input error, 130 interrupted.
    """
    from speakerverify.speakers.trial import identify_trial

    result = identify_trial(  # the model loads after the store and file checks
        test,
        lambda: command_model(model_path),
        store_path=store_path_or_fail(store_path),
        threshold=threshold,
        calibration_path=calibration_path,
        p_target=p_target,
        top_k=top_k,
        min_speech_seconds=min_speech,
    )
    print_warnings(result.warnings)
    payload = result.to_json()
    if as_json:
        echo_json(payload)
    else:
        click.echo(f"test:      {result.test}")
        click.echo(f"scoring:   {centring_line(payload['centring'])}")
        click.echo(f"threshold: {result.rule.describe()}")
        normalised = result.rule.scale == "snorm"
        value_name = "S-norm" if normalised else "LLR"
        click.echo(f"{'rank':>4}  {'score':>8}  {value_name:>8}  name")
        for cand in result.candidates:
            value = cand["normalised"] if normalised else cand["llr"]
            shown = "-" if value is None else f"{value:.3f}"
            mark = "  <- identified" if cand["name"] == result.identified else ""
            click.echo(
                f"{cand['rank']:>4}  {cand['score']:>8.4f}  {shown:>8}  {cand['name']}{mark}"
            )
        answer = result.identified if result.identified is not None else "unknown"
        click.echo(f"identified: {answer} (of {result.num_enrolled} enrolled)")
    sys.exit(EXIT_OK if result.identified is not None else EXIT_REJECTED)
