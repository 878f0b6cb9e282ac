"""`speakerverify train`, `average` and `fuse`: thin wrappers over `training.loop.fit`,
`checkpoint_combine.average_checkpoints` and `checkpoint_combine.fuse_checkpoints` (torch is
imported inside the command bodies)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import click

from speakerverify.cli.common import CheckedPath, fail
from speakerverify.files import OUTPUT_HELP


@click.command()
@click.argument("config", type=CheckedPath(dir_okay=False))
@click.argument("extra_overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--exp-dir", required=True, type=CheckedPath(file_okay=False), help="Experiment dir.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=0.01 loss.args.margin=0.3 (repeatable).",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[PATH]",
    help="Continue from the newest checkpoint in EXP_DIR/checkpoints, or from PATH.",
)
@click.option(
    "--init",
    type=CheckedPath(dir_okay=False),
    help="Fine-tune: start from this checkpoint's weights (its model and front-end unless the "
    "config names them) with a fresh optimizer and schedule; see train.freeze.",
)
def train(
    config: str,
    extra_overrides: tuple[str, ...],
    exp_dir: str,
    overrides: tuple[str, ...],
    resume: str | None,
    init: str | None,
) -> None:
    """Train an encoder from the YAML CONFIG into EXP_DIR.

    \b
    Writes EXP_DIR/config.yaml (the resolved config), train_log.jsonl and checkpoints/.
    Under `torchrun --nproc_per_node N` the same command trains with DDP.
    SIGINT/SIGTERM save a checkpoint at the next step and exit with 128 + signal.
    """
    from speakerverify.training.experiment_config import load_config
    from speakerverify.training.loop import TrainingInterrupted, fit

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    bad = [item for item in extra_overrides if "=" not in item]
    if bad:
        fail(f"unexpected argument {bad[0]!r} (overrides look like section.key=value)")
    try:
        defaults = None
        if init is not None:
            from speakerverify.training.finetune import checkpoint_sections

            defaults = checkpoint_sections(init)
        cfg = load_config(config, [*overrides, *extra_overrides], defaults=defaults)
        result = fit(cfg, exp_dir, resume=True if resume == "auto" else resume, init=init)
    except TrainingInterrupted as stop:
        if rank == 0:
            click.echo(f"interrupted: checkpoint saved to {stop.checkpoint}", err=True)
            click.echo(f"resume with: speakerverify train {config} --exp-dir {exp_dir} --resume")
        sys.exit(128 + stop.signum)
    if rank == 0:
        click.echo(f"trained: {result}")


def _checkpoints_into_out(out_help: str) -> Callable[[Callable], Callable]:
    """The `CHECKPOINTS... --out FILE` parameters of `average` and `fuse`."""

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--out",
            required=True,
            type=CheckedPath(dir_okay=False),
            help=f"{out_help} {OUTPUT_HELP}",
        )(command)
        return click.argument(
            "checkpoints", nargs=-1, required=True, type=CheckedPath(dir_okay=False)
        )(command)

    return decorate


def _write_combined(
    combine: Callable[[list[str], str], str], done: str, checkpoints: tuple[str, ...], out: str
) -> None:
    """Write `combine(checkpoints, out)` and say so, e.g. "averaged 3 checkpoints into ..."."""
    fingerprint = combine(list(checkpoints), out)
    click.echo(f"{done} {len(checkpoints)} checkpoints into {out} (fingerprint {fingerprint})")


@click.command()
@_checkpoints_into_out("Averaged checkpoint.")
def average(checkpoints: tuple[str, ...], out: str) -> None:
    """Average the weights of CHECKPOINTS (e.g. the last N epochs) into one checkpoint."""
    from speakerverify.checkpoint_combine import average_checkpoints

    _write_combined(average_checkpoints, "averaged", checkpoints, out)


@click.command()
@_checkpoints_into_out("Fused checkpoint.")
def fuse(checkpoints: tuple[str, ...], out: str) -> None:
    """Put the encoders of CHECKPOINTS (two or more, one front-end) side by side as one model
    whose cosine score is the average of theirs (score fusion)."""
    from speakerverify.checkpoint_combine import fuse_checkpoints

    _write_combined(fuse_checkpoints, "fused", checkpoints, out)
