"""Atomic file writes: a temp file in the target's directory, then `os.replace`.

Readers see the old file or the new one, never a partial write; the temp file never survives a
failure (or Ctrl-C).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic"]


def write_atomic(
    path: str | os.PathLike, content: str | bytes | Callable[[BinaryIO], object]
) -> Path:
    """Write `content` to `path` atomically.

    Args:
        path: the file to (re)place; its directory must exist.
        content: text (written as UTF-8), bytes, or a function that writes to the open binary
            stream (e.g. `lambda f: np.save(f, array)`, `lambda f: torch.save(obj, f)`).

    Returns:
        `path` as a Path.

    Raises:
        OSError: the directory is missing or not writable (callers turn it into their error).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_atomic(target, "hello\\n").read_text()
    'hello\\n'
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            if isinstance(content, str):
                stream.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                stream.write(content)
            else:
                content(stream)
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask), so
        # stores, checkpoints and installed model files stay readable as any other output
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
