"""One error base: every project error derives from `SpeakerVerifyError`, and the CLI turns
exactly that base into `error: <one line>` / exit 2, while a bug keeps its traceback."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from speakerverify.cli import main
from speakerverify.errors import SpeakerVerifyError

PACKAGE = Path(__file__).resolve().parent.parent / "speakerverify"
# Control flow, not an error: `train` reports it as "interrupted" with exit 128 + signal.
NOT_ERRORS = {"TrainingInterrupted"}


def project_exception_classes() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Interrupted")):
                found.append((module, node.name))
    return found


def test_every_project_error_derives_from_the_one_base():
    classes = project_exception_classes()
    assert len(classes) >= 15  # AudioError, ConfigError, CheckpointError, StoreError, ...
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        if name in NOT_ERRORS:
            assert not issubclass(cls, SpeakerVerifyError), name
        else:
            assert issubclass(cls, SpeakerVerifyError), f"{module}.{name}"


def test_errors_that_were_value_errors_still_are():
    from speakerverify.backend.embedding_dir import UnknownUtteranceError
    from speakerverify.config import ConfigError
    from speakerverify.data import DataDirError, TrialsError

    assert issubclass(ConfigError, ValueError) and issubclass(TrialsError, ValueError)
    assert issubclass(DataDirError, ValueError)
    assert issubclass(UnknownUtteranceError, KeyError)
    assert str(UnknownUtteranceError("2 utterance(s) missing")) == "2 utterance(s) missing"


@pytest.fixture
def broken_command(monkeypatch):
    """Make `speakerverify prepare musan` raise what the test asks for."""
    import speakerverify.data.noise as noise

    def install(error: BaseException) -> None:
        def prepare_musan(root, out):
            raise error

        monkeypatch.setattr(noise, "prepare_musan", prepare_musan)

    return install


def test_cli_reports_a_project_error_as_one_line(broken_command, tmp_path):
    broken_command(SpeakerVerifyError("first line\nsecond line"))
    result = CliRunner().invoke(main, ["prepare", "musan", str(tmp_path), str(tmp_path / "i")])
    assert result.exit_code == 2
    assert result.output == "error: first line\n"


@pytest.mark.parametrize("bug", [ValueError("bug"), KeyError("bug"), OSError("bug")])
def test_cli_lets_a_bug_show_its_traceback(broken_command, tmp_path, bug):
    broken_command(bug)
    result = CliRunner().invoke(main, ["prepare", "musan", str(tmp_path), str(tmp_path / "i")])
    assert result.exit_code == 1 and result.exception is bug
    assert "error:" not in result.output
