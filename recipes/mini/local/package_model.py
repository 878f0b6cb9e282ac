#!/usr/bin/env python3
"""Package a trained checkpoint and its calibration as a bundled model: NAME.pt,
NAME.calibration.json, NAME.card.json and the ONNX twin NAME.onnx (the encoder, for the torch-free
fast path of enroll/verify/identify) in OUT_DIR, each written atomically.

    python local/package_model.py exp/xvector_mini/final.pt \
        exp/xvector_mini/final.calibration.json speakerverify/pretrained --name xvector_synth \
        --metrics exp/xvector_mini/final/scores.json

The checkpoint loses its training state (optimizer, RNG); its weights are unchanged unless --fp16
stores them as float16 (restored to float32 on load; the fingerprint and the calibration's binding
then follow the rounded weights). The card's fingerprint, embedding size and parameter count are
computed from the written checkpoint. NAME.onnx is exported from the written checkpoint, so it
carries the same fingerprint; writing it needs the onnx extra (`pip install 'speakerverify[onnx]'`),
or skip it with --no-onnx (the commands then always use torch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

TRAINING_DATA = (
    "synthetic speech only: eSpeak NG voices with randomised vocal tract, pitch and voice quality "
    "and random text in many languages (tools/make_mini_corpus.py), and speakers blended from the "
    "five Japanese voices of the Kokoro-82M neural TTS, which others trained on real recordings "
    "(tools/make_kokoro_corpus.py), all through per-session simulated channels (recipes/mini); "
    "no recording of a real person"
)
LIMITS = (
    "Trained only on synthetic speech (eSpeak NG voices and blends of five Kokoro-82M neural TTS "
    "voices): it has never heard a real person, and its accuracy on real speech (one small set, "
    "realdev; see the README's model card) is far below models trained on real speakers. Its "
    "default operating point accepts 1 % of synthetic impostors of the claimant's gender made by "
    "the claimant's own synthesiser, per claim, and identify keeps that 1 % over a whole search: "
    "on realdev pair verify accepted 1 % of random and 4 % of same-pitch impostor pairs and "
    "rejected 12 % of genuine single-file pairs; with 9 speakers enrolled, no impostor claim was "
    "accepted, every stranger was answered unknown and 94 % of enrolled speakers were "
    "identified. `speakerverify adapt DIR` on a few hundred unlabelled recordings of your domain "
    "fits the store's decision rule to them. Fine for demos, tests and pipelines, not for "
    "decisions about people; train on VoxCeleb (recipes/voxceleb) for real use."
)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def package(args: argparse.Namespace) -> dict:
    from speakerverify.backend.calibration import Calibration
    from speakerverify.checkpoint import (
        CheckpointError,
        derive_payload,
        load_checkpoint,
        write_checkpoint,
    )
    from speakerverify.checkpoint_rules import model_mismatch
    from speakerverify.files import write_atomic
    from speakerverify.model_card import make_card, training_summary

    payload = load_checkpoint(args.checkpoint)
    calibration = Calibration.load(args.calibration)
    made = f"{args.calibration}: calibration was fitted for"
    bound = calibration.model_fingerprint or None
    mismatch = model_mismatch(made, bound, str(args.checkpoint), payload["fingerprint"])
    if mismatch:
        raise CheckpointError(mismatch)
    state = payload["state_dict"]
    if args.fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    # float16 weights are fingerprinted as their float32 restoration (checkpoint_rules)
    packaged = derive_payload(
        payload,
        state,
        packaged={
            "name": args.name,
            "source_fingerprint": payload["fingerprint"],
            "fp16": bool(args.fp16),
        },
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / f"{args.name}.pt"
    fingerprint = write_checkpoint(packaged, checkpoint)
    if args.onnx:
        from speakerverify.backend.export import export_onnx

        export_onnx(checkpoint, out_dir / f"{args.name}.onnx")  # atomic too
    calibration.model_fingerprint = fingerprint  # rebinding is a no-op without --fp16
    calibration_path = out_dir / f"{args.name}.calibration.json"
    calibration.save(calibration_path)  # atomic too
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else {}
    # what the checkpoint's config says (each member's, for a fusion), under the card's words
    summary = training_summary(payload)
    training = {
        **summary,
        "data": args.training_data,
        "data_dir": summary["data"],
        "steps": args.training_steps,
        "seconds": args.training_seconds,
        "calibration": (
            f"{args.calibration}: {calibration.num_targets} target + "
            f"{calibration.num_nontargets} non-target trials"
            + (
                f"; default operating point p_target={calibration.default_p_target:.4g}: "
                f"{calibration.operating_point}"
                if calibration.default_p_target is not None
                else ""
            )
            + (f", fitted on float32 model {payload['fingerprint']}" if args.fp16 else "")
        ),
    }
    card = make_card(
        checkpoint,
        name=args.name,
        training=training,
        metrics=metrics,
        limits=args.limits,
        date=args.date,
        commit=args.commit,
    )
    card_path = out_dir / f"{args.name}.card.json"
    text = json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(card_path, text)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="trained (averaged) checkpoint")
    parser.add_argument("calibration", help="its calibration JSON (speakerverify calibrate)")
    parser.add_argument("out_dir", help="where NAME.pt, NAME.calibration.json, NAME.card.json go")
    parser.add_argument("--name", default="xvector_synth", help="file stem (default %(default)s)")
    parser.add_argument("--metrics", help="JSON of evaluation results to put in the card")
    parser.add_argument("--fp16", action="store_true", help="store weights as float16")
    parser.add_argument(
        "--no-onnx", dest="onnx", action="store_false", help="do not write the ONNX twin NAME.onnx"
    )
    parser.add_argument("--training-data", default=TRAINING_DATA, help="what it was trained on")
    parser.add_argument("--training-steps", type=int, default=None, help="optimizer steps")
    parser.add_argument("--training-seconds", type=float, default=None, help="wall time")
    parser.add_argument("--limits", default=LIMITS, help="where not to trust the model")
    parser.add_argument(
        "--date", default=datetime.date.today().isoformat(), help="training date (ISO)"
    )
    parser.add_argument("--commit", default=_git_commit(), help="code revision (default: HEAD)")
    args = parser.parse_args(argv)

    from speakerverify.backend.calibration import CalibrationError
    from speakerverify.backend.export import ExportError
    from speakerverify.checkpoint import CheckpointError

    try:
        card = package(args)
    except (CheckpointError, CalibrationError, ExportError, OSError, json.JSONDecodeError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(
        f"packaged {card['name']} ({card['architecture']}, {card['num_parameters']} parameters, "
        f"fingerprint {card['fingerprint']}) in {args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
