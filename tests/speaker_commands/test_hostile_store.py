"""Hostile names and stores (issue 22, item 5 and the store tracebacks): a speaker name must print
as what it is; a corrupt store value is a one-line error naming the store.

Shared fixtures: `conftest.py` here."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from command_helpers import assert_clean_error, run
from speaker_helpers import FP
from store_faults import trapped_connect

from speakerverify.speakers.records import validate_name
from speakerverify.speakers.store import SpeakerStore

SPOOFS = {
    "rlo": "ann\u202enoj",  # shows as "annjon": right-to-left override
    "lre": "\u202aann",
    "pdf": "ann\u202c",
    "lri_isolate": "\u2066ann\u2069",
    "zero_width_space": "a\u200bnn",
    "zero_width_joiner": "an\u200dn",
    "bom": "\ufeffann",
    "soft_hyphen": "an\u00adn",
    "line_separator": "ann\u2028bo",
}


@pytest.mark.parametrize("name", SPOOFS.values(), ids=SPOOFS.keys())
def test_names_that_print_like_others_are_refused(name):
    with pytest.raises(ValueError) as caught:
        validate_name(name)
    message = str(caught.value)
    assert "does not print as itself" in message
    bad = next(c for c in name if not c.isprintable())
    assert f"U+{ord(bad):04X}" in message and bad not in message  # shown escaped, never raw


def test_visible_unicode_names_still_enroll():
    for name in ("Zoë", "王小明" * 30, "Ольга", "محمد", "ann-marie o'neil"):
        assert validate_name(name) == name
    for emoji in ("\U0001f642\u200d\u2194\ufe0f", "\u2764\ufe0f\u200d\U0001f525", "👩🏽\u200d💻"):
        assert validate_name(emoji) == emoji  # a joiner inside an emoji ZWJ sequence


def test_a_joiner_outside_an_emoji_sequence_is_refused():
    for name in ("ann\u200d", "a\u200dnn", "\U0001f642\u200dx", "\u200d\U0001f642"):
        with pytest.raises(ValueError, match="U\\+200D"):
            validate_name(name)


def test_enroll_refuses_a_bidi_name_and_creates_no_store(fake_model, voices, tmp_path):
    store = tmp_path / "s.db"
    result = run(["enroll", SPOOFS["rlo"], voices["ann0"], "--model", fake_model, "--store", store])
    assert_clean_error(result, "U+202E", "does not print as itself")
    assert "\u202e" not in result.output
    assert not store.exists()


def test_a_speaker_enrolled_before_the_rule_can_still_be_verified_and_removed(tmp_path):
    path = tmp_path / "s.db"
    with SpeakerStore(path, create=True) as store:
        store.add("ann", np.ones((1, 4)), 3.0, fingerprint=FP)
    with sqlite3.connect(path) as conn:  # as an older version could have written it
        conn.execute(
            "UPDATE speakers SET name = ? WHERE name = 'ann'", (SPOOFS["zero_width_space"],)
        )
    with SpeakerStore(path) as store:
        assert store.get(SPOOFS["zero_width_space"]).num_utterances == 1
        store.remove(SPOOFS["zero_width_space"])
        assert store.speakers() == []


# -- corrupt store values: one line naming the store and the row, never a traceback ------------


def _corrupt(store, sql, params=()):
    with sqlite3.connect(store) as conn:
        conn.execute(sql, params)


CORRUPTIONS = {
    "embed_dim_not_an_integer": (
        "UPDATE meta SET value = 'wide' WHERE key = 'embed_dim'",
        (),
        "meta row embed_dim is 'wide'",
    ),
    "domain_mean_of_two_bytes": (
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('domain_mean', ?)",
        (b"\x00\x01",),
        "meta row domain_mean",
    ),
    "domain_mean_as_text": (
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('domain_mean', 'zero')",
        (),
        "meta row domain_mean",
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_store_values_are_one_line_errors(enrolled, fake_model, voices, corruption):
    sql, params, message = CORRUPTIONS[corruption]
    _corrupt(enrolled, sql, params)
    model = ["--model", fake_model, "--store", enrolled]
    for args in (
        ["verify", "ann", voices["ann2"], "--threshold", "0.5", *model],
        ["identify", voices["ann2"], "--threshold", "0.5", *model],
        ["speakers", "list", "--store", enrolled],
    ):
        assert_clean_error(run(args), str(enrolled), "corrupt store", message)


@pytest.mark.parametrize(
    "value", [b"\x00\x01\x02", b"\x00" * 8, "text"], ids=["3_bytes", "1_float", "text"]
)
def test_corrupt_embedding_sum_is_a_one_line_error_and_changes_nothing(
    enrolled, fake_model, voices, value
):
    _corrupt(enrolled, "UPDATE speakers SET embedding_sum = ? WHERE name = 'ann'", (value,))
    with sqlite3.connect(enrolled) as conn:
        before = conn.execute("SELECT * FROM speakers ORDER BY name").fetchall()
    result = run(["enroll", "ann", voices["ann2"], "--model", fake_model, "--store", enrolled])
    assert_clean_error(result, str(enrolled), "corrupt store (speaker 'ann': embedding_sum)")
    with sqlite3.connect(enrolled) as conn:
        assert conn.execute("SELECT * FROM speakers ORDER BY name").fetchall() == before


def test_a_speaker_name_longer_than_a_file_name_can_be_verified(fake_model, voices, tmp_path):
    name = "王" * 100  # a legal name of 300 bytes: too long to be a file name
    store = tmp_path / "s.db"
    common = ["--model", fake_model, "--store", store]
    assert run(["enroll", name, voices["ann0"], *common]).exit_code == 0
    result = run(["verify", name, voices["ann1"], "--threshold", "-1", "--json", *common])
    assert result.exit_code == 0, result.output
    missing = run(["verify", "王" * 99, voices["ann1"], "--threshold", "-1", *common])
    assert_clean_error(missing, "no enrolled speaker named")


def test_adapt_embeddings_with_a_nan_row_is_refused_and_creates_no_store(tmp_path):
    from speakerverify.backend.embedding_dir import save_embeddings

    vectors = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    vectors[3, 2] = np.nan
    ids = [f"u{i}" for i in range(5)]
    save_embeddings(tmp_path / "emb", ids, vectors, {"model_fingerprint": FP})
    store = tmp_path / "new.db"
    result = run(["adapt", "--embeddings", tmp_path / "emb", "--store", store])
    assert_clean_error(result, "embedding of u3 (row 3) is not finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_a_full_disk_enroll_into_a_new_store_leaves_no_store(
    fake_model, voices, tmp_path, monkeypatch
):
    def disk_full():  # what SQLite raises when the write at COMMIT meets ENOSPC
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SpeakerStore, "_connect", trapped_connect(disk_full))
    store = tmp_path / "new.db"
    result = run(["enroll", "ann", voices["ann0"], "--model", fake_model, "--store", store])
    assert_clean_error(result, str(store), "database or disk is full")
    assert list(tmp_path.iterdir()) == []  # it left a 0-byte new.db, which verify called corrupt


def test_a_store_whose_first_write_fails_leaves_nothing_behind(tmp_path):
    """The same with a real failed write(2): a file size limit makes the kernel refuse the first
    page (EFBIG, as ENOSPC would), in a subprocess so that the limit touches nothing else."""
    import os
    import subprocess
    import sys

    probe = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
        "from speakerverify.speakers.store import SpeakerStore, StoreError\n"
        "try:\n"
        "    SpeakerStore(sys.argv[1], create=True)\n"
        "except StoreError as error:\n"
        "    print(error)\n"
    )
    store = tmp_path / "new.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(store)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert proc.stdout.startswith(f"{store}: "), proc.stdout
    assert list(tmp_path.iterdir()) == []
    with SpeakerStore(store, create=True) as created:  # without the limit it is made as before
        assert created.fingerprint is None and len(created) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["new.db"]


def test_a_store_in_a_directory_that_cannot_be_written_can_still_be_read(
    checkpoint, voices, tmp_path
):
    """Reading a WAL store takes a -shm file beside it: in a directory the user cannot write,
    every command failed, `speakers list` included. The commands that only read now read it
    (a read-only SQLite URI), those that write fail in one line, and nothing changes there.
    Run in a subprocess in which file permissions bind even for root."""
    import json
    import os
    import subprocess
    import sys

    from hostile_helpers import file_permissions_bind, permissions_bind_probe

    if not permissions_bind_probe(tmp_path):
        pytest.skip("file permissions do not bind on this process (root without CAP_SETPCAP)")
    model, _ = checkpoint
    folder = tmp_path / "shared"
    folder.mkdir()
    store = folder / "s.db"
    common = ["--model", model, "--store", store]
    for name in ("ann", "bo"):
        assert run(["enroll", name, voices[f"{name}0"], *common]).exit_code == 0
    folder.chmod(0o555)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SPEAKERVERIFY_BACKEND": "torch"}
    cli = [sys.executable, "-c", "import sys; from speakerverify.cli import main; main()"]

    def command(*args):
        return subprocess.run(
            [*cli, *map(str, args)], capture_output=True, text=True, env=env, timeout=300,
            preexec_fn=file_permissions_bind,
        )  # fmt: skip

    try:
        listed = command("speakers", "list", "--store", store, "--json")
        assert listed.returncode == 0, listed.stderr
        assert [s["name"] for s in json.loads(listed.stdout)["speakers"]] == ["ann", "bo"]
        exported = command("speakers", "export", "--store", store)
        assert exported.returncode == 0 and json.loads(exported.stdout)["num_speakers"] == 2
        verified = command("verify", "ann", voices["ann1"], "--threshold", "-1", *common)
        assert verified.returncode == 0, verified.stderr
        identified = command("identify", voices["bo1"], "--threshold", "-1", *common)
        assert identified.returncode == 0, identified.stderr
        removed = command("speakers", "remove", "bo", "--store", store)
        assert removed.returncode == 2 and removed.stderr.startswith(f"error: {store}: ")
        assert removed.stderr.count("\n") == 1, removed.stderr
        after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
        assert after == before  # the store untouched, no -wal or -shm left beside it
    finally:
        folder.chmod(0o755)
