"""Tests for speakerverify.speakers.store: weighted means, names, model binding, corrupt files,
concurrency, durability under SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from speakerverify.speakers.records import validate_name
from speakerverify.speakers.store import SpeakerStore, StoreError, UnknownSpeakerError

FP = "0123456789abcdef"


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rows(path: Path) -> list:
    """Every row of every table, for before/after comparisons."""
    conn = sqlite3.connect(str(path))
    try:
        out = []
        for table in ("meta", "speakers"):
            out += conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        return out
    finally:
        conn.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_add_get_round_trip(tmp_path, rng):
    emb = rng.standard_normal((3, 16))
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        rec = store.add("ann", emb, 7.5, fingerprint=FP)
        got = store.get("ann")
        assert store.fingerprint == FP and store.embed_dim == 16
    expected = unit(unit(emb).mean(axis=0))
    np.testing.assert_allclose(got.embedding, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rec.embedding, got.embedding)
    assert got.num_utterances == 3 and got.speech_seconds == pytest.approx(7.5)
    assert got.embedding.dtype == np.float32 and np.linalg.norm(got.embedding) == pytest.approx(1)


def test_adding_utterances_updates_mean_weighted_by_utterances(tmp_path, rng):
    first, more = rng.standard_normal((1, 8)), rng.standard_normal((3, 8))
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        store.add("bo", first, 2.0, fingerprint=FP)
        rec = store.add("bo", more, 6.0, fingerprint=FP)
        created = store.get("bo").created
    # One utterance then three: the mean weighs each utterance equally (not each call).
    expected = unit(unit(np.vstack([first, more])).mean(axis=0))
    np.testing.assert_allclose(rec.embedding, expected, atol=1e-6)
    naive = unit(unit(first)[0] + unit(unit(more).mean(axis=0)))
    assert not np.allclose(rec.embedding, naive, atol=1e-3)
    assert rec.num_utterances == 4 and rec.speech_seconds == pytest.approx(8.0)
    assert rec.created == created


def test_replace_starts_over(tmp_path, rng):
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        store.add("cy", rng.standard_normal((4, 8)), 9.0, fingerprint=FP)
        new = rng.standard_normal((1, 8))
        rec = store.add("cy", new, 3.0, fingerprint=FP, replace=True)
    np.testing.assert_allclose(rec.embedding, unit(new[0]), atol=1e-6)
    assert rec.num_utterances == 1 and rec.speech_seconds == pytest.approx(3.0)


@pytest.mark.parametrize(
    "name",
    ["Zoë", "山田 太郎", "O'Brien\"; DROP TABLE speakers; --", "🙂‍↔️", "a" * 128, "%_*?"],
)
def test_unicode_and_hostile_names_are_stored_verbatim(tmp_path, name):
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        store.add(name, np.ones((1, 4)), 3.0, fingerprint=FP)
        store.add("other", -np.ones((1, 4)), 3.0, fingerprint=FP)
        assert store.get(name).name == unicodedata.normalize("NFC", name)
        assert sorted(r.name for r in store.speakers()) == sorted([name, "other"])
    assert len(rows(tmp_path / "s.db")) >= 2


def test_composed_and_decomposed_spellings_are_one_speaker(tmp_path):
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        store.add("Zo\u00eb", np.ones((1, 4)), 3.0, fingerprint=FP)
        rec = store.add("Zoe\u0308", np.ones((1, 4)), 3.0, fingerprint=FP)
        assert len(store) == 1 and rec.num_utterances == 2


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty"), ("a" * 129, "129 characters"), ("a\nb", "control"), (" ann", "whitespace")],
)
def test_bad_names_are_refused(name, problem):
    with pytest.raises(ValueError, match=problem):
        validate_name(name)


def test_other_model_is_refused_naming_both(tmp_path):
    path = tmp_path / "s.db"
    with SpeakerStore(path, create=True) as store:
        store.add("ann", np.ones((1, 4)), 3.0, fingerprint=FP)
    before = rows(path)
    with SpeakerStore(path) as store:
        with pytest.raises(StoreError, match=f"{FP}.*ffffffffffffffff"):
            store.add("bo", np.ones((1, 4)), 3.0, fingerprint="ffffffffffffffff")
        with pytest.raises(StoreError, match=str(path)):
            store.check_model("ffffffffffffffff")
    assert rows(path) == before


def test_unknown_speaker_and_remove(tmp_path):
    path = tmp_path / "s.db"
    with SpeakerStore(path, create=True) as store:
        store.add("ann", np.ones((1, 4)), 3.0, fingerprint=FP)
        store.add("bo", -np.ones((1, 4)), 3.0, fingerprint=FP)
        with pytest.raises(UnknownSpeakerError, match="'zed'"):
            store.get("zed")
        before = rows(path)
        with pytest.raises(UnknownSpeakerError):
            store.remove("zed")
        assert rows(path) == before
        store.remove("ann")
        assert "ann" not in store and "bo" in store and len(store) == 1
        names, matrix = store.matrix()
        assert names == ["bo"] and matrix.shape == (1, 4)


def test_domain_mean_round_trip(tmp_path):
    with SpeakerStore(tmp_path / "s.db", create=True) as store:
        assert store.domain_mean is None
        store.set_domain_mean(np.arange(4.0), 12, "/data/dir", fingerprint=FP)
        dm = store.domain_mean
    assert dm.num_embeddings == 12 and dm.source == "/data/dir"
    np.testing.assert_array_equal(dm.mean, np.arange(4.0, dtype=np.float32))
    with SpeakerStore(tmp_path / "s.db") as store, pytest.raises(StoreError, match="made by"):
        store.set_domain_mean(np.zeros(4), 1, "x", fingerprint="f" * 16)


@pytest.mark.parametrize(
    "content", [b"hello, this is not a database at all", b"\x00" * 4096, b"SQLite format 3\x00xx"]
)
def test_corrupt_file_is_refused_and_untouched(tmp_path, content):
    path = tmp_path / "s.db"
    path.write_bytes(content)
    for create in (False, True):
        with pytest.raises(StoreError, match=str(path)):
            SpeakerStore(path, create=create)
    assert path.read_bytes() == content
    assert not (tmp_path / "s.db-wal").exists() or content.startswith(b"SQLite")


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('x')")
    conn.commit()
    conn.close()
    digest = sha(path)
    with pytest.raises(StoreError, match="not a speaker store"):
        SpeakerStore(path, create=True)
    assert sha(path) == digest


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "s.db"
    SpeakerStore(path, create=True).close()
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SpeakerStore(path)


def test_missing_store_and_directory(tmp_path):
    with pytest.raises(StoreError, match="no such speaker store"):
        SpeakerStore(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(StoreError, match="is a directory"):
        SpeakerStore(tmp_path, create=True)


def test_store_uses_wal(tmp_path):
    SpeakerStore(tmp_path / "s.db", create=True).close()
    conn = sqlite3.connect(str(tmp_path / "s.db"))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from speakerverify.speakers.store import SpeakerStore
    path, worker = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(worker)
    with SpeakerStore(path, create=True, timeout_seconds=120) as store:
        for i in range(50):
            store.add(f"w{worker}-s{i}", rng.standard_normal((2, 32)), 4.0, fingerprint=sys.argv[3])
    """
)


def test_eight_processes_enrolling_concurrently_lose_nothing(tmp_path):
    path = tmp_path / "s.db"
    commands = [[sys.executable, "-c", WRITER, str(path), str(w), FP] for w in range(8)]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE) for command in commands]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    conn = sqlite3.connect(str(path))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with SpeakerStore(path) as store:
        records = store.speakers()
    assert len(records) == 400
    assert {r.name for r in records} == {f"w{w}-s{i}" for w in range(8) for i in range(50)}
    # Each worker's embeddings are reproducible from its seed: check one per worker is intact.
    for w in range(8):
        emb = np.random.default_rng(w).standard_normal((2, 32))
        rec = next(r for r in records if r.name == f"w{w}-s0")
        np.testing.assert_allclose(rec.embedding, unit(unit(emb).mean(axis=0)), atol=1e-6)
        assert rec.num_utterances == 2


# The killer imports store_faults from tests/.
WITH_TESTS = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
KILLER = textwrap.dedent(
    """
    import sys, numpy as np
    from speakerverify.speakers.store import SpeakerStore
    from store_faults import kill_process, trap_commits
    store = SpeakerStore(sys.argv[1], create=True)
    trap_commits(store, kill_process)
    store.add(sys.argv[2], np.full((3, 8), 5.0), 9.0, fingerprint=sys.argv[3])
    """
)


@pytest.mark.parametrize("name", ["ann", "newcomer"])
def test_sigkill_inside_the_transaction_leaves_store_as_before(tmp_path, name):
    path = tmp_path / "s.db"
    with SpeakerStore(path, create=True) as store:
        store.add("ann", np.ones((1, 8)), 3.0, fingerprint=FP)
    before = rows(path)
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), name, FP], timeout=60, env=WITH_TESTS
    )
    assert proc.returncode == -signal.SIGKILL
    assert rows(path) == before
    with SpeakerStore(path) as store:
        assert store.get("ann").num_utterances == 1 and len(store) == 1
        # The store still takes writes after the crash.
        store.add(name, np.ones((1, 8)), 3.0, fingerprint=FP)


def test_sigkill_on_first_write_to_new_store_leaves_no_speaker(tmp_path):
    path = tmp_path / "fresh.db"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), "ann", FP], timeout=60, env=WITH_TESTS
    )
    assert proc.returncode == -signal.SIGKILL
    with SpeakerStore(path) as store:
        assert len(store) == 0 and store.fingerprint is None


@pytest.mark.parametrize("blob", ["x'0000'", "x'000000000000000000000000'", "'text'"])
def test_corrupt_embedding_row_is_a_store_error(tmp_path, blob):
    path = tmp_path / "s.db"
    with SpeakerStore(path, create=True) as store:
        store.add("ann", np.ones((1, 4)), 3.0, fingerprint=FP)
        store.add("bo", -np.ones((1, 4)), 3.0, fingerprint=FP)
    conn = sqlite3.connect(str(path))
    conn.execute(f"UPDATE speakers SET embedding = {blob} WHERE name = 'bo'")
    conn.commit()
    conn.close()
    with SpeakerStore(path) as store:
        assert store.get("ann").num_utterances == 1
        with pytest.raises(StoreError, match="'bo' has a corrupt"):
            store.speakers()
