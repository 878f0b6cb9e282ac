"""Options and helpers shared by the speaker commands (enroll, verify, identify, speakers,
adapt): model, store, decision and JSON options, the command model, warnings and tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from speakerverify.backend.speech_limits import MIN_SPEECH_SECONDS
from speakerverify.cli.common import CheckedPath, fail, model_path_or_bundled, warn

EXIT_STATUS_HELP = """
\b
Exit status: 0 accepted, 1 rejected, 2 usage or input error (like grep), 130 interrupted.
"""


def model_option(function: Callable) -> Callable:
    return click.option(
        "--model",
        "model_path",
        envvar="SPEAKERVERIFY_MODEL",
        type=CheckedPath(),
        metavar="CKPT",
        help="Checkpoint (default: $SPEAKERVERIFY_MODEL, else the bundled model).",
    )(function)


def store_option(function: Callable) -> Callable:
    return click.option(
        "--store",
        "store_path",
        envvar="SPEAKERVERIFY_STORE",
        type=CheckedPath(),
        metavar="DB",
        help="Speaker store file (default: $SPEAKERVERIFY_STORE).",
    )(function)


def json_option(function: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(
        function
    )


def decision_options(function: Callable) -> Callable:
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
                type=CheckedPath(),
                metavar="FILE",
                default=None,
                help="Calibration JSON (default: <checkpoint stem>.calibration.json next to it).",
            ),
            click.option(
                "--p-target",
                type=float,
                default=None,
                help="Prior of a target trial for calibrated decisions (0.5 with equal costs: "
                "accept when LLR >= 0). Default: the calibration's own operating point, or the "
                "store's adapted rule after `adapt`.",
            ),
            click.option(
                "--min-speech",
                type=float,
                default=MIN_SPEECH_SECONDS,
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


def command_model(model_path: str | None):
    # The ONNX twin when onnxruntime is there (no torch import), else torch: see backend/engine.py.
    from speakerverify.backend.engine import load_command_model

    return load_command_model(model_path_or_bundled(model_path))


def check_audio_files(paths) -> None:
    """Check every input file before the model loads: a missing or empty file fails at once."""
    from speakerverify.frontend.audio import check_audio_file

    for path in paths:
        check_audio_file(path)


def store_path_or_fail(store_path: str | None) -> str:
    return _require(store_path, "speaker store", "--store DB", "SPEAKERVERIFY_STORE")


def print_warnings(warnings: list[str]) -> None:
    for message in warnings:
        warn(message)


def centring_line(centring: dict | None) -> str:
    if centring is None:
        return "cosine; not adapted: `speakerverify adapt DIR` fits the rule to your domain"
    kind = "centred and whitened" if centring.get("whitened") else "centred"
    return (
        f"cosine of {kind} embeddings; domain of {centring['num_embeddings']} "
        f"embeddings from {centring['source']}"
    )


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


def open_store(store_path: str | None, *, read_only: bool = False):
    from speakerverify.speakers.store import SpeakerStore

    return SpeakerStore(store_path_or_fail(store_path), read_only=read_only)
