"""Opening the lake catalog and creating tables with Refluent's properties."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from refluent.config import Settings
from refluent.lake.catalog import ENFORCED_TABLE_PROPERTIES, ensure_table, open_catalog
from refluent.lake.errors import LakeCatalogError
from refluent.lake.mappings import RawEventsTable

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

pytestmark = pytest.mark.integration


def test_ensure_table__an_existing_table_keeps_its_schema_and_gets_the_enforced_properties(
    lab: Lab,
) -> None:
    schema = RawEventsTable().schema()
    lab.catalog.create_namespace("lab")
    lab.catalog.create_table("lab.legacy", schema=schema)  # made by another tool

    table = ensure_table(lab.catalog, "lab.legacy", RawEventsTable().schema().select("topic"))

    assert table.schema().column_names == schema.column_names
    for name, value in ENFORCED_TABLE_PROPERTIES.items():
        assert lab.catalog.load_table("lab.legacy").properties.get(name) == value


def test_open_catalog__a_catalog_that_cannot_open_is_one_error_without_the_password(
    tmp_path: Path,
) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'catalog.db'}"
    with pytest.raises(LakeCatalogError, match=f"^lake catalog {missing}: "):
        open_catalog(Settings(lake={"catalog_uri": missing, "warehouse": tmp_path.as_uri()}))

    secret = "postgresql+psycopg://lake:s3cret@127.0.0.1:1/lake"
    with pytest.raises(LakeCatalogError) as caught:
        open_catalog(Settings(lake={"catalog_uri": secret}))
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith("lake catalog postgresql+psycopg://lake:***@127.0.0.1:1")
