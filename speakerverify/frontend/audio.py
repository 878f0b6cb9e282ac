"""Reading audio files into 16 kHz mono float tensors, with validation and a Kaldi-like energy VAD.

wav/flac/ogg/mp3 (and the other libsndfile formats) are read with soundfile, seeking for crops;
m4a/aac and anything else go through an ``ffmpeg`` subprocess (PATH, else ``imageio_ffmpeg``).
Every rate is converted by one resampler, soxr (`resample`), on the torch and the torch-free path.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

if TYPE_CHECKING:  # torch is imported where it is used: `read_audio` must not need it
    import torch

from speakerverify.errors import SpeakerVerifyError
from speakerverify.files import STAT_ERRORS, file_kind
from speakerverify.frontend.vad_numpy import speech_mask as numpy_speech_mask
from speakerverify.frontend.vad_numpy import voiced_samples

logger = logging.getLogger(__name__)

# Extensions read by libsndfile; everything else is decoded by ffmpeg.
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64"}
)
# What counts as audio when a directory is searched (`prepare dir`, `adapt`, `enroll`, VoxCeleb):
# the above and the formats only ffmpeg decodes.
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | {".m4a", ".aac", ".mp4", ".opus", ".webm", ".wma"}
# Below this a file cannot hold speech (a header claiming 1 Hz made 4 s into "239.5 s of speech").
MIN_SAMPLE_RATE = 4000
# Longer files are refused before a sample is read: a file is read whole, and a sparse wav whose
# header claimed 10 hours took 4.5 GB before failing (an hour takes about 2 GB through the
# embedding). Set the environment variable to read longer ones, or to refuse sooner.
MAX_AUDIO_SECONDS = 1800.0
MAX_AUDIO_SECONDS_ENV = "SPEAKERVERIFY_MAX_AUDIO_SECONDS"
# File signatures of the formats above, to tell "not audio" from "corrupt audio".
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd", b"caff")


class AudioError(SpeakerVerifyError):
    """A file could not be read as audio; the message is one line naming the file and the cause."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, as stored (before resampling or downmixing)."""

    sample_rate: int
    num_frames: int
    num_channels: int
    duration_seconds: float


def find_ffmpeg() -> str | None:
    """Path of ffmpeg: the one on PATH, else imageio-ffmpeg's bundled one, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None


def _check_path(path: str | os.PathLike) -> Path:
    """`path` as a Path once it is a readable, non-empty regular file (AudioError otherwise).

    Any name the system gives is accepted, however long or in whatever encoding (names that
    are not UTF-8 reach Python with surrogate escapes and are passed on as bytes)."""
    if os.fspath(path) in ("", b""):
        raise AudioError("'': empty file name, not an audio file")
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise AudioError(f"{path}: broken symlink (its target does not exist)") from None
        raise AudioError(f"{path}: file not found") from None
    except OSError as error:
        cause = STAT_ERRORS.get(error.errno, error.strerror)
        raise AudioError(f"{path}: {cause}") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(f"{path}: is {file_kind(info.st_mode)}, not an audio file")
    if info.st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    return path


def check_audio_file(path: str | os.PathLike) -> None:
    """Fail early, with the message reading it would give, on a file that cannot be audio.

    Checks that it exists, is not a directory, is not empty, is readable and, for the formats
    soundfile reads, that its header parses and holds samples; ffmpeg formats would have to be
    decoded to check more than the path. Cheap (a stat and a header read), so commands run it on
    every input before loading a model.

    Raises:
        AudioError: as `read_audio` would for those causes, with the same one-line messages.
    """
    path = _check_path(path)
    if _uses_soundfile(path):
        info = audio_info(path)
        if info.num_frames == 0:
            raise AudioError(f"{path}: contains no audio samples (zero length)")
        _check_duration(path, info.num_frames, info.sample_rate)


def _soundfile_error(path: Path, error: Exception) -> AudioError:
    with open(path, "rb") as handle:
        head = handle.read(16)
    is_mp3_sync = len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0
    cause = str(error).splitlines()[0] if str(error) else type(error).__name__
    if head.startswith(_AUDIO_MAGIC) or is_mp3_sync:
        return AudioError(f"{path}: unreadable or corrupt audio header ({cause})")
    return AudioError(f"{path}: not an audio file (unrecognised format: {cause})")


def _uses_soundfile(path: Path) -> bool:
    return path.suffix.lower() in SOUNDFILE_EXTENSIONS


def _check_rate(path: Path, sample_rate: int) -> None:
    if sample_rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {sample_rate} Hz is too low for speech "
            f"(at least {MIN_SAMPLE_RATE} Hz); a corrupt header?"
        )


def max_audio_seconds() -> float:
    """The longest file read: $SPEAKERVERIFY_MAX_AUDIO_SECONDS when set, else MAX_AUDIO_SECONDS.

    Raises:
        AudioError: the variable is set to something that is not a positive number.
    """
    value = os.environ.get(MAX_AUDIO_SECONDS_ENV, "").strip()
    if not value:
        return MAX_AUDIO_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise AudioError(f"${MAX_AUDIO_SECONDS_ENV}={value!r}: not a positive number of seconds")
    return seconds


def _check_duration(path: Path, num_frames: int, sample_rate: int) -> None:
    """Refuse to read `num_frames` at `sample_rate` when that is longer than `max_audio_seconds`."""
    limit = max_audio_seconds()
    if sample_rate > 0 and num_frames > limit * sample_rate:
        raise AudioError(
            f"{path}: {num_frames / sample_rate:.1f} s of audio, longer than the {limit:g} s "
            f"read at most (set ${MAX_AUDIO_SECONDS_ENV} to read longer files)"
        )


def _check_wav_length(path: Path) -> None:
    """Refuse a RIFF WAV whose data chunk is shorter than its header says (a cut-off copy):
    libsndfile reads what is there without a word. Streamed WAVs (size 0 or 0xFFFFFFFF) and
    other formats pass."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return  # the reader will say what is wrong
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    position, byte_rate = 12, 0
    while position + 8 <= len(head):
        chunk, length = (
            head[position : position + 4],
            int.from_bytes(head[position + 4 : position + 8], "little"),
        )
        if chunk == b"fmt " and position + 16 <= len(head):
            byte_rate = int.from_bytes(head[position + 16 : position + 20], "little")
        if chunk == b"data":
            available = size - (position + 8)
            if 0 < length < 0xFFFFFFFF and length > available and byte_rate > 0:
                raise AudioError(
                    f"{path}: truncated: its header promises {length / byte_rate:.2f} s of audio "
                    f"but the file holds {max(available, 0) / byte_rate:.2f} s"
                )
            return
        position += 8 + length + (length & 1)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, length and channel count of a file without decoding it (ffmpeg formats decode).

    Raises:
        AudioError: the file is missing, empty, not audio or corrupt.
    """
    path = _check_path(path)
    if _uses_soundfile(path):
        try:
            info = sf.info(os.fsencode(path))  # bytes: names need not be UTF-8
        except (sf.LibsndfileError, RuntimeError) as error:
            raise _soundfile_error(path, error) from None
        num_frames, sample_rate = int(info.frames), int(info.samplerate)
        num_channels = int(info.channels)
        _check_wav_length(path)
    else:
        mono, sample_rate, num_channels = _ffmpeg_decode(path, None)
        num_frames = int(mono.shape[0])
    _check_rate(path, sample_rate)
    return AudioInfo(sample_rate, num_frames, num_channels, num_frames / sample_rate)


def _read_soundfile(
    path: Path, offset_seconds: float, duration_seconds: float | None
) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(os.fsencode(path)) as handle:
            file_rate = handle.samplerate
            start = round(offset_seconds * file_rate)
            if start >= handle.frames > 0:
                raise AudioError(
                    f"{path}: offset {offset_seconds:.3f} s is past the end "
                    f"({handle.frames / file_rate:.3f} s)"
                )
            num = -1 if duration_seconds is None else round(duration_seconds * file_rate)
            remaining = max(handle.frames - start, 0)
            _check_duration(path, remaining if num < 0 else min(num, remaining), file_rate)
            if start > 0:
                handle.seek(start)
            data = handle.read(frames=num, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError) as error:
        raise _soundfile_error(path, error) from None
    return data, file_rate


def _ffmpeg_exe(path: Path) -> str:
    exe = find_ffmpeg()
    if exe is None:
        raise AudioError(
            f"{path}: ffmpeg is needed to read {path.suffix or 'this'} files; install ffmpeg "
            "(on PATH) or `pip install imageio-ffmpeg`"
        )
    return exe


def _ffmpeg_decode(
    path: Path,
    sample_rate: int | None,
    offset_seconds: float = 0.0,
    duration_seconds: float | None = None,
) -> tuple[np.ndarray, int, int]:
    """Decode through a pipe to (mono float32, sample_rate, num_channels of the file).

    `sample_rate` None keeps the file's rate. Channels are averaged here, not by ffmpeg.

    ffmpeg's own ``-ac 1`` downmix sums at -3 dB instead of averaging, so it writes a float WAV
    with all channels and we read the channel count from its header. The crop is applied on the
    output side: input seeking in m4a landed ~2 % late in tests (AAC priming), output seeking is
    sample-exact at the cost of decoding from the start. At most a second more than
    `max_audio_seconds` is decoded, to tell a file that is too long.
    """
    exe = _ffmpeg_exe(path)
    command = [exe, "-hide_banner", "-nostdin", "-v", "error", "-i", os.fsencode(path), "-vn"]
    if offset_seconds > 0:
        command += ["-ss", f"{offset_seconds:.6f}"]
    most = max_audio_seconds() + 1.0
    command += ["-t", f"{most if duration_seconds is None else min(duration_seconds, most):.6f}"]
    if sample_rate is not None:
        command += ["-ar", str(sample_rate)]
    command += ["-c:a", "pcm_f32le", "-map_metadata", "-1"]
    command += ["-f", "wav", "-"]
    proc = subprocess.run(command, capture_output=True)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        cause = lines[-1] if lines else f"exit code {proc.returncode}"
        if "Invalid data found" in cause or "does not contain any stream" in cause:
            raise AudioError(f"{path}: not an audio file or corrupt ({cause})")
        raise AudioError(f"{path}: ffmpeg could not decode it ({cause})")
    num_channels, rate, samples = _parse_float_wav(proc.stdout, path)
    data = np.frombuffer(samples[: len(samples) // (4 * num_channels) * 4 * num_channels], "<f4")
    _check_duration(path, data.shape[0] // num_channels, rate)
    return data.reshape(-1, num_channels).mean(axis=1, dtype=np.float32), rate, num_channels


def _parse_float_wav(blob: bytes, path: Path) -> tuple[int, int, bytes]:
    """(num_channels, sample_rate, sample bytes) of the streamed WAV ffmpeg writes.

    The data size in a piped WAV header is unset, so the samples are simply the rest of the stream.
    """
    num_channels, sample_rate, pos = 0, 0, 12
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioError(f"{path}: ffmpeg produced no audio (output is not WAV)")
    while pos + 8 <= len(blob):
        chunk_id, size = blob[pos : pos + 4], int.from_bytes(blob[pos + 4 : pos + 8], "little")
        if chunk_id == b"fmt ":
            num_channels = int.from_bytes(blob[pos + 10 : pos + 12], "little")
            sample_rate = int.from_bytes(blob[pos + 12 : pos + 16], "little")
        elif chunk_id == b"data":
            if num_channels < 1:
                break
            return num_channels, sample_rate, blob[pos + 8 :]
        pos += 8 + size + (size & 1)
    raise AudioError(f"{path}: ffmpeg produced no audio (malformed WAV stream)")


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    offset_seconds: float = 0.0,
    duration_seconds: float | None = None,
    allow_silence: bool = False,
) -> torch.Tensor:
    """Read a file as mono float32 at `sample_rate`, optionally only a crop of it.

    Channels are averaged; other rates are converted by `resample` (soxr), as in
    `load_audio_array`, so the torch and the ONNX paths see the same samples.
    A crop reads only its own frames with soundfile (seek + read); ffmpeg decodes from the start
    and cuts on its output side, which is sample-exact.

    Args:
        path: audio file (wav, flac, ogg, mp3 via soundfile; m4a, aac, ... via ffmpeg).
        sample_rate: rate of the returned waveform in Hz.
        offset_seconds: start of the crop, in seconds of the file.
        duration_seconds: length of the crop (None: to the end); shorter if the file ends first.
        allow_silence: return digital silence instead of raising (a silent crop inside an
            otherwise fine training file is normal; a silent enrollment file is not).

    Returns:
        Waveform `(S,)` float32; integer files are in [-1, 1].

    Raises:
        AudioError: missing file, directory, empty or zero-length file, corrupt header, not audio,
            NaN/Inf samples, an all-zero signal (unless `allow_silence`), or ffmpeg missing for a
            format that needs it.

    >>> import tempfile, numpy as np, soundfile as sf
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = folder.name + "/tone.wav"
    >>> sf.write(path, 0.5 * np.sin(np.arange(8000) * 0.1), 8000)
    >>> load_audio(path).shape
    torch.Size([16000])
    >>> load_audio(path, 8000, offset_seconds=0.25, duration_seconds=0.5).shape
    torch.Size([4000])
    >>> folder.cleanup()
    """
    import torch

    mono, file_rate = read_audio(
        path,
        offset_seconds=offset_seconds,
        duration_seconds=duration_seconds,
        allow_silence=allow_silence,
    )
    return torch.from_numpy(resample(mono, file_rate, sample_rate))


def load_audio_array(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """`load_audio` as a float32 numpy array `(S,)`, without torch (the ONNX fast path).

    Other rates than `sample_rate` go through the same `resample` as `load_audio`, so both
    give the same samples.
    """
    mono, file_rate = read_audio(path)
    return resample(mono, file_rate, sample_rate)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """`wave` `(S,)` at `orig_rate` Hz as float32 `(round(S * new_rate / orig_rate),)` at
    `new_rate` Hz, by soxr at its high quality (no torch: the fast path resamples too).

    The one resampler of files and waveforms on every path (torch and ONNX engines, training
    crops, extraction, the API), so that a file and its samples embed alike whichever engine runs.
    A crop is resampled on its own: its first and last few milliseconds differ from the same
    stretch of the whole file.

    >>> import numpy as np
    >>> resample(np.ones(22050, np.float32), 22050, 16000).shape
    (16000,)
    """
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if orig_rate == new_rate:
        return wave
    import soxr

    return np.ascontiguousarray(soxr.resample(wave, orig_rate, new_rate, quality="HQ"), np.float32)


def read_audio(
    path: str | os.PathLike,
    *,
    offset_seconds: float = 0.0,
    duration_seconds: float | None = None,
    allow_silence: bool = False,
) -> tuple[np.ndarray, int]:
    """`load_audio` without resampling or torch: (mono float32 `(S,)`, the file's rate in Hz).

    Raises:
        AudioError: as `load_audio`, with the same messages.
    """
    path = _check_path(path)
    if offset_seconds < 0 or (duration_seconds is not None and duration_seconds <= 0):
        raise AudioError(
            f"{path}: invalid crop (offset {offset_seconds} s, duration {duration_seconds} s)"
        )
    if _uses_soundfile(path):
        if offset_seconds == 0 and duration_seconds is None:  # whole files; crops read on
            _check_wav_length(path)
        data, file_rate = _read_soundfile(path, offset_seconds, duration_seconds)
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    else:
        # Decode at the file's rate so every format is resampled by the same filter (`resample`).
        mono, file_rate, _ = _ffmpeg_decode(path, None, offset_seconds, duration_seconds)
    _check_rate(path, int(file_rate))
    if mono.size == 0:
        raise AudioError(f"{path}: contains no audio samples (zero length)")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if not bool(np.isfinite(mono).all()):
        raise AudioError(f"{path}: contains NaN or Inf samples")
    if not allow_silence and not bool(np.abs(mono).max() > 0):
        raise AudioError(f"{path}: all-zero signal (digital silence)")
    return mono, int(file_rate)


def speech_mask(
    wave: torch.Tensor,
    sample_rate: int = 16000,
    *,
    energy_threshold: float = 5.5,
    energy_mean_scale: float = 0.5,
    frames_context: int = 2,
    proportion_threshold: float = 0.6,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> torch.Tensor:
    """Which 10 ms frames hold speech, by Kaldi's ``compute-vad`` energy rule.

    A frame is voiced when at least `proportion_threshold` of the frames within `frames_context`
    of it have log-energy above ``energy_threshold + energy_mean_scale * mean(log-energy)``.
    Frames are the snip-edges frames of :class:`speakerverify.frontend.features.Fbank`, so the mask
    lines up with the feature frames. Energies are on Kaldi's 16-bit scale, so Kaldi's defaults
    apply; as in Kaldi, steady noise well above digital silence counts as voiced.

    Args:
        wave: waveform `(S,)`, float in [-1, 1].
        sample_rate: rate of `wave` in Hz.

    Returns:
        Bool tensor `(T,)`, ``T = 1 + (S - 400) // 160`` at 16 kHz (0 if shorter than a frame).

    >>> import torch
    >>> tone = 0.3 * torch.sin(torch.arange(16000) * 0.2)
    >>> wave = torch.cat([torch.zeros(16000), tone, torch.zeros(16000)])
    >>> mask = speech_mask(wave)
    >>> int(mask[:95].sum()), int(mask[105:195].sum()), int(mask[205:].sum())
    (0, 90, 0)
    """
    import torch

    mask = numpy_speech_mask(
        wave.detach().cpu().numpy(),
        sample_rate,
        energy_threshold=energy_threshold,
        energy_mean_scale=energy_mean_scale,
        frames_context=frames_context,
        proportion_threshold=proportion_threshold,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
    )
    return torch.from_numpy(mask).to(wave.device)


def trim_silence(
    wave: torch.Tensor, sample_rate: int = 16000, **vad_options: float
) -> torch.Tensor:
    """Keep the voiced 10 ms frames of `wave` and those within `vad_numpy.HANGOVER_MS` of one
    (see :func:`speech_mask` for the options; `hangover_ms` changes the reach): leading,
    trailing and long silences go, short pauses stay.

    Each frame owns the `frame_shift` samples it starts with (the last frame its whole window),
    so concatenating the kept frames never repeats a sample. If no frame is voiced, or the wave is
    shorter than one frame, `wave` is returned unchanged (and a warning is logged) rather than an
    empty tensor.

    Args:
        wave: waveform `(S,)`.

    Returns:
        Waveform `(S',)` with ``S' <= S``.
    """
    import torch

    keep = voiced_samples(wave.detach().cpu().numpy(), sample_rate, **vad_options)
    if keep is None:
        logger.warning("trim_silence: no voiced frame found; keeping the whole signal")
        return wave
    return wave[torch.from_numpy(keep).to(wave.device)]
