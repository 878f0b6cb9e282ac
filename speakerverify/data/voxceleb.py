"""Scan VoxCeleb1/2 trees in their published layouts into a DataDir.

VoxCeleb1: `<root>/wav/idNNNNN/<youtube_id>/NNNNN.wav` (speakers id10001-id11251, the Vox1-O test
speakers are id10270-id10309). VoxCeleb2: `<root>/dev/aac/idNNNNN/<youtube_id>/NNNNN.m4a` (or the
same tree converted to wav). The utt id is the path relative to the directory that holds `wav/`
or `aac/`, without extension (`id10270/x6uYqmx31kE/00001`), so the official trial lists map
directly.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from speakerverify.data.datadir import DataDir, DataDirError
from speakerverify.data.layout import read_durations
from speakerverify.frontend.audio import AUDIO_EXTENSIONS

logger = logging.getLogger(__name__)

AUDIO_DIRS = ("wav", "aac")
SPEAKER_PATTERN = re.compile(r"^id\d{5}$")
UTTERANCE_PATTERN = re.compile(r"^\d{5}$")
VOX1_TEST_SPEAKERS = frozenset(f"id{n}" for n in range(10270, 10310))
SPLITS = ("all", "dev", "test")


def find_audio_trees(root: str | os.PathLike) -> list[Path]:
    """The `wav/` or `aac/` directories of a VoxCeleb download under `root`.

    Looks at `root` itself and at `root/dev`, `root/test` (how VoxCeleb2 and split VoxCeleb1
    downloads unpack); `root` may also be the `wav/` or `aac/` directory itself. Where both `wav/`
    and `aac/` exist (converted in place), `wav/` is used.
    """
    base = Path(root)
    if base.name in AUDIO_DIRS and base.is_dir():
        return [base]
    trees = []
    for parent in (base, base / "dev", base / "test"):
        # A converted VoxCeleb2 tree (wav/ next to aac/) replaces the m4a one.
        for name in AUDIO_DIRS:
            if (parent / name).is_dir():
                trees.append(parent / name)
                if name == "wav" and (parent / "aac").is_dir():
                    logger.info("using %s, not %s", parent / "wav", parent / "aac")
                break
    return trees


def scan_voxceleb(
    root: str | os.PathLike,
    *,
    split: str = "all",
    with_durations: bool = True,
    progress: bool = False,
) -> DataDir:
    """Index a VoxCeleb1 or VoxCeleb2 tree (or both under one root) as a DataDir.

    Args:
        root: the corpus root (the directory holding `wav/`, `aac/`, `dev/` or `test/`).
        split: "all", "dev" (without the 40 Vox1-O test speakers id10270-id10309) or "test"
            (only those). VoxCeleb2 speakers (id0NNNN) are kept in "all" and "dev".
        with_durations: read each file's header for `utt2dur` (wav/flac only; m4a is skipped
            because ffmpeg would have to decode every file).
        progress: show a tqdm bar while scanning.

    Returns:
        A DataDir sorted by utt id, with absolute audio paths.

    Raises:
        DataDirError: no VoxCeleb tree under `root`, a duplicated utt id, or nothing found.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    trees = find_audio_trees(root)
    if not trees:
        raise DataDirError(
            f"{root}: no VoxCeleb audio tree found (expected wav/ or aac/ directly or under "
            "dev/ or test/)"
        )
    wav: dict[str, str] = {}
    skipped = 0
    for tree in trees:
        tree_path = str(tree.resolve())  # resolved once: per-file resolve() costs ~8 syscalls
        for speaker in sorted(os.listdir(tree)):
            if not SPEAKER_PATTERN.match(speaker) or not (tree / speaker).is_dir():
                skipped += 1
                continue
            if _in_split(speaker, split):
                skipped += _scan_speaker(tree, tree_path, speaker, wav)
    if skipped:
        logger.info("skipped %d entries that do not follow the VoxCeleb layout", skipped)
    if not wav:
        raise DataDirError(f"{root}: no VoxCeleb utterances found (split {split})")
    wav = dict(sorted(wav.items()))
    utt2spk = {utt: utt.split("/", 1)[0] for utt in wav}
    utt2dur = read_durations(wav, progress) if with_durations else None
    logger.info("found %d utterances of %d speakers", len(wav), len(set(utt2spk.values())))
    return DataDir(wav=wav, utt2spk=utt2spk, utt2dur=utt2dur)


def _scan_speaker(tree: Path, tree_path: str, speaker: str, wav: dict[str, str]) -> int:
    """Add a speaker's `session/utterance` files to `wav`; return the entries skipped as not
    following the layout. A utt id already in `wav` (another tree) is a DataDirError."""
    skipped = 0
    for session in sorted(os.listdir(tree / speaker)):
        session_dir = tree / speaker / session
        if not session_dir.is_dir():
            skipped += 1
            continue
        for name in sorted(os.listdir(session_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTENSIONS or not UTTERANCE_PATTERN.match(stem):
                skipped += 1
                continue
            utt_id = f"{speaker}/{session}/{stem}"
            path = os.path.join(tree_path, speaker, session, name)
            if utt_id in wav:
                raise DataDirError(f"{path}: utterance {utt_id} also exists as {wav[utt_id]}")
            wav[utt_id] = path
    return skipped


def prepare_voxceleb(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "all",
    with_durations: bool = True,
    progress: bool = False,
) -> DataDir:
    """`scan_voxceleb` and write the result as a Kaldi-style data dir in `out_dir`."""
    data = scan_voxceleb(root, split=split, with_durations=with_durations, progress=progress)
    data.save(out_dir)
    return data


def _in_split(speaker: str, split: str) -> bool:
    if split == "all":
        return True
    is_test = speaker in VOX1_TEST_SPEAKERS
    return is_test if split == "test" else not is_test
