"""Helpers shared by the CLI modules: one-line errors, exit codes, JSON output."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

from speakerverify.files import check_reachable

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report an interrupted process
EXIT_TERMINATED = 143  # 128 + SIGTERM


class CheckedPath(click.Path):
    """`click.Path` for every path parameter: a path the system will not even look up (a name
    longer than 255 bytes, a directory on its way that cannot be searched) is the one-line
    `error: <path>: file name too long` (`files.check_reachable`), not an OSError traceback from
    the first `Path.exists()` that meets it. Readability is left to the readers, whose errors
    name the file in one line too.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**{"readable": False, **options})

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        check_reachable(os.path.expanduser(value))  # environment values arrive unexpanded
        return super().convert(value, param, ctx)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` on one stderr line and exit with `code` (no traceback)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its class name when it has none."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def warn(message: str) -> None:
    """Print `warning: message` on stderr."""
    click.echo(f"warning: {message}", err=True)


def echo_json(payload: Any) -> None:
    """Print `payload` as one JSON document on stdout."""
    click.echo(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False))


def model_path_or_bundled(model_path: str | None, *, announce: bool = True) -> str:
    """`--model` / `$SPEAKERVERIFY_MODEL` when given, else the bundled model (said on stderr
    when `announce`, in one line that never reaches stdout, so `--json` output stays clean).

    Raises:
        checkpoint.CheckpointError: no model given and the bundled files are missing.
    """
    if model_path:
        return os.path.expanduser(model_path)  # environment values reach us without expansion
    from speakerverify.pretrained import bundled_card, bundled_checkpoint

    path = bundled_checkpoint()
    card = bundled_card()
    if announce:
        click.echo(
            f"using the bundled model {card.get('name', path.stem)} "
            f"(fingerprint {card.get('fingerprint', 'unknown')})",
            err=True,
        )
    return str(path)
