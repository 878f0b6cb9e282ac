"""Audio file -> speaker embedding for the speaker commands: the model, the voiced-speech check
and the embedding of one file, and finding audio files in a directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speakerverify.errors import SpeakerVerifyError
from speakerverify.scoring import l2_normalize

logger = logging.getLogger(__name__)

RECOMMENDED_SAMPLE_RATE = 16000
# Shorter speech makes a meaningless embedding (and may be shorter than the encoder's context).
MIN_FILE_SPEECH_SECONDS = 0.5


class VerificationError(SpeakerVerifyError):
    """Input the commands cannot use (too little speech, no threshold, ...); one line."""


class WaveformEmbedder(Protocol):
    def embed_waveform(self, wave: Any) -> np.ndarray: ...


@dataclass
class SpeakerModel:
    """What the commands need from a checkpoint.

    Attributes:
        embedder: Anything with `embed_waveform(wave (S,)) -> (D,)` (normally `embed.Embedder`).
        fingerprint: The checkpoint's model fingerprint.
        sample_rate: Rate the front-end expects, Hz.
        path: The checkpoint path (for messages and the default calibration file).
    """

    embedder: WaveformEmbedder
    fingerprint: str
    sample_rate: int = RECOMMENDED_SAMPLE_RATE
    path: str = ""


def load_speaker_model(path: str | os.PathLike, device: str = "cpu") -> SpeakerModel:
    """Load a checkpoint for inference (`checkpoint.CheckpointError` when it is not usable)."""
    from speakerverify.checkpoint import CheckpointError, load_model

    if Path(path).is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    loaded = load_model(path, device=device)
    from speakerverify.embed import Embedder

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


def embed_utterance(
    model: SpeakerModel,
    path: str | os.PathLike,
    *,
    min_speech_seconds: float = MIN_FILE_SPEECH_SECONDS,
) -> Utterance:
    """Load `path`, keep its voiced frames and embed them.

    Raises:
        audio.AudioError: missing, empty, directory, corrupt or non-audio file.
        VerificationError: no speech, or less than `min_speech_seconds` of it.
    """
    from speakerverify.audio import (
        SOUNDFILE_EXTENSIONS,
        audio_info,
        load_audio,
        speech_mask,
        trim_silence,
    )

    warnings: list[str] = []
    file_rate = None
    if Path(path).suffix.lower() in SOUNDFILE_EXTENSIONS:
        file_rate = audio_info(path).sample_rate  # header only; ffmpeg formats would decode
        if file_rate < RECOMMENDED_SAMPLE_RATE:
            warnings.append(
                f"{path}: {file_rate} Hz audio is upsampled to {model.sample_rate} Hz; the model "
                "was trained on wideband speech, so accuracy drops"
            )
    wave = load_audio(path, model.sample_rate)
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
    try:
        embedding = model.embedder.embed_waveform(speech)
    except (ValueError, RuntimeError) as error:  # EmbedError, or too short for the encoder
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VerificationError(f"{path}: cannot embed ({cause})") from None
    embedding = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(embedding)) or not np.any(embedding):
        raise VerificationError(f"{path}: the model produced an unusable (zero/NaN) embedding")
    logger.debug("%s: %.2f s of speech embedded", path, speech_seconds)
    return Utterance(
        str(path),
        l2_normalize(embedding).astype(np.float32),
        speech_seconds,
        file_rate,
        tuple(warnings),
    )


AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".mp3",
        ".aiff",
        ".aif",
        ".au",
        ".caf",
        ".w64",
        ".m4a",
        ".aac",
        ".mp4",
        ".opus",
        ".webm",
        ".wma",
    }
)


def find_audio_files(directory: str | os.PathLike) -> list[Path]:
    """Audio files under `directory` (recursive, sorted), by extension."""
    directory = Path(directory)
    if not directory.exists():
        raise VerificationError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise VerificationError(f"{directory}: not a directory")
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
