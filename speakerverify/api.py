"""The Python API: load a model, then embed, score and verify audio files or waveforms.

A thin layer over the library the CLI uses (`backend.speaker_model` for VAD trimming and
embedding, `speakers.decision` for calibrated decisions, `speakers.verification` for pair trials),
so the same input gives the same embedding, score and decision as the `speakerverify` command. Bad
input raises the project's exceptions (`audio.AudioError`, `speaker_model.VerificationError`,
`checkpoint.CheckpointError`) with the CLI's one-line messages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from speakerverify.backend.scoring import cosine_scores
from speakerverify.backend.speaker_model import (
    SpeakerModel,
    embed_speech,
    embed_utterance,
    load_speaker_model,
    load_speech,
)
from speakerverify.backend.speech_limits import MIN_SPEECH_SECONDS
from speakerverify.speakers.decision import resolve_decision_rule
from speakerverify.speakers.results import VerifyResult
from speakerverify.speakers.verification import verify_pair

__all__ = ["Model", "load_model"]

# A file path, or a 1-D float waveform (numpy or torch) whose rate is passed as `sample_rate=`.
Audio = Any


class Model:
    """A loaded speaker model: `embed`, `embed_batch`, `score` and `verify`.

    Inputs are audio file paths (read at their own rate) or 1-D float waveforms `(S,)` (numpy or
    torch) with their rate in Hz as `sample_rate=`, required for waveforms; other rates than the
    model's (16 kHz) are resampled as files are. Silence is trimmed by the energy VAD first, and
    less than `min_speech_seconds` of speech (default 1 s, as in the CLI) is an error.

    Args:
        speaker_model: the checkpoint loaded by `speaker_model.load_speaker_model`.
        name: a display name (the bundled model's card name, else the file stem).
    """

    def __init__(self, speaker_model: SpeakerModel, name: str = "") -> None:
        self.speaker_model = speaker_model
        self.name = name or os.path.splitext(os.path.basename(speaker_model.path))[0]

    @property
    def fingerprint(self) -> str:
        """The model fingerprint that stores and calibrations are tied to."""
        return self.speaker_model.fingerprint

    @property
    def path(self) -> str:
        """The checkpoint file."""
        return self.speaker_model.path

    @property
    def sample_rate(self) -> int:
        """The rate the model works at, Hz (inputs at other rates are resampled to it)."""
        return self.speaker_model.sample_rate

    @property
    def embed_dim(self) -> int:
        """D, the embedding size."""
        return int(self.speaker_model.embedder.embed_dim)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, fingerprint={self.fingerprint!r}, embed_dim={self.embed_dim})"

    def embed(
        self,
        audio: Audio,
        *,
        sample_rate: int | None = None,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
    ):
        """Embedding `(D,)` float32, L2-normalised, of the voiced speech in `audio`.

        Args:
            audio: a file path, or a 1-D float waveform `(S,)`.
            sample_rate: the waveform's rate in Hz (required for a waveform; files carry theirs).
            min_speech_seconds: speech needed after trimming silence.

        Raises:
            audio.AudioError: unreadable file, not a 1-D float waveform, or no `sample_rate`.
            speaker_model.VerificationError: less than `min_speech_seconds` of speech.
        """
        utterance = embed_utterance(
            self.speaker_model,
            audio,
            min_speech_seconds=min_speech_seconds,
            sample_rate=sample_rate,
        )
        return utterance.embedding

    def embed_batch(
        self,
        audios: Sequence[Audio],
        *,
        sample_rate: int | None = None,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
    ):
        """Embeddings `(N, D)` float32, L2-normalised; inputs of similar length share a forward
        pass (equal to `embed` of each, up to float rounding). `sample_rate` is the rate of the
        waveforms among `audios` (files carry their own).
        """
        if isinstance(audios, str | os.PathLike):
            raise TypeError("embed_batch takes a list of inputs; use embed for one")
        _check_files(audios)
        speeches = [
            load_speech(
                self.speaker_model,
                audio,
                min_speech_seconds=min_speech_seconds,
                sample_rate=sample_rate,
            )
            for audio in audios
        ]
        if not speeches:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.stack([u.embedding for u in embed_speech(self.speaker_model, speeches)])

    def score(
        self,
        first: Audio,
        second: Audio,
        *,
        sample_rate: int | None = None,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
    ) -> float:
        """Cosine score of two inputs (what `verify` decides on); `sample_rate` as in `embed`."""
        _check_files([first, second])
        options = {"sample_rate": sample_rate, "min_speech_seconds": min_speech_seconds}
        a = self.embed(first, **options)
        b = self.embed(second, **options)
        return float(cosine_scores(a, b)[0])

    def verify(
        self,
        first: Audio,
        second: Audio,
        *,
        threshold: float | None = None,
        p_target: float | None = None,
        calibration: str | os.PathLike | None = None,
        sample_rate: int | None = None,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
    ) -> VerifyResult:
        """Do two inputs have the same speaker? As `speakerverify verify FIRST SECOND`;
        `sample_rate` is the rate of waveform inputs, as in `embed`.

        The decision comes from the model's calibration (`<checkpoint stem>.calibration.json`, or
        `calibration`) at `p_target` (None: the calibration's default operating point), or from
        `threshold` on the raw cosine score. The result has
        `score`, `llr`, `accepted`, `decision` and `rule` (its `source`, `threshold`,
        `describe()`); `to_json()` is the CLI's `--json` document.

        Raises:
            speaker_model.VerificationError: neither a calibration nor a threshold, bad `p_target`,
                too little speech.
            audio.AudioError: unreadable input.
        """
        _check_files([first, second])
        rule = resolve_decision_rule(
            self.speaker_model,
            threshold=threshold,
            calibration_path=calibration,
            p_target=p_target,
        )
        return verify_pair(
            self.speaker_model,
            rule,
            first,
            second,
            min_speech_seconds=min_speech_seconds,
            sample_rate=sample_rate,
        )


def _check_files(audios: Sequence[Audio]) -> None:
    """Check every file among `audios` before embedding any: a bad last file fails at once."""
    from speakerverify.frontend.audio import check_audio_file

    for audio in audios:
        if isinstance(audio, str | os.PathLike):
            check_audio_file(audio)


def load_model(path: str | os.PathLike | None = None, *, device: str = "cpu") -> Model:
    """Load a checkpoint for inference; None loads the bundled model.

    Raises:
        checkpoint.CheckpointError: unusable checkpoint, or the bundled model is missing.
    """
    name = ""
    if path is None:
        from speakerverify.pretrained import bundled_card, bundled_checkpoint

        path = bundled_checkpoint()
        name = str(bundled_card().get("name", ""))
    return Model(load_speaker_model(os.path.expanduser(str(path)), device=device), name)
