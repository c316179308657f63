"""``refluent lake ...`` against a real SQLite-backed Iceberg catalog, as a user sees it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest
from typer.testing import CliRunner

from refluent.cli.lake import lake_app
from refluent.lake.errors import LakeQueryError

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

pytestmark = pytest.mark.integration

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
    assert "lab.cdc_customers" in out.output and "ok" in out.output

    out = runner.invoke(lake_app, ["query", "SELEC nonsense"])
    assert isinstance(out.exception, LakeQueryError)
    out = runner.invoke(lake_app, ["maintain", "--orphan-age", "soon"])
    assert out.exit_code == 2 and "duration" in out.output
