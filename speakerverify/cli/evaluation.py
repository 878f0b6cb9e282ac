"""`speakerverify embed | score | calibrate | evaluate`: thin wrappers over `backend.extraction`
and `backend.scoring_steps` (numpy/torch/sklearn/matplotlib are imported inside the command
bodies)."""

from __future__ import annotations

import logging
import os

import click

from speakerverify.cli.common import CheckedPath, echo_json, fail, model_path_or_bundled
from speakerverify.files import OUTPUT_HELP

# Shared by score, calibrate and evaluate.
_trials_argument = click.argument("trials_path", metavar="TRIALS", type=CheckedPath(dir_okay=False))
_scores_argument = click.argument("scores_path", metavar="SCORES", type=CheckedPath(dir_okay=False))
_NORM_CHOICE = click.Choice(["none", "snorm", "asnorm"])


@click.command()
@click.argument("data_dir", type=CheckedPath(file_okay=False))
@click.argument("out", type=CheckedPath(file_okay=False))
@click.option(
    "--model",
    envvar="SPEAKERVERIFY_MODEL",
    type=CheckedPath(dir_okay=False),
    help="Checkpoint (default: $SPEAKERVERIFY_MODEL, else the bundled model).",
)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Local CPU worker processes (cuda: one per visible GPU; under torchrun one per rank).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda (one job per visible GPU, or the rank's GPU under torchrun), cuda:1, ...",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--max-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Longer files are embedded in overlapping windows and averaged.",
)
@click.option("--no-resume", is_flag=True, help="Recompute shards left by an earlier run.")
def embed(
    data_dir: str,
    out: str,
    model: str | None,
    jobs: int,
    device: str,
    batch_size: int,
    max_seconds: float,
    no_resume: bool,
) -> None:
    """Embed every utterance of DATA_DIR (wav.scp, utt2spk) into the embedding directory OUT.

    \b
    OUT gets embeddings.npy (float32, N x D), utt_ids.txt and meta.json (model fingerprint,
    dim, front-end config); `score` reads it. Interrupted runs resume from finished shards.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from speakerverify.backend.embedder import Embedder
    from speakerverify.backend.extraction import extract_embeddings, job_devices, rank_device
    from speakerverify.data import DataDir

    data = DataDir.load(data_dir)
    model = model_path_or_bundled(model)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: each rank on its own GPU
        devices = [rank_device(device, int(os.environ.get("LOCAL_RANK", "0")))]
    else:
        devices = job_devices(device, jobs)
    # several devices: loaded on the CPU, each job moves its copy to its own GPU
    load_device = devices[0] if len(devices) == 1 else "cpu"
    embedder = Embedder.from_checkpoint(model, device=load_device, max_seconds=max_seconds)
    store = extract_embeddings(
        data, out, embedder, batch_size=batch_size, resume=not no_resume, devices=devices
    )
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"wrote {len(store)} embeddings ({store.dim} dims) to {out}")


@click.command()
@_trials_argument
@click.argument("store_path", metavar="STORE", type=CheckedPath(file_okay=False))
@click.option(
    "--out", required=True, type=CheckedPath(dir_okay=False), help=f"Score file. {OUTPUT_HELP}"
)
@click.option(
    "--mean-store",
    type=CheckedPath(file_okay=False),
    help="Subtract the mean embedding of this store (e.g. the training set).",
)
@click.option(
    "--cohort-store",
    type=CheckedPath(file_okay=False),
    help="Cohort utterances for score normalization (averaged per speaker).",
)
@click.option(
    "--norm",
    type=_NORM_CHOICE,
    default=None,
    help="Score normalization [default: asnorm with a cohort, else none].",
)
@click.option(
    "--top-n",
    default=300,
    show_default=True,
    type=click.IntRange(min=2),
    help="AS-Norm: cohort scores kept per side.",
)
@click.option(
    "--calibration",
    type=CheckedPath(dir_okay=False),
    help="Write calibrated LLRs instead of raw scores.",
)
@click.option(
    "--enroll",
    "enroll_map",
    type=CheckedPath(dir_okay=False),
    help="Enroll map 'model utt...': the trials' enroll side names models averaged from these.",
)
def score(
    trials_path: str,
    store_path: str,
    out: str,
    mean_store: str | None,
    cohort_store: str | None,
    norm: str | None,
    top_n: int,
    calibration: str | None,
    enroll_map: str | None,
) -> None:
    """Cosine-score TRIALS with the embeddings in STORE; write `enroll test score` lines."""
    norm = norm or ("asnorm" if cohort_store else "none")
    if norm != "none" and not cohort_store:
        fail(f"--norm {norm} needs --cohort-store")
    from speakerverify.backend.scoring_steps import score_trial_list

    num_trials = score_trial_list(
        trials_path,
        store_path,
        out,
        mean_store=mean_store,
        cohort_store=cohort_store,
        norm=norm,
        top_n=top_n,
        calibration_path=calibration,
        enroll_map=enroll_map,
    )
    kind = "LLRs" if calibration else f"scores (norm: {norm})"
    click.echo(f"wrote {num_trials} {kind} to {out}")


@click.command()
@_trials_argument
@_scores_argument
@click.option(
    "--out",
    required=True,
    type=CheckedPath(dir_okay=False),
    help=f"Calibration JSON. {OUTPUT_HELP}",
)
@click.option(
    "--model",
    type=CheckedPath(dir_okay=False),
    help="Checkpoint that made the scores (required: binds the calibration to it).",
)
@click.option(
    "--norm",
    type=_NORM_CHOICE,
    default="none",
    show_default=True,
    help="Normalization the scores were made with.",
)
@click.option(
    "--prior",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Effective target prior of the logistic-regression fit.",
)
@click.option(
    "--false-accept",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Also store a default operating point that accepts at most this share of the "
    "non-target trials (verify/identify use it when no --p-target is given).",
)
def calibrate(
    trials_path: str,
    scores_path: str,
    out: str,
    model: str | None,
    norm: str,
    prior: float,
    false_accept: float | None,
) -> None:
    """Fit score -> LLR calibration (logistic regression) on development TRIALS and SCORES."""
    from speakerverify.backend.scoring_steps import calibrate_scores

    report = calibrate_scores(
        trials_path,
        scores_path,
        out,
        model_path=model,
        norm=norm,
        prior=prior,
        false_accept=false_accept,
    )
    calibration = report.calibration
    click.echo(
        f"llr = {calibration.slope:.6g} * score {calibration.offset:+.6g}  "
        f"(Cllr {report.cllr:.4f}, minCllr {report.min_cllr:.4f} on {report.num_trials} trials)"
    )
    if calibration.default_p_target is not None:
        click.echo(
            f"default operating point: p_target={calibration.default_p_target:.4g}, "
            f"{calibration.operating_point}"
        )
    click.echo(f"wrote {out}")


def _number(value: float | None) -> str:
    return "inf" if value is None else f"{value:.6g}"


@click.command()
@_trials_argument
@_scores_argument
@click.option(
    "--plot", "plot_dir", type=CheckedPath(file_okay=False), help="Write det.png and hist.png here."
)
@click.option("--llr", is_flag=True, help="Scores are calibrated LLRs: also Cllr and actual DCF.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    trials_path: str, scores_path: str, plot_dir: str | None, llr: bool, as_json: bool
) -> None:
    """EER, minDCF (p_target 0.01 and 0.05) and minCllr of SCORES against TRIALS labels."""
    from speakerverify.backend.scoring_steps import EVALUATED_P_TARGETS, evaluate_scores

    result = evaluate_scores(trials_path, scores_path, llr=llr, plot_dir=plot_dir)
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"trials        {result['num_trials']} ({result['num_targets']} target, "
        f"{result['num_nontargets']} non-target)"
    )
    click.echo(
        f"EER           {100 * result['eer']:.3f} %  (threshold {_number(result['eer_threshold'])})"
    )
    for p_target in EVALUATED_P_TARGETS:
        key = f"min_dcf_{p_target:g}"
        threshold = _number(result[f"{key}_threshold"])
        click.echo(f"minDCF({p_target:g})  {result[key]:.4f}   (threshold {threshold})")
    click.echo(f"minCllr       {result['min_cllr']:.4f}")
    if llr:
        click.echo(f"Cllr          {result['cllr']:.4f}")
        for p_target in EVALUATED_P_TARGETS:
            click.echo(f"actDCF({p_target:g})  {result[f'act_dcf_{p_target:g}']:.4f}")
    for path in result.get("plots", []):
        click.echo(f"wrote {path}")
