#!/usr/bin/env python3
"""Stage 0 of the CN-Celeb recipe: check the corpus layouts, say exactly what is missing and where
to get it. Nothing is downloaded. Exit status 0 when the recipe can run, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

OPENSLR = "https://www.openslr.org/82/"
CNC1_FILES = ("dev/dev.lst", "eval/lists/enroll.lst", "eval/lists/trials.lst",
              "eval/lists/enroll.map")  # fmt: skip


def speaker_dirs(data: str) -> int:
    if not os.path.isdir(data):
        return 0
    return sum(1 for name in os.listdir(data) if name.startswith("id"))


def check_cnc1(root: str, problems: list[str]) -> None:
    if not root:
        problems.append(
            f"CNC1 is not set: download CN-Celeb1 (cn-celeb_v2.tar.gz, {OPENSLR}), unpack it and "
            "set CNC1 to the CN-Celeb_flac directory"
        )
        return
    if speaker_dirs(os.path.join(root, "data")) == 0:
        problems.append(f"CNC1={root}: no {os.path.join(root, 'data')}/idNNNNN directories")
    for name in CNC1_FILES:
        if not os.path.isfile(os.path.join(root, name)):
            problems.append(f"CNC1={root}: {os.path.join(root, name)} is missing")
    if not os.path.isdir(os.path.join(root, "eval", "test")):
        problems.append(f"CNC1={root}: {os.path.join(root, 'eval', 'test')} is missing")


def check_cnc2(root: str, problems: list[str]) -> None:
    if not root:
        problems.append(
            f"CNC2 is not set: download CN-Celeb2 (cn-celeb2_v2.tar.gz, {OPENSLR}), unpack it and "
            "set CNC2 to the CN-Celeb2_flac directory"
        )
    elif speaker_dirs(os.path.join(root, "data")) == 0:
        problems.append(f"CNC2={root}: no {os.path.join(root, 'data')}/idNNNNN directories")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("cnc1", "cnc2", "musan", "rirs"):
        parser.add_argument(f"--{name}", default="")
    args = parser.parse_args(argv)
    problems: list[str] = []
    check_cnc1(args.cnc1, problems)
    check_cnc2(args.cnc2, problems)
    for name, path, url in (("MUSAN", args.musan, "https://www.openslr.org/17/"),
                            ("RIRS", args.rirs, "https://www.openslr.org/28/")):  # fmt: skip
        if not path:
            print(f"{name} not set: training without it ({url})")
        elif not os.path.isdir(path):
            problems.append(f"{name}={path}: not a directory (get it from {url})")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print("corpora found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
