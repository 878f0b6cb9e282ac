"""Audio file or waveform -> speaker embedding for the speaker commands and the API: the model,
the voiced-speech check, the embedding of one input or a batch, and finding audio files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speakerverify.backend.embedder import EmbedError
from speakerverify.backend.scoring import l2_normalize
from speakerverify.backend.speech_limits import MIN_FILE_SPEECH_SECONDS
from speakerverify.errors import SpeakerVerifyError

logger = logging.getLogger(__name__)

RECOMMENDED_SAMPLE_RATE = 16000


class VerificationError(SpeakerVerifyError):
    """Input the commands cannot use (too little speech, no threshold, ...); one line."""


class WaveformEmbedder(Protocol):
    def embed_waveform(self, wave: Any) -> np.ndarray: ...


@dataclass
class SpeakerModel:
    """What the commands need from a checkpoint.

    Attributes:
        embedder: Anything with `embed_waveform(wave (S,)) -> (D,)` (normally
            `embedder.Embedder`).
        fingerprint: The checkpoint's model fingerprint.
        sample_rate: Rate the front-end expects, Hz.
        path: The checkpoint path (for messages and the default calibration file).
        backend: "torch", or "onnx" when the embedder takes numpy waveforms (audio is then
            read and trimmed in numpy: `onnx_embedder`, the fast path without torch).
    """

    embedder: WaveformEmbedder
    fingerprint: str
    sample_rate: int = RECOMMENDED_SAMPLE_RATE
    path: str = ""
    backend: str = "torch"


def load_speaker_model(path: str | os.PathLike, device: str = "cpu") -> SpeakerModel:
    """Load a checkpoint for inference (`checkpoint.CheckpointError` when it is not usable)."""
    from speakerverify.checkpoint import CheckpointError, load_encoder

    if Path(path).is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    loaded = load_encoder(path, device=device)
    from speakerverify.backend.embedder import Embedder

    embedder = Embedder(
        loaded.frontend, loaded.encoder, fingerprint=loaded.fingerprint, device=device
    )
    return SpeakerModel(embedder, loaded.fingerprint, loaded.sample_rate, str(path))


# -- audio -> embedding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One file's embedding and how much speech it held.

    Attributes:
        path: The file.
        embedding: (D,) float32, L2-normalised.
        speech_seconds: Voiced seconds found by the energy VAD.
        sample_rate: The file's own rate in Hz (None when not known without decoding).
        warnings: Things the user should know (e.g. 8 kHz input).
    """

    path: str
    embedding: np.ndarray
    speech_seconds: float
    sample_rate: int | None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "speech_seconds": round(self.speech_seconds, 3),
            "sample_rate": self.sample_rate,
        }


WAVEFORM = "waveform"  # how an in-memory waveform is named in messages


@dataclass(frozen=True)
class Speech:
    """The voiced part of one input, ready to embed.

    Attributes:
        path: The file, or "waveform" for an in-memory waveform.
        wave: `(S,)` float32 tensor of the voiced frames at the model's sample rate.
        speech_seconds: Its length in seconds.
        sample_rate: The input's own rate in Hz (None when not known without decoding).
        warnings: Things the user should know (e.g. 8 kHz input).
    """

    path: str
    wave: Any
    speech_seconds: float
    sample_rate: int | None
    warnings: tuple[str, ...] = ()


def _as_waveform(source: Any) -> Any:
    """A 1-D float waveform (numpy or torch) as a float32 tensor; AudioError when it is not one."""
    import torch

    from speakerverify.frontend.audio import AudioError

    try:
        wave = torch.as_tensor(source)
    except (TypeError, ValueError, RuntimeError):
        raise AudioError(
            f"{WAVEFORM}: expected a file path or a 1-D waveform, got {type(source).__name__}"
        ) from None
    if not wave.is_floating_point():
        raise AudioError(
            f"{WAVEFORM}: expected float samples in [-1, 1], got {str(wave.dtype).split('.')[-1]}"
        )
    if wave.ndim != 1:
        raise AudioError(f"{WAVEFORM}: expected a 1-D waveform (S,), got shape {tuple(wave.shape)}")
    if wave.shape[0] == 0:
        raise AudioError(f"{WAVEFORM}: empty (0 samples)")
    if not bool(torch.isfinite(wave).all()):
        raise AudioError(f"{WAVEFORM}: contains NaN or infinite samples")
    return wave.detach().to("cpu", torch.float32)


def _waveform_rate(sample_rate: Any) -> int | None:
    """`sample_rate` as a positive int (None stays None); AudioError when it is not one."""
    from speakerverify.frontend.audio import AudioError

    if sample_rate is None:
        return None
    try:
        rate = int(sample_rate)
        valid = rate == sample_rate and rate > 0
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise AudioError(f"{WAVEFORM}: sample_rate must be a positive whole number of Hz, got "
                         f"{sample_rate!r}")  # fmt: skip
    return rate


def load_speech(
    model: SpeakerModel,
    source: str | os.PathLike | Any,
    *,
    min_speech_seconds: float = MIN_FILE_SPEECH_SECONDS,
    sample_rate: int | None = None,
) -> Speech:
    """Read `source` (a file, or a 1-D waveform at `sample_rate` Hz), resample it to
    `model.sample_rate` and keep its voiced frames.

    Args:
        sample_rate: the rate of a waveform `source`, required for one (a wrong rate would embed
            without complaint, as another voice); files are read at their own rate.

    Raises:
        audio.AudioError: missing, empty, directory, corrupt or non-audio file; not a waveform,
            or a waveform without `sample_rate`.
        VerificationError: no speech, or less than `min_speech_seconds` of it.
    """
    from speakerverify.frontend.audio import SOUNDFILE_EXTENSIONS, AudioError, audio_info, resample

    if model.backend == "onnx":  # the same rules on numpy arrays, without importing torch
        from speakerverify.frontend.audio import load_audio_array as load_audio
        from speakerverify.frontend.vad_numpy import speech_mask, trim_silence
    else:
        from speakerverify.frontend.audio import load_audio, speech_mask, trim_silence

    warnings: list[str] = []
    file_rate = None
    if isinstance(source, str | os.PathLike):
        path = str(source)
        if Path(path).suffix.lower() in SOUNDFILE_EXTENSIONS:
            file_rate = audio_info(path).sample_rate  # header only; ffmpeg formats would decode
        wave = load_audio(path, model.sample_rate)
    else:
        path, wave, file_rate = WAVEFORM, _as_waveform(source), _waveform_rate(sample_rate)
        if file_rate is None:
            raise AudioError(
                f"{WAVEFORM}: pass sample_rate= with a waveform (its rate in Hz, e.g. the rate "
                f"soundfile.read returns); it is resampled to the model's {model.sample_rate} Hz"
            )
        wave = resample(wave.numpy(), file_rate, model.sample_rate)
        if model.backend != "onnx":
            import torch

            wave = torch.from_numpy(wave)
    if file_rate is not None and file_rate < RECOMMENDED_SAMPLE_RATE:
        warnings.append(narrowband_warning(path, file_rate, model.sample_rate))
    if not bool(speech_mask(wave, model.sample_rate).any()):
        raise VerificationError(f"{path}: no speech found (silence or noise only)")
    speech = trim_silence(wave, model.sample_rate)
    speech_seconds = speech.shape[0] / model.sample_rate
    min_speech_seconds = max(min_speech_seconds, MIN_FILE_SPEECH_SECONDS)
    if speech_seconds < min_speech_seconds:
        raise VerificationError(
            f"{path}: only {speech_seconds:.2f} s of speech, need at least "
            f"{min_speech_seconds:g} s (--min-speech)"
        )
    return Speech(path, speech, speech_seconds, file_rate, tuple(warnings))


def narrowband_warning(path: str, rate: int, model_rate: int) -> str:
    """What to tell about input below 16 kHz: it is upsampled, and its upper band is gone."""
    return (
        f"{path}: {rate} Hz audio is upsampled to {model_rate} Hz; it has nothing above "
        f"{rate / 2000:g} kHz, so accuracy may be lower than on wideband speech"
    )


def _finish(speech: Speech, embedding: Any) -> Utterance:
    embedding = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(embedding)) or not np.any(embedding):
        raise VerificationError(
            f"{speech.path}: the model produced an unusable (zero/NaN) embedding"
        )
    logger.debug("%s: %.2f s of speech embedded", speech.path, speech.speech_seconds)
    return Utterance(
        speech.path,
        l2_normalize(embedding).astype(np.float32),
        speech.speech_seconds,
        speech.sample_rate,
        speech.warnings,
    )


def embed_speech(model: SpeakerModel, speeches: list[Speech]) -> list[Utterance]:
    """Embed voiced speech, several inputs per forward pass when the embedder can batch.

    Raises:
        VerificationError: an input the model cannot embed (named), or an unusable embedding.
    """
    batched = getattr(model.embedder, "embed_waveforms", None)
    if len(speeches) > 1 and batched is not None:
        try:
            matrix = batched([s.wave for s in speeches])
        except EmbedError:  # one at a time, to name the input that failed
            return [embed_speech(model, [s])[0] for s in speeches]
        return [_finish(s, e) for s, e in zip(speeches, matrix, strict=True)]
    out = []
    for speech in speeches:
        try:
            embedding = model.embedder.embed_waveform(speech.wave)
        # EmbedError only: the embedders' word for an input they cannot embed (shorter than the
        # encoder's context, a non-finite result, an input onnxruntime refuses). Anything else,
        # e.g. a shape bug in an encoder, is a bug and stays a traceback.
        except EmbedError as error:
            cause = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise VerificationError(f"{speech.path}: cannot embed ({cause})") from None
        out.append(_finish(speech, embedding))
    return out


def embed_utterance(
    model: SpeakerModel,
    path: str | os.PathLike | Any,
    *,
    min_speech_seconds: float = MIN_FILE_SPEECH_SECONDS,
    sample_rate: int | None = None,
) -> Utterance:
    """Load `path` (or take a 1-D waveform at `sample_rate` Hz), keep its voiced frames and
    embed them.

    Raises:
        audio.AudioError: missing, empty, directory, corrupt or non-audio file; not a waveform,
            or a waveform without `sample_rate`.
        VerificationError: no speech, or less than `min_speech_seconds` of it.
    """
    speech = load_speech(
        model, path, min_speech_seconds=min_speech_seconds, sample_rate=sample_rate
    )
    return embed_speech(model, [speech])[0]


def find_audio_files(directory: str | os.PathLike) -> list[Path]:
    """Audio files under `directory`, sorted, walked as `prepare dir` walks a corpus
    (`data.layout.iter_audio_files`: symlinks followed, a link loop once, a file reached twice
    refused); broken links are left out.
    """
    from speakerverify.data.layout import iter_audio_files

    directory = Path(directory)
    if not directory.exists():
        raise VerificationError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise VerificationError(f"{directory}: not a directory")
    return sorted(p for p in iter_audio_files(directory) if p.is_file())
