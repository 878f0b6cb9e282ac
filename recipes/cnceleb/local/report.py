#!/usr/bin/env python3
"""Markdown results table of the CN-Celeb recipe from the `speakerverify evaluate --json` files in
EXP/scores: one row per back-end (cosine, mean subtraction, AS-Norm) on the CN-Celeb1 eval list.

    python local/report.py exp/xvector_triplet > exp/xvector_triplet/results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BACKENDS = {"cosine": "cosine", "mean": "cosine, mean subtracted", "asnorm": "AS-Norm (top N)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exp_dir")
    exp = Path(parser.parse_args(argv).exp_dir)
    rows = [
        f"Results of {exp.name} (CN-Celeb1 eval, enrollment averaged over enroll.map)",
        "",
        "| back-end | trials | EER % | minDCF 0.01 | minDCF 0.05 |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend, label in BACKENDS.items():
        path = exp / "scores" / f"cnc1_eval.{backend}.json"
        if not path.is_file():
            print(f"error: {path}: missing (run stage 6)", file=sys.stderr)
            return 2
        m = json.loads(path.read_text())
        rows.append(
            f"| {label} | {m['num_trials']} | {100 * m['eer']:.2f} | {m['min_dcf_0.01']:.3f} | "
            f"{m['min_dcf_0.05']:.3f} |"
        )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
