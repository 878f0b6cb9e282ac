#!/usr/bin/env python3
"""Markdown results table of the VoxCeleb recipe from the `speakerverify evaluate --json` files
in EXP/scores: one row per trial list and back-end (cosine, mean subtraction, AS-Norm).

    python local/report.py exp/xvector_triplet vox1_o vox1_e vox1_h > exp/xvector_triplet/results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LISTS = {"vox1_o": "Vox1-O (cleaned)", "vox1_e": "Vox1-E (cleaned)", "vox1_h": "Vox1-H (cleaned)"}
BACKENDS = {"cosine": "cosine", "mean": "cosine, mean subtracted", "asnorm": "AS-Norm (top N)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exp_dir")
    parser.add_argument("lists", nargs="+", choices=sorted(LISTS))
    args = parser.parse_args(argv)
    exp = Path(args.exp_dir)
    rows = [
        f"Results of {exp.name}",
        "",
        "| trial list | back-end | trials | EER % | minDCF 0.01 | minDCF 0.05 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in args.lists:
        for backend, label in BACKENDS.items():
            path = exp / "scores" / f"{name}.{backend}.json"
            if not path.is_file():
                print(f"error: {path}: missing (run stage 6)", file=sys.stderr)
                return 2
            m = json.loads(path.read_text())
            rows.append(
                f"| {LISTS[name]} | {label} | {m['num_trials']} | {100 * m['eer']:.2f} | "
                f"{m['min_dcf_0.01']:.3f} | {m['min_dcf_0.05']:.3f} |"
            )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
