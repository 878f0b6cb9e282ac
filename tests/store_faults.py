"""Faults at the worst moment of a SpeakerStore write: inside the transaction, just before COMMIT
(a kill, a full disk). The store has no hook for them; the tests wrap its SQLite connection."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from speakerverify.speakers.store import SpeakerStore


class CommitTrap:
    """A store's connection that runs `action` when the store sends COMMIT, before sending it."""

    def __init__(self, conn, action: Callable[[], None]):
        self._conn = conn
        self._action = action

    def execute(self, sql, *params):
        if sql == "COMMIT":
            self._action()
        return self._conn.execute(sql, *params)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def trap_commits(store: SpeakerStore, action: Callable[[], None]) -> None:
    """Run `action` before every later COMMIT of this open store."""
    store._conn = CommitTrap(store._conn, action)


def trapped_connect(action: Callable[[], None]):
    """A `SpeakerStore._connect` whose stores run `action` before every COMMIT (monkeypatch it in,
    to trap the stores a command opens, the one it creates included)."""
    connect = SpeakerStore._connect

    def trapped(store, target, timeout_seconds):
        return CommitTrap(connect(store, target, timeout_seconds), action)

    return trapped


def kill_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
