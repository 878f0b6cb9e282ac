"""recipes/voxceleb/run.sh end to end on a tiny tree laid out like the real corpora, so the script
cannot rot: VoxCeleb1 wav + trial lists, VoxCeleb2 dev m4a (made with imageio-ffmpeg's ffmpeg),
MUSAN and RIRS_NOISES trees, a seconds-scale config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerverify.testing import make_voxceleb_corpus

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "recipes" / "voxceleb" / "run.sh"
# seconds-scale CPU config (the recipe sets the data paths with --set)
TINY_CONFIG = """
data: {train_dir: REPLACED, chunk_seconds: 1.0, num_speakers: 4, num_utts: 2, num_workers: 0}
features: {num_mel_bins: 24}
model: {name: xvector, args: {embed_dim: 32, channels: 64, stats_channels: 128}}
loss: {name: triplet, margin: 0.2, mining: batch_hard, mining_warmup: semi_hard,
       mining_warmup_epochs: 1}
optim: {name: adam, lr: 0.005, warmup_steps: 2, scheduler: cosine, final_lr: 0.0001}
train: {epochs: 2, seed: 0, device: cpu, log_every: 1, keep_last: 2, num_threads: 1,
        tensorboard: false}
"""


def write_noise(path: Path, seconds: float, seed: int, decay: float | None = None) -> None:
    rng = np.random.default_rng(seed)
    wave = rng.standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    if decay:
        wave *= np.exp(-np.arange(len(wave)) / (decay * 16000)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, 16000, subtype="PCM_16")


def to_m4a(ffmpeg: str, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c:a", "aac",
               "-b:a", "48k", str(target)]  # fmt: skip
    subprocess.run(command, check=True, timeout=60)


def make_corpora(root: Path) -> dict[str, str]:
    """VoxCeleb1 (3 Vox1-O test + 2 dev speakers), VoxCeleb2 dev (8 speakers, m4a), MUSAN, RIRS."""
    import imageio_ffmpeg

    vox1 = root / "voxceleb1"
    test_utts = make_voxceleb_corpus(vox1, 3, 2, 2, seconds=1.5, seed=1, first_id=10270)
    make_voxceleb_corpus(vox1, 2, 2, 2, seconds=1.5, seed=2, first_id=10001)
    lines = [
        f"{int(a.split('/')[0] == b.split('/')[0])} {a}.wav {b}.wav"
        for i, a in enumerate(test_utts)
        for b in test_utts[i + 1 :]
    ]
    lists = {}
    for name in ("vox1_o", "vox1_e", "vox1_h"):  # not the published names: their counts differ
        lists[name.upper()] = str(vox1 / f"{name}_tiny.txt")
        Path(lists[name.upper()]).write_text("\n".join(lines) + "\n")
    staging = root / "vox2_staging"
    utts = make_voxceleb_corpus(staging, 8, 2, 2, seconds=1.5, seed=3, first_id=1)
    vox2 = root / "voxceleb2"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with ThreadPoolExecutor(4) as pool:
        jobs = [
            pool.submit(
                to_m4a, ffmpeg, staging / "wav" / f"{u}.wav", vox2 / "dev" / "aac" / f"{u}.m4a"
            )
            for u in utts
        ]
        for job in jobs:
            job.result()
    musan = root / "musan"
    for i, kind in enumerate(("music", "speech", "noise")):
        write_noise(musan / kind / "tiny" / f"{kind}-tiny-0000.wav", 2.0, seed=10 + i)
    rirs = root / "RIRS_NOISES" / "simulated_rirs"
    for i, size in enumerate(("smallroom", "mediumroom")):
        write_noise(rirs / size / "Room001" / "Room001-00001.wav", 0.3, 20 + i, decay=0.05)
    return {"VOX1": str(vox1), "VOX2": str(vox2), "MUSAN": str(musan),
            "RIRS": str(root / "RIRS_NOISES"), **lists}  # fmt: skip


def run_recipe(env: dict[str, str], *args: str, timeout: float = 900):
    environment = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    return subprocess.run(
        ["bash", str(RUN), *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


def test_stage_0_names_what_is_missing_and_where_to_get_it(tmp_path):
    (tmp_path / "vox2" / "dev").mkdir(parents=True)  # VoxCeleb2 without dev/aac
    env = {"VOX1": "", "VOX2": str(tmp_path / "vox2"), "MUSAN": str(tmp_path / "nomusan")}
    done = run_recipe(env, "--stop-stage", "0", "--workdir", str(tmp_path / "work"))
    assert done.returncode == 1
    assert "VOX1 is not set" in done.stderr and "vox1.html" in done.stderr
    assert f"{tmp_path / 'vox2' / 'dev' / 'aac'}" in done.stderr
    assert "MUSAN=" in done.stderr and "openslr.org/17" in done.stderr
    assert "RIRS not set" in done.stdout


@pytest.mark.slow
def test_every_stage_on_a_tiny_voxceleb_tree(tmp_path):
    env = make_corpora(tmp_path)
    work = tmp_path / "work"
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    done = run_recipe(
        env,
        "--config", str(config), "--ngpu", "0", "--jobs", "2", "--workdir", str(work),
        "--heldout-speakers", "2", "--heldout-trials", "20", "--valid-trials", "10",
        "--num-average", "2", "--set", "train.max_steps=4",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in range(7):
        assert f"stage {stage}:" in done.stdout
    # stage 1 converted every m4a, stage 2 split train / held-out speakers
    assert len(list((work / "data" / "vox2_wav" / "dev" / "wav").rglob("*.wav"))) == 32
    train = (work / "data" / "train" / "utt2spk").read_text().split()[1::2]
    heldout = (work / "data" / "heldout" / "utt2spk").read_text().split()[1::2]
    assert len(set(train)) == 6 and len(set(heldout)) == 2 and not set(train) & set(heldout)
    assert (work / "data" / "musan.txt").is_file() and (work / "data" / "rirs.txt").is_file()
    exp = work / "exp" / "tiny"
    # validation by default: the held-out speakers' small list, its EER logged after the epoch
    assert len((work / "data" / "heldout" / "valid_trials.txt").read_text().splitlines()) == 10
    epochs = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    epochs = [record for record in epochs if record["kind"] == "epoch"]
    assert epochs and all(0.0 <= record["eer"] <= 100.0 for record in epochs)
    from speakerverify.checkpoint import load_encoder

    assert load_encoder(exp / "avg.pt").embed_dim == 32
    assert (exp / "avg.calibration.json").is_file()
    table = (exp / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| Vox1")]
    assert len(rows) == 9  # 3 lists x (cosine, mean subtraction, AS-Norm)
    for row in rows:
        eer = float(row.split("|")[4])
        assert 0.0 <= eer <= 100.0
    assert (exp / "plots" / "vox1_o.asnorm" / "det.png").is_file()


# -- the mini recipe's CLI stage -------------------------------------------------------------

MINI = REPO / "recipes" / "mini" / "run.sh"


def test_mini_stage_7_shows_the_bundled_model(bundled_model_files, tmp_path):
    """Stage 7 on a hand-made test dir and a tiny "trained" model: the CLI demo ends with a
    pair verified by the bundled model, without --model."""
    import numpy as np
    import soundfile as sf
    import torch

    from speakerverify.backend.calibration import Calibration
    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.models import build_model
    from speakerverify.testing import random_speaker, speech_like

    rng = np.random.default_rng(8)
    wav_scp, utt2spk = [], []
    layout = {
        "spka": ["s1", "s1", "s2"],
        "spkb": ["s1", "s1"],
        "spkc": ["s1", "s1"],
        "spkd": ["s1"],
    }
    for spk, sessions in layout.items():
        speaker = random_speaker(rng)
        for i, session in enumerate(sessions):
            utt = f"{spk}/{session}/{i:05d}"
            path = tmp_path / "corpus" / f"{utt}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, speech_like(2.5, 16000, speaker, seed=len(wav_scp)), 16000)
            wav_scp.append(f"{utt} {path}\n")
            utt2spk.append(f"{utt} {spk}\n")
    data = tmp_path / "work" / "data" / "test"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text("".join(wav_scp))
    (data / "utt2spk").write_text("".join(utt2spk))
    exp = tmp_path / "work" / "exp" / "xvector_mini"
    exp.mkdir(parents=True)
    torch.manual_seed(0)
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    fingerprint = save_checkpoint(
        exp / "final.pt", model_name="xvector", model_args=args,
        model=build_model("xvector", **args).eval(), features=FbankConfig().to_dict(),
    )  # fmt: skip
    Calibration(4.0, -2.0, model_fingerprint=fingerprint).save(exp / "final.calibration.json")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPEAKERVERIFY_")}
    environment["OMP_NUM_THREADS"] = "1"
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    stage_7 = ["--stage", "7", "--stop-stage", "7", "--workdir", str(tmp_path / "work")]
    done = subprocess.run(
        ["bash", str(MINI), *stage_7], capture_output=True, text=True, env=environment, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# the bundled model: no --model" in done.stdout
    assert done.stderr.count("using the bundled model xvector_synth") == 1
    assert done.stdout.count("decision:") == 3  # two store verifications, one bundled pair


# -- the VoxCeleb configs -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xvector_triplet", "ecapa_triplet", "resnet34_triplet"])
def test_voxceleb_configs_mine_like_voxceleb_trainer(name):
    """Semi-hard warm-up with "drop", then hard-negative sampling (k = 10, p = 0.5) with margin
    0.05 on 1 - cos (= 0.1 on squared Euclidean of unit vectors) reached through the ramp, and
    the dataset's label -> speaker map reaching both losses."""
    import torch

    from speakerverify.training.distributed import DistEnv
    from speakerverify.training.experiment_config import load_config
    from speakerverify.training.schedules import loss_arguments, margin_at, mining_at
    from speakerverify.training.setup import build_loss_fn

    config = load_config(RUN.parent / "conf" / f"{name}.yaml")
    env = DistEnv(0, 1, 0, torch.device("cpu"), owns_group=False)
    speaker_of_label = np.arange(9) % 3
    loss = build_loss_fn(config, env, speaker_of_label)
    warmup = main = loss  # one loss; the schedule passes each epoch's strategy per call
    assert loss_arguments(config.loss, 0, 0.0)["mining"] == mining_at(config.loss, 0)
    assert mining_at(config.loss, 0) == "semi_hard" and warmup.semi_hard_fallback == "drop"
    assert loss_arguments(config.loss, 2, 2.0)["mining"] == mining_at(config.loss, 2)
    assert mining_at(config.loss, 2) == "hard_negative" and main.num_hardest == 10
    assert main.mining == config.loss.args["mining"] == "hard_negative"  # the default of a call
    assert main.hard_probability == 0.5 and main.gather_distributed is False  # one process
    assert margin_at(config.loss, 0.0) == 0.025 and margin_at(config.loss, 2.0) == 0.05
    assert 0.025 < margin_at(config.loss, 1.0) < 0.05
    # 0.05 on 1 - cos is 0.1 on |a - b|^2 for unit vectors
    a, b = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=1)
    assert ((a - b) ** 2).sum().item() == pytest.approx(2 * (1 - (a @ b).item()))
    for loss in (warmup, main):
        assert loss.speaker_of_label.tolist() == speaker_of_label.tolist()


@pytest.mark.parametrize(("ngpu", "expected"), [("2", ["--device", "cuda"]), ("0", None)])
def test_stage_4_starts_one_extraction_job_per_gpu(tmp_path, ngpu, expected):
    """With GPUs, stage 4 embeds with `--device cuda` (one job per visible GPU, see
    `job_devices`), never `--jobs <CPU count>` on one device; without, CPU jobs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "speakerverify"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    work = tmp_path / "work"
    checkpoints = work / "exp" / "xvector_triplet" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "epoch_0001.pt").write_bytes(b"")
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    stage_4 = ["--stage", "4", "--stop-stage", "4", "--ngpu", ngpu, "--jobs", "7"]
    done = subprocess.run(
        ["bash", str(RUN), *stage_4, "--workdir", str(work)],
        capture_output=True, text=True, env=environment, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    embeds = [line.split() for line in calls.read_text().splitlines() if line.startswith("embed")]
    assert len(embeds) == 3  # vox1, train, heldout
    for args in embeds:
        if expected:
            assert args[args.index("--device") : args.index("--device") + 2] == expected
            assert "--jobs" not in args
        else:
            assert "cpu" in args and args[args.index("--jobs") + 1] == "7"


STUB_CLI = """#!/usr/bin/env bash
# records each call; `train` leaves two epoch checkpoints, `average` and `fuse` their --out
echo "$*" >> "$STUB_LOG"
command=$1; shift
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --exp-dir) mkdir -p "$2/checkpoints"
               touch "$2/checkpoints/epoch_001.pt" "$2/checkpoints/epoch_002.pt"; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) shift ;;
  esac
done
[ -z "$out" ] || { mkdir -p "$(dirname "$out")"; touch "$out"; }
"""


def run_mini_training_stages(tmp_path, *options):
    """Stages 2-3 of the mini recipe with a recording stand-in for the CLI: which models it
    trains where, and what it averages and fuses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "speakerverify"
    stub.write_text(STUB_CLI)
    stub.chmod(0o755)
    log = tmp_path / "calls.txt"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPEAKERVERIFY_")}
    path = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.update(PATH=path, STUB_LOG=str(log), OMP_NUM_THREADS="1")
    stages = ["--stage", "2", "--stop-stage", "3", "--workdir", str(tmp_path / "work")]
    done = subprocess.run(
        ["bash", str(MINI), *stages, *options], capture_output=True, text=True, env=environment,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    conf = REPO / "recipes" / "mini" / "conf"
    return [[word.replace(f"{conf}/", "conf/") for word in call] for call in calls]


@pytest.mark.parametrize(
    "options",
    [
        ["--config", "conf/xvector_synth.yaml", "--fuse-with", "conf/xvector_synth_trained.yaml",
         "--member-seeds", "0 1"],
        ["--full", "--stop-stage", "3"],  # the bundled model: both configs at seeds 0 and 1
    ],
    ids=["explicit", "full"],
)  # fmt: skip
def test_mini_member_seeds_train_every_config_per_seed_and_fuse_them_in_order(tmp_path, options):
    calls = run_mini_training_stages(tmp_path, *options)
    trains = [call for call in calls if call[0] == "train"]
    assert [(call[1], call[call.index("--exp-dir") + 1]) for call in trains] == [
        ("conf/xvector_synth.yaml", "exp/xvector_synth"),
        ("conf/xvector_synth_trained.yaml", "exp/xvector_synth_trained"),
        ("conf/xvector_synth.yaml", "exp/xvector_synth_s1"),
        ("conf/xvector_synth_trained.yaml", "exp/xvector_synth_trained_s1"),
    ]
    assert ["train.seed=1" in call for call in trains] == [False, False, True, True]
    (fuse,) = [call for call in calls if call[0] == "fuse"]
    assert fuse[1:] == [
        "exp/xvector_synth/final.pt",
        "exp/xvector_synth_trained/final.pt",
        "exp/xvector_synth_s1/final.pt",
        "exp/xvector_synth_trained_s1/final.pt",
        "--out",
        "exp/xvector_synth_fused/final.pt",
    ]
    averages = [call[-1] for call in calls if call[0] == "average"]  # each member's --out
    assert averages == fuse[1:5]


def test_mini_one_member_trains_in_its_experiment_and_fuses_nothing(tmp_path):
    calls = run_mini_training_stages(tmp_path, "--config", "conf/xvector_mini.yaml")
    assert [call[0] for call in calls] == ["train", "average"]
    assert calls[0][calls[0].index("--exp-dir") + 1] == "exp/xvector_mini"
    assert calls[1][-2:] == ["--out", "exp/xvector_mini/final.pt"]
