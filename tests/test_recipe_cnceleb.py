"""recipes/cnceleb/run.sh end to end on a tiny tree in the published CN-Celeb layout (CN-Celeb_flac
with data/, dev/dev.lst, eval/{enroll,test,lists}; CN-Celeb2_flac/data), so the script cannot rot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerverify.testing import random_speaker, speech_like

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "recipes" / "cnceleb" / "run.sh"
TINY_CONFIG = """
data: {train_dir: REPLACED, chunk_seconds: 1.0, num_speakers: 4, num_utts: 2, num_workers: 0}
features: {num_mel_bins: 24}
model: {name: xvector, args: {embed_dim: 32, channels: 64, stats_channels: 128}}
loss: {name: triplet, margin: 0.2, mining: batch_hard}
optim: {name: adam, lr: 0.005, warmup_steps: 2, scheduler: cosine, final_lr: 0.0001}
train: {epochs: 1, seed: 0, device: cpu, log_every: 1, keep_last: 2, num_threads: 1,
        tensorboard: false}
"""
EVAL_SPEAKERS = ["id00800", "id00801", "id00802"]


def write_speaker(folder: Path, names: list[str], rng: np.random.Generator) -> None:
    speaker = random_speaker(rng)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        wave = speech_like(1.0, 16000, speaker, seed=int(rng.integers(1 << 31)))
        sf.write(folder / f"{name}.flac", wave, 16000)


def make_cnceleb(root: Path) -> dict[str, str]:
    """CN-Celeb1: 4 dev + 3 eval speakers; CN-Celeb2: 4 speakers; official-style eval lists."""
    rng = np.random.default_rng(7)
    cnc1, cnc2 = root / "CN-Celeb_flac", root / "CN-Celeb2_flac"
    training = ["speech-01-001", "speech-01-002", "vlog-02-001", "live_broadcast-02-002"]
    dev = [f"id{n:05d}" for n in range(4)]
    for spk in dev:
        write_speaker(cnc1 / "data" / spk, training, rng)
    for spk in (f"id{n:05d}" for n in range(10000, 10004)):
        write_speaker(cnc2 / "data" / spk, training, rng)
    (cnc1 / "dev").mkdir()
    (cnc1 / "dev" / "dev.lst").write_text("".join(f"{s}\n" for s in dev))
    lists = cnc1 / "eval" / "lists"
    lists.mkdir(parents=True)
    tests, enroll_lst, enroll_map = [], [], []
    for spk in EVAL_SPEAKERS:
        rng_state = np.random.default_rng(int(spk[2:]))
        write_speaker(cnc1 / "data" / spk, ["speech-01-001", "speech-01-002", "vlog-02-001"],
                      rng_state)  # fmt: skip
        write_speaker(cnc1 / "eval" / "enroll", [f"{spk}-enroll"], rng_state)
        write_speaker(cnc1 / "eval" / "test", [f"{spk}-singing-03-001", f"{spk}-vlog-02-002"],
                      rng_state)  # fmt: skip
        tests += [f"test/{spk}-singing-03-001.wav", f"test/{spk}-vlog-02-002.wav"]
        enroll_lst.append(f"{spk}-enroll enroll/{spk}-enroll.wav")
        enroll_map.append(f"{spk}-enroll {spk}/speech-01-001.wav {spk}/speech-01-002.wav")
    trials = [f"{s}-enroll {t} {int(t[5:12] == s)}" for s in EVAL_SPEAKERS for t in tests]
    for name, lines in (("enroll.lst", enroll_lst), ("test.lst", tests),
                        ("trials.lst", trials), ("enroll.map", enroll_map)):  # fmt: skip
        (lists / name).write_text("\n".join(lines) + "\n")
    return {"CNC1": str(cnc1), "CNC2": str(cnc2)}


def run_recipe(env: dict[str, str], *args: str, timeout: float = 900):
    environment = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    return subprocess.run(
        ["bash", str(RUN), *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


def test_stage_0_names_what_is_missing_and_where_to_get_it(tmp_path):
    (tmp_path / "cnc2" / "data").mkdir(parents=True)  # CN-Celeb2 without speakers
    env = {"CNC1": "", "CNC2": str(tmp_path / "cnc2")}
    done = run_recipe(env, "--stop-stage", "0", "--workdir", str(tmp_path / "work"))
    assert done.returncode == 1
    assert "CNC1 is not set" in done.stderr and "openslr.org/82" in done.stderr
    assert f"no {tmp_path / 'cnc2' / 'data'}/idNNNNN directories" in done.stderr
    assert "MUSAN not set" in done.stdout


@pytest.mark.slow
def test_every_stage_on_a_tiny_cnceleb_tree(tmp_path):
    env = make_cnceleb(tmp_path)
    work = tmp_path / "work"
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    done = run_recipe(
        env,
        "--config", str(config), "--ngpu", "0", "--jobs", "1", "--workdir", str(work),
        "--heldout-speakers", "2", "--heldout-trials", "8", "--num-average", "1", "--top-n", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in range(7):
        assert f"stage {stage}:" in done.stdout
    data = work / "data"
    # stage 1: dev speakers only from CN-Celeb1, sessions = genre-session
    assert (data / "cnc1_dev" / "spk2utt").read_text().split()[::5] == [f"id0000{i}" for i in
                                                                         range(4)]  # fmt: skip
    assert (
        "id00000/live_broadcast-02-002 live_broadcast-02"
        in (data / "cnc1_dev" / "utt2sess").read_text()
    )
    eval_ids = (data / "eval" / "utt2spk").read_text().split()[::2]
    assert len(eval_ids) == 3 * 3 + 3 * 2 and "eval/test/id00801-vlog-02-002" in eval_ids
    # stage 2: held-out speakers, cross-session held-out trials, the converted official lists
    held = set((data / "heldout" / "utt2spk").read_text().split()[1::2])
    train = set((data / "train" / "utt2spk").read_text().split()[1::2])
    assert len(held) == 2 and len(train) == 6 and not held & train
    assert len((data / "heldout" / "trials.txt").read_text().splitlines()) == 8
    trials = (data / "eval" / "trials.txt").read_text().splitlines()
    assert trials[0] == "id00800-enroll eval/test/id00800-singing-03-001 target"
    assert len(trials) == 18 and sum(line.endswith(" target") for line in trials) == 6
    assert (data / "eval" / "enroll.map").read_text().splitlines()[0] == (
        "id00800-enroll data/id00800/speech-01-001 data/id00800/speech-01-002"
    )
    # stages 4-6: scores for the models, calibration, a table row per back-end
    exp = work / "exp" / "tiny"
    scores = (exp / "scores" / "cnc1_eval.asnorm.txt").read_text().split()
    assert scores[0] == "id00800-enroll" and len(scores) == 3 * 18
    assert (exp / "avg.calibration.json").is_file()
    rows = [r for r in (exp / "results.md").read_text().splitlines() if r.startswith("| ")][1:]
    assert len(rows) == 3
    for row in rows:
        assert int(row.split("|")[2]) == 18 and 0.0 <= float(row.split("|")[3]) <= 100.0
    assert (exp / "plots" / "cnc1_eval.mean" / "det.png").is_file()
