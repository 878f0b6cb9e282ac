"""Test doubles shared by the speaker-command tests (test_verification, speaker_commands/): a
deterministic stand-in for a trained encoder and a dump of a speaker store's tables."""

from __future__ import annotations

import os
import sqlite3

import numpy as np

FP = "feedfacefeedface"


class SpectrumEmbedder:
    """Log band energies minus their mean: speakers with different formants differ."""

    def embed_waveform(self, wave) -> np.ndarray:
        x = np.asarray(wave, dtype=np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
        power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)[1:257]
        bands = np.log(power.reshape(32, 8).sum(axis=1) + 1e-10)
        return (bands - bands.mean()).astype(np.float32)


def store_rows(path: str | os.PathLike) -> list:
    """Every row of the store's `meta` and `speakers` tables, to assert a store is unchanged."""
    conn = sqlite3.connect(str(path))
    try:
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("meta", "speakers")
        ]
    finally:
        conn.close()
