"""write_atomic: the one way the package writes a file in place."""

from __future__ import annotations

import pytest

from speakerverify.files import write_atomic


def test_text_bytes_and_writer(tmp_path):
    target = tmp_path / "out"
    assert write_atomic(target, "zoë\n") == target
    assert target.read_text(encoding="utf-8") == "zoë\n"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_atomic(target, lambda stream: stream.write(b"abc"))
    assert target.read_bytes() == b"abc"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("old")

    def fail_halfway(stream):
        stream.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, fail_halfway)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing" / "out", "x")


def test_the_file_gets_the_mode_open_would_give_it(tmp_path):
    import os

    mask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "atomic", "x")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(mask)
    mode = (tmp_path / "atomic").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o640
