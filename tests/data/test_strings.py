"""StringColumn: strings in one byte buffer, found through a hash index, against plain lists."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from speakerverify.data.strings import StringColumn

WORDS = ["id10270/x6uYqmx31kE/00001", "", "ünïcödé/路径/00002", "id10270/x6uYqmx31kE/00001", "a"]


def test_column_equals_the_list_it_was_built_from():
    column = StringColumn.from_strings(WORDS)
    assert len(column) == len(WORDS)
    assert list(column) == WORDS
    assert [column[i] for i in range(len(WORDS))] == WORDS
    assert column[-1] == "a"
    with pytest.raises(IndexError):
        column[len(WORDS)]


def test_find_gives_the_first_position_and_duplicates_are_listed():
    column = StringColumn.from_strings(WORDS)
    for value in set(WORDS):
        assert column.find(value) == WORDS.index(value)
    assert column.find("missing") == -1
    assert column.duplicates() == ["id10270/x6uYqmx31kE/00001"]
    assert StringColumn.from_strings(["a", "b"]).duplicates() == []


def test_many_strings_round_trip_through_pickle_and_take():
    rng = np.random.default_rng(0)
    values = [f"id{i % 97:05d}/{rng.integers(1 << 40):x}/{i:05d}" for i in range(5000)]
    column = StringColumn.from_strings(values)
    again = pickle.loads(pickle.dumps(column))
    assert again == column and list(again) == values
    assert again.find(values[4321]) == 4321  # the index is rebuilt after unpickling
    picked = column.take([7, 3, 4999])
    assert list(picked) == [values[7], values[3], values[4999]]
    # one buffer: bytes of the text plus 8-byte offsets, no object per string
    text = sum(len(v.encode()) for v in values)
    assert column.nbytes == text + 8 * (len(values) + 1)
