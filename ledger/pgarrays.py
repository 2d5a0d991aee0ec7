"""Array parameters of one known element type, packed in PostgreSQL's binary array format.

psycopg's generic list dumper inspects every list it sends to choose an element type (all the
element types, and the range of the integers) and then dumps element by element through the
element's dumper. The append sends seventeen arrays per call, and that was 10-13% of the
writer's Python time (BENCHMARKS.md, P1 and P2). These lists have one element type, known in
advance, so they are packed in one go: wrap a list (`Int8s(values)`) and pass it as a `%b`
parameter. Elements must not be None; an integer out of the type's range is a DataError.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import psycopg
from psycopg import pq
from psycopg.adapt import Buffer, Dumper

INT2_OID, INT8_OID, TEXT_OID = 21, 20, 25
INT2_ARRAY_OID, INT8_ARRAY_OID, TEXT_ARRAY_OID = 1005, 1016, 1009

# One dimension, no nulls: (ndim, has-null, element oid), then (length, lower bound).
_HEAD = struct.Struct("!iiIii")
_EMPTY = struct.Struct("!iiI")
_LENGTH = struct.Struct("!i").pack


class Int8s(list[int]):
    """A list of integers sent as `bigint[]`."""


class Int2s(list[int]):
    """A list of integers sent as `smallint[]`."""


class Texts(list[str]):
    """A list of strings sent as `text[]` (also for `jsonb` values, cast on the server)."""


class _IntArrayDumper(Dumper):
    format = pq.Format.BINARY
    element_oid = 0
    code = ""  # struct code of one element
    size = 0

    def dump(self, obj: list[int]) -> Buffer:
        count = len(obj)
        if not count:
            return _EMPTY.pack(0, 0, self.element_oid)
        pairs = [self.size] * (2 * count)
        pairs[1::2] = obj
        try:
            body = _elements(self.code, count).pack(*pairs)
        except struct.error as exc:  # out of range: as psycopg's own dumpers report it
            raise psycopg.DataError(f"{type(self).__name__}: {exc}") from exc
        return _HEAD.pack(1, 0, self.element_oid, count, 1) + body


@lru_cache(maxsize=1024)
def _elements(code: str, count: int) -> struct.Struct:
    """`count` elements, each its length then its value."""
    return struct.Struct("!" + ("i" + code) * count)


class Int8ArrayDumper(_IntArrayDumper):
    """`Int8s` as a binary `bigint[]`."""

    oid = INT8_ARRAY_OID
    element_oid = INT8_OID
    code, size = "q", 8


class Int2ArrayDumper(_IntArrayDumper):
    """`Int2s` as a binary `smallint[]`."""

    oid = INT2_ARRAY_OID
    element_oid = INT2_OID
    code, size = "h", 2


class TextArrayDumper(Dumper):
    """`Texts` as a binary `text[]` (UTF-8)."""

    format = pq.Format.BINARY
    oid = TEXT_ARRAY_OID

    def dump(self, obj: list[str]) -> Buffer:
        if not obj:
            return _EMPTY.pack(0, 0, TEXT_OID)
        parts = [_HEAD.pack(1, 0, TEXT_OID, len(obj), 1)]
        for text in obj:
            data = text.encode()
            parts.append(_LENGTH(len(data)))
            parts.append(data)
        return b"".join(parts)


def register(adapters: psycopg.adapt.AdaptersMap = psycopg.adapters) -> None:
    """Teach `adapters` (by default psycopg's global map, copied into new connections) the
    wrapped lists."""
    adapters.register_dumper(Int8s, Int8ArrayDumper)
    adapters.register_dumper(Int2s, Int2ArrayDumper)
    adapters.register_dumper(Texts, TextArrayDumper)


register()
