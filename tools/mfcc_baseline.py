#!/usr/bin/env python3
"""The no-training baseline: each utterance is the mean and std of its MFCCs, compared by cosine.

Writes an embedding store (`embeddings.npy`, `utt_ids.txt`, `meta.json`), so `speakerverify score`
can treat it like any encoder's store, and optionally scores a trial list itself
(`enroll test score` lines in trial order), with `--center` subtracting the mean of the scored
utterances first (label-free adaptation to the test audio, as `speakerverify adapt` does).

    python tools/mfcc_baseline.py data/test exp/mfcc/test --trials trials.txt --scores out.txt
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

SAMPLE_RATE = 16000


def mfcc_stats(wave: np.ndarray, num_mfcc: int = 30, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mean and std of MFCCs 1..num_mfcc-1 over the louder 70 % of frames.

    Args:
        wave: `(S,)` float32 waveform.
        num_mfcc: cepstra computed (c0, the frame energy, is used for the VAD only).
        sample_rate: Hz.

    Returns:
        `(2 * (num_mfcc - 1),)` float32: means then standard deviations.
    """
    import librosa

    mfcc = librosa.feature.mfcc(
        y=wave,
        sr=sample_rate,
        n_mfcc=num_mfcc,
        n_fft=512,
        win_length=400,
        hop_length=160,
        n_mels=40,
        fmin=20,
        fmax=min(7600, sample_rate / 2),
    )
    voiced = mfcc[0] >= np.percentile(mfcc[0], 30)  # energy VAD: drop the quietest frames
    frames = mfcc[1:, voiced] if voiced.sum() >= 2 else mfcc[1:]
    return np.concatenate([frames.mean(axis=1), frames.std(axis=1)]).astype(np.float32)


def embed_data_dir(
    data_dir: str, num_mfcc: int = 30, progress: bool = True
) -> tuple[list, np.ndarray]:
    """MFCC mean/std vectors for every utterance of a data dir -> (utt_ids, `(N, D)`)."""
    from tqdm import tqdm

    from speakerverify.data.datadir import DataDir
    from speakerverify.frontend.audio import load_audio

    data = DataDir.load(data_dir)
    utt_ids = data.utt_ids
    vectors = np.stack(
        [
            mfcc_stats(load_audio(data.wav[utt], SAMPLE_RATE).numpy(), num_mfcc)
            for utt in tqdm(utt_ids, desc="mfcc", unit="utt", disable=not progress)
        ]
    )
    return utt_ids, vectors


def score_pairs(
    utt_ids: list[str], vectors: np.ndarray, enroll: list[str], test: list[str], center: bool
) -> np.ndarray:
    """Cosine scores `(N,)` of (enroll, test) pairs; `center` subtracts the scored utts' mean."""
    index = {u: i for i, u in enumerate(utt_ids)}
    used = sorted({index[u] for u in (*enroll, *test)})
    matrix = vectors.astype(np.float64)
    if center:
        matrix = matrix - matrix[used].mean(axis=0)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-12
    rows_e = np.array([index[u] for u in enroll])
    rows_t = np.array([index[u] for u in test])
    return np.einsum("nd,nd->n", matrix[rows_e], matrix[rows_t])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="Kaldi-style data dir (wav.scp, utt2spk)")
    parser.add_argument("out_store", help="embedding store directory to write")
    parser.add_argument("--trials", help="trial list (VoxCeleb or Kaldi format) to score")
    parser.add_argument("--scores", help="score file to write (needs --trials)")
    parser.add_argument("--center", action="store_true", help="subtract the scored utts' mean")
    parser.add_argument("--num-mfcc", type=int, default=30)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.trials) != bool(args.scores):
        parser.error("--trials and --scores go together")

    from speakerverify.backend.embedding_dir import save_embeddings
    from speakerverify.backend.score_files import write_scores
    from speakerverify.data.trials import TrialsError, read_trials

    try:
        trials = read_trials(args.trials) if args.trials else None
    except (TrialsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    utt_ids, vectors = embed_data_dir(args.data_dir, args.num_mfcc, progress=not args.quiet)
    meta = {"model_fingerprint": f"mfcc-mean-std-{args.num_mfcc}", "model_name": "mfcc_mean_std"}
    save_embeddings(args.out_store, utt_ids, vectors, meta)
    print(f"{len(utt_ids)} MFCC mean/std vectors ({vectors.shape[1]} dims) -> {args.out_store}")
    if trials is not None:
        missing = sorted(set(trials.utt_ids) - set(utt_ids))
        if missing:
            print(
                f"error: {args.trials}: {len(missing)} utts not in {args.data_dir}, e.g. "
                f"{missing[0]}",
                file=sys.stderr,
            )
            return 2
        scores = score_pairs(utt_ids, vectors, trials.enroll, trials.test, args.center)
        write_scores(args.scores, trials.enroll, trials.test, scores)
        print(f"{len(scores)} trials scored{' (centred)' if args.center else ''} -> {args.scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
