#!/usr/bin/env python3
"""Markdown table of the mini recipe: MFCC baseline, untrained and trained encoder, each scored
raw and centred on the test audio's mean, and raw on the test speakers' same-gender list (every
non-target shares the speaker's gender) and same-gender, same-language list, from the
`speakerverify evaluate --json` outputs.

    python local/report.py exp/xvector_mini > exp/xvector_mini/results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SYSTEMS = {
    "mfcc": "MFCC mean/std + cosine",
    "untrained": "untrained encoder",
    "final": "trained encoder (triplet)",
}
VARIANTS = {"scores": "no", "scores_centred": "yes"}
# the test speakers' harder lists: every non-target shares the speaker's gender (and language)
HARD_LISTS = {
    "scores_same_gender": "Same-gender non-targets",
    "scores_same_lang_gender": "Same-gender, same-language non-targets",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exp_dir")
    args = parser.parse_args(argv)
    exp = Path(args.exp_dir)
    rows = [
        f"Mini corpus test trials ({exp.name})",
        "",
        "| system | centred on test mean | EER % | minDCF 0.01 | minDCF 0.05 |",
        "|---|---|---:|---:|---:|",
    ]
    for system, label in SYSTEMS.items():
        for variant, centred in VARIANTS.items():
            path = exp / system / f"{variant}.json"
            if not path.is_file():
                print(f"error: {path}: missing (run stage 6)", file=sys.stderr)
                return 2
            metrics = json.loads(path.read_text())
            rows.append(
                f"| {label} | {centred} | {100 * metrics['eer']:.2f} | "
                f"{metrics['min_dcf_0.01']:.3f} | {metrics['min_dcf_0.05']:.3f} |"
            )
    trials = json.loads((exp / "final" / "scores.json").read_text())
    rows += ["", f"{trials['num_trials']} trials ({trials['num_targets']} target)."]
    for variant, title in HARD_LISTS.items():
        hard = {system: exp / system / f"{variant}.json" for system in SYSTEMS}
        if all(path.is_file() for path in hard.values()):  # runs made before a list lack it
            rows += [
                "",
                f"{title} (raw): "
                + ", ".join(
                    f"{label} {100 * json.loads(hard[system].read_text())['eer']:.2f} %"
                    for system, label in SYSTEMS.items()
                )
                + " EER.",
            ]
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
