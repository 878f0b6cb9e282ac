"""Hostile audio inputs (issue 22, audio input surface): names the system allows but Python
tripped on, and special files, are one-line AudioErrors naming the file, or are read.

The FIFO, the symlinks and the odd names are made inside the test's temp dir.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from synth import random_speaker, speech_like

from speakerverify.frontend.audio import AudioError, audio_info, load_audio, load_audio_array


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
