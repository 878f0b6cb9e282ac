"""Front-end speed: seconds of audio turned into 80-bin log-mel features per second of compute.

Our batched `Fbank` against three peers, at 1 thread, interleaved in one run (each repetition
times every method once, in turn), median of the repetitions. Both wall-clock and process CPU
time are measured: on a shared machine the CPU-time figure is the less disturbed one.
  kaldi_loop     a Python loop of torchaudio.compliance.kaldi.fbank over the utterances
  melspec_log    torchaudio.transforms.MelSpectrogram (batched) + log
  librosa_log    librosa.feature.melspectrogram (batched over the leading axis) + log
and, as a ceiling rather than a peer, fft_only: torch.fft.rfft of the framed signal alone.

    python benchmarks/bench_frontend.py [--repeats 9]
"""

from __future__ import annotations

import os

# Pin one thread before numpy/torch load their BLAS/OpenMP pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAMPLE_RATE = 16000
SHAPES = [(1, 60.0), (64, 2.0), (16, 8.0)]  # (batch, seconds per utterance)


def make_methods() -> dict[str, Callable[[torch.Tensor, np.ndarray], object]]:
    import librosa
    import torchaudio
    from torchaudio.compliance import kaldi

    from speakerverify.frontend.features import Fbank

    fbank = Fbank().eval()
    melspec = torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160, n_mels=80
    )

    def ours(waves: torch.Tensor, _: np.ndarray) -> object:
        return fbank(waves)

    def kaldi_loop(waves: torch.Tensor, _: np.ndarray) -> object:
        return [kaldi.fbank(row[None], num_mel_bins=80) for row in waves]

    def melspec_log(waves: torch.Tensor, _: np.ndarray) -> object:
        return melspec(waves).clamp_min(1e-6).log()

    def librosa_log(_: torch.Tensor, waves: np.ndarray) -> object:
        power = librosa.feature.melspectrogram(
            y=waves, sr=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160, n_mels=80
        )
        return np.log(np.maximum(power, 1e-6))

    def fft_only(waves: torch.Tensor, _: np.ndarray) -> object:
        # Not a peer: the real FFT of the framed signal alone, the ceiling for any fbank.
        return torch.fft.rfft(waves.unfold(-1, 400, 160), n=512)

    return {
        "ours": ours,
        "fft_only": fft_only,
        "kaldi_loop": kaldi_loop,
        "melspec_log": melspec_log,
        "librosa_log": librosa_log,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed repetitions (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = make_methods()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    results: dict[str, tuple[dict[str, float], str, float]] = {}
    for batch, seconds in SHAPES:
        generator = torch.Generator().manual_seed(0)
        waves = 0.1 * torch.randn(batch, round(seconds * SAMPLE_RATE), generator=generator)
        waves_np = waves.numpy()
        audio_seconds = batch * seconds
        times: dict[str, list[float]] = {name: [] for name in methods}
        cpu_times: dict[str, list[float]] = {name: [] for name in methods}
        with torch.inference_mode():
            for method in methods.values():  # warm-up (plans, caches, lazy imports)
                method(waves, waves_np)
            for _ in range(args.repeats):
                for name, method in methods.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    method(waves, waves_np)
                    cpu_times[name].append(time.process_time() - start_cpu)
                    times[name].append(time.perf_counter() - start)
        print(f"\n{batch} x {seconds:g} s  (median of {args.repeats}, s audio / s compute)")
        print(f"  {'method':12s} {'wall':>9s} {'cpu':>9s}")
        for clock, table in (("wall", times), ("cpu", cpu_times)):
            speed = {name: audio_seconds / statistics.median(t) for name, t in table.items()}
            peers = [name for name in speed if name not in ("ours", "fft_only")]
            best_peer = max(peers, key=speed.get)
            ratio = speed["ours"] / speed[best_peer]
            ratios[clock].append(ratio)
            results[clock] = (speed, best_peer, ratio)
        for name in methods:
            wall, cpu = results["wall"][0][name], results["cpu"][0][name]
            print(f"  {name:12s} {wall:8.0f}x {cpu:8.0f}x")
        for clock in ("wall", "cpu"):
            _, best_peer, ratio = results[clock]
            print(f"  ours / fastest peer by {clock} time ({best_peer}): {ratio:.2f}x")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    for clock, values in ratios.items():
        mean_ratio = float(np.exp(np.mean(np.log(values))))
        print(f"geometric mean of ours / fastest peer ({clock}): {mean_ratio:.2f}x")


if __name__ == "__main__":
    main()
