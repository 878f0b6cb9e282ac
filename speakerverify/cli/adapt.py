"""`speakerverify adapt`: a thin Click wrapper over `speakerverify.speakers.verification.adapt`
(domain mean in the store) and `speakerverify.speakers.adaptation` (`--out`: BatchNorm
statistics re-estimated into a new checkpoint).
"""

from __future__ import annotations

import click

from speakerverify.cli.common import CheckedPath, echo_json, fail, model_path_or_bundled
from speakerverify.cli.speaker_options import (
    command_model,
    json_option,
    model_option,
    print_warnings,
    store_option,
    store_path_or_fail,
)
from speakerverify.files import OUTPUT_HELP


@click.command()
@click.argument("audio_dir", required=False, type=CheckedPath(), metavar="[AUDIO_DIR]")
@click.option(
    "--embeddings",
    "embeddings_dir",
    type=CheckedPath(),
    metavar="DIR",
    help="Use an `speakerverify embed` output directory instead of audio.",
)
@model_option
@store_option
@click.option(
    "--min-speech",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds of speech each file needs.",
)
@click.option(
    "--out",
    "out_path",
    type=CheckedPath(),
    metavar="NEW.pt",
    help="Instead: write a new checkpoint with BatchNorm statistics re-estimated on AUDIO_DIR. "
    f"{OUTPUT_HELP} (the output says so when it replaced a file)",
)
@click.option(
    "--crop-seconds",
    type=click.FloatRange(min=0.5),
    default=6.0,
    show_default=True,
    help="With --out: longer speech is fed to the encoder in crops of at most this.",
)
@click.option(
    "--whiten/--no-whiten",
    default=True,
    show_default=True,
    help="Whiten scores with the domain's own covariance (from 100 files, in two halves that "
    "whiten each other). It assumes recordings of many speakers: for audio of a few people, "
    "--no-whiten (centring only) accepts fewer impostors.",
)
@json_option
def adapt(
    audio_dir,
    embeddings_dir,
    model_path,
    store_path,
    min_speech,
    out_path,
    crop_seconds,
    whiten,
    as_json,
) -> None:
    """Adapt to your domain with unlabelled in-domain audio: centre scores, or --out a new model.

    \b
    Without --out: embeds every audio file under AUDIO_DIR (or reads --embeddings DIR; at least
    20 files, better a few hundred of many speakers) and stores the adapted decision rule in the
    speaker store: cosine of embeddings centred on the domain's mean and, from 100 files,
    whitened with its covariance (two halves of the files whiten each other), S-normalised
    against the files each whitening did not see, accepted at a nominal 1 % false-accept rate.
    `verify` and `identify` on the store then use it (unless --threshold, --calibration or
    --p-target is given).
    With --out NEW.pt: re-estimates the encoder's BatchNorm statistics on the speech under
    AUDIO_DIR and writes a new checkpoint (new fingerprint, so a new store; the store is not
    touched). Then run `adapt AUDIO_DIR --model NEW.pt --store NEW.db` to fit its decision rule.
    No labels needed. Exit status: 0 saved, 2 usage or input error.
    """
    from speakerverify.speakers.verification import adapt as adapt_store

    if (audio_dir is None) == (embeddings_dir is None):
        fail("give either AUDIO_DIR or --embeddings DIR")
    if out_path is not None:
        if audio_dir is None:
            fail("--out re-estimates the model on audio: give AUDIO_DIR, not --embeddings")
        _adapt_model(audio_dir, model_path, out_path, crop_seconds, min_speech, as_json)
        return
    store_path = store_path_or_fail(store_path)
    model = None
    if audio_dir is not None or model_path:
        model = command_model(model_path)
    result = adapt_store(
        store_path,
        model=model,
        audio_dir=audio_dir,
        embeddings_dir=embeddings_dir,
        min_speech_seconds=min_speech,
        whiten=whiten,
    )
    print_warnings(result.warnings)
    if as_json:
        echo_json(result.to_json())
    else:
        rule = result.rule
        click.echo(
            f"saved the domain of {result.num_embeddings} files from {result.source} in "
            f"{result.store}; verify and identify now decide by its rule"
        )
        click.echo(f"threshold: {rule['description']}")
        click.echo(
            f"check: {100 * rule['adapted']['adaptation_pairs_above']:.2f} % of pairs of "
            "different adaptation files pass it (an upper bound on false accepts in this "
            "domain: some of those pairs are the same speaker)"
        )
        if rule["adapted"]["whitening"]:
            click.echo(
                "note: whitening assumes the audio holds many speakers (10 or more); with "
                "recordings of only a few people, run adapt again with --no-whiten"
            )


def _adapt_model(audio_dir, model_path, out_path, crop_seconds, min_speech, as_json) -> None:
    from speakerverify.speakers.adaptation import adapt_batchnorm

    result = adapt_batchnorm(
        model_path_or_bundled(model_path),
        audio_dir,
        out_path,
        crop_seconds=crop_seconds,
        min_speech_seconds=min_speech,
    )
    print_warnings(list(result.warnings))
    if as_json:
        echo_json(result.to_json())
        return
    replaced = " (replacing the file that was there)" if result.replaced else ""
    click.echo(
        f"wrote {result.path}{replaced}: BatchNorm statistics of {len(result.layers)} layers "
        "re-estimated on "
        f"{result.num_files} files ({result.speech_seconds:.1f} s of speech) from {result.source}; "
        f"model {result.parent_fingerprint} -> {result.fingerprint}. Use it with a new store "
        f"(stores of the old model refuse it): `speakerverify adapt {result.source} --model "
        f"{result.path} --store NEW.db` fits its decision rule."
    )
