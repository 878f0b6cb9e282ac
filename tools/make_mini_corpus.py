#!/usr/bin/env python3
"""Synthesise a small VoxCeleb1-like corpus of distinct synthetic speakers with eSpeak NG.

Layout, as VoxCeleb1 (dev + test unpacked into one tree): `OUT/wav/idNNNNN/<session>/NNNNN.wav`,
16 kHz mono 16-bit. Test speakers take the Vox1-O ids (id10270 onwards, at most 40) and training
speakers the ids around them, so `speakerverify prepare voxceleb OUT DIR --split dev|test` splits
the corpus like the real one; `OUT/trials.txt` is a VoxCeleb-format list (`1 enroll.wav test.wav`),
half targets (across sessions), half non-targets. `OUT/speakers.tsv` describes each voice.

Every speaker has their own eSpeak voice variant (vocal-tract scale on formants 1-8, formant
heights and widths, pitch, breath, flutter, roughness, spectral tilt, sometimes the Klatt source);
utterances jitter pitch, rate, formants and loudness; each session has its own channel (telephone
band at 8 kHz, mu-law, synthetic room reverb, random EQ) and noise at 0-30 dB SNR; the text is
random pseudo-words from one of many languages' letters, with numbers and punctuation. The rooms
are the simulator's simple model, or with `--room shoebox` image-source shoebox rooms
(pyroomacoustics, `pip install 'speakerverify[rooms]'`).

Deterministic for a seed (same seed -> identical bytes, whatever `--jobs`), resumable (each file is
written atomically; finished files are kept), parallel over `--jobs` processes.

    python tools/make_mini_corpus.py OUT --num-train-speakers 500 --num-test-speakers 40 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from espeak import Espeak, VoiceVariant

from speakerverify.data.simulate import (
    ROOMS,
    Channel,
    ChannelSimulator,
    MissingExtraError,
    apply_channel,
)

SAMPLE_RATE = 16000
TEST_FIRST_ID = 10270  # VoxCeleb1-O test speakers are id10270-id10309
MAX_TEST_SPEAKERS = 40
OWN_LANGUAGE = 0.4  # share of a speaker's utterances in their preferred language
SESSION_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# eSpeak voice -> (consonants, vowels) used to build pseudo-words; "" = inherent vowel.
LANGUAGES: dict[str, tuple[str, list[str]]] = {
    "en": ("bcdfghjklmnprstvwz", [*"aeiouy", "ee", "oo", "ai"]),
    "de": ("bdfghjklmnprstwzß", [*"aeiouäöü", "ei", "au"]),
    "fr": ("bcdfgjlmnprstvz", [*"aeiouéèàuy", "ou", "on", "an"]),
    "es": ("bcdfgjlmnñprstvz", list("aeiouáéó")),
    "it": ("bcdfglmnprstvz", list("aeiouàò")),
    "pt": ("bcdfgjlmnprstvxz", list("aeiouãõáé")),
    "nl": ("bdfghjklmnprstvwz", [*"aeiou", "ij", "oe"]),
    "sv": ("bdfghjklmnprstv", list("aeiouyåäö")),
    "pl": ("bcdfghjklmnprstwzłśćż", list("aeiouyąę")),
    "cs": ("bcdfhjklmnprstvzčřšž", list("aeiouyáéíů")),
    "fi": ("dhjklmnprstv", list("aeiouyäö")),
    "hu": ("bcdfghjklmnprstvz", list("aeiouáéóöőüú")),
    "tr": ("bcçdfgğhjklmnprsştvyz", list("aeıioöuü")),
    "ro": ("bcdfghjlmnprsștțvz", list("aeiouăâî")),
    "id": ("bcdghjklmnprstwy", list("aeiou")),
    "sw": ("bdfghjklmnprstvwyz", list("aeiou")),
    "vi": ("bcdghklmnpqrstvx", list("aăâeêioôơuưyáàảãạ")),
    "ru": ("бвгджзклмнпрстфхцчшщ", list("аеиоуыэюя")),
    "uk": ("бвгґджзклмнпрстфхцчшщ", list("аеєиіїоуюя")),
    "el": ("βγδζθκλμνξπρστφχψ", list("αεηιουωάέήίόύώ")),
    "hi": ("कखगघचजटडतदनपबमयरलवसह", ["", "ा", "ि", "ी", "ु", "ू", "े", "ो"]),
    "ka": ("ბგდვზთკლმნპჟრსტფქღყშჩცძწჭხჯჰ", list("აეიოუ")),
    "cmn-Latn-pinyin": ("bpmfdtnlgkhjqxzcsrwy", ["a", "o", "e", "i", "u", "ai", "ao", "ou", "an"]),
    "da": ("bdfghjklmnprstv", list("aeiouyæøå")),
    "nb": ("bdfghjklmnprstv", list("aeiouyæøå")),
    "af": ("bdfghjklmnprstvw", [*"aeiou", "ee", "oe"]),
    "ca": ("bcdfgjlmnprstvx", list("aeiouàèéíòóú")),
    "sk": ("bcdfhjklmnprstvzčšžľ", list("aeiouyáéíóú")),
    "sl": ("bcdfghjklmnprstvzčšž", list("aeiou")),
    "hr": ("bcdfghjklmnprstvzčćšž", list("aeiou")),
    "lt": ("bcdfghjklmnprstvzčšž", list("aeiouyąęėįųū")),
    "lv": ("bcdfghjklmnprstvzčšžķļņ", list("aeiouāēīū")),
    "et": ("dhjklmnprstv", list("aeiouõäöü")),
    "cy": ("bcdfghlmnprstw", [*"aeiouwy", "ae", "yw"]),
    "bg": ("бвгджзклмнпрстфхцчшщ", list("аеиоуъюя")),
}
TONAL_DIGITS = {"cmn-Latn-pinyin"}  # tone numbers are part of the syllable, no digit strings
ABUGIDAS = {"hi"}  # vowel signs need a consonant to sit on


# One recording condition per session (like a YouTube video), from the same simulator that
# augments training crops; each utterance varies it a little (`utterance_channel`).
SESSION_CHANNELS = ChannelSimulator(
    reverb_prob=0.35, rt60_range=(0.15, 0.7), noise_prob=0.85, snr_db_range=(3.0, 30.0),
    eq_prob=0.8, eq_max_db=8.0, lowpass_prob=0.15, narrowband_prob=0.5, telephone_prob=0.5,
    mulaw_prob=0.4, line_noise_prob=0.3, level_db_range=(-34.0, -18.0),
)  # fmt: skip


def utterance_channel(session: Channel, rng: np.random.Generator) -> Channel:
    """The session's condition with a little per-utterance variation (SNR, level, EQ)."""
    eq_db = None
    if session.eq_db is not None:
        eq_db = tuple(float(g) for g in np.asarray(session.eq_db) + rng.standard_normal(6))
    return replace(
        session,
        snr_db=float(np.clip(session.snr_db + 3 * rng.standard_normal(), 0, 30)),
        level_db=session.level_db + 2 * float(rng.standard_normal()),
        eq_db=eq_db,
    )


@dataclass
class Utterance:
    """Everything needed to synthesise one file."""

    path: str  # relative to OUT: wav/idNNNNN/<session>/NNNNN.wav
    seed: int


def speaker_ids(num_train: int, num_test: int) -> tuple[list[str], list[str]]:
    """Training ids id10001.. around the Vox1-O block id10270-id10309; test ids inside it."""
    if not 0 < num_test <= MAX_TEST_SPEAKERS:
        raise SystemExit(f"error: --num-test-speakers must be 1..{MAX_TEST_SPEAKERS} (Vox1-O ids)")
    test = [f"id{TEST_FIRST_ID + i}" for i in range(num_test)]
    train, number = [], 10001
    while len(train) < num_train:
        if not TEST_FIRST_ID <= number < TEST_FIRST_ID + MAX_TEST_SPEAKERS:
            train.append(f"id{number}")
        number += 1
    return train, test


def speaker_rng(seed: int, speaker: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(speaker[2:]), *extra])


def make_voice(rng: np.random.Generator) -> tuple[VoiceVariant, dict]:
    """A speaker's voice: eSpeak variant + speaking habits, drawn like people differ.

    Formant heights and widths spread about as widely as measured vocal tracts do (heights about
    60-150 %, widths 70-170 % of eSpeak's defaults), on top of the vocal-tract length scale.
    """
    female = rng.random() < 0.5
    scale = rng.uniform(1.00, 1.22) if female else rng.uniform(0.88, 1.08)
    formants = [(0, round(100 * scale * rng.uniform(0.95, 1.05)), 100, 100)]
    for index in range(1, 9):
        freq = 100 * scale * (1 + 0.03 * rng.standard_normal())
        height = 100 * np.exp(rng.uniform(np.log(0.6), np.log(1.5)))
        width = 100 * np.exp(rng.uniform(np.log(0.7), np.log(1.7)))
        formants.append((index, round(freq), round(height), round(width)))
    low = rng.uniform(140, 215) if female else rng.uniform(68, 125)
    top = low + (rng.uniform(40, 110) if female else rng.uniform(25, 70))
    breath = [0] * 8
    if rng.random() < 0.35:
        breath = sorted(int(b) for b in rng.integers(0, 6, size=8))
    tone = None
    if rng.random() < 0.6:
        amps = np.array([170, 135, 110, 110]) * np.exp(0.2 * rng.standard_normal(4))
        points = zip((600, 1200, 2000, 3000), amps.round().astype(int).tolist(), strict=True)
        tone = [value for pair in points for value in pair]
    variant = VoiceVariant(
        gender="female" if female else "male",
        pitch_hz=(round(low), round(top)),
        formants=formants,
        breath=breath,
        flutter=int(rng.integers(0, 30)),
        roughness=int(rng.integers(0, 6)),
        voicing=int(rng.integers(85, 116)),
        consonants=(int(rng.integers(70, 131)), int(rng.integers(70, 131))),
        tone=tone,
        klatt=int(rng.integers(1, 5)) if rng.random() < 0.3 else 0,
    )
    habits = {
        "rate_wpm": float(rng.uniform(130, 210)),
        "pitch_range": float(rng.uniform(25, 80)),
        "language": str(rng.choice(list(LANGUAGES))),
    }
    return variant, habits


def jitter_voice(variant: VoiceVariant, rng: np.random.Generator) -> VoiceVariant:
    """Per-utterance vocal-tract jitter: one common shift plus a little per formant."""
    shift = 1 + 0.015 * rng.standard_normal()
    formants = [
        (i, round(f * shift * (1 + 0.005 * rng.standard_normal())), h, w)
        for i, f, h, w in variant.formants
    ]
    return VoiceVariant(**{**variant.__dict__, "formants": formants})


def make_text(rng: np.random.Generator, language: str, num_words: int) -> str:
    """Random pseudo-words from the language's letters, with numbers and punctuation."""
    consonants, vowels = LANGUAGES[language]
    words = []
    for position in range(num_words):
        if language not in TONAL_DIGITS and rng.random() < 0.06:
            words.append(str(int(rng.integers(1, 2000))))
        else:
            syllables = []
            for _ in range(int(rng.integers(1, 4))):
                bare = rng.random() < 0.15 and language not in ABUGIDAS
                onset = "" if bare else str(rng.choice(list(consonants)))
                codas = "nn" if language in TONAL_DIGITS else consonants
                coda = str(rng.choice(list(codas))) if rng.random() < 0.25 else ""
                syllable = onset + str(rng.choice(vowels)) + coda
                if language in TONAL_DIGITS:
                    syllable += str(int(rng.integers(1, 5)))
                syllables.append(syllable)
            word = "".join(syllables)
            words.append(word.capitalize() if position == 0 else word)
        if position < num_words - 1 and rng.random() < 0.12:
            words[-1] += str(rng.choice([",", ",", ";", ":"]))
        elif position < num_words - 1 and rng.random() < 0.05:
            words[-1] += str(rng.choice([".", "?", "!"]))
    return " ".join(words) + str(rng.choice([".", ".", "?", "!", "..."]))


def plan_speaker(seed: int, speaker: str, num_utts: int) -> list[Utterance]:
    """Sessions (random YouTube-like ids, 2-4 per speaker) and the utterance files in them."""
    rng = speaker_rng(seed, speaker, 1)
    num_sessions = int(min(num_utts, rng.integers(2, 5)))
    sessions = ["".join(rng.choice(list(SESSION_CHARS), size=11)) for _ in range(num_sessions)]
    extra = rng.integers(0, num_sessions, num_utts - num_sessions)
    assignment = np.sort(np.concatenate([np.arange(num_sessions), extra]))
    counts = dict.fromkeys(range(num_sessions), 0)
    utterances = []
    for session in assignment:
        counts[session] += 1
        path = f"wav/{speaker}/{sessions[session]}/{counts[session]:05d}.wav"
        utterances.append(Utterance(path, seed=int(rng.integers(2**31))))
    return utterances


_ENGINE: Espeak | None = None


def _init_worker() -> None:
    # eSpeak's flutter keeps a phase that runs on across calls (not reset by any API), so each
    # speaker is made in a fresh fork of a parent that initialised eSpeak but never spoke:
    # the audio then depends only on the seed, not on which worker made what before.
    assert _ENGINE is not None
    _ENGINE.set_variant_name(f"speaker{os.getpid()}")


def synthesize_speaker(
    task: tuple[str, int, str, int, float, bool, float, str],
) -> tuple[str, int, float]:
    """Write the missing files of one speaker; returns (speaker, files written, seconds written)."""
    assert _ENGINE is not None
    try:
        return _synthesize_speaker(*task)
    finally:  # eSpeak lists every file in voices/!v (349 at most): leave none behind
        if _ENGINE is not None and os.path.exists(_ENGINE.variant_path):
            os.unlink(_ENGINE.variant_path)


def _synthesize_speaker(
    out_dir: str,
    seed: int,
    speaker: str,
    num_utts: int,
    seconds: float,
    clean: bool,
    own_language: float,
    room: str,
) -> tuple[str, int, float]:
    from scipy.signal import resample_poly

    session_channels = replace(SESSION_CHANNELS, room=room)
    variant, habits = make_voice(speaker_rng(seed, speaker, 0))
    utterances = plan_speaker(seed, speaker, num_utts)
    channels: dict[str, Channel] = {}
    written, total_seconds = 0, 0.0
    for utterance in utterances:
        session = utterance.path.split("/")[2]
        if session not in channels:
            channel_rng = speaker_rng(seed, speaker, 2, len(channels))
            channels[session] = session_channels.draw(channel_rng)
        path = os.path.join(out_dir, utterance.path)
        done = os.path.exists(path)  # still synthesised: later utterances depend on eSpeak state
        rng = np.random.default_rng(utterance.seed)
        own = rng.random() < own_language
        language = habits["language"] if own else str(rng.choice(list(LANGUAGES)))
        rate = float(np.clip(habits["rate_wpm"] * (1 + 0.07 * rng.standard_normal()), 90, 300))
        target = seconds * rng.uniform(0.7, 1.3)
        pieces, duration = [], 0.0
        while duration < target:
            num_words = max(2, round((target - duration) * rate / 60 * 0.7))
            samples = _ENGINE.synthesize(
                make_text(rng, language, num_words),
                language,
                jitter_voice(variant, rng),
                rate_wpm=round(rate),
                pitch=int(np.clip(50 + 6 * rng.standard_normal(), 20, 80)),
                pitch_range=int(np.clip(habits["pitch_range"] + 8 * rng.standard_normal(), 5, 100)),
                seed=int(rng.integers(2**31)),
            )
            pieces.append(samples.astype(np.float64) / 32768)
            duration += len(samples) / _ENGINE.sample_rate
        wave = resample_poly(np.concatenate(pieces), SAMPLE_RATE, _ENGINE.sample_rate)
        keep = int(target * SAMPLE_RATE)  # VoxCeleb clips also end mid-phrase
        if len(wave) > keep:
            wave = wave[:keep] * np.concatenate([np.ones(keep - 320), np.linspace(1, 0, 320)])
        lead = np.zeros(int(rng.uniform(0.0, 0.3) * SAMPLE_RATE))
        wave = np.concatenate([lead, wave])
        if clean:
            wave = wave * 0.1 / np.sqrt(np.mean(wave**2) + 1e-12)
        else:
            wave = apply_channel(wave, utterance_channel(channels[session], rng), rng)
        if done:
            continue
        write_wav_atomic(path, wave)
        written += 1
        total_seconds += len(wave) / SAMPLE_RATE
    return speaker, written, total_seconds


def write_wav_atomic(path: str, wave: np.ndarray) -> None:
    """16-bit PCM wav via a temp file in the same directory (not named *.wav) + os.replace."""
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    sf.write(temporary, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(temporary, path)


def make_trials(seed: int, test_speakers: list[str], num_utts: int) -> list[tuple[int, str, str]]:
    """All cross-session target pairs and as many random non-target pairs, shuffled."""
    utts = {s: [u.path[4:] for u in plan_speaker(seed, s, num_utts)] for s in test_speakers}
    targets = [
        (1, a, b)
        for paths in utts.values()
        for i, a in enumerate(paths)
        for b in paths[i + 1 :]
        if a.split("/")[1] != b.split("/")[1]
    ]
    everything = [p for paths in utts.values() for p in paths]
    rng = np.random.default_rng([seed, 3])
    nontargets: set[tuple[str, str]] = set()
    while len(nontargets) < len(targets) and len(test_speakers) > 1:
        a, b = rng.choice(everything, size=2, replace=False)
        if a.split("/")[0] != b.split("/")[0]:
            nontargets.add((str(a), str(b)))
    trials = targets + [(0, a, b) for a, b in sorted(nontargets)]
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def write_text_atomic(path: str, lines: list[str]) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    os.replace(temporary, path)


def check_settings(out_dir: str, settings: dict) -> None:
    """Resuming with other per-speaker settings would mix two plans in one tree: refuse."""
    import json

    path = os.path.join(out_dir, "corpus.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            before = json.load(handle)
        before.setdefault("own_language", 0.4)  # trees made before the options existed
        before.setdefault("room", "simple")
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise SystemExit(
                f"error: {path}: {out_dir} was made with other settings ("
                + ", ".join(f"{k} {before.get(k)} -> {settings[k]}" for k in changed)
                + "); use a new directory (speaker counts may change freely)"
            )
        return
    write_text_atomic(path, [json.dumps(settings, sort_keys=True)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="corpus root (wav/, trials.txt, speakers.tsv)")
    parser.add_argument("--num-train-speakers", type=int, default=500)
    parser.add_argument("--num-test-speakers", type=int, default=40)
    parser.add_argument("--utts-per-speaker", type=int, default=8)
    parser.add_argument("--test-utts-per-speaker", type=int, default=None, help="default: same")
    parser.add_argument("--seconds", type=float, default=3.0, help="mean utterance length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clean", action="store_true", help="no channel, noise or level change")
    parser.add_argument(
        "--own-language",
        type=float,
        default=OWN_LANGUAGE,
        help="probability that an utterance is in its speaker's preferred language (else any)",
    )
    parser.add_argument(
        "--room",
        choices=list(ROOMS),
        default="simple",
        help="how the reverberant sessions' rooms are simulated (shoebox: pyroomacoustics)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0.0 <= args.own_language <= 1.0:
        parser.error(f"--own-language must be a probability in [0, 1], got {args.own_language}")
    try:
        replace(SESSION_CHANNELS, room=args.room)  # a missing extra: now, not in every worker
    except MissingExtraError as error:
        parser.error(str(error))
    import multiprocessing

    from tqdm import tqdm

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    train, test = speaker_ids(args.num_train_speakers, args.num_test_speakers)
    test_utts = args.test_utts_per_speaker or args.utts_per_speaker
    if min(args.utts_per_speaker, test_utts) < 2:
        parser.error("each speaker needs at least 2 utterances")
    os.makedirs(args.out_dir, exist_ok=True)
    check_settings(args.out_dir, {
        "seed": args.seed, "utts_per_speaker": args.utts_per_speaker,
        "test_utts_per_speaker": test_utts, "seconds": args.seconds, "clean": args.clean,
        "own_language": args.own_language, "room": args.room,
    })  # fmt: skip
    options = (args.seconds, args.clean, args.own_language, args.room)
    tasks = [
        (args.out_dir, args.seed, speaker, num_utts, *options)
        for speakers, num_utts in ((train, args.utts_per_speaker), (test, test_utts))
        for speaker in speakers
        if not all(
            os.path.exists(os.path.join(args.out_dir, u.path))
            for u in plan_speaker(args.seed, speaker, num_utts)
        )
    ]
    start = time.perf_counter()
    data_root = tempfile.mkdtemp(prefix="espeak-data-")
    written, audio_seconds = 0, 0.0
    global _ENGINE
    # imported once here, not in every forked worker
    import scipy.fft
    import scipy.signal  # noqa: F401
    import soundfile  # noqa: F401

    try:
        _ENGINE = Espeak(data_root)
        context = multiprocessing.get_context("fork")
        with context.Pool(args.jobs, initializer=_init_worker, maxtasksperchild=1) as pool:
            results = pool.imap_unordered(synthesize_speaker, tasks)
            bar = tqdm(results, total=len(tasks), unit="spk", desc="synthesis", disable=args.quiet)
            for _speaker, count, seconds in bar:
                written += count
                audio_seconds += seconds
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
    trials = make_trials(args.seed, test, test_utts)
    write_text_atomic(
        os.path.join(args.out_dir, "trials.txt"), [f"{t} {a} {b}" for t, a, b in trials]
    )
    rows = ["spk_id\tsplit\tgender\tpitch_hz\tformant_scale\tlanguage\tklatt"]
    for split, speakers in (("train", train), ("test", test)):
        for speaker in speakers:
            variant, habits = make_voice(speaker_rng(args.seed, speaker, 0))
            rows.append(
                f"{speaker}\t{split}\t{variant.gender}\t{variant.pitch_hz[0]}-{variant.pitch_hz[1]}"
                f"\t{variant.formants[1][1] / 100:.3f}\t{habits['language']}\t{variant.klatt}"
            )
    write_text_atomic(os.path.join(args.out_dir, "speakers.tsv"), rows)
    elapsed = time.perf_counter() - start
    print(
        f"{len(train)} train + {len(test)} test speakers, {written} new files "
        f"({audio_seconds / 3600:.2f} h audio) in {elapsed:.1f} s "
        f"({audio_seconds / max(elapsed, 1e-9):.0f}x real time); {len(trials)} trials "
        f"-> {os.path.join(args.out_dir, 'trials.txt')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
