"""Helpers shared by the hostile-input tests (tests/test_hostile_*.py): run a command in-process
and assert the one-line `error: ...` contract (exit 2, one stderr line, the named fragments);
make file permissions bind in a subprocess even when the tests run as root."""

from __future__ import annotations

import ctypes
import os

from click.testing import CliRunner

from speakerverify.cli import main


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def file_permissions_bind() -> None:
    """A `preexec_fn` that makes chmod bind on the child process when the tests run as root: it
    drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so the child (still
    uid 0, the owner of the test's files) meets the owner's permission bits like anyone else.
    Not root: nothing to do, permissions bind already. Without CAP_SETPCAP (a container that
    dropped it) nothing is dropped: callers check with `permissions_bind_probe`."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (linux/capability.h)
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            return  # not allowed here: permissions_bind_probe says so, the tests skip


def permissions_bind_probe(tmp_path) -> bool:
    """Whether `file_permissions_bind` makes a child meet chmod here (False where the container
    withholds CAP_SETPCAP from root): a child tries to read a file with mode 000."""
    import subprocess
    import sys

    locked = tmp_path / "probe-locked"
    locked.write_bytes(b"x")
    locked.chmod(0)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", f"open({str(locked)!r}, 'rb')"],
            capture_output=True, preexec_fn=file_permissions_bind, timeout=60,
        )  # fmt: skip
    finally:
        locked.chmod(0o600)
    return probe.returncode != 0
