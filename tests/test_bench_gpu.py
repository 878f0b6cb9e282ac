"""benchmarks/bench_gpu.py: without CUDA it says so and exits 0; its code runs (tiny, on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def run(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, env=environment, timeout=600,
    )  # fmt: skip


def test_without_cuda_it_says_so_and_exits_0():
    done = run()
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout and "|" not in done.stdout


@pytest.mark.slow
def test_smoke_run_measures_every_config_on_cpu():
    done = run("--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "_" in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "xvector_triplet", "resnet34_triplet", "ecapa_triplet",
    ]  # fmt: skip
    for row in rows:
        figures = [float(x.replace(",", "")) for x in row.split("|")[2:-1]]
        assert all(figure > 0 for figure in figures)
