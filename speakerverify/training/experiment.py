"""Experiment-directory bookkeeping for training: checkpoint names, newest/pruning, resume lookup,
the `train_log.jsonl` metrics log (+ optional TensorBoard), and SIGINT/SIGTERM stop requests."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speakerverify.checkpoint import CheckpointError
from speakerverify.files import write_atomic

__all__ = [
    "JsonlLog",
    "StopFlag",
    "copy_atomic",
    "find_checkpoint",
    "prune_checkpoints",
    "resume_path",
    "stop_on_signals",
]

logger = logging.getLogger(__name__)


def find_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest `epoch_*.pt` in `checkpoint_dir` (mid-epoch ones sort before their epoch end)."""
    candidates = sorted(Path(checkpoint_dir).glob("epoch_*.pt"), key=_checkpoint_key)
    return candidates[-1] if candidates else None


def _checkpoint_key(path: Path) -> tuple[int, float]:
    parts = path.stem.split("_")  # epoch_0003 or epoch_0003_step_00000123
    try:
        return int(parts[1]), float(parts[3]) if len(parts) == 4 else math.inf
    except (IndexError, ValueError):
        return -1, -1.0


def resume_path(resume: Any, checkpoint_dir: Path) -> Path | None:
    if resume is None or resume is False:
        if find_checkpoint(checkpoint_dir) is not None:
            raise CheckpointError(
                f"{checkpoint_dir}: already has checkpoints; resume, or use a new --exp-dir"
            )
        return None
    if resume is True:
        found = find_checkpoint(checkpoint_dir)
        if found is None:
            raise CheckpointError(f"{checkpoint_dir}: no checkpoint to resume from")
        return found
    return Path(resume)


def prune_checkpoints(checkpoint_dir: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` end-of-epoch checkpoints; drop mid-epoch ones they supersede."""
    ends = sorted(
        (p for p in checkpoint_dir.glob("epoch_*.pt") if p.stem.count("_") == 1),
        key=_checkpoint_key,
    )
    newest = _checkpoint_key(ends[-1])[0] if ends else -1
    for path in ends[:-keep_last]:
        path.unlink(missing_ok=True)
    for path in checkpoint_dir.glob("epoch_*_step_*.pt"):
        if _checkpoint_key(path)[0] <= newest:
            path.unlink(missing_ok=True)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy `source` to `target` through `write_atomic` (readers never see half a copy)."""
    with source.open("rb") as stream:
        write_atomic(target, lambda out: shutil.copyfileobj(stream, out))


class JsonlLog:
    """Appends one JSON record per line to train_log.jsonl, and to TensorBoard when available."""

    def __init__(self, path: Path, tensorboard: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:
                logger.debug("tensorboard not installed; writing train_log.jsonl only")

    def __call__(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), **record}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("kind", "epoch", "step", "time") and isinstance(value, float):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


class StopFlag:
    """Set by SIGINT/SIGTERM; training checks it at each step boundary."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self) -> bool:
        return self.signum != 0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Turn SIGINT/SIGTERM into a stop request for the duration (main thread only); a second
    SIGINT interrupts at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signum = signum
        logger.warning("signal %d: saving a checkpoint at the next step boundary", signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
