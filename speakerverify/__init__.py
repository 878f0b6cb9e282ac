"""speakerverify: speaker verification with x-vector style encoders trained by triplet loss.

`speakerverify.load_model()` loads the bundled model (or a checkpoint) for the Python API
(`speakerverify.api.Model`: `embed`, `embed_batch`, `score`, `verify`). Importing the package is
cheap: torch is imported only when a model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os

    from speakerverify.api import Model

from speakerverify._version import __version__

__all__ = ["__version__", "load_model"]


def load_model(path: str | os.PathLike | None = None, *, device: str = "cpu") -> Model:
    """Load a checkpoint (default: the bundled model) as a `speakerverify.api.Model`.

    Args:
        path: checkpoint file; None for the model shipped with the package.
        device: torch device, e.g. "cpu" or "cuda".

    Raises:
        checkpoint.CheckpointError: unusable checkpoint, or the bundled model is missing.
    """
    from speakerverify.api import load_model as _load_model

    return _load_model(path, device=device)
