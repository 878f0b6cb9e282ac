#!/usr/bin/env python3
"""Write `spk2gender` and `spk2lang` into a data dir from the synthetic corpus's `speakers.tsv`,
so `speakerverify prepare trials --same gender` can pair impostors of one gender (and language).

    python local/speaker_attributes.py CORPUS/speakers.tsv DATA_DIR
"""

from __future__ import annotations

import argparse
import csv
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("speakers_tsv")
    parser.add_argument("data_dir")
    args = parser.parse_args(argv)

    from speakerverify.data import DataDir
    from speakerverify.data.attributes import write_attributes
    from speakerverify.errors import SpeakerVerifyError

    try:
        speakers = set(DataDir.load(args.data_dir).utt2spk.values())
        with open(args.speakers_tsv, newline="") as handle:
            rows = {row["spk_id"]: row for row in csv.DictReader(handle, delimiter="\t")}
        missing = sorted(speakers - set(rows))
        if missing:
            print(f"error: {args.speakers_tsv}: no row for {missing[0]}", file=sys.stderr)
            return 2
        write_attributes(
            args.data_dir,
            {
                "spk2gender": {s: rows[s]["gender"] for s in sorted(speakers)},
                "spk2lang": {s: rows[s]["language"] for s in sorted(speakers)},
            },
        )
    except (SpeakerVerifyError, OSError, KeyError) as error:
        print(f"error: {args.speakers_tsv}: {error}", file=sys.stderr)
        return 2
    print(f"{args.data_dir}: spk2gender, spk2lang for {len(speakers)} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
