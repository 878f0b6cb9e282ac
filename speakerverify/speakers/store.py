"""The enrollment store: one SQLite file (WAL) holding one mean embedding per speaker.

The store is tied to the fingerprint of the model that made its embeddings and refuses another.
Every write is one `BEGIN IMMEDIATE` transaction, so concurrent processes serialise and a process
killed mid-write leaves the store as it was before that write. A new store appears whole, with
its schema, or not at all.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from speakerverify.backend.scoring import l2_normalize
from speakerverify.checkpoint_rules import model_mismatch
from speakerverify.errors import SpeakerVerifyError
from speakerverify.speakers.domain_rows import CorruptRow, blob_array, domain_from_rows, domain_rows
from speakerverify.speakers.records import DomainMean, SpeakerRecord, now_iso, validate_name

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)",
    "CREATE TABLE IF NOT EXISTS speakers ("
    " name TEXT PRIMARY KEY,"
    " embedding BLOB NOT NULL,"  # float32 (D,), L2-normalised mean of the utterance embeddings
    " embedding_sum BLOB NOT NULL,"  # float64 (D,), sum of the L2-normalised utterance embeddings
    " num_utterances INTEGER NOT NULL CHECK (num_utterances > 0),"
    " speech_seconds REAL NOT NULL CHECK (speech_seconds >= 0),"
    " created TEXT NOT NULL,"
    " updated TEXT NOT NULL)",
)
_SPEAKER_COLUMNS = "name, embedding, num_utterances, speech_seconds, created, updated"


class StoreError(SpeakerVerifyError):
    """A store that cannot be used: missing, corrupt, foreign schema, or made by another model."""


class UnknownSpeakerError(StoreError):
    """A speaker name that is not enrolled in the store."""


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float64 rows; a zero or non-finite row cannot be enrolled (ValueError)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norm = np.linalg.norm(vectors, axis=-1)
    if np.any(norm == 0) or not np.all(np.isfinite(norm)):
        raise ValueError("embedding has zero or non-finite norm")
    return l2_normalize(vectors)


class SpeakerStore:
    """A SQLite enrollment store bound to one model fingerprint.

    Args:
        path: The store file.
        create: Create the file and schema if the file does not exist (else StoreError).
        read_only: Only read: a store whose directory cannot be written is still read (below).
        timeout_seconds: How long a writer waits for another process's transaction.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with SpeakerStore(f"{tmp}/s.db", create=True) as store:
        ...         _ = store.add("ann", np.ones((2, 4)), 6.0, fingerprint="abcd")
        ...         store.get("ann").num_utterances
        2
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = False,
        read_only: bool = False,
        timeout_seconds: float = 60.0,
    ):
        self.path = Path(path)
        self._check_file(create)
        if create and not self.path.exists():
            self._create_file(timeout_seconds)
        self._conn = self._connect(str(self.path), timeout_seconds)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_seconds * 1000)}")
            try:
                self._open_schema(create)
            except sqlite3.OperationalError as error:
                if not (read_only and _cannot_write(error)):
                    raise
                self._conn.close()
                self._conn = self._connect(self._read_only_uri(), timeout_seconds)
                self._open_schema(create=False)
        except sqlite3.DatabaseError as error:
            self._conn.close()
            raise StoreError(f"{self.path}: not a usable speaker store ({error})") from None
        except StoreError:
            self._conn.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _connect(self, target: str, timeout_seconds: float) -> sqlite3.Connection:
        uri = target.startswith("file:")
        try:
            return sqlite3.connect(target, timeout=timeout_seconds, isolation_level=None, uri=uri)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open store ({error})") from None

    def _read_only_uri(self) -> str:
        """The store as a read-only SQLite URI, for a reader that cannot write its directory.

        Reading a WAL store takes a -shm file beside it, which such a reader cannot make (even
        `mode=ro` fails). Without a -wal file every committed write is in the store file, which
        is then read as `immutable` (no -shm needed; a writer who can write there would make a
        -wal first); with one, through it, `mode=ro`. A plain open is tried first, as it leaves
        no -wal/-shm behind where a `mode=ro` one does.
        """
        wal = Path(f"{self.path}-wal")
        return f"{self.path.absolute().as_uri()}?{'mode=ro' if wal.exists() else 'immutable=1'}"

    def _create_file(self, timeout_seconds: float) -> None:
        """Make a new store whole or not at all: the schema is written to a temp file beside it,
        which is then linked to the store's name. A failure (a full disk) leaves nothing behind,
        where it left a 0-byte store; of two processes creating one store, the second finds
        the first one's and uses it."""
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self._conn = self._connect(str(temp), timeout_seconds)
            try:
                self._create_schema()
            finally:
                self._conn.close()
            _link_new(temp, self.path)
        except (OSError, sqlite3.DatabaseError) as error:
            cause = getattr(error, "strerror", None) or error
            raise StoreError(f"{self.path}: cannot create the store ({cause})") from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{temp}{suffix}").unlink(missing_ok=True)

    def _check_file(self, create: bool) -> None:
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a speaker store file")
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no such speaker store (enroll a speaker first)")
            if not self.path.parent.is_dir():
                raise StoreError(f"{self.path}: directory {self.path.parent} does not exist")
            return
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(SQLITE_MAGIC))
        except OSError as error:
            raise StoreError(f"{self.path}: cannot read store ({error.strerror})") from None
        if len(header) == 0 and not create:
            raise StoreError(f"{self.path}: empty file, not a speaker store")
        if len(header) > 0 and header != SQLITE_MAGIC:
            raise StoreError(f"{self.path}: not a speaker store (not an SQLite database)")

    def _open_schema(self, create: bool) -> None:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = {row[0] for row in self._conn.execute(query)}
        if not tables:
            if not create:
                raise StoreError(f"{self.path}: empty SQLite database, not a speaker store")
            self._create_schema()
            return
        if not {"meta", "speakers"} <= tables:
            raise StoreError(
                f"{self.path}: not a speaker store (SQLite database without meta/speakers tables)"
            )
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: speaker store schema version {version!r}, "
                f"this speakerverify reads version {SCHEMA_VERSION}"
            )
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(speakers)")}
        expected = {c.strip() for c in _SPEAKER_COLUMNS.split(",")} | {"embedding_sum"}
        if not expected <= columns:
            raise StoreError(f"{self.path}: speaker store is missing columns {expected - columns}")

    def _create_schema(self) -> None:
        # WAL survives in the file header; readers never block the single writer.
        self._retry_locked(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
        with self.transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (now_iso(),)
            )

    def _retry_locked(self, action: Callable[[], object], attempts: int = 200) -> None:
        # Switching the journal mode needs an exclusive lock that busy_timeout does not always
        # wait for when several processes create the same store at once.
        for attempt in range(attempts):
            try:
                action()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> SpeakerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: `BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any exception."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path}: cannot start a write ({error})") from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.DatabaseError):
                raise StoreError(f"{self.path}: write failed ({error})") from None
            raise

    def _meta(self, key: str) -> object:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path}: cannot read store ({error})") from None

    # -- model binding -------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the model that made the embeddings, or None for a new store."""
        value = self._read("SELECT value FROM meta WHERE key = 'model_fingerprint'")
        return None if not value else str(value[0][0])

    @property
    def embed_dim(self) -> int | None:
        """Embedding dimension D, or None for a new store."""
        value = self._read("SELECT value FROM meta WHERE key = 'embed_dim'")
        if not value:
            return None
        stored = value[0][0]
        if isinstance(stored, str) and stored.isascii() and stored.isdigit():
            stored = int(stored)
        if not isinstance(stored, int) or stored <= 0:
            raise StoreError(f"{self.path}: corrupt store (meta row embed_dim is {stored!r})")
        return stored

    def check_model(self, fingerprint: str, source: str = "the model") -> None:
        """Raise StoreError when the store was made by a model other than `fingerprint`."""
        mismatch = model_mismatch(
            f"{self.path}: store was made by", self.fingerprint, source, fingerprint
        )
        if mismatch:
            raise StoreError(f"{mismatch}; use that model or a new store")

    def _bind(self, fingerprint: str, embed_dim: int) -> None:
        # Inside a transaction: re-read, since another process may have bound it meanwhile.
        self.check_model(fingerprint)
        dim = self.embed_dim
        if dim is not None and dim != embed_dim:
            raise StoreError(f"{self.path}: store holds {dim}-dim embeddings, got {embed_dim}")
        for key, value in (("model_fingerprint", fingerprint), ("embed_dim", embed_dim)):
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )

    # -- speakers ------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        speech_seconds: float,
        *,
        fingerprint: str,
        replace: bool = False,
    ) -> SpeakerRecord:
        """Enroll utterances for `name`, updating its mean weighted by utterances.

        Args:
            name: Speaker name (see `validate_name`).
            embeddings: (N, D) utterance embeddings; each is L2-normalised before averaging.
            speech_seconds: Voiced seconds in those N utterances.
            fingerprint: Fingerprint of the model that made `embeddings`.
            replace: Discard what was enrolled for `name` before.

        Returns:
            The speaker's record after the update.
        """
        name = validate_name(name)
        vectors = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if vectors.shape[0] == 0:
            raise ValueError("no embeddings to enroll")
        unit = _unit_rows(vectors)
        added_sum = unit.sum(axis=0)
        embed_dim = int(unit.shape[1])
        with self.transaction() as conn:
            self._bind(fingerprint, embed_dim)
            row = conn.execute(
                "SELECT embedding_sum, num_utterances, speech_seconds, created FROM speakers"
                " WHERE name = ?",
                (name,),
            ).fetchone()
            stamp = now_iso()
            if row is None or replace:
                total, count, seconds = added_sum, vectors.shape[0], float(speech_seconds)
                created = stamp
            else:
                total = blob_array(row[0], "<f8", added_sum.shape[0])
                corrupt = total is None or not np.all(np.isfinite(total))
                if corrupt or not isinstance(row[1], int) or row[1] <= 0:
                    raise StoreError(
                        f"{self.path}: corrupt store (speaker {name!r}: embedding_sum)"
                    )
                total = total + added_sum
                count = int(row[1]) + vectors.shape[0]
                seconds = float(row[2]) + float(speech_seconds)
                created = row[3]
            mean = _unit_rows(total / count).astype("<f4")
            conn.execute(
                "INSERT OR REPLACE INTO speakers (name, embedding, embedding_sum, num_utterances,"
                " speech_seconds, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    mean.tobytes(),
                    np.asarray(total, "<f8").tobytes(),
                    count,
                    seconds,
                    created,
                    stamp,
                ),
            )
        logger.info("enrolled %r: %d utterances, %.1f s", name, count, seconds)
        return SpeakerRecord(name, mean.astype(np.float32), count, seconds, created, stamp)

    def _record(self, row: tuple, dim: int | None) -> SpeakerRecord:
        try:
            embedding = np.frombuffer(row[1], dtype="<f4").astype(np.float32)
            record = SpeakerRecord(row[0], embedding, int(row[2]), float(row[3]), row[4], row[5])
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: speaker {row[0]!r} has a corrupt row") from None
        if (dim is not None and embedding.shape[0] != dim) or not np.all(np.isfinite(embedding)):
            raise StoreError(f"{self.path}: speaker {row[0]!r} has a corrupt embedding")
        return record

    def get(self, name: str) -> SpeakerRecord:
        """The record for `name`; UnknownSpeakerError naming the store when absent."""
        try:
            name = validate_name(name, existing=True)
        except ValueError as error:
            raise UnknownSpeakerError(f"{self.path}: {error}") from None
        rows = self._read(f"SELECT {_SPEAKER_COLUMNS} FROM speakers WHERE name = ?", (name,))
        if not rows:
            raise UnknownSpeakerError(f"{self.path}: no enrolled speaker named {name!r}")
        return self._record(rows[0], self.embed_dim)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownSpeakerError:
            return False
        return True

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM speakers")[0][0])

    def speakers(self) -> list[SpeakerRecord]:
        """All records, sorted by name."""
        rows = self._read(f"SELECT {_SPEAKER_COLUMNS} FROM speakers ORDER BY name")
        dim = self.embed_dim
        return [self._record(row, dim) for row in rows]

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """Names and their embeddings stacked as (N, D) float32, sorted by name."""
        records = self.speakers()
        dim = self.embed_dim or 0
        if not records:
            return [], np.zeros((0, dim), dtype=np.float32)
        return [r.name for r in records], np.stack([r.embedding for r in records])

    def remove(self, name: str) -> None:
        """Delete `name`; UnknownSpeakerError when absent (nothing changes then)."""
        self.get(name)
        name = validate_name(name, existing=True)
        with self.transaction() as conn:
            cursor = conn.execute("DELETE FROM speakers WHERE name = ?", (name,))
            if cursor.rowcount != 1:  # removed by another process meanwhile
                raise UnknownSpeakerError(f"{self.path}: no enrolled speaker named {name!r}")

    # -- domain adaptation ---------------------------------------------------------------------

    def set_domain_mean(
        self, mean: np.ndarray, num_embeddings: int, source: str, *, fingerprint: str
    ) -> DomainMean:
        """Save the in-domain mean embedding (D,) that `verify`/`identify` subtract (no rule)."""
        return self.set_domain(
            DomainMean(np.asarray(mean, np.float32), int(num_embeddings), str(source), now_iso()),
            fingerprint=fingerprint,
        )

    def set_domain(self, domain: DomainMean, *, fingerprint: str) -> DomainMean:
        """Save what `adapt` estimated (mean, and the adapted rule when it has one), replacing
        any earlier domain in one transaction."""
        values = domain_rows(domain)
        dim = len(np.asarray(domain.mean).reshape(-1))
        with self.transaction() as conn:
            self._bind(fingerprint, dim)
            conn.execute("DELETE FROM meta WHERE key LIKE 'domain\\_%' ESCAPE '\\'")
            for key, value in values.items():
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        return self.domain_mean

    @property
    def domain_mean(self) -> DomainMean | None:
        """What `adapt` saved (the mean, and the adapted rule if any), or None."""
        rows = dict(
            self._read("SELECT key, value FROM meta WHERE key LIKE 'domain\\_%' ESCAPE '\\'")
        )
        try:
            return domain_from_rows(rows, self.embed_dim)
        except CorruptRow as error:
            raise StoreError(f"{self.path}: corrupt store (meta row {error.key})") from None


def _link_new(source: Path, target: Path) -> None:
    """Give `source` the name `target` unless `target` exists (another process made it first)."""
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # No hard links on this file system (FAT, some network mounts): a rename, which would
        # replace a store another process made in the instant since the check.
        if not target.exists():
            os.replace(source, target)


def _cannot_write(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed for want of write access to the store or its directory."""
    text = str(error)
    return "readonly" in text or "unable to open" in text
