"""`speakerverify prepare ...`: voxceleb data dirs, m4a conversion, MUSAN / RIRS_NOISES indexes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from speakerverify.cli import main
from speakerverify.data import DataDir
from speakerverify.data.convert import convert_m4a_tree
from speakerverify.data.noise import read_index
from speakerverify.frontend.audio import find_ffmpeg
from speakerverify.testing import make_voxceleb_corpus, speech_like


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_musan_tree(root: Path, seconds: float = 0.5) -> Path:
    """`root/musan/{music,speech,noise}/<subset>/<kind>-<subset>-NNNN.wav` plus the text files."""
    musan = root / "musan"
    subsets = {
        "music": ["fma", "jamendo"],
        "speech": ["librivox", "us-gov"],
        "noise": ["free-sound"],
    }
    rng = np.random.default_rng(0)
    for kind, names in subsets.items():
        for subset in names:
            folder = musan / kind / subset
            folder.mkdir(parents=True)
            (folder / "ANNOTATIONS").write_text("name info\n")
            (folder / "LICENSE").write_text("cc\n")
            for i in range(2):
                if kind == "speech":
                    wave = speech_like(seconds, seed=int(rng.integers(1000)))
                else:
                    wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
                sf.write(folder / f"{kind}-{subset}-{i:04d}.wav", wave, 16000, subtype="PCM_16")
    (musan / "README").write_text("MUSAN\n")
    return musan


def make_rirs_tree(root: Path) -> Path:
    """`root/RIRS_NOISES/simulated_rirs/<size>/RoomNNN/RoomNNN-NNNNN.wav` plus real/pointsource."""
    base = root / "RIRS_NOISES"
    rng = np.random.default_rng(1)
    for size, first_room in [("smallroom", 1), ("mediumroom", 1), ("largeroom", 1)]:
        folder = base / "simulated_rirs" / size
        folder.mkdir(parents=True)
        (folder / "rir_list").write_text("--rir-id ...\n")
        (folder / "room_info").write_text("Room001 ...\n")
        for room in range(first_room, first_room + 2):
            room_dir = folder / f"Room{room:03d}"
            room_dir.mkdir()
            for i in range(1, 3):
                rir = np.zeros(1600, dtype=np.float32)
                rir[40] = 0.8
                rir[41:] += 0.05 * rng.standard_normal(1559) * np.exp(-np.arange(1559) / 300)
                sf.write(room_dir / f"Room{room:03d}-{i:05d}.wav", rir, 16000)
    for other in ("real_rirs_isotropic_noises", "pointsource_noises"):
        (base / other).mkdir()
        sf.write(base / other / "noise-free-sound-0000.wav", np.zeros(160) + 0.1, 16000)
    return base


def test_help_lists_subcommands():
    result = invoke("prepare", "--help")
    assert result.exit_code == 0
    for name in ("voxceleb", "convert-m4a", "musan", "rirs"):
        assert name in result.output


def test_prepare_voxceleb(tmp_path):
    ids = make_voxceleb_corpus(tmp_path / "vox1", 3, 1, 2, seconds=0.25, first_id=10269)
    result = invoke("prepare", "voxceleb", tmp_path / "vox1", tmp_path / "data", "--split", "dev")
    assert result.exit_code == 0, result.output
    assert "2 utterances, 1 speakers" in result.output
    data = DataDir.load(tmp_path / "data", check_files=True)
    assert data.utt_ids == sorted(ids)[:2] and data.speakers == ["id10269"]
    assert (tmp_path / "data" / "utt2dur").is_file()


def test_prepare_voxceleb_error_exit_2(tmp_path):
    result = invoke("prepare", "voxceleb", tmp_path, tmp_path / "data")
    assert result.exit_code == 2
    assert "error:" in result.output and "no VoxCeleb audio tree" in result.output


@pytest.fixture
def m4a_tree(tmp_path):
    """Three real m4a files (22.05 kHz stereo AAC) in the VoxCeleb2 layout, made by ffmpeg."""
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        pytest.skip("no ffmpeg")
    src = tmp_path / "vox2" / "dev" / "aac"
    utts = ["id00012/21Uxsk56VDQ/00001", "id00012/21Uxsk56VDQ/00002", "id00015/0fijmz4vTVU/00001"]
    t = np.arange(int(0.6 * 22050)) / 22050
    for i, utt in enumerate(utts):
        wav = tmp_path / "tmp.wav"
        stereo = np.stack([np.sin(2 * np.pi * (300 + 100 * i) * t)] * 2, axis=1) * 0.3
        sf.write(wav, stereo, 22050)
        out = src / f"{utt}.m4a"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", wav, "-c:a", "aac", out], check=True)
    return src, utts


def test_convert_m4a_parallel_resumable_atomic(tmp_path, m4a_tree):
    src, utts = m4a_tree
    dst = tmp_path / "vox2" / "dev" / "wav"
    result = invoke("prepare", "convert-m4a", src, dst, "--jobs", 2)
    assert result.exit_code == 0, result.output
    assert "converted 3, skipped 0" in result.output
    for utt in utts:
        info = sf.info(dst / f"{utt}.wav")
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames / 16000 == pytest.approx(0.6, abs=0.05)
    assert not list(dst.rglob("*.tmp"))
    # a first (300 Hz) tone survives the conversion
    wave, _ = sf.read(dst / f"{utts[0]}.wav")
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 300) < 5
    # resume: finished files are skipped, only the missing one is redone
    before = (dst / f"{utts[1]}.wav").stat().st_mtime_ns
    (dst / f"{utts[2]}.wav").unlink()
    stale = dst / "id00015" / "0fijmz4vTVU" / ".00001.wav.999.tmp"  # left by a killed run
    stale.write_bytes(b"half a file")
    again = convert_m4a_tree(src, dst, jobs=2)
    assert not stale.exists()
    assert (again.converted, again.skipped, again.failed) == (1, 2, [])
    assert (dst / f"{utts[1]}.wav").stat().st_mtime_ns == before
    # the converted tree is a VoxCeleb2 tree with the same utt ids
    result = invoke("prepare", "voxceleb", tmp_path / "vox2", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert DataDir.load(tmp_path / "data").utt_ids == utts


def test_convert_m4a_reports_failures_and_keeps_going(tmp_path, m4a_tree):
    src, utts = m4a_tree
    bad = src / "id00015" / "0fijmz4vTVU" / "00002.m4a"
    bad.write_bytes(b"this is not an m4a file")
    dst = tmp_path / "out"
    result = invoke("prepare", "convert-m4a", src, dst)
    assert result.exit_code == 2
    assert "1 files failed" in result.output and "00002.m4a" in result.output
    assert all((dst / f"{u}.wav").is_file() for u in utts)
    assert not (dst / "id00015" / "0fijmz4vTVU" / "00002.wav").exists()
    assert not list(dst.rglob("*.tmp"))


def test_prepare_musan_and_rirs_index_the_published_layouts(tmp_path):
    make_musan_tree(tmp_path / "corpora")
    make_rirs_tree(tmp_path / "corpora")
    result = invoke("prepare", "musan", tmp_path / "corpora", tmp_path / "musan.txt")
    assert result.exit_code == 0, result.output
    assert "4 music, 4 speech, 2 noise" in result.output
    index = read_index(tmp_path / "musan.txt")
    assert sorted(index) == ["music", "noise", "speech"]
    assert all(p.endswith(".wav") and Path(p).is_absolute() for ps in index.values() for p in ps)
    assert Path(index["noise"][0]).name == "noise-free-sound-0000.wav"
    # ROOT may also be the musan/ directory itself
    assert (
        invoke("prepare", "musan", tmp_path / "corpora" / "musan", tmp_path / "m2.txt").exit_code
        == 0
    )
    assert (tmp_path / "m2.txt").read_text() == (tmp_path / "musan.txt").read_text()

    result = invoke("prepare", "rirs", tmp_path / "corpora" / "RIRS_NOISES", tmp_path / "rirs.txt")
    assert result.exit_code == 0, result.output
    rirs = read_index(tmp_path / "rirs.txt")
    assert {k: len(v) for k, v in rirs.items()} == {"smallroom": 4, "mediumroom": 4, "largeroom": 4}
    assert rirs["smallroom"][0].endswith("simulated_rirs/smallroom/Room001/Room001-00001.wav")

    from speakerverify.data.augment import Augmenter

    augmenter = Augmenter(tmp_path / "musan.txt", tmp_path / "rirs.txt", aug_prob=1.0)
    assert augmenter.methods == ["noise", "music", "babble", "reverb"]
    wave = speech_like(0.5, seed=5)
    out = augmenter(wave, np.random.default_rng(0))
    assert out.shape == wave.shape and not np.allclose(out, wave)


def test_prepare_musan_rirs_errors_exit_2(tmp_path):
    result = invoke("prepare", "musan", tmp_path, tmp_path / "m.txt")
    assert result.exit_code == 2 and "not a musan tree" in result.output
    result = invoke("prepare", "rirs", tmp_path, tmp_path / "r.txt")
    assert result.exit_code == 2 and "not a RIRS_NOISES tree" in result.output
    (tmp_path / "bad.txt").write_text("noise /a.wav\nthunder /b.wav\n")
    from speakerverify.data.noise import MUSAN_KINDS, NoiseIndexError

    with pytest.raises(NoiseIndexError, match=r"bad\.txt:2: unknown kind 'thunder'"):
        read_index(tmp_path / "bad.txt", MUSAN_KINDS)
