#!/usr/bin/env python3
"""Stage 0 of the VoxCeleb recipe: check the corpus layouts, say exactly what is missing and where
to get it. Nothing is downloaded. Exit status 0 when training can start, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

SPEAKER = re.compile(r"^id\d{5}$")
VOX_PAGE = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/"
META = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/"
EXPECTED = {"VoxCeleb1": 1251, "VoxCeleb2 dev": 5994}


def count_speakers(tree: str) -> int:
    if not os.path.isdir(tree):
        return 0
    return sum(1 for name in os.listdir(tree) if SPEAKER.match(name))


def check_vox1(root: str, problems: list[str], notes: list[str]) -> None:
    if not root:
        problems.append(
            f"VOX1 is not set: download VoxCeleb1 (dev and test wav, {VOX_PAGE}vox1.html), unpack "
            "both into one directory holding wav/idNNNNN/..., and set VOX1 to it"
        )
        return
    num = count_speakers(os.path.join(root, "wav"))
    if num == 0:
        problems.append(
            f"VOX1={root}: no {os.path.join(root, 'wav')}/idNNNNN directories (VoxCeleb1 wav)"
        )
    elif num < EXPECTED["VoxCeleb1"]:
        notes.append(f"VOX1: {num} speakers (the full VoxCeleb1 has {EXPECTED['VoxCeleb1']})")


def check_vox2(root: str, problems: list[str], notes: list[str]) -> None:
    if not root:
        problems.append(
            f"VOX2 is not set: download VoxCeleb2 dev (m4a, {VOX_PAGE}vox2.html), unpack it so "
            "that dev/aac/idNNNNN/... exists, and set VOX2 to that directory"
        )
        return
    num = max(count_speakers(os.path.join(root, "dev", d)) for d in ("aac", "wav"))
    if num == 0:
        problems.append(
            f"VOX2={root}: no {os.path.join(root, 'dev', 'aac')}/idNNNNN directories "
            "(VoxCeleb2 dev m4a) and no converted dev/wav/"
        )
    elif num < EXPECTED["VoxCeleb2 dev"]:
        notes.append(
            f"VOX2: {num} speakers (the full VoxCeleb2 dev has {EXPECTED['VoxCeleb2 dev']})"
        )


def check_lists(paths: list[str], problems: list[str]) -> None:
    for path in paths:
        if not os.path.isfile(path):
            name = os.path.basename(path) or path
            problems.append(f"trial list {path} missing: get {META}{name} (or set VOX1_O/E/H)")


def check_optional(
    label: str, root: str, subdirs: tuple[str, ...], url: str, problems: list[str], notes: list[str]
) -> None:
    if not root:
        notes.append(f"{label} not set: training runs without it ({url})")
        return
    candidates = [root]
    if os.path.isdir(root):  # the corpus directory itself or its parent
        candidates += [os.path.join(root, d) for d in sorted(os.listdir(root))]
    for base in candidates:
        if all(os.path.isdir(os.path.join(base, sub)) for sub in subdirs):
            return
    problems.append(f"{label}={root}: expected {', '.join(s + '/' for s in subdirs)} in it ({url})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vox1", default="")
    parser.add_argument("--vox2", default="")
    parser.add_argument("--musan", default="")
    parser.add_argument("--rirs", default="")
    parser.add_argument("--lists", nargs="*", default=[], help="trial list files to be scored")
    args = parser.parse_args(argv)
    problems: list[str] = []
    notes: list[str] = []
    check_vox1(args.vox1, problems, notes)
    check_vox2(args.vox2, problems, notes)
    if args.vox1:
        check_lists(args.lists, problems)
    check_optional("MUSAN", args.musan, ("music", "speech", "noise"),
                   "https://www.openslr.org/17/", problems, notes)  # fmt: skip
    check_optional("RIRS", args.rirs, ("simulated_rirs",), "https://www.openslr.org/28/",
                   problems, notes)  # fmt: skip
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("corpora OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
