#!/usr/bin/env python3
"""Where do two sets of recordings differ in what the encoder sees? Per mel band: the spread of
the log-mel features over time (after CMN) and the mean frame-to-frame change, for each set.

    python tools/compare_features.py REAL_DIR SYNTH_DIR [--every 5] [--noise-floor-db -30]
        [--channel]   # also play the second set through a simulated channel per file

Each directory is searched recursively for .wav/.flac files; every `--every`-th file is used.
This is how the synthetic-vs-real gaps in recipes/mini/README.md were measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BANDS = (0, 10, 20, 30, 40, 50, 60, 70, 79)


def band_statistics(files, frontend, channel=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean over files of the per-band std over time and of the per-band mean |delta|."""
    import torch

    from speakerverify.frontend.audio import load_audio

    rng = np.random.default_rng(0)
    spreads, deltas = [], []
    for path in files:
        wave = load_audio(path, 16000).numpy()
        if channel is not None:
            wave = channel(wave, rng)
        feats, _ = frontend(torch.from_numpy(np.ascontiguousarray(wave)))
        frames = feats[0].numpy()
        spreads.append(frames.std(axis=0))
        deltas.append(np.abs(np.diff(frames, axis=0)).mean(axis=0))
    return np.mean(spreads, axis=0), np.mean(deltas, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="directories of audio files")
    parser.add_argument("--every", type=int, default=5, help="use every N-th file")
    parser.add_argument("--noise-floor-db", type=float, default=None)
    parser.add_argument("--channel", action="store_true", help="simulate a channel per file")
    args = parser.parse_args()
    import torch

    from speakerverify.data.simulate import ChannelSimulator
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.frontend.features import Fbank

    torch.set_num_threads(1)
    frontend = Fbank(FbankConfig(noise_floor_db=args.noise_floor_db)).eval()
    print(f"{'set':<40} {'files':>5}  std over time at mel bands {list(BANDS)}")
    for directory in args.dirs:
        files = sorted(p for p in Path(directory).rglob("*") if p.suffix in (".wav", ".flac"))
        files = files[:: args.every]
        for channel in (None, ChannelSimulator()) if args.channel else (None,):
            spread, delta = band_statistics(files, frontend, channel)
            name = directory + (" + channel" if channel is not None else "")
            print(f"{name[-40:]:<40} {len(files):>5}  {np.round(spread[list(BANDS)], 2)}")
            print(f"{'  mean |frame delta|':<40} {'':>5}  {np.round(delta[list(BANDS)], 2)}")


if __name__ == "__main__":
    main()
