"""`speakerverify enroll`: a thin Click wrapper over `speakerverify.speakers.verification`
(`enroll_speaker`); torch is imported inside the command body so that `--help` stays instant.
"""

from __future__ import annotations

import click

from speakerverify.cli.common import echo_json
from speakerverify.cli.speaker_options import (
    check_audio_files,
    command_model,
    json_option,
    model_option,
    print_warnings,
    store_option,
    store_path_or_fail,
)


@click.command()
@click.argument("name")
@click.argument("audio", nargs=-1, required=True, metavar="WAV [WAV...]")
@model_option
@store_option
@click.option(
    "--min-speech",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds of speech needed over all files.",
)
@click.option("--replace", is_flag=True, help="Forget what was enrolled for NAME before.")
@json_option
def enroll(name, audio, model_path, store_path, min_speech, replace, as_json) -> None:
    """Enroll speaker NAME from the speech in one or more audio files.

    Silence is trimmed (energy VAD); adding files to an existing speaker updates its mean,
    weighted by utterances. Exit status: 0 stored, 2 usage or input error.
    """
    from speakerverify.speakers.verification import enroll_speaker

    store_path = store_path_or_fail(store_path)
    check_audio_files(audio)  # before the model: a bad file fails in 0.2 s, not 3
    model = command_model(model_path)
    result = enroll_speaker(
        store_path, model, name, audio, min_speech_seconds=min_speech, replace=replace
    )
    print_warnings(result.warnings)
    if as_json:
        echo_json(result.to_json())
        return
    speaker = result.speaker
    action = "replaced" if replace else "enrolled"
    click.echo(
        f"{action} {speaker['name']!r} in {result.store}: +{len(result.utterances)} "
        f"utterance(s), {sum(u.speech_seconds for u in result.utterances):.1f} s of speech; "
        f"now {speaker['num_utterances']} utterance(s), {speaker['speech_seconds']:.1f} s "
        f"(model {result.model_fingerprint})"
    )
