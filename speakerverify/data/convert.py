"""m4a -> 16 kHz mono 16-bit wav conversion of a VoxCeleb2 tree with ffmpeg: parallel, resumable
(finished files are skipped) and atomic (each output is written to a temp name, then renamed)."""

from __future__ import annotations

import logging
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from speakerverify.errors import SpeakerVerifyError
from speakerverify.frontend.audio import find_ffmpeg

logger = logging.getLogger(__name__)


class ConvertError(SpeakerVerifyError, RuntimeError):
    """ffmpeg is missing or some files failed; the message names the first failures."""


@dataclass
class ConvertResult:
    """How a conversion went: counts, and (source, cause) of each failure."""

    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def convert_file(ffmpeg: str, src: Path, dst: Path, sample_rate: int = 16000) -> None:
    """Convert one file to mono 16-bit PCM wav at `sample_rate`; `dst` appears only when complete.

    Raises:
        ConvertError: ffmpeg failed (its last error line is in the message).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    command = [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(src),
        "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(tmp),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True)
    if proc.returncode != 0:
        if tmp.exists():
            tmp.unlink()
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ConvertError(f"{src}: ffmpeg failed ({lines[-1] if lines else proc.returncode})")
    os.replace(tmp, dst)


def convert_m4a_tree(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    jobs: int = 2,
    sample_rate: int = 16000,
    progress: bool = False,
) -> ConvertResult:
    """Convert every `*.m4a` under `src` to `dst/<same relative path>.wav`.

    Existing outputs are skipped (they are only ever created complete, by rename), so an
    interrupted run resumes where it stopped. Failures do not stop the others; they are returned.

    Args:
        src: tree to convert (e.g. `vox2/dev/aac`).
        dst: output tree (e.g. `vox2/dev/wav`).
        jobs: parallel ffmpeg processes.
        sample_rate: output rate in Hz.
        progress: show a tqdm bar.

    Raises:
        ConvertError: no ffmpeg, or `src` is not a directory.
    """
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        raise ConvertError("ffmpeg not found: install it (on PATH) or `pip install imageio-ffmpeg`")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ConvertError(f"{src}: not a directory")
    result = ConvertResult()
    todo = _pending_files(src, dst, result)
    _convert_files(ffmpeg, todo, result, jobs=jobs, sample_rate=sample_rate, progress=progress)
    logger.info(
        "converted %d, skipped %d existing, %d failed",
        result.converted, result.skipped, len(result.failed),
    )  # fmt: skip
    return result


def _pending_files(src: Path, dst: Path, result: ConvertResult) -> list[tuple[Path, Path]]:
    """(source, output) of each m4a whose wav does not exist yet (counted in `result.skipped`);
    temp files of an interrupted run are removed first."""
    if dst.is_dir():  # temp files of an interrupted run are never valid outputs
        for stale in dst.rglob(".*.tmp"):
            stale.unlink()
    todo = []
    for path in sorted(src.rglob("*.m4a")):
        out = dst / path.relative_to(src).with_suffix(".wav")
        if out.exists():
            result.skipped += 1
        else:
            todo.append((path, out))
    return todo


def _convert_files(
    ffmpeg: str,
    todo: list[tuple[Path, Path]],
    result: ConvertResult,
    *,
    jobs: int,
    sample_rate: int,
    progress: bool,
) -> None:
    """Run `convert_file` on every pair in `jobs` threads, counting outcomes in `result`."""
    from tqdm import tqdm

    def run(pair: tuple[Path, Path]) -> tuple[Path, str | None]:
        try:
            convert_file(ffmpeg, pair[0], pair[1], sample_rate)
        except ConvertError as error:
            return pair[0], str(error)
        return pair[0], None

    # Chunks bound the number of pending futures (VoxCeleb2 dev has 1.09 M files).
    chunk = max(1, jobs) * 64
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        bar = tqdm(total=len(todo), desc="m4a->wav", unit="file", disable=not progress)
        for lo in range(0, len(todo), chunk):
            for path, error in pool.map(run, todo[lo : lo + chunk]):
                if error is None:
                    result.converted += 1
                else:
                    result.failed.append((str(path), error))
                bar.update(1)
        bar.close()
