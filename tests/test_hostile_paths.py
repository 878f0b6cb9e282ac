"""Every command over a shared list of hostile paths (issue 22, "Done when"): a FIFO, a symlink to
one (what /dev/null is to a reader or writer), a symlink loop, a directory, a 300-byte name, a
name that is not UTF-8, a missing file, a file in a directory that cannot be searched, an
unreadable file. Each must be a one-line error with exit 2 and no file changed. The walk runs
in a subprocess (`hostile_paths_walk.py`), as a command blocking on a FIFO would otherwise hang
the test run, and without root's power to ignore file permissions. Everything is made in the
test's temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hostile_helpers import file_permissions_bind

from speakerverify.backend.embedding_dir import save_embeddings
from speakerverify.checkpoint import save_checkpoint
from speakerverify.frontend.fbank_config import FbankConfig
from speakerverify.models import build_model
from speakerverify.speakers.store import SpeakerStore
from speakerverify.testing import random_speaker, speech_like

WALK = Path(__file__).with_name("hostile_paths_walk.py")


def _fixtures(root: Path) -> None:
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    torch.manual_seed(0)
    fingerprint = save_checkpoint(
        root / "m.pt", model_name="xvector", model_args=args,
        model=build_model("xvector", **args).eval(), features=FbankConfig().to_dict(),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(root / f"a{i}.wav", speech_like(2.0, 16000, random_speaker(rng), seed=i), 16000)
    with SpeakerStore(root / "s.db", create=True) as store:
        store.add("ann", rng.standard_normal((1, 16)), 2.0, fingerprint=fingerprint)
    ids = ["a/1", "b/1", "a/2", "c/1"]
    vectors = rng.standard_normal((4, 8)).astype(np.float32)
    save_embeddings(root / "emb", ids, vectors, {"model_fingerprint": fingerprint})
    (root / "trials.txt").write_text("1 a/1.wav b/1.wav\n0 a/2.wav c/1.wav\n")
    (root / "scores.txt").write_text("a/1 b/1 0.9\na/2 c/1 0.1\n")


def test_every_command_refuses_hostile_paths_in_one_line(tmp_path):
    fixtures, work = tmp_path / "fixtures", tmp_path / "work"
    fixtures.mkdir()
    work.mkdir()
    _fixtures(fixtures)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(WALK), str(work), str(fixtures)],
        capture_output=True, text=True, timeout=600, env=env, preexec_fn=file_permissions_bind,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    skipped = [line["skipped"] for line in lines if "skipped" in line]
    problems = [line for line in lines if "skipped" not in line]
    assert problems == [], json.dumps(problems, indent=1)
    if skipped:  # every other path passed; say visibly that two were not walked
        pytest.skip(f"unsearchable and unreadable paths not walked: {skipped[0]}")
