"""DuckDB queries over a namespace's tables, against a real SQLite-backed Iceberg catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from refluent.lake.errors import LakeNamespaceNotFoundError, LakeQueryError
from refluent.lake.query import query
from refluent.sinks.base import SinkRecord

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

pytestmark = pytest.mark.integration


def _land(lab: Lab, table: str, values: list[dict[str, Any]]) -> None:
    sink = lab.sink(table)
    sink.write([SinkRecord(f"logs.{table}", 0, i, None, v) for i, v in enumerate(values)])
    sink.flush()


def test_query__duckdb_sees_every_table_of_the_namespace(lab: Lab) -> None:
    _land(lab, "people", [{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}])
    _land(lab, "visits", [{"who": "1"}, {"who": "1"}, {"who": "2"}])
    result = query(lab.catalog, "lab", """
        SELECT p.name, count(v.who) AS visits
        FROM people p LEFT JOIN visits v ON v.who = p.id
        GROUP BY p.name ORDER BY p.name""")
    assert result.to_pylist() == [{"name": "ann", "visits": 2}, {"name": "bob", "visits": 1}]


def test_query__bad_sql_and_unknown_names_are_lake_query_errors(lab: Lab) -> None:
    _land(lab, "people", [{"id": "1"}])
    with pytest.raises(LakeQueryError) as caught:
        query(lab.catalog, "lab", "SELEC nonsense")
    assert str(caught.value).startswith("lake query 'SELEC nonsense': Parser Error")

    # DuckDB would suggest one of its system tables; the namespace's tables are what helps.
    with pytest.raises(LakeQueryError) as caught:
        query(lab.catalog, "lab", "SELECT * FROM peple")
    assert str(caught.value) == ("lake query 'SELECT * FROM peple': Catalog Error: Table with "
                                 "name peple does not exist! (tables in lab: people)")

    with pytest.raises(LakeNamespaceNotFoundError, match="^lake namespace elsewhere: "):
        query(lab.catalog, "elsewhere", "SELECT 1")
