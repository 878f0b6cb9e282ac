"""The speaker commands in real processes: --help is fast and documents the exit status, exit
codes, no torch for store-only work, and a real (tiny, untrained) checkpoint end to end,
including a kill inside the enroll transaction.

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from command_helpers import (
    KILL_IN_TRANSACTION,
    SPEAKERVERIFY,
    run,
)
from speaker_helpers import store_rows


def test_help_is_fast_and_documents_exit_status():
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*SPEAKERVERIFY, "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    assert proc.returncode == 0, proc.stderr
    assert "enroll" in proc.stdout and "verify" in proc.stdout
    # CPU time is what we control; wall time also counts the other jobs sharing the machine.
    assert cpu < 0.5, f"speakerverify --help used {cpu:.2f} s of CPU"
    assert elapsed < 5.0, f"speakerverify --help took {elapsed:.2f} s"
    verify_help = subprocess.run(
        [*SPEAKERVERIFY, "verify", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "0 accepted, 1 rejected, 2 usage or input error" in verify_help.stdout


def test_subprocess_exit_code_for_errors(tmp_path):
    store = tmp_path / "broken.db"
    store.write_bytes(b"definitely not sqlite")
    env = {**os.environ, "SPEAKERVERIFY_STORE": str(store)}
    proc = subprocess.run(
        [*SPEAKERVERIFY, "speakers", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {store}: not a speaker store (not an SQLite database)\n"


@pytest.mark.parametrize(
    "command",
    [["speakers", "list"], ["verify", "zed", "x.wav", "--model", "m.pt", "--threshold", "0"]],
)
def test_store_only_work_does_not_import_torch(enrolled, command):
    """Listing, and refusing an unknown speaker, answer before any model is loaded."""
    code = (
        "import sys; from speakerverify.cli import main\n"
        "try:\n    main(sys.argv[2:] + ['--store', sys.argv[1]])\n"
        "except SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(enrolled), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 speaker(s)" in proc.stdout or "no enrolled speaker named 'zed'" in proc.stderr


def test_real_checkpoint_enroll_verify_with_calibration(checkpoint, voices, tmp_path):
    from speakerverify.backend.calibration import Calibration

    model, fingerprint = checkpoint
    store = tmp_path / "s.db"
    enrolled = run(
        [
            "enroll",
            "ann",
            voices["ann0"],
            voices["ann1"],
            "--model",
            model,
            "--store",
            store,
            "--json",
        ]
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["model_fingerprint"] == fingerprint
    calibration = tmp_path / "cal.json"
    Calibration(slope=4.0, offset=-2.0, model_fingerprint=fingerprint).save(calibration)
    argv = ["verify", "ann", voices["ann2"], "--model", model, "--store", store,
            "--calibration", calibration, "--json"]  # fmt: skip
    result = run(argv)
    payload = json.loads(result.stdout)
    assert (
        payload["threshold"]["source"] == "calibration" and payload["threshold"]["p_target"] == 0.5
    )
    assert payload["llr"] == pytest.approx(4.0 * payload["score"] - 2.0)
    assert result.exit_code == (0 if payload["llr"] >= 0 else 1)
    # The same file twice gives the same score: no randomness at inference.
    again = json.loads(run(argv).stdout)
    assert again["score"] == payload["score"]


def test_real_processes_exit_codes(checkpoint, voices, tmp_path):
    model, _ = checkpoint
    store = tmp_path / "s.db"
    env = {**os.environ, "SPEAKERVERIFY_MODEL": str(model), "SPEAKERVERIFY_STORE": str(store)}

    def speakerverify(*args):
        return subprocess.run(
            [*SPEAKERVERIFY, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
        )

    enrolled = run(["enroll", "ann", voices["ann0"], voices["ann1"]], env=env)
    assert enrolled.exit_code == 0, enrolled.output
    accepted = speakerverify("verify", "ann", voices["ann2"], "--threshold", "-1")
    rejected = speakerverify("verify", "ann", voices["ann2"], "--threshold", "1.01")
    broken = speakerverify("verify", "ann", voices["text"], "--threshold", "0")
    assert (accepted.returncode, rejected.returncode, broken.returncode) == (0, 1, 2)
    assert "decision:  ACCEPT" in accepted.stdout and "decision:  REJECT" in rejected.stdout
    assert broken.stderr.startswith(f"error: {voices['text']}: ") and broken.stdout == ""
    assert "Traceback" not in broken.stderr and broken.stderr.count("\n") == 1


PROGRAM_WITH_HOOKS = """
import atexit, sys
from speakerverify.cli import main
atexit.register(lambda: print("atexit ran", file=sys.stderr))
class Teardown:
    def __del__(self):
        print("teardown ran", file=sys.stderr)
kept = Teardown()  # freed only by the interpreter's teardown
sys.exit(main())  # as the installed `speakerverify` script: arguments from sys.argv
"""


def test_speaker_commands_exit_without_teardown_but_with_output_and_atexit(
    checkpoint, voices, tmp_path
):
    """Run as the program, verify skips the interpreter's teardown (0.04-0.05 s of a cold
    verify) yet flushes all its output, runs atexit handlers and keeps its exit status; other
    commands exit as usual."""
    model, _ = checkpoint
    command = [sys.executable, "-c", PROGRAM_WITH_HOOKS]
    verify = ["verify", str(voices["ann0"]), str(voices["ann1"]), "--model", str(model), "--json"]
    for threshold, status in (("-1", 0), ("1.01", 1)):
        proc = subprocess.run(
            [*command, *verify, "--threshold", threshold], capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == status, proc.stderr
        assert json.loads(proc.stdout)["accepted"] is (status == 0)
        assert "atexit ran" in proc.stderr and "teardown ran" not in proc.stderr
    broken = subprocess.run(
        [*command, "verify", "ann", str(tmp_path / "missing.wav"), "--model", str(model)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert broken.returncode == 2 and broken.stderr.startswith("error: ")
    assert "atexit ran" in broken.stderr and "teardown ran" not in broken.stderr
    listed = subprocess.run(
        [*command, "speakers", "list", "--store", str(tmp_path / "none.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "teardown ran" in listed.stderr


def test_enroll_killed_inside_its_transaction_leaves_store_as_before(checkpoint, voices, tmp_path):
    model, _ = checkpoint
    store = tmp_path / "s.db"
    assert (
        run(
            [
                "enroll",
                "ann",
                voices["ann0"],
                "--model",
                model,
                "--store",
                store,
                "--min-speech",
                "1",
            ]
        ).exit_code
        == 0
    )
    before = store_rows(store)
    for name in ("ann", "bo"):  # an update of an existing speaker, and a new one
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                KILL_IN_TRANSACTION,
                "enroll",
                name,
                str(voices["bo0"]),
                str(voices["bo1"]),
                "--model",
                str(model),
                "--store",
                str(store),
            ],
            capture_output=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # store_faults
        )
        assert proc.returncode == -9, proc.stderr
        assert store_rows(store) == before
    listed = json.loads(run(["speakers", "list", "--store", store, "--json"]).stdout)
    assert [(s["name"], s["num_utterances"]) for s in listed["speakers"]] == [("ann", 1)]
