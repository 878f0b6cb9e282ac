"""The bundled default model: an x-vector checkpoint, its calibration and its model card.

`speakerverify` commands and `speakerverify.load_model()` use it when no model is given. The files
ship inside the package (`xvector_synth.pt`, `xvector_synth.calibration.json`,
`xvector_synth.card.json`, and the ONNX twin `xvector_synth.onnx` that the speaker commands run
without torch when onnxruntime is installed: `speakerverify.backend.engine`);
`recipes/mini/local/package_model.py` writes them. Importing this module does not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NAME = "xvector_synth"

__all__ = ["NAME", "bundled_calibration", "bundled_card", "bundled_checkpoint", "is_bundled"]


def _directory() -> Path:
    return Path(__file__).parent


def _missing(path: Path) -> Exception:
    from speakerverify.checkpoint import CheckpointError

    return CheckpointError(
        f"{path}: the bundled model is missing (broken install?); reinstall speakerverify "
        "or pass --model CKPT"
    )


def bundled_checkpoint() -> Path:
    """Path of the bundled checkpoint `xvector_synth.pt`.

    Raises:
        checkpoint.CheckpointError: the file is not there (a broken install).
    """
    path = _directory() / f"{NAME}.pt"
    if not path.is_file():
        raise _missing(path)
    return path


def bundled_calibration() -> Path:
    """Path of the bundled calibration (`<stem>.calibration.json` next to the checkpoint)."""
    return _directory() / f"{NAME}.calibration.json"


def bundled_card() -> dict[str, Any]:
    """The model card of the bundled model (name, architecture, fingerprint, metrics, limits).

    Raises:
        checkpoint.CheckpointError: the card is missing or not valid JSON.
    """
    path = _directory() / f"{NAME}.card.json"
    if not path.is_file():
        raise _missing(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        from speakerverify.checkpoint import CheckpointError

        raise CheckpointError(f"{path}: not a valid model card ({error})") from None
    if not isinstance(card, dict):
        raise _missing(path)
    return card


def is_bundled(path: str | Path) -> bool:
    """Whether `path` is the bundled checkpoint."""
    try:
        return Path(path).resolve() == (_directory() / f"{NAME}.pt").resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (pathlib's own error)
        return False
