"""Commands users touch: enroll, verify, identify, speakers list/remove/export, adapt.

Thin Click wrappers over `speakerverify.speakers.verification`; torch and friends are imported
inside the command bodies so that `--help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from speakerverify.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REJECTED,
    echo_json,
    fail,
    model_path_or_bundled,
    warn,
)

EXIT_STATUS_HELP = """
\b
Exit status: 0 accepted, 1 rejected, 2 usage or input error (like grep).
"""


def _model_option(function: Callable) -> Callable:
    return click.option(
        "--model",
        "model_path",
        envvar="SPEAKERVERIFY_MODEL",
        metavar="CKPT",
        help="Checkpoint (default: $SPEAKERVERIFY_MODEL, else the bundled model).",
    )(function)


def _store_option(function: Callable) -> Callable:
    return click.option(
        "--store",
        "store_path",
        envvar="SPEAKERVERIFY_STORE",
        metavar="DB",
        help="Speaker store file (default: $SPEAKERVERIFY_STORE).",
    )(function)


def _json_option(function: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(
        function
    )


def _decision_options(function: Callable) -> Callable:
    for decorator in reversed(
        [
            click.option(
                "--threshold",
                type=float,
                default=None,
                help="Accept when the raw cosine score >= this (overrides the calibration).",
            ),
            click.option(
                "--calibration",
                "calibration_path",
                metavar="FILE",
                default=None,
                help="Calibration JSON (default: <checkpoint stem>.calibration.json next to it).",
            ),
            click.option(
                "--p-target",
                type=float,
                default=0.5,
                show_default=True,
                help="Prior of a target trial for calibrated decisions; 0.5 with equal costs "
                "means accept when LLR >= 0.",
            ),
            click.option(
                "--min-speech",
                type=float,
                default=1.0,
                show_default=True,
                help="Seconds of speech a test file needs.",
            ),
        ]
    ):
        function = decorator(function)
    return function


def _require(value: str | None, what: str, option: str, envvar: str) -> str:
    if not value:
        fail(f"no {what}: pass {option} or set {envvar}")
    return os.path.expanduser(value)  # environment values reach us without shell expansion


def _load_model(model_path: str | None):
    # The ONNX twin when onnxruntime is there (no torch import), else torch: see backend/engine.py.
    from speakerverify.backend.engine import load_command_model

    return load_command_model(model_path_or_bundled(model_path))


def _store(store_path: str | None) -> str:
    return _require(store_path, "speaker store", "--store DB", "SPEAKERVERIFY_STORE")


def _print_warnings(warnings: list[str]) -> None:
    for message in warnings:
        warn(message)


def _centring_line(centring: dict | None) -> str:
    if centring is None:
        return "cosine; no domain mean: run `speakerverify adapt` to centre on your domain"
    return (
        f"cosine of centred embeddings; domain mean of {centring['num_embeddings']} "
        f"embeddings from {centring['source']}"
    )


def _table(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


# -- enroll ----------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.argument("audio", nargs=-1, required=True, metavar="WAV [WAV...]")
@_model_option
@_store_option
@click.option(
    "--min-speech",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds of speech needed over all files.",
)
@click.option("--replace", is_flag=True, help="Forget what was enrolled for NAME before.")
@_json_option
def enroll(name, audio, model_path, store_path, min_speech, replace, as_json) -> None:
    """Enroll speaker NAME from the speech in one or more audio files.

    Silence is trimmed (energy VAD); adding files to an existing speaker updates its mean,
    weighted by utterances. Exit status: 0 stored, 2 usage or input error.
    """
    from speakerverify.speakers.verification import enroll_speaker

    store_path = _store(store_path)
    model = _load_model(model_path)
    result = enroll_speaker(
        store_path, model, name, audio, min_speech_seconds=min_speech, replace=replace
    )
    _print_warnings(result.warnings)
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


# -- verify ----------------------------------------------------------------------------------


@click.command(epilog=EXIT_STATUS_HELP)
@click.argument("first", metavar="NAME|WAV1")
@click.argument("test", metavar="WAV")
@_model_option
@_store_option
@_decision_options
@_json_option
def verify(
    first, test, model_path, store_path, threshold, calibration_path, p_target, min_speech, as_json
) -> None:
    """Is WAV spoken by enrolled speaker NAME, or by the speaker of WAV1?

    When FIRST is an existing file the two files are compared (no store needed; a store's
    domain mean is used if --store is given). Otherwise FIRST is a speaker name in the store.
    The decision comes from the model's calibration at --p-target, or from --threshold.
    Runs on one CPU thread unless OMP_NUM_THREADS is set.
    """
    from speakerverify.backend.speaker_model import VerificationError
    from speakerverify.speakers.decision import resolve_decision_rule
    from speakerverify.speakers.verification import verify_pair

    pair = Path(first).exists()
    if pair and Path(first).is_dir():
        fail(f"{first}: is a directory, not an audio file")
    if not pair:
        store_path = _store(store_path)
        if not Path(store_path).exists():
            raise VerificationError(
                f"{first}: no such file, and no speaker store {store_path} to look it up in"
            )
        _check_speaker(store_path, first)  # before the model: bad names fail in 0.2 s
    model = _load_model(model_path)
    rule = resolve_decision_rule(
        model, threshold=threshold, calibration_path=calibration_path, p_target=p_target
    )
    if pair:
        domain = _pair_domain(store_path, model)
        result = verify_pair(model, rule, first, test, min_speech_seconds=min_speech, domain=domain)
    else:
        result = _verify_name(store_path, model, rule, first, test, min_speech)
    _print_warnings(result.warnings)
    payload = result.to_json()
    if as_json:
        echo_json(payload)
    else:
        enroll_label = "speaker" if result.mode == "store" else "enroll"
        rows = [(enroll_label, result.enroll), ("test", result.test)]
        rows.append(("score", f"{result.score:.4f} ({_centring_line(payload['centring'])})"))
        if result.llr is not None:
            rows.append(("LLR", f"{result.llr:.3f} (calibration {rule.calibration_path})"))
        rows.append(("threshold", rule.describe()))
        rows.append(("decision", "ACCEPT" if result.accepted else "REJECT"))
        _table(rows)
    sys.exit(EXIT_OK if result.accepted else EXIT_REJECTED)


def _check_speaker(store_path: str, name: str) -> None:
    """Open the store and find `name`; a path-like unknown name is reported as a missing file."""
    from speakerverify.backend.speaker_model import AUDIO_EXTENSIONS, VerificationError
    from speakerverify.speakers.store import SpeakerStore, UnknownSpeakerError

    with SpeakerStore(store_path) as store:
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


def _pair_domain(store_path: str | None, model: Any):
    """The store's domain mean for a pair trial, when a store is given and exists."""
    from speakerverify.speakers.store import SpeakerStore

    if not store_path or not Path(store_path).exists():
        return None
    with SpeakerStore(store_path) as store:
        store.check_model(model.fingerprint, source=f"checkpoint {model.path}")
        return store.domain_mean


# -- identify --------------------------------------------------------------------------------


@click.command()
@click.argument("test", metavar="WAV")
@click.option("--top", "top_k", type=int, default=5, show_default=True, help="Speakers to list.")
@_model_option
@_store_option
@_decision_options
@_json_option
def identify(
    test, top_k, model_path, store_path, threshold, calibration_path, p_target, min_speech, as_json
) -> None:
    """Who in the store speaks in WAV? Answers "unknown" when nobody passes the threshold.

    \b
    Exit status: 0 identified, 1 unknown, 2 usage or input error.
    """
    from speakerverify.speakers.decision import resolve_decision_rule
    from speakerverify.speakers.verification import identify as identify_speaker

    store_path = _store(store_path)
    _open_store(store_path).close()  # before the model: a bad store fails in 0.2 s
    model = _load_model(model_path)
    rule = resolve_decision_rule(
        model, threshold=threshold, calibration_path=calibration_path, p_target=p_target
    )
    result = identify_speaker(
        store_path, model, rule, test, top_k=top_k, min_speech_seconds=min_speech
    )
    _print_warnings(result.warnings)
    payload = result.to_json()
    if as_json:
        echo_json(payload)
    else:
        click.echo(f"test:      {result.test}")
        click.echo(f"scoring:   {_centring_line(payload['centring'])}")
        click.echo(f"threshold: {rule.describe()}")
        click.echo(f"{'rank':>4}  {'score':>8}  {'LLR':>8}  {'decision':<8}  name")
        for cand in result.candidates:
            llr = "-" if cand["llr"] is None else f"{cand['llr']:.3f}"
            decision = "accept" if cand["accepted"] else "reject"
            click.echo(
                f"{cand['rank']:>4}  {cand['score']:>8.4f}  {llr:>8}  {decision:<8}  {cand['name']}"
            )
        answer = result.identified if result.identified is not None else "unknown"
        click.echo(f"identified: {answer} (of {result.num_enrolled} enrolled)")
    sys.exit(EXIT_OK if result.identified is not None else EXIT_REJECTED)


# -- speakers list/remove/export -------------------------------------------------------------


@click.group()
def speakers() -> None:
    """List, remove or export the speakers in a store."""


def _open_store(store_path: str | None):
    from speakerverify.speakers.store import SpeakerStore

    return SpeakerStore(_store(store_path))


def _domain_json(domain, with_mean: bool) -> dict | None:
    if domain is None:
        return None
    out = {
        "num_embeddings": domain.num_embeddings,
        "source": domain.source,
        "updated": domain.updated,
    }
    if with_mean:
        out["mean"] = [float(x) for x in domain.mean]
    return out


def _store_json(store, command: str, with_embeddings: bool) -> dict:
    records = store.speakers()
    listed = []
    for record in records:
        entry = record.summary()
        if with_embeddings:
            entry["embedding"] = [float(x) for x in record.embedding]
        listed.append(entry)
    return {
        "command": command,
        "version": 1,
        "store": str(store.path),
        "model_fingerprint": store.fingerprint,
        "embed_dim": store.embed_dim,
        "domain_mean": _domain_json(store.domain_mean, with_embeddings),
        "num_speakers": len(listed),
        "speakers": listed,
    }


@speakers.command("list")
@_store_option
@_json_option
def list_speakers(store_path, as_json) -> None:
    """List enrolled speakers with utterance counts, speech seconds and times."""
    with _open_store(store_path) as store:
        payload = _store_json(store, "speakers list", with_embeddings=False)
    if as_json:
        echo_json(payload)
        return
    click.echo(
        f"{payload['store']}: {payload['num_speakers']} speaker(s), "
        f"model {payload['model_fingerprint']}"
        + ("" if payload["domain_mean"] is None else ", domain mean set (adapt)")
    )
    if payload["speakers"]:
        width = max(4, *(len(s["name"]) for s in payload["speakers"]))
        click.echo(f"{'name':<{width}}  {'utts':>5}  {'speech_s':>9}  updated")
        for s in payload["speakers"]:
            click.echo(
                f"{s['name']:<{width}}  {s['num_utterances']:>5}  "
                f"{s['speech_seconds']:>9.1f}  {s['updated']}"
            )


@speakers.command("remove")
@click.argument("name")
@_store_option
@_json_option
def remove_speaker(name, store_path, as_json) -> None:
    """Remove speaker NAME from the store (error, exit 2, if not enrolled)."""
    with _open_store(store_path) as store:
        record = store.get(name)
        store.remove(record.name)
        remaining = len(store)
    if as_json:
        echo_json(
            {
                "command": "speakers remove",
                "version": 1,
                "store": str(store.path),
                "removed": record.name,
                "num_speakers": remaining,
            }
        )
    else:
        click.echo(f"removed {record.name!r} from {store.path} ({remaining} speaker(s) left)")


@speakers.command("export")
@_store_option
@click.option("--out", "out_path", metavar="FILE", help="Write here (atomically) not stdout.")
@_json_option
def export_speakers(store_path, out_path, as_json) -> None:
    """Export the store as JSON, embeddings included.

    Without --out the document goes to stdout; with --out, --json prints a short summary.
    """
    with _open_store(store_path) as store:
        payload = _store_json(store, "speakers export", with_embeddings=True)
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False)
    if out_path is None:
        click.echo(text)
        return
    _write_atomic(Path(out_path), text + "\n")
    summary = {
        "command": "speakers export",
        "version": 1,
        "store": payload["store"],
        "out": str(out_path),
        "num_speakers": payload["num_speakers"],
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"exported {payload['num_speakers']} speaker(s) to {out_path}")


def _write_atomic(path: Path, text: str) -> None:
    if path.is_dir():
        fail(f"{path}: is a directory")
    if not path.parent.is_dir():
        fail(f"{path}: directory {path.parent} does not exist")
    from speakerverify.files import write_atomic

    try:
        write_atomic(path, text)
    except OSError as error:
        fail(f"{path}: cannot write ({error.strerror})")


# -- adapt -----------------------------------------------------------------------------------


@click.command()
@click.argument("audio_dir", required=False, metavar="[AUDIO_DIR]")
@click.option(
    "--embeddings",
    "embeddings_dir",
    metavar="DIR",
    help="Use an `speakerverify embed` output directory instead of audio.",
)
@_model_option
@_store_option
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
    metavar="NEW.pt",
    help="Instead: write a new checkpoint with BatchNorm statistics re-estimated on AUDIO_DIR.",
)
@click.option(
    "--crop-seconds",
    type=click.FloatRange(min=0.5),
    default=6.0,
    show_default=True,
    help="With --out: longer speech is fed to the encoder in crops of at most this.",
)
@_json_option
def adapt(
    audio_dir, embeddings_dir, model_path, store_path, min_speech, out_path, crop_seconds, as_json
) -> None:
    """Adapt to your domain with unlabelled in-domain audio: centre scores, or --out a new model.

    \b
    Without --out: embeds every audio file under AUDIO_DIR (or reads --embeddings DIR) and stores
    the mean in the speaker store; `verify` and `identify` then score cosine after subtracting it.
    With --out NEW.pt: re-estimates the encoder's BatchNorm statistics on the speech under
    AUDIO_DIR and writes a new checkpoint (new fingerprint, so a new store; the store is not
    touched and no mean is saved, as the last BatchNorm already centres on the domain).
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
    store_path = _store(store_path)
    model = None
    if audio_dir is not None or model_path:
        model = _load_model(model_path)
    result = adapt_store(
        store_path,
        model=model,
        audio_dir=audio_dir,
        embeddings_dir=embeddings_dir,
        min_speech_seconds=min_speech,
    )
    _print_warnings(result.warnings)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(
            f"saved the domain mean of {result.num_embeddings} embeddings from {result.source} "
            f"in {result.store} (|mean| = {result.mean_norm:.3f}); verify and identify now "
            "score centred embeddings"
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
    _print_warnings(list(result.warnings))
    if as_json:
        echo_json(result.to_json())
        return
    click.echo(
        f"wrote {result.path}: BatchNorm statistics of {len(result.layers)} layers re-estimated on "
        f"{result.num_files} files ({result.speech_seconds:.1f} s of speech) from {result.source}; "
        f"model {result.parent_fingerprint} -> {result.fingerprint}. Use it with a new store "
        "(stores of the old model refuse it) and calibrate it or pass --threshold."
    )


__all__ = ["EXIT_ERROR", "adapt", "enroll", "identify", "speakers", "verify"]
