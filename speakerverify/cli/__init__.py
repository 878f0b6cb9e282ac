"""The `speakerverify` command: a Click group whose subcommands are imported on first use.

Each area keeps its commands in its own module under `speakerverify.cli`; heavy imports (torch,
torchaudio, librosa) happen inside command bodies so that `speakerverify --help` stays instant.
The group is the one place that turns the library's input errors (`SpeakerVerifyError`) into
`error: <one line>` and exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import threading
from typing import Any, NoReturn

import click

from speakerverify import __version__
from speakerverify.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, fail, first_line
from speakerverify.errors import SpeakerVerifyError

# command name -> "module:attribute" (module relative to speakerverify.cli)
COMMANDS: dict[str, str] = {
    "prepare": "prepare:prepare",
    "train": "training:train",
    "average": "training:average",
    "fuse": "training:fuse",
    "embed": "evaluation:embed",
    "score": "evaluation:score",
    "calibrate": "evaluation:calibrate",
    "evaluate": "evaluation:evaluate",
    "enroll": "enroll:enroll",
    "verify": "verify:verify",
    "identify": "identify:identify",
    "speakers": "speakers:speakers",
    "adapt": "adapt:adapt",
    "model": "model:model",
}
# The commands that embed a few utterances with the command model (`backend/engine.py`): one CPU
# thread unless OMP_NUM_THREADS is set, for numpy's BLAS as for torch and onnxruntime; run as the
# program, they exit without the interpreter's teardown (`exit_without_teardown`).
ONE_THREAD_COMMANDS = frozenset({"enroll", "verify", "identify", "adapt"})


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is needed."""

    def main(self, args: Any = None, **extra: Any) -> Any:
        if args is not None or not extra.get("standalone_mode", True):
            return super().main(args, **extra)  # called from code (CliRunner): as click does
        try:
            return super().main(args, **extra)
        except SystemExit as done:
            if _command_name(sys.argv[1:]) in ONE_THREAD_COMMANDS:
                exit_without_teardown(done.code)
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        if cmd_name in ONE_THREAD_COMMANDS:
            one_blas_thread()
        module = importlib.import_module(f"speakerverify.cli.{module_name}")
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> object:
        previous = _exit_on_sigterm()
        try:
            return super().invoke(ctx)
        except SpeakerVerifyError as error:
            fail(first_line(error))
        except KeyboardInterrupt:
            # not click's "Aborted!" and status 1, which verify uses for "rejected"
            fail("interrupted", EXIT_INTERRUPTED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def one_blas_thread() -> None:
    """Give numpy's OpenBLAS one thread unless OMP_NUM_THREADS (which it honours) is set. By
    default it starts a thread per core when numpy is imported, and they spin after each call:
    for one utterance that cost 0.04-0.06 s of CPU and nothing saved (bench_cli.py). Only takes
    effect before numpy is imported, which the speaker commands' modules do."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _command_name(argv: list[str]) -> str | None:
    """The subcommand of a command line (the group's own options take no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def exit_without_teardown(code: Any) -> NoReturn:
    """`sys.exit(code)` without the interpreter's teardown, which freed every module and object
    one by one (0.04-0.05 s of CPU after a cold verify on the fast path, in bench_cli.py) only
    for the OS to free the process. What a normal exit does that matters still happens: the
    atexit handlers run and stdout and stderr are flushed. While another Python thread runs, or
    if a flush fails (a closed pipe), it is the normal exit."""
    if threading.active_count() > 1:
        raise SystemExit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit("message") does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(status) from None
    os._exit(status)


def _exit_on_sigterm() -> object:
    """Make SIGTERM raise SystemExit(143) while a command runs, so that what a Ctrl-C cleans up
    (the temp file of an atomic write, an open store transaction) is cleaned up too; returns
    the handler to restore (None off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(EXIT_TERMINATED)

    return signal.signal(signal.SIGTERM, terminate)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="speakerverify")
def main() -> None:
    """Speaker verification: prepare data, train, embed, score, enroll and verify speakers.

    \b
    Exit status: 0 success (verify: accepted), 1 rejected (verify), 2 usage or input error,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
