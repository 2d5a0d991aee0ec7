"""The append's packed array parameters (`ledger.pgarrays`) read back as PostgreSQL parses
them: every value, in order, with the type the wrapper names."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.pgarrays import Int2s, Int8s, Texts

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))


@pytest.fixture(scope="module")
def conn(server_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(server_url, autocommit=True) as connection:
        yield connection


def echo(conn: psycopg.Connection, value: object) -> tuple[object, str]:
    row = conn.execute("SELECT %b, pg_typeof(%b)::text", (value, value)).fetchone()
    assert row is not None
    return row[0], row[1]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40))
def test_int8_arrays_round_trip(conn: psycopg.Connection, values: list[int]) -> None:
    assert echo(conn, Int8s(values)) == (values, "bigint[]")


@given(st.lists(st.integers(-(2**15), 2**15 - 1), max_size=40))
def test_int2_arrays_round_trip(conn: psycopg.Connection, values: list[int]) -> None:
    assert echo(conn, Int2s(values)) == (values, "smallint[]")


@given(st.lists(texts, max_size=20))
def test_text_arrays_round_trip(conn: psycopg.Connection, values: list[str]) -> None:
    assert echo(conn, Texts(values)) == (values, "text[]")


def test_json_texts_cast_to_jsonb_on_the_server(conn: psycopg.Connection) -> None:
    values = Texts(['{"a": [1, "é\\"{}"]}', "{}", "7"])
    row = conn.execute("SELECT %b::text[]::jsonb[]", (values,)).fetchone()
    assert row == ([{"a": [1, 'é"{}']}, {}, 7],)


def test_out_of_range_values_are_refused_before_sending(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.DataError):
        echo(conn, Int2s([2**15]))
