#!/usr/bin/env python3
"""Embed a data dir the way `enroll` / `verify` / the Python API do (voiced speech kept by the
energy VAD with its hangover, `Model.embed_batch`) into an embedding dir that `speakerverify
score` reads. The calibration's operating point is fitted on these scores, so it holds on the
path users take (`speakerverify embed` feeds whole files to the encoder).

    python local/embed_like_users.py CKPT DATA_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data_dir", help="Kaldi data dir (wav.scp)")
    parser.add_argument("out_dir", help="embedding dir to write")
    args = parser.parse_args(argv)

    import numpy as np
    from tqdm import tqdm

    import speakerverify
    from speakerverify.backend.embedding_dir import save_embeddings
    from speakerverify.data import DataDir
    from speakerverify.errors import SpeakerVerifyError

    try:
        model = speakerverify.load_model(args.checkpoint)
        data = DataDir.load(args.data_dir)
        ids = list(data.utt_ids)
        batches = [ids[i : i + 16] for i in range(0, len(ids), 16)]
        rows = [
            model.embed_batch([data.wav[u] for u in batch])
            for batch in tqdm(batches, desc="embed (VAD)", unit="batch", leave=False)
        ]
        meta = {"model_fingerprint": model.fingerprint, "path": "vad (as enroll/verify)"}
        save_embeddings(args.out_dir, ids, np.concatenate(rows), meta)
    except SpeakerVerifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out_dir}: {len(ids)} embeddings (VAD path) by model {model.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
