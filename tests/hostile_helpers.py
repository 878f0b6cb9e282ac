"""Helpers shared by the hostile-input tests (tests/test_hostile_*.py): run a command in-process
and assert the one-line `error: ...` contract (exit 2, one stderr line, the named fragments)."""

from __future__ import annotations

from click.testing import CliRunner

from speakerverify.cli import main


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
