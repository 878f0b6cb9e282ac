"""`speakerverify prepare ...`: data dirs from VoxCeleb, m4a conversion, MUSAN and RIR indexes."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from speakerverify.cli.common import fail


@click.group()
def prepare() -> None:
    """Prepare data: VoxCeleb data dirs, m4a -> wav, MUSAN / RIRS_NOISES indexes."""


@prepare.command("voxceleb")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
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


@prepare.command("convert-m4a")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
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
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def musan(root: str, out: str) -> None:
    """Index MUSAN (ROOT is musan/ or its parent) into OUT: `kind path` lines."""
    from speakerverify.data.noise import prepare_musan

    _write_noise_index(prepare_musan, root, out)


@prepare.command("rirs")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
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
