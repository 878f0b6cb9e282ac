"""Cold-start cost of the speaker commands, against the floor of importing torch and torchaudio,
and the torch-free ONNX fast path side by side with the torch path.

Each repetition runs, in turn, in fresh processes:
  import_floor   python -c "import torch, torchaudio"        (the peer: what any torch CLI pays)
  verify@R       speakerverify verify NAME five_seconds_R.wav --threshold 0.5   (torch, forced)
  verify_onnx@R  the same with the checkpoint's ONNX twin (SPEAKERVERIFY_BACKEND=onnx)
  onnx_floor     python -c "import numpy, onnxruntime"      (what the fast path cannot avoid,
                 with numpy's BLAS on one thread as the speaker commands run it)
  help           speakerverify --help
for a test file at each rate R of 8, 16, 22.05, 44.1 and 48 kHz (other rates than the model's
16 kHz are resampled on both paths), and the medians are compared: our overhead = verify@16k -
import_floor (target < 0.5 s), and at every rate the fast path's wall time (target <= 0.5 s)
against the torch path's, measured in the same run; both must give the same decision and score
(within 1e-4). A final in-process run splits the 16 kHz verify path into imports, model load,
audio + VAD, and embedding.
The model has the default x-vector size (4.6 M parameters, 512-dim embeddings) with untrained
weights: the timing does not depend on what the weights are.

    python benchmarks/bench_cli.py [--repeats 7] [--model xvector|ecapa_tdnn|resnet34]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATES = (8000, 16000, 22050, 44100, 48000)
SPEAKERVERIFY = str(Path(sys.executable).parent / "speakerverify")

BREAKDOWN = r"""
import json, os, sys, time
def now():
    return time.perf_counter(), time.process_time()
t0 = now()
import torch, torchaudio
t1 = now()
if "OMP_NUM_THREADS" not in os.environ:  # as the speaker commands do
    torch.set_num_threads(1)
from speakerverify.cli import verify  # noqa: F401
from speakerverify.backend import speaker_model
from speakerverify.speakers.store import SpeakerStore
t2 = now()
model = speaker_model.load_speaker_model(sys.argv[1])
t3 = now()
from speakerverify.frontend.audio import load_audio, speech_mask, trim_silence
wave = load_audio(sys.argv[2], model.sample_rate)
speech_mask(wave, model.sample_rate)
trimmed = trim_silence(wave, model.sample_rate)
t4 = now()
model.embedder.embed_waveform(trimmed)
t5 = now()
with SpeakerStore(sys.argv[3]) as store:
    store.get("alice")
t6 = now()
names = ["import torch+torchaudio", "import speakerverify", "load model", "audio + VAD",
         "embed", "store lookup"]
marks = [t0, t1, t2, t3, t4, t5, t6]
print(json.dumps({n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, marks, marks[1:])}))
"""

ONNX_BREAKDOWN = r"""
import json, os, sys, time
def now():
    return time.perf_counter(), time.process_time()
if "OMP_NUM_THREADS" not in os.environ:  # as the speaker commands do (cli.one_blas_thread)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
t0 = now()
import numpy, onnxruntime
t1 = now()
from speakerverify.cli import verify  # noqa: F401
from speakerverify.backend import engine
from speakerverify.speakers.store import SpeakerStore
t2 = now()
model = engine.load_command_model(sys.argv[1])
assert model.backend == "onnx"
t3 = now()
from speakerverify.frontend.audio import load_audio_array
from speakerverify.frontend.vad_numpy import speech_mask, trim_silence
wave = load_audio_array(sys.argv[2], model.sample_rate)
speech_mask(wave, model.sample_rate)
trimmed = trim_silence(wave, model.sample_rate)
t4 = now()
model.embedder.embed_waveform(trimmed)
t5 = now()
with SpeakerStore(sys.argv[3]) as store:
    store.get("alice")
t6 = now()
assert "torch" not in sys.modules
names = ["import numpy+onnxruntime", "import speakerverify", "load ONNX model", "audio + VAD",
         "embed", "store lookup"]
marks = [t0, t1, t2, t3, t4, t5, t6]
print(json.dumps({n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, marks, marks[1:])}))
"""


def _breakdowns(code: str, args: list[str], env: dict[str, str] | None = None) -> list[dict]:
    """Three in-process breakdowns of `code`, each in a fresh process."""
    command = [sys.executable, "-c", code, *args]
    return [
        json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                  env=env).stdout)
        for _ in range(3)
    ]  # fmt: skip


def _print_breakdown(title: str, breakdowns: list[dict]) -> list[float]:
    """Print medians per step; returns [wall, CPU] summed over the steps after the first."""
    print(f"in-process breakdown of {title} (median of 3 runs): wall s, CPU s")
    ours = [0.0, 0.0]
    for index, key in enumerate(breakdowns[0]):
        w = statistics.median(b[key][0] for b in breakdowns)
        c = statistics.median(b[key][1] for b in breakdowns)
        print(f"  {key:>24}: {w:.3f}  {c:.3f}")
        if index > 0:
            ours = [ours[0] + w, ours[1] + c]
    return ours


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys, all threads) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def prepare(root: Path, model_name: str) -> tuple[Path, dict[int, Path], Path, bool]:
    import numpy as np
    import soundfile as sf
    import torch

    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.models import build_model
    from speakerverify.testing import random_speaker, speech_like

    torch.manual_seed(0)
    model = build_model(model_name)
    checkpoint = root / "model.pt"
    save_checkpoint(
        checkpoint,
        model_name=model_name,
        model_args={},
        model=model,
        features=FbankConfig().to_dict(),
    )
    try:  # the ONNX twin next to the checkpoint: what the fast path runs
        from speakerverify.backend.export import ExportError, export_onnx

        export_onnx(checkpoint, checkpoint.with_suffix(".onnx"))
        has_onnx = True
    except ExportError as error:
        print(f"no ONNX fast path measured: {error}", file=sys.stderr)
        has_onnx = False
    speaker = random_speaker(np.random.default_rng(0))
    enroll = root / "enroll.wav"
    sf.write(enroll, speech_like(8.0, 16000, speaker, seed=1), 16000)
    tests = {rate: root / f"five_seconds_{rate}.wav" for rate in RATES}
    for rate, test in tests.items():
        sf.write(test, speech_like(5.0, rate, speaker, seed=2), rate)
    store = root / "speakers.db"
    subprocess.run(
        [
            SPEAKERVERIFY,
            "enroll",
            "alice",
            str(enroll),
            "--model",
            str(checkpoint),
            "--store",
            str(store),
        ],
        check=True,
        capture_output=True,
        env=_env("torch"),
    )
    return checkpoint, tests, store, has_onnx


def _env(backend: str) -> dict[str, str]:
    return {**os.environ, "SPEAKERVERIFY_BACKEND": backend}


def _one_thread() -> dict[str, str]:
    """The environment as the speaker commands set it for numpy (`cli.one_blas_thread`)."""
    if "OMP_NUM_THREADS" in os.environ:
        return dict(os.environ)
    return {"OPENBLAS_NUM_THREADS": "1", **os.environ}


def _score(command: list[str], env: dict[str, str]) -> tuple[float, bool]:
    """(score, accepted) of one verify command."""
    proc = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env)
    payload = json.loads(proc.stdout)
    return float(payload["score"]), bool(payload["accepted"])


def _khz(rate: int) -> str:
    return f"{rate / 1000:g}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default="xvector")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, tests, store, has_onnx = prepare(Path(tmp), args.model)
        commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "import_floor": ([sys.executable, "-c", "import torch, torchaudio"], None),
            "onnx_floor": ([sys.executable, "-c", "import numpy, onnxruntime"], _one_thread()),
            "help": ([SPEAKERVERIFY, "--help"], None),
        }
        for rate, test in tests.items():
            verify = [SPEAKERVERIFY, "verify", "alice", str(test), "--model", str(checkpoint)]
            verify += ["--store", str(store), "--threshold", "0.5"]
            commands[f"verify@{_khz(rate)}"] = (verify, _env("torch"))
            if has_onnx:
                commands[f"verify_onnx@{_khz(rate)}"] = (verify, _env("onnx"))
        if not has_onnx:
            del commands["onnx_floor"]
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for name in commands:  # warm the page cache; every run is a new process
            if name.startswith("verify"):
                timed(*commands[name])
        for _ in range(args.repeats):
            for name, (command, env) in commands.items():
                elapsed, used = timed(command, env)
                wall[name].append(elapsed)
                cpu[name].append(used)
        scores = {name: _score(*commands[name]) for name in commands if name.startswith("verify")}
        files = [str(checkpoint), str(tests[16000]), str(store)]
        breakdowns = _breakdowns(BREAKDOWN, files)
        onnx_breakdowns = _breakdowns(ONNX_BREAKDOWN, files, _env("onnx")) if has_onnx else []
    print(f"model: {args.model} (default size), test files: 5.0 s, repeats: {args.repeats}")
    print(f"{'':>15}  {'wall median':>11}  {'(min)':>7}  {'CPU median':>10}  {'(min)':>7}")
    for name in commands:
        print(
            f"{name:>15}  {statistics.median(wall[name]):>10.3f}s  {min(wall[name]):>6.3f}s  "
            f"{statistics.median(cpu[name]):>9.3f}s  {min(cpu[name]):>6.3f}s"
        )
    for kind, values in (("wall", wall), ("CPU", cpu)):
        verify, floor = values["verify@16k"], values["import_floor"]
        paired = statistics.median(v - f for v, f in zip(verify, floor, strict=True))
        print(
            f"{kind}: verify@16k / import_floor = "
            f"{statistics.median(verify) / statistics.median(floor):.2f}x (medians); overhead "
            f"above the floor: {paired:.3f} s (median of paired differences), "
            f"{min(verify) - min(floor):.3f} s (difference of minima)"
        )
    for rate in RATES if has_onnx else ():
        fast_name, slow_name = f"verify_onnx@{_khz(rate)}", f"verify@{_khz(rate)}"
        fast, slow = statistics.median(wall[fast_name]), statistics.median(wall[slow_name])
        (fast_score, fast_accepted), (slow_score, slow_accepted) = (
            scores[fast_name],
            scores[slow_name],
        )
        gap = abs(fast_score - slow_score)
        same = fast_accepted == slow_accepted
        verdict = "PASS" if fast <= 0.5 and gap < 1e-4 and same else "FAIL"
        print(
            f"fast path at {_khz(rate)}Hz: cold verify with ONNX {fast:.3f} s vs torch "
            f"{slow:.3f} s wall (medians), ratio {fast / slow:.2f} ({slow / fast:.1f}x faster); "
            f"CPU "
            f"{statistics.median(cpu[fast_name]):.3f} s vs {statistics.median(cpu[slow_name]):.3f}"
            f" s; score {fast_score:.6f} vs {slow_score:.6f} (|diff| {gap:.1e}), decision "
            f"{'same' if same else 'DIFFERENT'}; target <= 0.5 s wall, |diff| < 1e-4: {verdict}"
        )
    if has_onnx:
        above = statistics.median(
            v - f for v, f in zip(wall["verify_onnx@16k"], wall["onnx_floor"], strict=True)
        )
        print(
            f"fast path at 16kHz above its own floor (import numpy, onnxruntime: "
            f"{statistics.median(wall['onnx_floor']):.3f} s): {above:.3f} s wall "
            "(median of paired differences)"
        )
    print(
        f"speakerverify --help: wall {statistics.median(wall['help']):.3f} s, CPU "
        f"{statistics.median(cpu['help']):.3f} s (target < 0.5 s)"
    )
    if onnx_breakdowns:
        _print_breakdown("verify, ONNX fast path", onnx_breakdowns)
    ours = _print_breakdown("verify, torch path", breakdowns)
    verdict = "PASS" if ours[1] < 0.5 else "FAIL"
    print(
        f"our overhead (everything after import torch+torchaudio): wall {ours[0]:.3f} s, "
        f"CPU {ours[1]:.3f} s (target < 0.5 s): {verdict}"
    )


if __name__ == "__main__":
    main()
