"""Run by tests/test_hostile_paths.py in a subprocess (a command that blocked on a FIFO would
otherwise hang the test run): every command over every hostile path, in-process with click's
CliRunner; prints one JSON line per case that is not a one-line error (exit 2) or that changed
a file. The test runs it with file permissions binding even for root
(`hostile_helpers.file_permissions_bind`). Usage: python hostile_paths_walk.py WORKDIR FIXTURES"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from click.testing import CliRunner

from speakerverify.cli import main


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            found[path] = (info.st_mtime_ns, info.st_size)
    return found


def hostile_paths(work: Path) -> dict[str, str]:
    os.mkfifo(work / "fifo")
    (work / "devices").mkdir()
    (work / "devices" / "null").symlink_to(work / "fifo")  # what /dev/null is to a reader
    (work / "loop").symlink_to(work / "loop")
    (work / "directory").mkdir()
    (work / "locked").mkdir()
    (work / "locked" / "file").write_bytes(b"RIFF")
    (work / "unreadable").write_bytes(b"RIFF")
    for path in (work / "locked", work / "unreadable"):
        path.chmod(0)
    paths = {
        "fifo": str(work / "fifo"),
        "device": str(work / "devices" / "null"),
        "symlink_loop": str(work / "loop"),
        "directory": str(work / "directory"),
        "long_name": str(work / ("x" * 300)),
        "non_utf8_name": os.fsdecode(os.fsencode(work) + b"/\xff\xfe.wav"),
        "missing": str(work / "missing"),
        "unsearchable": str(work / "locked" / "file"),
        "unreadable": str(work / "unreadable"),
    }
    try:
        os.stat(work / "locked" / "file")
    except PermissionError:
        pass
    else:  # root whose container keeps chmod from binding (see hostile_helpers): the test skips
        print(json.dumps({"skipped": "file permissions do not bind on this process"}))
        del paths["unsearchable"], paths["unreadable"]
    return paths


def commands(f: Path, out: Path) -> dict[str, list[str]]:
    model = ["--model", str(f / "m.pt")]
    store = ["--store", str(f / "s.db")]
    return {
        "enroll WAV": ["enroll", "zed", "{}", *model, *store],
        "verify NAME WAV": ["verify", "ann", "{}", "--threshold", "0.5", *model, *store],
        "verify WAV1 WAV": ["verify", str(f / "a0.wav"), "{}", "--threshold", "0.5", *model],
        "identify WAV": ["identify", "{}", "--threshold", "0.5", *model, *store],
        "verify --model": [
            "verify",
            "ann",
            str(f / "a1.wav"),
            "--threshold",
            "0.5",
            "--model",
            "{}",
            *store,
        ],
        "verify --store": [
            "verify",
            "ann",
            str(f / "a1.wav"),
            "--threshold",
            "0.5",
            *model,
            "--store",
            "{}",
        ],
        "verify --calibration": [
            "verify",
            "ann",
            str(f / "a1.wav"),
            *model,
            *store,
            "--calibration",
            "{}",
        ],
        "adapt --embeddings": ["adapt", "--embeddings", "{}", *store],
        "score TRIALS": ["score", "{}", str(f / "emb"), "--out", str(out / "s.txt")],
        "score STORE": ["score", str(f / "trials.txt"), "{}", "--out", str(out / "s.txt")],
        "evaluate SCORES": ["evaluate", str(f / "trials.txt"), "{}"],
        "calibrate TRIALS": [
            "calibrate",
            "{}",
            str(f / "scores.txt"),
            *model,
            "--out",
            str(out / "c.json"),
        ],
        "prepare trials": ["prepare", "trials", "{}", str(out / "t.txt")],
        "model info": ["model", "info", "{}"],
        "average": ["average", "{}", "--out", str(out / "avg.pt")],
        "speakers list": ["speakers", "list", "--store", "{}"],
        "train CONFIG": ["train", "{}", "--exp-dir", str(out / "exp")],
    }


def main_walk(work: Path, fixtures: Path) -> None:
    paths = hostile_paths(work)
    out = work / "out"
    out.mkdir()
    keep = os.open(work / "fifo", os.O_RDWR | os.O_NONBLOCK)  # a writer exists: no EOF
    env = {"SPEAKERVERIFY_BACKEND": "torch", "SPEAKERVERIFY_MODEL": "", "SPEAKERVERIFY_STORE": ""}

    def hung(signum, frame):
        raise TimeoutError("blocked")

    signal.signal(signal.SIGALRM, hung)
    for name, template in commands(fixtures, out).items():
        for kind, path in paths.items():
            args = [path if a == "{}" else a for a in template]
            before = snapshot(work) | snapshot(fixtures)
            signal.alarm(20)
            try:
                result = CliRunner().invoke(main, args, env=env)
            except TimeoutError:
                result = None
            finally:
                signal.alarm(0)
            after = snapshot(work) | snapshot(fixtures)
            changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
            problem = None
            if result is None:
                problem = "blocked for 20 s"
            elif result.exit_code != 2:
                problem = f"exit {result.exit_code} {result.exception!r}"[:300]
            elif isinstance(result.exception, Exception) or "Traceback" in result.output:
                problem = f"traceback {type(result.exception).__name__}"
            elif not (
                (result.stderr.startswith("error: ") and result.stderr.count("\n") == 1)
                or result.stderr.startswith("Usage:")  # click's own usage errors
            ):
                problem = f"stderr {result.stderr!r}"
            if changed:
                problem = f"{problem or 'exit 2'}; changed {changed}"
            if problem:
                stderr = result.stderr.strip()[-160:] if result is not None else ""
                print(json.dumps({"command": name, "path": kind, "problem": problem,
                                  "stderr": stderr}), flush=True)  # fmt: skip
    os.close(keep)


if __name__ == "__main__":
    main_walk(Path(sys.argv[1]), Path(sys.argv[2]))
