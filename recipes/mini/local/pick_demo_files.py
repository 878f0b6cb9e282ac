#!/usr/bin/env python3
"""Print the 8 audio paths the CLI demo uses, one per line, from a test data dir.

Lines 1-2: two files of one session of speaker A (enrollment); 3-4 and 5-6: the same for speakers
B and C; 7: a file of A from another session (genuine); 8: a file of speaker D (impostor).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: pick_demo_files.py DATA_DIR", file=sys.stderr)
        return 2
    from speakerverify.data.datadir import DataDir

    data = DataDir.load(argv[0])
    picks: list[str] = []
    speakers = data.speakers
    if len(speakers) < 4:
        print(
            f"error: {argv[0]}: the demo needs 4 speakers, found {len(speakers)}", file=sys.stderr
        )
        return 2
    genuine = None
    for speaker in speakers[:3]:
        sessions: dict[str, list[str]] = {}
        for utt in data.spk2utt[speaker]:
            sessions.setdefault(utt.split("/")[1], []).append(utt)
        ordered = sorted(sessions.values(), key=len, reverse=True)
        enroll = ordered[0][:2] if len(ordered[0]) >= 2 else [ordered[0][0], ordered[1][0]]
        picks += [data.wav[u] for u in enroll]
        if genuine is None:
            others = [
                u for group in ordered for u in group if u.split("/")[1] != enroll[0].split("/")[1]
            ]
            genuine = data.wav[(others or [u for u in data.spk2utt[speaker] if u not in enroll])[0]]
    picks.append(genuine)
    picks.append(data.wav[data.spk2utt[speakers[3]][0]])
    print("\n".join(picks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
