"""A small ctypes driver for the eSpeak NG library shipped by the `espeakng-loader` wheel.

Synchronous synthesis into a numpy buffer (22,050 Hz int16) with a per-process copy of the voice
data so that each synthetic speaker can get its own voice *variant* file (`voices/!v/<name>`),
rewritten before every utterance; eSpeak re-reads a variant file on each `SetVoiceByName`, so no
voice listing (capped at ~349 entries per data folder) is involved.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from dataclasses import dataclass, field

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """The eSpeak NG library could not be loaded, initialised or driven."""


@dataclass
class VoiceVariant:
    """One eSpeak voice variant: what makes a synthetic speaker sound like themselves.

    Percentages are eSpeak's: formant frequency/height/width relative to the language default.
    """

    gender: str  # "male" | "female"
    pitch_hz: tuple[int, int]  # eSpeak `pitch base top`
    formants: list[tuple[int, int, int, int]]  # (index, freq %, height %, width %) for 0..8
    breath: list[int] = field(default_factory=lambda: [0] * 8)
    breath_width: list[int] | None = None
    flutter: int = 0
    roughness: int = 0
    voicing: int = 100
    consonants: tuple[int, int] = (100, 100)
    tone: list[int] | None = None  # frequency/amplitude pairs: spectral tilt of the voice
    klatt: int = 0  # 0 = eSpeak's own wave generator, 1..4 = Klatt variants

    def to_text(self, name: str) -> str:
        """The variant file content (eSpeak `voices/!v` syntax)."""
        lines = ["language variant", f"name {name}", f"gender {self.gender}"]
        lines.append(f"pitch {self.pitch_hz[0]} {self.pitch_hz[1]}")
        for index, freq, height, width in self.formants:
            lines.append(f"formant {index} {freq} {height} {width}")
        lines.append("breath " + " ".join(str(b) for b in self.breath))
        if self.breath_width:
            lines.append("breathw " + " ".join(str(b) for b in self.breath_width))
        lines.append(f"flutter {self.flutter}")
        lines.append(f"roughness {self.roughness}")
        lines.append(f"voicing {self.voicing}")
        lines.append(f"consonants {self.consonants[0]} {self.consonants[1]}")
        if self.tone:
            lines.append("tone " + " ".join(str(t) for t in self.tone))
        if self.klatt:
            lines.append(f"klatt {self.klatt}")
        return "\n".join(lines) + "\n"


class Espeak:
    """One eSpeak NG instance per process (the library keeps global state).

    Args:
        data_root: a directory that holds (or will hold) a private copy of `espeak-ng-data`.
        variant_name: file name under `voices/!v/` that `synthesize` rewrites per call.
    """

    sample_rate: int

    def __init__(self, data_root: str, variant_name: str = "speaker") -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise EspeakError(
                "espeakng-loader is not installed (pip install 'speakerverify[demo]')"
            ) from exc
        data_dir = os.path.join(data_root, "espeak-ng-data")
        if not os.path.isdir(os.path.join(data_dir, "voices", "!v")):
            copy_voice_data(espeakng_loader.get_data_path(), data_dir)
        self._data_dir = data_dir
        self.set_variant_name(variant_name)
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_root.encode(), 0)
        if rate <= 0:
            raise EspeakError(f"{data_dir}: espeak_Initialize failed ({rate})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def set_variant_name(self, variant_name: str) -> None:
        """Use another variant file name (one per process when processes share the data)."""
        self.variant_name = variant_name
        self.variant_path = os.path.join(self._data_dir, "voices", "!v", variant_name)

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), num_samples: int, events: int) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(
        self,
        text: str,
        language: str,
        variant: VoiceVariant,
        *,
        rate_wpm: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak `text` in `language` with `variant`.

        Args:
            text: UTF-8 text; punctuation drives eSpeak's prosody.
            language: an eSpeak voice name such as "en", "fr", "ru".
            variant: the speaker's voice.
            rate_wpm: speaking rate, words per minute (80..450).
            pitch: eSpeak pitch adjustment 0..100 (50 = the variant's own pitch).
            pitch_range: eSpeak intonation range 0..100 (50 = normal, 0 = monotone).
            word_gap: extra pause between words in units of 10 ms.
            seed: seeds eSpeak's and libc's random generators, so output is reproducible.

        Returns:
            int16 samples `(S,)` at `self.sample_rate`.
        """
        with open(self.variant_path, "w", encoding="utf-8") as handle:
            handle.write(variant.to_text(self.variant_name))
        status = self._lib.espeak_SetVoiceByName(f"{language}+{self.variant_name}".encode())
        if status != 0:
            raise EspeakError(f"{self.variant_path}: cannot select voice {language!r} ({status})")
        for parameter, value in (
            (PARAM_RATE, rate_wpm),
            (PARAM_PITCH, pitch),
            (PARAM_RANGE, pitch_range),
            (PARAM_WORDGAP, word_gap),
            (PARAM_VOLUME, 100),
        ):
            self._lib.espeak_SetParameter(parameter, int(value), 0)
        self._lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        self._libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        self._chunks = []
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(
            data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None
        )
        if status != 0:
            raise EspeakError(f"espeak_Synth failed ({status}) for language {language!r}")
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)


def copy_voice_data(source: str, destination: str) -> None:
    """Copy `espeak-ng-data` to `destination` (atomically: a finished copy or none)."""
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    temporary = f"{destination}.tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(source, temporary)
    os.makedirs(os.path.join(temporary, "voices", "!v"), exist_ok=True)
    try:
        os.replace(temporary, destination)
    except OSError:  # another process won the race: its copy is as good as ours
        shutil.rmtree(temporary, ignore_errors=True)
