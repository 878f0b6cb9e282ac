"""Millions of strings without millions of Python objects: one UTF-8 byte buffer with offsets,
and a hash index for lookups by value.

A VoxCeleb2-sized data dir holds a million utterance ids and paths; as dicts of `str` they cost
~400 bytes an utterance, and every forked DataLoader worker copies the pages it touches (reference
counts write to every object it reads). Numpy buffers are never written after construction, so
forked workers share their pages.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["StringColumn"]


def _stable_hash(value: bytes) -> int:
    # not Python's hash(): that is salted per process, and a column is pickled to spawned ones
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "little", signed=True)


class StringColumn:
    """An immutable sequence of strings in one uint8 buffer with int64 offsets.

    `find(value)` gives a string's position through an index of 8-byte hashes built on first
    use (16 bytes per string), so a column maps keys to rows without a dict.

    >>> column = StringColumn.from_strings(["id1/a/00001", "id1/a/00002"])
    >>> column[1], len(column), column.find("id1/a/00001"), column.find("x")
    ('id1/a/00002', 2, 0, -1)
    """

    __slots__ = ("_buffer", "_hash_order", "_hashes", "_offsets")

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray) -> None:
        self._buffer = buffer
        self._offsets = offsets
        self._hashes: np.ndarray | None = None
        self._hash_order: np.ndarray | None = None

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        encoded = [value.encode("utf-8") for value in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return cls(buffer, offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        start, end = self._offsets[index], self._offsets[index + 1]
        return self._buffer[start:end].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        data = self._buffer.tobytes()  # one copy for the whole pass, not one per string
        offsets = self._offsets.tolist()
        for start, end in itertools.pairwise(offsets):
            yield data[start:end].decode("utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StringColumn):
            return NotImplemented
        return np.array_equal(self._offsets, other._offsets) and np.array_equal(
            self._buffer, other._buffer
        )

    def __repr__(self) -> str:
        return f"StringColumn({len(self)} strings, {self.nbytes} bytes)"

    @property
    def nbytes(self) -> int:
        """Bytes held (buffer, offsets and, once built, the hash index)."""
        extra = 0 if self._hashes is None else self._hashes.nbytes + self._hash_order.nbytes
        return self._buffer.nbytes + self._offsets.nbytes + extra

    def take(self, indices: Iterable[int]) -> StringColumn:
        """A new column of the strings at `indices`, in that order."""
        return StringColumn.from_strings(self[int(i)] for i in indices)

    def find(self, value: str) -> int:
        """Position of the first string equal to `value`, or -1."""
        hashes, order = self._index()
        key = _stable_hash(value.encode("utf-8"))
        first = int(np.searchsorted(hashes, key, side="left"))
        while first < len(hashes) and hashes[first] == key:
            if self[int(order[first])] == value:
                return int(order[first])
            first += 1
        return -1

    def duplicates(self) -> list[str]:
        """The strings that occur more than once (each once, in order of first occurrence)."""
        hashes, order = self._index()
        suspects = np.flatnonzero(hashes[1:] == hashes[:-1])
        rows = sorted({int(order[i]) for i in suspects} | {int(order[i + 1]) for i in suspects})
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for row in rows:
            value = self[row]
            if value in seen:
                repeated[value] = None
            seen.add(value)
        return list(repeated)

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hashes is None:
            data = self._buffer.tobytes()
            offsets = self._offsets.tolist()
            hashes = np.fromiter(
                (_stable_hash(data[s:e]) for s, e in itertools.pairwise(offsets)),
                dtype=np.int64,
                count=len(self),
            )
            order = np.argsort(hashes, kind="stable")
            self._hashes, self._hash_order = hashes[order], order.astype(np.int64)
        assert self._hash_order is not None
        return self._hashes, self._hash_order

    def __getstate__(self) -> tuple[np.ndarray, np.ndarray]:
        return self._buffer, self._offsets  # the index is rebuilt where it is needed

    def __setstate__(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        self._buffer, self._offsets = state
        self._hashes = self._hash_order = None
