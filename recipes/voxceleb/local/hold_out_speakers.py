#!/usr/bin/env python3
"""Split a data dir into training speakers and held-out speakers, with a trial list on the latter.

Calibration must be fitted on speakers the encoder never saw (scores of training speakers are
overconfident), yet it should come from the training domain, not the test lists; so the recipes
hold out a few training speakers and make a balanced VoxCeleb-format trial list from them.

    python local/hold_out_speakers.py data/vox2_dev data/train data/heldout \
        --trials data/heldout/trials.txt --num-speakers 200 --num-trials 20000
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="the full training data dir")
    parser.add_argument("--extra", action="append", default=[], help="more data dirs to merge")
    parser.add_argument("train_out", help="data dir of the remaining (training) speakers")
    parser.add_argument("heldout_out", help="data dir of the held-out speakers")
    parser.add_argument("--trials", required=True, help="VoxCeleb-format trial list to write")
    parser.add_argument("--num-speakers", type=int, default=200, help="speakers held out")
    parser.add_argument("--num-trials", type=int, default=20000, help="half targets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np

    from speakerverify.data.datadir import DataDir, DataDirError
    from speakerverify.data.trials import Trials, write_trials

    try:
        data = DataDir.load(args.data_dir)
        for extra in args.extra:
            more = DataDir.load(extra)
            clash = set(more.wav) & set(data.wav)
            if clash:
                raise DataDirError(f"{extra}: {len(clash)} utt ids also in {args.data_dir}")
            data = DataDir(
                wav={**data.wav, **more.wav},
                utt2spk={**data.utt2spk, **more.utt2spk},
                utt2dur={**data.utt2dur, **more.utt2dur}
                if data.utt2dur is not None and more.utt2dur is not None
                else None,
            )
    except DataDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    speakers = data.speakers
    spk2utt = data.spk2utt
    eligible = [s for s in speakers if len(spk2utt[s]) >= 2]
    if len(eligible) < max(args.num_speakers, 2) or len(speakers) - args.num_speakers < 2:
        print(
            f"error: {args.data_dir}: {len(speakers)} speakers ({len(eligible)} with >= 2 utts) "
            f"cannot spare {args.num_speakers}",
            file=sys.stderr,
        )
        return 2
    held = sorted(rng.choice(eligible, size=args.num_speakers, replace=False).tolist())
    held_set = set(held)
    data.subset(u for u in data.utt_ids if data.utt2spk[u] not in held_set).save(args.train_out)
    heldout = data.subset(u for u in data.utt_ids if data.utt2spk[u] in held_set)
    heldout.save(args.heldout_out)

    half = args.num_trials // 2
    enroll, test, labels = [], [], []
    pairs: set[tuple[str, str]] = set()
    utts = heldout.utt_ids
    for want_target in (True, False):
        attempts = 0
        while sum(1 for lab in labels if lab == want_target) < half and attempts < 50 * half:
            attempts += 1
            if want_target:
                speaker = held[int(rng.integers(len(held)))]
                a, b = rng.choice(spk2utt[speaker], size=2, replace=False).tolist()
            else:
                a, b = (utts[i] for i in rng.choice(len(utts), size=2, replace=False))
                if heldout.utt2spk[a] == heldout.utt2spk[b]:
                    continue
            if (a, b) in pairs or (b, a) in pairs:
                continue
            pairs.add((a, b))
            enroll.append(a)
            test.append(b)
            labels.append(want_target)
    trials = Trials(enroll, test, np.asarray(labels, dtype=np.int8), name="heldout")
    write_trials(args.trials, trials)
    print(
        f"held out {len(held)} of {len(speakers)} speakers ({len(heldout)} utts) -> "
        f"{args.heldout_out}; {len(trials)} trials ({int(trials.labels.sum())} targets) -> "
        f"{args.trials}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
