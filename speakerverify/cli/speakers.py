"""`speakerverify speakers list | remove | export`: what a speaker store holds, read and edited
through `speakerverify.speakers.store` (no model, so no torch import).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from speakerverify.cli.common import CheckedPath, echo_json, fail
from speakerverify.cli.speaker_options import json_option, open_store, store_option
from speakerverify.files import OUTPUT_HELP


@click.group()
def speakers() -> None:
    """List, remove or export the speakers in a store."""


def _domain_json(domain, with_mean: bool) -> dict | None:
    if domain is None:
        return None
    out = {
        "num_embeddings": domain.num_embeddings,
        "source": domain.source,
        "updated": domain.updated,
    }
    if domain.has_rule:
        from speakerverify.speakers.domain import whitening_json

        out["rule"] = {
            "cohort_size": domain.cohort_size,
            "whitening": whitening_json(domain),
            "top_k": domain.top_k,
            "threshold": domain.threshold,
            "false_accept": domain.false_accept,
        }
    if with_mean:
        out["mean"] = [float(x) for x in domain.mean]
    return out


def _store_json(store, command: str, with_embeddings: bool) -> dict:
    records = store.speakers()
    listed = []
    for record in records:
        entry = record.summary()
        if with_embeddings:
            entry["embedding"] = [float(x) for x in record.embedding]
        listed.append(entry)
    return {
        "command": command,
        "version": 1,
        "store": str(store.path),
        "model_fingerprint": store.fingerprint,
        "embed_dim": store.embed_dim,
        "domain_mean": _domain_json(store.domain_mean, with_embeddings),
        "num_speakers": len(listed),
        "speakers": listed,
    }


@speakers.command("list")
@store_option
@json_option
def list_speakers(store_path, as_json) -> None:
    """List enrolled speakers with utterance counts, speech seconds and times."""
    with open_store(store_path, read_only=True) as store:
        payload = _store_json(store, "speakers list", with_embeddings=False)
    if as_json:
        echo_json(payload)
        return
    click.echo(
        f"{payload['store']}: {payload['num_speakers']} speaker(s), "
        f"model {payload['model_fingerprint']}"
        + ("" if payload["domain_mean"] is None else ", domain mean set (adapt)")
    )
    if payload["speakers"]:
        width = max(4, *(len(s["name"]) for s in payload["speakers"]))
        click.echo(f"{'name':<{width}}  {'utts':>5}  {'speech_s':>9}  updated")
        for s in payload["speakers"]:
            click.echo(
                f"{s['name']:<{width}}  {s['num_utterances']:>5}  "
                f"{s['speech_seconds']:>9.1f}  {s['updated']}"
            )


@speakers.command("remove")
@click.argument("name")
@store_option
@json_option
def remove_speaker(name, store_path, as_json) -> None:
    """Remove speaker NAME from the store (error, exit 2, if not enrolled)."""
    with open_store(store_path) as store:
        record = store.get(name)
        store.remove(record.name)
        remaining = len(store)
    if as_json:
        echo_json(
            {
                "command": "speakers remove",
                "version": 1,
                "store": str(store.path),
                "removed": record.name,
                "num_speakers": remaining,
            }
        )
    else:
        click.echo(f"removed {record.name!r} from {store.path} ({remaining} speaker(s) left)")


@speakers.command("export")
@store_option
@click.option(
    "--out",
    "out_path",
    type=CheckedPath(),
    metavar="FILE",
    help=f"Write here, not to stdout. {OUTPUT_HELP}",
)
@json_option
def export_speakers(store_path, out_path, as_json) -> None:
    """Export the store as JSON, embeddings included.

    Without --out the document goes to stdout; with --out, --json prints a short summary.
    """
    with open_store(store_path, read_only=True) as store:
        payload = _store_json(store, "speakers export", with_embeddings=True)
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False)
    if out_path is None:
        click.echo(text)
        return
    _write_atomic(Path(out_path), text + "\n")
    summary = {
        "command": "speakers export",
        "version": 1,
        "store": payload["store"],
        "out": str(out_path),
        "num_speakers": payload["num_speakers"],
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"exported {payload['num_speakers']} speaker(s) to {out_path}")


def _write_atomic(path: Path, text: str) -> None:
    if path.is_dir():
        fail(f"{path}: is a directory")
    if not path.parent.is_dir():
        fail(f"{path}: directory {path.parent} does not exist")
    from speakerverify.files import write_atomic

    try:
        write_atomic(path, text)
    except OSError as error:
        fail(f"{path}: cannot write ({error.strerror})")
