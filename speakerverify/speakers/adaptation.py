"""Label-free model adaptation: re-estimate the encoder's BatchNorm statistics on unlabelled
in-domain audio and write the result as a new checkpoint (AdaBN, Li et al. 2016).

Every BatchNorm layer's running mean and variance become the mean and (unbiased) variance of its
inputs over the adaptation audio, exactly: the layers are estimated one at a time in forward
order, each from inputs computed with the layers before it already adapted and the whole network
in eval mode, i.e. exactly as the adapted model will see them at inference. (Re-running the
network in train mode instead, as `torch.optim.swa_utils.update_bn` does, would normalise each
crop by its own statistics, so the later layers would be estimated on inputs they never see at
inference, and the 1-D layers after pooling cannot run in train mode on one crop.) Weights and
everything else are unchanged; the new fingerprint follows from the new statistics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speakerverify.backend.speaker_model import (
    SpeakerModel,
    VerificationError,
    find_audio_files,
    load_speech,
)
from speakerverify.speakers.records import now_iso

logger = logging.getLogger(__name__)

DEFAULT_CROP_SECONDS = 6.0


@dataclass(frozen=True)
class BatchNormAdaptation:
    """What `adapt_batchnorm` wrote (also stored in the checkpoint under "adaptation").

    Attributes:
        path: the new checkpoint.
        fingerprint: its fingerprint.
        parent_fingerprint: the fingerprint of the model it was adapted from.
        source: the audio directory.
        num_files: audio files used.
        num_crops: crops fed to the encoder.
        speech_seconds: voiced seconds over all files.
        layers: names of the BatchNorm layers re-estimated, in forward order.
        date: ISO 8601 UTC time.
        warnings: things the user should know (e.g. little audio).
        replaced: `path` existed (a regular file) and was replaced.
    """

    path: str
    fingerprint: str
    parent_fingerprint: str
    source: str
    num_files: int
    num_crops: int
    speech_seconds: float
    layers: tuple[str, ...]
    date: str
    warnings: tuple[str, ...] = ()
    replaced: bool = False

    def record(self) -> dict[str, Any]:
        """The plain dict stored in the checkpoint."""
        return {
            "method": "batchnorm_statistics",
            "source": self.source,
            "num_files": self.num_files,
            "num_crops": self.num_crops,
            "speech_seconds": round(self.speech_seconds, 3),
            "num_layers": len(self.layers),
            "date": self.date,
            "parent_fingerprint": self.parent_fingerprint,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "adapt",
            "version": 1,
            "mode": "batchnorm",
            "out": self.path,
            "model_fingerprint": self.fingerprint,
            **self.record(),
            "layers": list(self.layers),
            "warnings": list(self.warnings),
            "replaced": self.replaced,
        }


def split_crops(num_samples: int, crop_samples: int) -> list[tuple[int, int]]:
    """`(start, length)` of near-equal crops of at most `crop_samples` covering `num_samples`.

    >>> split_crops(10, 4)
    [(0, 3), (3, 4), (7, 3)]
    """
    pieces = max(1, math.ceil(num_samples / crop_samples))
    bounds = [round(k * num_samples / pieces) for k in range(pieces + 1)]
    return [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(pieces)]


def _batchnorm_layers(encoder: Any, example: Any) -> list[tuple[str, Any]]:
    """The encoder's BatchNorm layers that keep running statistics, in the order they run."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    names = {
        module: name
        for name, module in encoder.named_modules()
        if isinstance(module, _BatchNorm) and module.track_running_stats
    }
    order: list[Any] = []
    handles = [
        module.register_forward_pre_hook(lambda module, _: order.append(module)) for module in names
    ]
    try:
        with torch.no_grad():
            encoder(example)
    finally:
        for handle in handles:
            handle.remove()
    seen: dict[Any, None] = dict.fromkeys(order)
    return [(names[module], module) for module in seen]


class _Stop(Exception):
    """Raised by the statistics hook: the layers after the one being estimated need not run."""


def input_statistics(encoder: Any, layer: Any, inputs: list[Any]) -> tuple[Any, Any, int]:
    """Mean, unbiased variance (float64, per channel) and count of `layer`'s inputs over `inputs`.

    Runs `encoder` on each feature tensor `(1, T, F)` up to `layer`; channels are dim 1 of the
    layer's input, every other dim is pooled (Chan et al.'s pairwise update, in float64).
    """
    import torch

    state: dict[str, Any] = {"count": 0, "mean": None, "m2": None}

    def hook(module: Any, args: tuple) -> None:
        x = args[0].detach().double()
        dims = [d for d in range(x.ndim) if d != 1]
        count = x.numel() // x.shape[1]
        mean = x.mean(dim=dims)
        shape = [1] * x.ndim
        shape[1] = -1
        m2 = (x - mean.view(shape)).square().sum(dim=dims)
        if state["mean"] is None:
            state.update(count=count, mean=mean, m2=m2)
        else:
            total = state["count"] + count
            delta = mean - state["mean"]
            state["mean"] = state["mean"] + delta * (count / total)
            state["m2"] = state["m2"] + m2 + delta.square() * (state["count"] * count / total)
            state["count"] = total
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for feats in inputs:
                with contextlib.suppress(_Stop):
                    encoder(feats)
    finally:
        handle.remove()
    count = state["count"]
    return state["mean"], state["m2"] / max(count - 1, 1), count


def adapt_batchnorm(
    checkpoint_path: str | os.PathLike,
    audio_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    crop_seconds: float = DEFAULT_CROP_SECONDS,
    min_speech_seconds: float = 1.0,
) -> BatchNormAdaptation:
    """Re-estimate the BatchNorm statistics of a checkpoint on the audio under `audio_dir`.

    Each file's voiced speech (energy VAD, as for an embedding) is cut into crops of at most
    `crop_seconds`, turned into features by the checkpoint's front-end in eval mode (as at
    inference) and fed to the encoder one crop at a time, so no padding enters the statistics.
    The new checkpoint is written atomically and records what it was adapted on; an existing
    regular file at `out_path` is replaced (said in the result), anything else is refused.

    Cost: the features of all crops are held in memory (about 32 kB per second of speech at 80
    mel bins), and each of the L BatchNorm layers takes one pass that stops at that layer, so
    about L / 2 full forward passes in all (3.5 for the x-vector, more for deep ResNets).

    Raises:
        VerificationError: no audio files, a file without enough speech, out == input.
        audio.AudioError: an unreadable file.
        checkpoint.CheckpointError: unusable input checkpoint, or the output cannot be written.
    """
    from speakerverify.checkpoint import load_checkpoint, load_encoder, model_fingerprint

    out = _check_output(checkpoint_path, out_path, crop_seconds)
    payload = load_checkpoint(checkpoint_path)
    loaded = load_encoder(checkpoint_path)
    encoder = loaded.encoder.eval()
    num_files, inputs, speech_seconds = _speech_crops(
        loaded, checkpoint_path, audio_dir, crop_seconds, min_speech_seconds
    )
    layers = _batchnorm_layers(encoder, inputs[0])
    _reestimate_statistics(layers, encoder, inputs)
    state_dict = {k: v.detach().to("cpu").clone() for k, v in encoder.state_dict().items()}
    warnings = []
    if speech_seconds < 300:
        warnings.append(
            f"{audio_dir}: only {speech_seconds:.0f} s of speech; statistics from a few minutes "
            "or more of in-domain audio are more reliable"
        )
    result = BatchNormAdaptation(
        str(out),
        model_fingerprint(state_dict, payload["features"], payload["model_args"]),
        payload["fingerprint"],
        str(Path(audio_dir).resolve()),
        num_files,
        len(inputs),
        speech_seconds,
        tuple(name for name, _ in layers),
        now_iso(),
        tuple(warnings),
        out.exists(),
    )
    _write_adapted(out, payload, state_dict, result)
    return result


def _check_output(
    checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, crop_seconds: float
) -> Path:
    """The output path, refused before any work if it cannot (or must not) be written."""
    from speakerverify.checkpoint import CheckpointError
    from speakerverify.files import resolve_output

    out = Path(out_path)
    if out.is_dir():
        raise CheckpointError(f"{out}: is a directory")
    if not out.parent.is_dir():
        raise CheckpointError(f"{out}: directory {out.parent} does not exist")
    resolve_output(out)  # a FIFO, device or socket is refused before the work, not after
    if out.exists() and out.resolve() == Path(checkpoint_path).resolve():
        raise VerificationError(f"{out}: would overwrite the model it adapts; choose a new --out")
    if not crop_seconds > 0:
        raise VerificationError(f"--crop-seconds must be positive, got {crop_seconds}")
    return out


def _speech_crops(
    loaded: Any,
    checkpoint_path: str | os.PathLike,
    audio_dir: str | os.PathLike,
    crop_seconds: float,
    min_speech_seconds: float,
) -> tuple[int, list[Any], float]:
    """(number of files, eval-mode features `(1, T, F)` of every speech crop, speech seconds)."""
    import torch

    frontend = loaded.frontend.eval()
    paths = find_audio_files(audio_dir)
    if not paths:
        raise VerificationError(f"{audio_dir}: no audio files found")
    reader = SpeakerModel(None, loaded.fingerprint, loaded.sample_rate, str(checkpoint_path))
    crop_samples = max(1, round(crop_seconds * loaded.sample_rate))
    inputs, speech_seconds = [], 0.0
    for path in paths:
        speech = load_speech(reader, path, min_speech_seconds=min_speech_seconds)
        speech_seconds += speech.speech_seconds
        for start, length in split_crops(speech.wave.shape[0], crop_samples):
            with torch.no_grad():
                feats, _ = frontend(speech.wave[start : start + length][None])
            inputs.append(feats)
    if len(inputs) < 2:
        raise VerificationError(
            f"{audio_dir}: one crop of speech is too little to estimate statistics from"
        )
    return len(paths), inputs, speech_seconds


def _reestimate_statistics(layers: list[tuple[str, Any]], encoder: Any, inputs: list[Any]) -> None:
    """Set each layer's running statistics from its inputs, in forward order (see the module)."""
    for name, layer in layers:
        mean, variance, _ = input_statistics(encoder, layer, inputs)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(variance.to(layer.running_var.dtype))
        if layer.num_batches_tracked is not None:
            layer.num_batches_tracked.fill_(len(inputs))
        logger.debug("%s: statistics of %d crops", name, len(inputs))


def _write_adapted(
    out: Path, payload: dict[str, Any], state_dict: dict[str, Any], result: BatchNormAdaptation
) -> None:
    """Write the adapted checkpoint atomically; it records this and any earlier adaptation."""
    from speakerverify.checkpoint import derive_payload, write_checkpoint

    record = result.record()
    if payload.get("adaptation"):
        record["previous"] = payload["adaptation"]
    write_checkpoint(derive_payload(payload, state_dict, adaptation=record), out)
