"""`speakerverify model info | export`: what a checkpoint is, and its encoder as ONNX.

Thin wrappers over `speakerverify.model_card.describe_model` and
`speakerverify.backend.export.export_onnx`.
"""

from __future__ import annotations

from typing import Any

import click

from speakerverify.cli.common import CheckedPath, echo_json, model_path_or_bundled
from speakerverify.files import OUTPUT_HELP

_checkpoint_argument = click.argument(
    "checkpoint", required=False, type=CheckedPath(), metavar="[CKPT]", envvar="SPEAKERVERIFY_MODEL"
)


@click.group()
def model() -> None:
    """Describe a checkpoint or export its encoder (default: the bundled model)."""


def _mining_text(training: dict) -> str:
    """E.g. "semi-hard mining for 1 epoch, then batch-hard" (a warm-up strategy, then the main)."""
    mining, warmup = training.get("mining"), training.get("mining_warmup")
    if not mining:
        return ""
    mining = mining.replace("_", "-")  # registry names, written as the README writes them
    epochs = training.get("mining_warmup_epochs") or 0
    if warmup and epochs and warmup.replace("_", "-") != mining:
        unit = "epoch" if epochs == 1 else "epochs"
        return f"{warmup.replace('_', '-')} mining for {epochs:g} {unit}, then {mining}"
    return f"{mining} mining"


def _training_details(training: dict) -> str:
    """E.g. "20 epochs, speed-perturbed speakers, triplet loss, ..., frame_layers frozen"."""
    details = [
        f"{training['epochs']} epochs" if training.get("epochs") else "",
        "speed-perturbed speakers" if training.get("speed_perturb") else "",
        f"{training['loss']} loss" if training.get("loss") else "",
        _mining_text(training),
        f"{', '.join(training['frozen'])} frozen" if training.get("frozen") else "",
    ]
    return ", ".join(d for d in details if d)


def _training_line(training: dict) -> str:
    text = str(training.get("data") or "unknown")
    if training.get("members"):  # a fusion: each member's details
        members = [_training_details(member) for member in training["members"]]
        return f"{text} (" + "; ".join(f"member {i}: {m}" for i, m in enumerate(members, 1)) + ")"
    details = _training_details(training)
    return f"{text} ({details})" if details else text


def _frontend_line(frontend: dict[str, Any]) -> str:
    """E.g. "30 cepstra of 80 log-mel bins at 16000 Hz, CMN on the first 3 cepstra"."""
    bins = f"{frontend.get('num_mel_bins')} log-mel bins at {frontend.get('sample_rate')} Hz"
    if frontend.get("num_ceps"):
        bins = f"{frontend['num_ceps']} cepstra of {bins}"
    cmn = "off"
    if frontend.get("cmn"):
        cmn = f"on the first {frontend['cmn_ceps']} cepstra" if frontend.get("cmn_ceps") else "on"
    return f"{bins}, CMN {cmn}"


def _metrics_line(metrics: dict) -> str:
    """The card's test metrics in one line; keys it does not know are shown as they are."""
    known = {"eer": "EER {:.2%}", "min_dcf_0.01": "minDCF(0.01) {:.3f}",
             "min_dcf_0.05": "minDCF(0.05) {:.3f}", "min_cllr": "minCllr {:.3f}"}  # fmt: skip
    parts = [form.format(metrics[key]) for key, form in known.items() if key in metrics]
    if "num_trials" in metrics:
        parts.append(f"{metrics['num_trials']:,} trials")
    hidden = set(known) | {"num_trials", "num_targets", "num_nontargets"}
    parts += [
        f"{k} {v}" for k, v in sorted(metrics.items()) if k not in hidden and "threshold" not in k
    ]
    return ", ".join(parts)


def _rows(info: dict) -> list[tuple[str, str]]:
    card = info["card"] or {}
    training = info["training"]
    args = ", ".join(f"{k}={v}" for k, v in sorted(info["model_args"].items()))
    frontend = info["frontend"]
    rows = [
        ("model", f"{info['name']} ({info['path']})"),
        ("architecture", f"{info['architecture']} ({args})"),
        ("embedding", f"{info['embed_dim']} dims"),
        ("parameters", f"{info['num_parameters']:,}"),
        ("fingerprint", info["fingerprint"]),
        ("front-end", _frontend_line(frontend)),
        ("training data", _training_line(training)),
    ]
    if card:
        steps = training.get("steps")
        rows.append(("trained", f"{card.get('date') or '?'} at commit {card.get('commit') or '?'}"))
        seconds = training.get("seconds")
        if steps is not None:
            took = f", {seconds / 60:.0f} min" if seconds is not None else ""
            rows.append(("training", f"{steps:,} steps{took}"))
        if card.get("metrics"):
            rows.append(("test metrics", _metrics_line(card["metrics"])))
        if card.get("limits"):
            rows.append(("limits", card["limits"]))
    else:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))
        rows.append(("saved", f"{info['file_modified']} with {versions or 'unknown versions'}"))
    if info.get("adapted"):
        adapted = info["adapted"]
        rows.append(
            (
                "adapted",
                f"BatchNorm statistics re-estimated on {adapted.get('num_files')} files "
                f"({adapted.get('speech_seconds', 0):.1f} s) from {adapted.get('source')} on "
                f"{adapted.get('date')}; parent model {adapted.get('parent_fingerprint')}",
            )
        )
    rows.append(("calibration", info["calibration"] or "none found next to the checkpoint"))
    return rows


@model.command("info")
@_checkpoint_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def info(checkpoint, as_json) -> None:
    """What CKPT is: architecture, size, fingerprint, front-end, training, calibration.

    CKPT defaults to $SPEAKERVERIFY_MODEL, else the bundled model (whose model card adds the
    training data, date, metrics and limits).
    """
    from speakerverify.model_card import describe_model
    from speakerverify.pretrained import bundled_card, is_bundled

    path = model_path_or_bundled(checkpoint, announce=False)  # the output names it
    description = describe_model(path, card=bundled_card() if is_bundled(path) else None)
    if as_json:
        echo_json({"command": "model info", "version": 1, **description})
        return
    rows = _rows(description)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


@model.command("export")
@_checkpoint_argument
@click.option(
    "--onnx",
    "onnx_path",
    required=True,
    type=CheckedPath(),
    metavar="OUT",
    help=f"ONNX file to write. {OUTPUT_HELP}",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def export(checkpoint, onnx_path, as_json) -> None:
    """Export the encoder of CKPT (default: $SPEAKERVERIFY_MODEL, else the bundled model) to ONNX.

    \b
    Input `feats` (B, T, F) log-mel features as the checkpoint's front-end makes them (its
    config is in the ONNX metadata); output `embedding` (B, D), not L2-normalised. B and T are
    dynamic.
    """
    from speakerverify.backend.export import export_onnx

    result = export_onnx(model_path_or_bundled(checkpoint), onnx_path)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(
            f"wrote {result.path}: feats (B, T >= {result.min_frames}, {result.feat_dim}) -> "
            f"embedding (B, {result.embed_dim}), model {result.fingerprint}"
        )
