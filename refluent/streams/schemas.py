"""JSON Schema export of the event contracts."""

from __future__ import annotations

import json
from pathlib import Path

from refluent.streams.contracts import CONTRACTS


def json_schemas() -> dict[str, dict[str, object]]:
    """Contract name -> its JSON Schema (draft 2020-12), with ``$id`` and version."""
    out = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="validation")
        version = getattr(model, "SCHEMA_VERSION", 1)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://refluent.dev/schemas/{name}/v{version}.json",
            "x-refluent-version": version,
            **schema,
        }
        out[name] = schema
    return out


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<Contract>.v<version>.schema.json`` for every contract into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.v{schema['x-refluent-version']}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
