#!/usr/bin/env python3
"""Write `spk2gender`, `spk2lang` and `spk2generator` into a data dir from the synthetic corpora's
`speakers.tsv` files (eSpeak, and Kokoro when used), so `speakerverify prepare trials --same
gender` can pair impostors of one gender (and language, and synthesiser). The synthesiser is the
`generator` of the `corpus.json` beside each table (`espeak` when it names none, as the eSpeak
corpus' does).

    python local/speaker_attributes.py DATA_DIR CORPUS/speakers.tsv [KOKORO/speakers.tsv ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys


def _generator(speakers_tsv: str) -> str:
    """The synthesiser named by the corpus.json beside `speakers_tsv` (`espeak` by default)."""
    settings = os.path.join(os.path.dirname(os.path.abspath(speakers_tsv)), "corpus.json")
    if not os.path.exists(settings):
        return "espeak"
    with open(settings) as handle:
        return str(json.load(handle).get("generator", "espeak"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("speakers_tsv", nargs="+")
    args = parser.parse_args(argv)

    from speakerverify.data import DataDir
    from speakerverify.data.attributes import write_attributes
    from speakerverify.errors import SpeakerVerifyError

    try:
        speakers = set(DataDir.load(args.data_dir).utt2spk.values())
        rows, generators = {}, {}
        for path in args.speakers_tsv:
            generator = _generator(path)
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle, delimiter="\t"):
                    rows[row["spk_id"]], generators[row["spk_id"]] = row, generator
        missing = sorted(speakers - set(rows))
        if missing:
            tables = " or ".join(args.speakers_tsv)
            print(f"error: {tables}: no row for {missing[0]}", file=sys.stderr)
            return 2
        write_attributes(
            args.data_dir,
            {
                "spk2gender": {s: rows[s]["gender"] for s in sorted(speakers)},
                "spk2lang": {s: rows[s]["language"] for s in sorted(speakers)},
                "spk2generator": {s: generators[s] for s in sorted(speakers)},
            },
        )
    except (SpeakerVerifyError, OSError, KeyError, ValueError) as error:
        print(f"error: {' '.join(args.speakers_tsv)}: {error}", file=sys.stderr)
        return 2
    print(f"{args.data_dir}: spk2gender, spk2lang, spk2generator for {len(speakers)} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
