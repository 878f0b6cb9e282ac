"""tools/make_mini_corpus.py: VoxCeleb1 layout, 16 kHz, determinism, resume, distinct speakers."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "make_mini_corpus.py"
LAYOUT = re.compile(r"^wav/id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav$")


def make_corpus(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), str(out), "--quiet", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def wav_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("wav/*/*/*.wav"))}


TINY = ["--num-train-speakers", "3", "--num-test-speakers", "2", "--utts-per-speaker", "4"]
TINY += ["--seconds", "1.2", "--seed", "7"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "corpus"
    make_corpus(out, *TINY, "--jobs", "2")
    return out


def test_layout_format_and_disjoint_speakers(tiny):
    files = wav_files(tiny)
    assert len(files) == 5 * 4
    assert all(LAYOUT.match(name) for name in files), list(files)[:3]
    speakers = {name.split("/")[1] for name in files}
    test_block = {f"id{n}" for n in range(10270, 10310)}
    train, test = speakers - test_block, speakers & test_block
    assert train == {"id10001", "id10002", "id10003"}
    assert test == {"id10270", "id10271"}
    for name in list(files)[:4]:
        info = sf.info(str(tiny / name))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.5 < info.duration < 3.0
        wave, _ = sf.read(str(tiny / name))
        assert np.sqrt(np.mean(wave**2)) > 1e-3  # not silence
    sessions = {name.rsplit("/", 1)[0] for name in files if "/id10001/" in f"/{name}"}
    assert 2 <= len(sessions) <= 4
    table = (tiny / "speakers.tsv").read_text().splitlines()
    assert len(table) == 1 + 5 and table[0].startswith("spk_id\tsplit\tgender")


def test_trial_list_is_voxceleb_format_and_balanced(tiny):
    lines = (tiny / "trials.txt").read_text().splitlines()
    labels = []
    for line in lines:
        label, enroll, test = line.split(" ")
        assert label in ("0", "1")
        assert (tiny / "wav" / enroll).is_file() and (tiny / "wav" / test).is_file()
        same_speaker = enroll.split("/")[0] == test.split("/")[0]
        assert same_speaker == (label == "1")
        assert enroll.split("/")[0] in ("id10270", "id10271")
        if label == "1":  # targets cross sessions, as in Vox1-O
            assert enroll.split("/")[1] != test.split("/")[1]
        labels.append(int(label))
    assert len(labels) >= 4 and sum(labels) * 2 == len(labels)


def test_same_seed_same_bytes_whatever_the_jobs_and_resume_restores(tiny, tmp_path):
    again = tmp_path / "again"
    make_corpus(again, *TINY, "--jobs", "1")
    reference = wav_files(tiny)
    assert wav_files(again) == reference
    assert (again / "trials.txt").read_text() == (tiny / "trials.txt").read_text()
    # resume: a missing file is re-made identically, finished files are left alone
    victim = again / next(iter(reference))
    victim.unlink()
    keep = again / list(reference)[-1]
    before = keep.stat().st_mtime_ns
    result = make_corpus(again, *TINY, "--jobs", "1")
    assert "1 new files" in result.stdout
    assert victim.read_bytes() == reference[next(iter(reference))]
    assert keep.stat().st_mtime_ns == before
    assert not list(again.rglob("*.tmp"))
    # other per-speaker settings on the same tree would mix two plans: refused
    command = [
        sys.executable,
        str(SCRIPT),
        str(again),
        "--quiet",
        *TINY[:4],
        "--utts-per-speaker",
        "5",
    ]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "utts_per_speaker 4 -> 5" in refused.stderr
    command = [sys.executable, str(SCRIPT), str(again), "--quiet", *TINY, "--own-language", "0.9"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and re.search(r"own_language \S+ -> 0\.9", refused.stderr)
    command[-1] = "1.5"
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--own-language must be a probability" in refused.stderr
    if find_spec("pyroomacoustics") is not None:  # other rooms in the same sessions: refused
        command[-2:] = ["--room", "shoebox"]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "room simple -> shoebox" in refused.stderr


def test_other_seed_other_audio(tiny, tmp_path):
    other = tmp_path / "other"
    make_corpus(other, *TINY[:-1], "8", "--jobs", "1")
    first, second = wav_files(tiny), wav_files(other)
    assert len(second) == len(first)
    assert not set(first.values()) & set(second.values())


def test_speakers_differ_more_than_utterances_of_one_speaker(tmp_path):
    """Pitch and spectral envelope are speaker traits: between-speaker spread >> within."""
    import librosa

    out = tmp_path / "clean"
    args = ["--num-train-speakers", "6", "--num-test-speakers", "1", "--utts-per-speaker", "4"]
    make_corpus(out, *args, "--seconds", "1.5", "--clean", "--jobs", "2")
    pitch: dict[str, list[float]] = {}
    envelope: dict[str, list[np.ndarray]] = {}
    for path in sorted(out.glob("wav/*/*/*.wav")):
        wave, rate = sf.read(str(path), dtype="float32")
        f0 = librosa.yin(wave, fmin=60, fmax=450, sr=rate)
        speaker = path.parts[-3]
        pitch.setdefault(speaker, []).append(float(np.median(np.log(f0))))
        mfcc = librosa.feature.mfcc(y=wave, sr=rate, n_mfcc=20)[1:]
        envelope.setdefault(speaker, []).append(mfcc.mean(axis=1))
    assert len(pitch) == 7

    def f_ratio(groups: list[np.ndarray]) -> float:
        means = np.stack([g.mean(axis=0) for g in groups])
        within = np.mean([g.var(axis=0, ddof=1).sum() for g in groups])
        return float(means.var(axis=0, ddof=1).sum() / within)

    assert f_ratio([np.array(v)[:, None] for v in pitch.values()]) > 4.0
    assert f_ratio([np.stack(v) for v in envelope.values()]) > 1.5
