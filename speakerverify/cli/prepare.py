"""`speakerverify prepare ...`: data dirs (VoxCeleb or any layout), trial lists, speaker splits,
m4a conversion, MUSAN and RIR indexes."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from speakerverify.cli.common import CheckedPath, fail


@click.group()
def prepare() -> None:
    """Prepare data: data dirs, trial lists, splits, m4a -> wav, MUSAN / RIRS_NOISES indexes."""


@prepare.command("voxceleb")
@click.argument("root", type=CheckedPath(exists=True, file_okay=False))
@click.argument("out_dir", type=CheckedPath(file_okay=False))
@click.option(
    "--split",
    type=click.Choice(["all", "dev", "test"]),
    default="all",
    show_default=True,
    help="dev: without the Vox1-O test speakers id10270-id10309; test: only those.",
)
@click.option("--durations/--no-durations", default=True, show_default=True,
              help="Write utt2dur from the wav headers.")  # fmt: skip
def voxceleb(root: str, out_dir: str, split: str, durations: bool) -> None:
    """Write a Kaldi-style data dir (wav.scp, utt2spk, spk2utt, utt2dur) for a VoxCeleb tree.

    ROOT holds wav/ (VoxCeleb1), dev/aac/ (VoxCeleb2) or dev/wav/ (converted VoxCeleb2).
    """
    from speakerverify.data import prepare_voxceleb

    data = prepare_voxceleb(
        root, out_dir, split=split, with_durations=durations, progress=sys.stderr.isatty()
    )
    hours = f", {sum(data.utt2dur.values()) / 3600:.1f} h" if data.utt2dur else ""
    click.echo(f"{out_dir}: {len(data)} utterances, {len(data.speakers)} speakers{hours}")


@prepare.command("dir")
@click.argument("root", type=CheckedPath(exists=True, file_okay=False))
@click.argument("out_dir", type=CheckedPath(file_okay=False))
@click.option("--layout", help="Path template without extension [default: {speaker}/**/{utt}], "
              "e.g. {speaker}/{session}/{utt}; other {name}s become utt2<name> files.")  # fmt: skip
@click.option("--pattern", help="Regex searched in the relative path without extension, with "
              "named groups speaker and optionally session (and other attributes).")  # fmt: skip
@click.option("--list", "list_file", type=CheckedPath(dir_okay=False),
              help="Two-column 'path speaker' file, paths relative to ROOT.")  # fmt: skip
@click.option("--ext", "extensions", multiple=True, metavar="EXT",
              help="Audio extensions (repeatable or comma-separated) [default: every format "
              "the audio reader takes: wav, flac, ogg, mp3, m4a, opus, ...].")  # fmt: skip
@click.option("--speakers", "speakers_file", type=CheckedPath(exists=True, dir_okay=False),
              help="Keep only the speakers listed in this file (first field).")  # fmt: skip
@click.option("--skip-unmatched", is_flag=True,
              help="Skip audio files the layout/pattern misses (else an error).")  # fmt: skip
@click.option("--durations/--no-durations", default=True, show_default=True,
              help="Write utt2dur from the file headers.")  # fmt: skip
def data_dir(
    root: str,
    out_dir: str,
    layout: str | None,
    pattern: str | None,
    list_file: str | None,
    extensions: tuple[str, ...],
    speakers_file: str | None,
    skip_unmatched: bool,
    durations: bool,
) -> None:
    """Write a Kaldi data dir (wav.scp, utt2spk, spk2utt, utt2dur, utt2sess) for any audio tree.

    \b
    Utt ids are paths relative to ROOT without extension. Examples:
      LibriSpeech: --layout "{speaker}/{session}/{speaker}-{session}-{utt}"
      CN-Celeb:    --layout "{speaker}/{session}-{utt}"  (ROOT = CN-Celeb_flac/data)
    """
    from speakerverify.data.layout import prepare_dir
    from speakerverify.frontend.audio import AUDIO_EXTENSIONS

    exts = tuple(e.strip().lstrip(".") for item in extensions for e in item.split(",") if e)
    speakers = _read_speaker_list(speakers_file) if speakers_file else None
    corpus = prepare_dir(
        root, out_dir, layout=layout, pattern=pattern, list_file=list_file,
        extensions=exts or AUDIO_EXTENSIONS, speakers=speakers,
        skip_unmatched=skip_unmatched, with_durations=durations,
        progress=sys.stderr.isatty(),
    )  # fmt: skip
    hours = "unknown hours" if corpus.hours is None else f"{corpus.hours:.2f} hours"
    sessions = "" if corpus.num_sessions is None else f", {corpus.num_sessions} sessions"
    skipped = ""
    if skip_unmatched:
        which = "pattern" if pattern is not None else "layout"
        skipped = f"; skipped {corpus.num_skipped} audio files the {which} does not match"
    click.echo(
        f"{out_dir}: {len(corpus.data.speakers)} speakers, {len(corpus.data)} utterances, "
        f"{hours}{sessions}{skipped}"
    )


def _read_speaker_list(path: str) -> set[str]:
    from speakerverify.files import utf8_lines

    return {line.split()[0] for _, line in utf8_lines(path) if line.strip()}


@prepare.command("trials")
@click.argument("data_dir", type=CheckedPath(exists=True, file_okay=False))
@click.argument("out", type=CheckedPath(dir_okay=False))
@click.option("--num-targets", type=click.IntRange(min=0), default=10000, show_default=True)
@click.option("--num-nontargets", type=click.IntRange(min=0),
              help="Non-target trials [default: as many as targets].")  # fmt: skip
@click.option("--all", "all_pairs", is_flag=True,
              help="Every valid pair instead of a sample (up to --max-trials).")  # fmt: skip
@click.option("--max-trials", type=click.IntRange(min=1), default=10_000_000, show_default=True)
@click.option("--same", metavar="ATTR", multiple=True,
              help="Non-targets share this attribute (utt2ATTR/spk2ATTR in DATA_DIR); "
              "repeat it for several (--same gender --same language).")  # fmt: skip
@click.option("--cross-session/--any-session", default=True, show_default=True,
              help="Targets pair different sessions when DATA_DIR has utt2sess.")  # fmt: skip
@click.option("--enroll-utts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Utterances per enrollment model; > 1 writes Kaldi 'model test target' "
              "lines and an enroll map (model utt...).")  # fmt: skip
@click.option("--enroll-out", type=CheckedPath(dir_okay=False),
              help="Enroll map of --enroll-utts > 1 [default: 'enroll' beside OUT].")  # fmt: skip
@click.option("--format", "trial_format", type=click.Choice(["voxceleb", "kaldi"]),
              help="[default: voxceleb; kaldi with --enroll-utts > 1]")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
def trials(
    data_dir: str,
    out: str,
    num_targets: int,
    num_nontargets: int | None,
    all_pairs: bool,
    max_trials: int,
    same: tuple[str, ...],
    cross_session: bool,
    enroll_utts: int,
    enroll_out: str | None,
    trial_format: str | None,
    seed: int,
) -> None:
    """Make a trial list OUT over the utterances of DATA_DIR (read back by score / evaluate).

    OUT is replaced atomically if it is a regular file; a symlink is written through.
    """
    from speakerverify.data.trial_making import TrialOptions, prepare_trials

    options = TrialOptions(
        num_targets=num_targets, num_nontargets=num_nontargets, all_pairs=all_pairs,
        max_trials=max_trials, enroll_utts=enroll_utts, seed=seed,
    )  # fmt: skip
    made, models = prepare_trials(
        data_dir, out, options, same=same, cross_session=cross_session,
        format=trial_format, enroll_out=enroll_out,
    )  # fmt: skip
    targets = int(made.labels.sum())
    enrolled = ""
    if models is not None:
        enrolled = f", {len(models)} enrollment models of {enroll_utts} utterances"
    click.echo(
        f"{out}: {len(made)} trials ({targets} target, {len(made) - targets} non-target){enrolled}"
    )


@prepare.command("split")
@click.argument(
    "data_dirs", nargs=-1, required=True, type=CheckedPath(exists=True, file_okay=False)
)
@click.option("--hold-out-speakers", "num_heldout", type=click.IntRange(min=0), required=True,
              help="Speakers (with >= 2 utterances) drawn from DATA_DIRS for the held-out side "
                   "(0 with --add-heldout: none).")  # fmt: skip
@click.option("--add-train", "train_dirs", multiple=True,
              type=CheckedPath(exists=True, file_okay=False),
              help="A data dir whose speakers all join the training side, outside the draw; "
                   "repeatable.")  # fmt: skip
@click.option("--add-heldout", "heldout_dirs", multiple=True,
              type=CheckedPath(exists=True, file_okay=False),
              help="A data dir whose speakers all join the held-out side (speakers made for "
                   "calibration, never trained on); repeatable.")  # fmt: skip
@click.option("--train-out", required=True, type=CheckedPath(file_okay=False))
@click.option("--heldout-out", required=True, type=CheckedPath(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
def split(
    data_dirs: tuple[str, ...],
    num_heldout: int,
    train_dirs: tuple[str, ...],
    heldout_dirs: tuple[str, ...],
    train_out: str,
    heldout_out: str,
    seed: int,
) -> None:
    """Merge DATA_DIRS and split them by speaker into training and held-out data dirs.

    The speakers of --add-train and --add-heldout dirs go to their side whole, so the draw
    from DATA_DIRS does not change when they grow (e.g. a fixed set of calibration speakers).
    """
    from speakerverify.data.split import prepare_split

    if num_heldout == 0 and not heldout_dirs:
        raise click.UsageError("--hold-out-speakers 0 needs --add-heldout (no held-out speakers)")
    done = prepare_split(
        data_dirs, train_out, heldout_out, num_heldout, seed=seed,
        train_sources=train_dirs, heldout_sources=heldout_dirs,
    )  # fmt: skip
    for name, side in ((train_out, done.train), (heldout_out, done.heldout)):
        click.echo(f"{name}: {len(side.speakers)} speakers, {len(side)} utterances")


@prepare.command("convert-m4a")
@click.argument("src", type=CheckedPath(exists=True, file_okay=False))
@click.argument("dst", type=CheckedPath(file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=2, show_default=True,
              help="Parallel ffmpeg processes.")  # fmt: skip
@click.option("--sample-rate", type=int, default=16000, show_default=True)
def convert_m4a(src: str, dst: str, jobs: int, sample_rate: int) -> None:
    """Convert every SRC/**/*.m4a to DST/**/*.wav (mono, 16-bit); rerun to resume."""
    from speakerverify.data.convert import convert_m4a_tree

    result = convert_m4a_tree(
        src, dst, jobs=jobs, sample_rate=sample_rate, progress=sys.stderr.isatty()
    )
    click.echo(f"converted {result.converted}, skipped {result.skipped} existing")
    if result.failed:
        first = "; ".join(cause for _, cause in result.failed[:3])
        fail(f"{len(result.failed)} files failed (first: {first})")


@prepare.command("musan")
@click.argument("root", type=CheckedPath(exists=True, file_okay=False))
@click.argument("out", type=CheckedPath(dir_okay=False))
def musan(root: str, out: str) -> None:
    """Index MUSAN (ROOT is musan/ or its parent) into OUT: `kind path` lines."""
    from speakerverify.data.noise import prepare_musan

    _write_noise_index(prepare_musan, root, out)


@prepare.command("rirs")
@click.argument("root", type=CheckedPath(exists=True, file_okay=False))
@click.argument("out", type=CheckedPath(dir_okay=False))
def rirs(root: str, out: str) -> None:
    """Index RIRS_NOISES simulated RIRs (ROOT is RIRS_NOISES/ or its parent) into OUT."""
    from speakerverify.data.noise import prepare_rirs

    _write_noise_index(prepare_rirs, root, out)


def _write_noise_index(
    prepare_index: Callable[[str, str], dict[str, int]], root: str, out: str
) -> None:
    """Run one of `speakerverify.data.noise.prepare_*` and print what it indexed."""
    counts = prepare_index(root, out)
    click.echo(f"{out}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
