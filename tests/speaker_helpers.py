"""Test doubles shared by the speaker-command tests (speakers/, speaker_commands/): a
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


def write_domain_audio(directory, num_speakers: int = 6, files_each: int = 4, seed: int = 11):
    """Unlabelled in-domain recordings for `adapt`: `num_speakers` x `files_each` 1.5 s files
    (24 by default, above the adapted rule's minimum of 20). Returns the paths."""
    from pathlib import Path

    import soundfile as sf

    from speakerverify.testing import random_speaker, speech_like

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(num_speakers):
        speaker = random_speaker(rng)
        for u in range(files_each):
            path = directory / f"d{s}_{u}.wav"
            sf.write(path, speech_like(1.5, 16000, speaker, seed=1000 * seed + 10 * s + u), 16000)
            paths.append(path)
    return paths
