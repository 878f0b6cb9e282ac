"""Atomic file writes: a temp file in the target's directory, then `os.replace`; and reading
UTF-8 text files line by line with a one-line error naming the line that is not UTF-8.

Readers see the old file or the new one, never a partial write; the temp file never survives a
failure (or Ctrl-C). Only regular files are replaced: a target that exists as anything else (a
FIFO, a device node, a directory, a socket) is refused, since renaming over it would replace the
node itself (`--out /dev/null` run as root once turned the system's /dev/null into a file). A
symlink is written through: its target is replaced, the link stays.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from speakerverify.errors import SpeakerVerifyError

__all__ = [
    "OUTPUT_HELP",
    "NotRegularFileError",
    "NotUtf8Error",
    "OutputError",
    "check_input",
    "check_reachable",
    "file_kind",
    "resolve_output",
    "utf8_lines",
    "write_atomic",
]

# What every output option's help can say about the rule above, in the same words.
OUTPUT_HELP = "Replaced atomically if it is a regular file; a symlink is written through."

# os.stat errors, said in words that name the problem rather than the system call
STAT_ERRORS = {
    errno.ELOOP: "symlink loop",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "permission denied (a directory on its path cannot be searched)",
    errno.ENOTDIR: "file not found (a part of its path is not a directory)",
}

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class OutputError(SpeakerVerifyError, OSError):
    """An output that must not or cannot be written (it is left alone), or a path that cannot
    even be looked at.

    An OSError too (its `strerror` is the one-line reason), so the writers' existing
    `except OSError` turn it into their own one-line errors naming the file.
    """

    def __init__(self, path: Path, reason: str, code: int = errno.EEXIST) -> None:
        super().__init__(code, reason, str(path))
        self.message = f"{path}: {reason}"

    def __str__(self) -> str:
        return self.message


class NotRegularFileError(OutputError):
    """The output exists and is not a regular file (a FIFO, device, directory, socket)."""

    def __init__(self, path: Path, kind: str, action: str = "replace it") -> None:
        super().__init__(path, f"is {kind}, not a regular file: refusing to {action}")


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
        NotRegularFileError: `path` (or the file a symlink there points to) exists and is not a
            regular file; nothing is written.
        OutputError: a symlink loop or another reason `path` cannot even be looked at.
        OSError: the directory is missing or not writable (callers turn it into their error).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_atomic(target, "hello\\n").read_text()
    'hello\\n'
    """
    path = Path(path)
    target = resolve_output(path)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def file_kind(mode: int) -> str:
    """What a file of `st_mode` is, for messages: "a regular file", "a FIFO", "a directory"..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def resolve_output(path: str | os.PathLike) -> Path:
    """The file a write to `path` replaces: `path`, or where a symlink there points.

    Writers that work long before they write call it first, to refuse a bad output early.

    Raises:
        NotRegularFileError: it exists and is not a regular file.
        OutputError: a symlink loop, a name too long, a directory on the way not searchable.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise OutputError(path, f"cannot write ({error.strerror})", error.errno) from None
    if mode is not None and not stat.S_ISREG(mode):
        raise NotRegularFileError(path, file_kind(mode))
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_input(path: str | os.PathLike) -> None:
    """Refuse an input that exists and is not a regular file (a FIFO would block the reader
    forever, a device would be read without end); a missing file is left to the reader.

    Raises:
        NotRegularFileError: "<path>: is a FIFO, not a regular file: ...".
        OutputError: a symlink loop or a name too long (cannot even be looked at).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise OutputError(path, f"cannot read ({error.strerror})", error.errno) from None
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, file_kind(mode), "read it")


def check_reachable(path: str | os.PathLike) -> None:
    """Refuse a path the system will not even look up: a name longer than 255 bytes, a directory
    on its way that cannot be searched. pathlib's exists()/is_file()/is_dir() raise OSError for
    these rather than answer, wherever a path is first looked at; the CLI checks every path
    parameter with this (`cli.common.CheckedPath`) before that. A missing file, a symlink loop
    and a file used as a directory pass: pathlib answers False and the readers word them.

    Raises:
        OutputError: "<path>: file name too long", "<path>: permission denied (...)".
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as error:
        if error.errno != errno.ELOOP:
            reason = STAT_ERRORS.get(error.errno, error.strerror)
            raise OutputError(Path(path), reason, error.errno) from None


class NotUtf8Error(SpeakerVerifyError, ValueError):
    """A text file (wav.scp, a trial list, a score file, a list) with bytes that are not UTF-8."""


def utf8_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """`(line number from 1, line)` of a UTF-8 text file, read as `open(path, encoding="utf-8")`
    reads it (universal newlines, lines keep their newline).

    Raises:
        NotUtf8Error: "<path>:<line>: not UTF-8 text (byte 0xff at column 7)".
        NotRegularFileError: a FIFO, device or directory, which reading would block on or fail.
        OSError: the file cannot be opened or read (callers word it).
    """
    check_input(path)
    lineno = 0
    with open(path, encoding="utf-8") as stream:
        try:
            for lineno, line in enumerate(stream, 1):
                yield lineno, line
        except UnicodeDecodeError:
            pass
        else:
            return
    # Decoding failed somewhere after line `lineno` (text mode decodes in chunks): find it.
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise NotUtf8Error(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                    f"{error.start + 1})"
                ) from None
    raise NotUtf8Error(f"{path}: not UTF-8 text after line {lineno}")


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
