"""``refluent lake ...`` against a real SQLite-backed Iceberg catalog, as a user sees it."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

import orjson
import pytest
from typer.testing import CliRunner

from refluent.cli.lake import lake_app
from refluent.lake.errors import LakeQueryError

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

pytestmark = pytest.mark.integration

WIDE_ROW = ("SELECT 'a long value here' AS some_long_column_name, 7 AS n, "
            "'2024-03-01T22:00:00+00:00' AS event_time_as_text")


@pytest.fixture()
def runner(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("REFLUENT_LAKE__CATALOG_URI", lab.uri)
    monkeypatch.setenv("REFLUENT_LAKE__WAREHOUSE", lab.warehouse)
    monkeypatch.setenv("REFLUENT_LAKE__NAMESPACE", "lab")
    monkeypatch.setenv("COLUMNS", "200")
    lab.catalog.create_namespace_if_not_exists("lab")
    return CliRunner()


def test_cli__tables_query_compact_cdc_and_maintain(lab: Lab, runner: CliRunner) -> None:
    lab.cdc_sink([(0, 0, lab.change("c", 1, 10)), (0, 1, lab.change("d", 1, 20)),
                  (0, 2, lab.change("c", 2, 30))])

    out = runner.invoke(lake_app, ["tables"])
    assert out.exit_code == 0, out.output
    assert "cdc_customers" in out.output and "cdc.customers[0]=3" in out.output

    out = runner.invoke(lake_app, ["compact-cdc", "cdc_customers", "--target", "customers"])
    assert out.exit_code == 0, out.output
    assert "lab.customers: 1 row(s)" in out.output

    out = runner.invoke(lake_app, ["query", "SELECT key, email FROM customers", "-f", "jsonl"])
    assert out.exit_code == 0, out.output
    assert [orjson.loads(line) for line in out.output.splitlines()] == [
        {"key": "2", "email": "2@30"}]

    out = runner.invoke(lake_app, ["query", "SELECT op, count(*) AS n FROM cdc_customers "
                                   "GROUP BY op ORDER BY op"])
    assert out.exit_code == 0, out.output
    assert "2 row(s)" in out.output

    out = runner.invoke(lake_app, ["maintain", "--snapshot-age", "0s", "--orphan-age", "0s"])
    assert out.exit_code == 0, out.output
    assert "Maintenance of lab" in out.output
    assert re.search(r"cdc_customers\b.*\bok\b", out.output), out.output

    out = runner.invoke(lake_app, ["maintain", "--orphan-age", "soon"])
    assert out.exit_code == 2 and "duration" in out.output


def test_query__a_wide_row_on_a_narrow_terminal_prints_a_line_per_column(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = runner.invoke(lake_app, ["query", WIDE_ROW])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    # Every name and value whole, on the line of its column, not cut into a tall column.
    assert any(re.fullmatch(r"some_long_column_name\s+a long value here\s*", ln) for ln in lines)
    assert any(re.fullmatch(r"n\s+7\s*", ln) for ln in lines)
    assert "event_time_as_text" in out.output
    assert "1 row(s)" in lines
    assert all(len(ln) <= 40 for ln in lines)

    monkeypatch.setenv("COLUMNS", "200")  # room enough: a table
    out = runner.invoke(lake_app, ["query", WIDE_ROW])
    header = next(ln for ln in out.output.splitlines() if "some_long_column_name" in ln)
    assert re.search(r"some_long_column_name\s*┃\s*n\s*┃\s*event_time_as_text", header)


def test_query__a_narrow_one_row_table_keeps_its_row_count_on_one_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = runner.invoke(lake_app, ["query", "select 1"])
    assert out.exit_code == 0, out.output
    assert "1 row(s)" in out.output.splitlines()


def test_query__csv_has_a_header_and_plain_values(runner: CliRunner) -> None:
    out = runner.invoke(lake_app, ["query", "SELECT 1 AS n, 2.50::DECIMAL(4, 2) AS price, "
                                   "NULL AS gone, 'a,b' AS pair", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == ["n,price,gone,pair", '1,2.50,,"a,b"']


def test_query__errors_read_as_lake_query_errors(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = runner.invoke(lake_app, ["query", "SELEC nonsense"])
    assert isinstance(out.exception, LakeQueryError)

    # What the `refluent` command prints: one line naming the lake query, not a sink.
    from refluent.cli.app import main

    monkeypatch.setattr(sys, "argv", ["refluent", "lake", "query", "SELECT * FROM nope"])
    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: lake query 'SELECT * FROM nope': Catalog Error: Table with "
                          "name nope does not exist! (tables in lab: none)"), err
    assert "sink" not in err

    out = runner.invoke(lake_app, ["query", "  "])
    assert out.exit_code == 2 and "is empty" in out.output


def test_tables_and_maintain__an_empty_namespace_says_so(runner: CliRunner) -> None:
    out = runner.invoke(lake_app, ["tables"])
    assert out.exit_code == 0, out.output
    assert "no tables in lab yet" in out.output
    out = runner.invoke(lake_app, ["maintain"])
    assert out.exit_code == 0, out.output
    assert "no tables in lab: nothing to maintain" in out.output
