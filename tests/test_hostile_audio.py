"""Hostile audio inputs (issue 22, audio input surface): names the system allows but Python
tripped on, and special files, are one-line AudioErrors naming the file, or are read.

The FIFO, the symlinks and the odd names are made inside the test's temp dir.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from speakerverify.frontend.audio import AudioError, audio_info, load_audio, load_audio_array
from speakerverify.testing import random_speaker, speech_like


@pytest.fixture(scope="module")
def wave():
    return speech_like(1.0, 16000, random_speaker(np.random.default_rng(0)), seed=1)


def test_a_file_name_that_is_not_utf8_is_read(tmp_path, wave):
    path = os.path.join(os.fsdecode(tmp_path), os.fsdecode(b"\xff\xfe voice.wav"))
    sf.write(os.fsencode(path), wave, 16000)
    assert audio_info(path).sample_rate == 16000
    assert load_audio(path, 16000).shape[0] == 16000
    assert load_audio_array(path, 16000).shape[0] == 16000


def test_a_name_too_long_for_the_system_is_a_one_line_error(tmp_path):
    path = tmp_path / ("王" * 100 + ".wav")  # 304 bytes: more than a file name may have
    with pytest.raises(AudioError, match=r"file name too long$"):
        audio_info(path)


def test_an_empty_name_is_not_reported_as_a_directory():
    with pytest.raises(AudioError, match=r"^'': empty file name"):
        load_audio("")


def test_a_fifo_is_not_reported_as_an_empty_file(tmp_path):
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    handle = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # so that nothing could block on it
    try:
        with pytest.raises(AudioError, match=r"stream\.wav: is a FIFO, not an audio file"):
            load_audio(fifo)
    finally:
        os.close(handle)


def test_a_symlink_loop_is_not_reported_as_file_not_found(tmp_path):
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    with pytest.raises(AudioError, match=r"loop\.wav: symlink loop"):
        audio_info(loop)


def test_a_broken_symlink_says_so(tmp_path):
    link = tmp_path / "gone.wav"
    link.symlink_to(tmp_path / "moved-away.wav")
    with pytest.raises(AudioError, match=r"gone\.wav: broken symlink"):
        audio_info(link)


def test_a_path_through_a_file_is_not_found(tmp_path, wave):
    sf.write(tmp_path / "a.wav", wave, 16000)
    with pytest.raises(AudioError, match=r"file not found"):
        audio_info(tmp_path / "a.wav" / "b.wav")


def test_a_wav_cut_short_is_not_read_as_if_whole(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, speech_like(5.0, 16000, random_speaker(np.random.default_rng(2)), seed=3), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + int(1.7 * 16000) * 2])  # 1.7 of 5 s
    for read in (audio_info, load_audio, load_audio_array):
        with pytest.raises(AudioError, match=r"cut\.wav: truncated: .* 5\.00 s .* 1\.70 s"):
            read(cut)
    assert audio_info(full).duration_seconds == 5.0  # a whole file is untouched


def test_a_one_hertz_header_is_not_hours_of_speech(tmp_path, wave):
    path = tmp_path / "slow.wav"
    sf.write(path, wave[:240], 1)
    for read in (audio_info, load_audio, load_audio_array):
        with pytest.raises(AudioError, match="sample rate 1 Hz is too low for speech"):
            read(path)


def _sparse_wav(path, hours: float) -> None:
    """A 16 kHz 16-bit mono WAV whose header promises `hours` of audio and whose file is that
    long too, but sparse: all zeros, next to no disk."""
    data_bytes = int(hours * 3600 * 16000) * 2
    header = b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVEfmt "
    header += (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += (16000).to_bytes(4, "little") + (32000).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + data_bytes.to_bytes(4, "little")
    with open(path, "wb") as stream:
        stream.write(header)
        stream.truncate(len(header) + data_bytes)


def test_a_sparse_wav_claiming_ten_hours_is_refused_before_it_is_read(tmp_path):
    """It took 4.5 GB and 21 s to learn it was all zeros; now its length is refused from its
    header, in a process whose peak memory is measured (VmHWM: ru_maxrss would count the forked
    test runner) and capped at 2 GB of address space, so that reading it whole fails fast
    instead of swamping the machine."""
    import subprocess
    import sys

    path = tmp_path / "ten_hours.wav"
    _sparse_wav(path, 10)
    probe = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from speakerverify.frontend.audio import AudioError, check_audio_file, read_audio\n"
        "for step in (check_audio_file, read_audio):\n"
        "    try:\n"
        "        step(sys.argv[1])\n"
        "    except AudioError as error:\n"
        "        print(error)\n"
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
        "print(int(peak[0].split()[1]) // 1024)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("SPEAKERVERIFY_MAX_AUDIO_SECONDS", None)
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env
    )
    *messages, peak_mb = proc.stdout.splitlines() or [""]
    assert proc.returncode == 0, proc.stderr[-1000:]
    expected = f"{path}: 36000.0 s of audio, longer than the 1800 s read at most"
    assert len(messages) == 2 and all(m.startswith(expected) for m in messages), messages
    assert "SPEAKERVERIFY_MAX_AUDIO_SECONDS" in messages[0]
    assert int(peak_mb) < 400, f"{peak_mb} MB"


def test_the_longest_file_read_is_set_by_the_environment(tmp_path, wave, monkeypatch):
    path = tmp_path / "one_second.wav"
    sf.write(path, wave, 16000)
    monkeypatch.setenv("SPEAKERVERIFY_MAX_AUDIO_SECONDS", "0.5")
    for read in (load_audio, load_audio_array):
        with pytest.raises(AudioError, match=r"1\.0 s of audio, longer than the 0\.5 s read"):
            read(path)
    assert load_audio(path, duration_seconds=0.5).shape[0] == 8000  # a crop that fits is read
    monkeypatch.setenv("SPEAKERVERIFY_MAX_AUDIO_SECONDS", "nan")
    with pytest.raises(AudioError, match=r"MAX_AUDIO_SECONDS='nan': not a positive number"):
        load_audio(path)
