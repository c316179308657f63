"""The model registry against a real SQLite-backed Iceberg catalog in a temporary folder."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from refluent.cli.models import models_app
from refluent.config import Settings
from refluent.embedded.services import lake_catalog
from refluent.examples.models import (
    onnx_mlp_classifier,
    onnx_mlp_regressor,
    river_classifier,
    synthetic_rows,
)
from refluent.models.base import ServableModel
from refluent.registry import (
    ArtifactDigestError,
    IcebergModelRegistry,
    InvalidNameError,
    ModelKindMismatchError,
    ModelRegistry,
    NoPreviousVersionError,
    RegistryCommitError,
    RegistryDataError,
    UnknownAliasError,
    UnknownModelError,
    UnknownModelVersionError,
)
from refluent.registry.store import ALIASES_TABLE, VERSIONS_TABLE, holders

pytestmark = pytest.mark.integration

FEATURES = ("x1", "x2", "x3")


@pytest.fixture()
def lake(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "warehouse").mkdir()
    return {"catalog_uri": f"sqlite:///{tmp_path / 'catalog.db'}",
            "warehouse": (tmp_path / "warehouse").as_uri()}


def _registry(lake: dict[str, str], **kwargs: Any) -> IcebergModelRegistry:
    return IcebergModelRegistry(lake_catalog(lake["catalog_uri"], lake["warehouse"]), "lab",
                                **kwargs)


@pytest.fixture()
def registry(lake: dict[str, str]) -> IcebergModelRegistry:
    return _registry(lake)


def _learned(n: int = 50, seed: int = 0) -> ServableModel:
    model = river_classifier(FEATURES)
    for x, label, _ in synthetic_rows(FEATURES, n, seed=seed):
        model.learn_one(x, label)
    return model


def _path(uri: str) -> Path:
    return Path(urlsplit(uri).path)


ROWS = [x for x, _, _ in synthetic_rows(FEATURES, 8, seed=42)]


def test_register__versions_count_from_one_per_name(registry: IcebergModelRegistry) -> None:
    v1 = registry.register("churn", _learned(), metrics={"auc": 0.8}, description="first",
                           lineage={"snapshot_id": 11, "offsets": {"examples": {"0": 5}}})
    v2 = registry.register("churn", _learned(80), parent=1, epsilon=1.5)
    other = registry.register("price", onnx_mlp_regressor(FEATURES).model())
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert registry.names() == ["churn", "price"]
    assert [v.version for v in registry.versions("churn")] == [1, 2]
    assert [(v.name, v.version) for v in registry.versions()] == [
        ("churn", 1), ("churn", 2), ("price", 1)]
    got = registry.get("churn", 1)
    assert got == v1
    assert got.lineage == {"snapshot_id": 11, "offsets": {"examples": {"0": 5}}}
    assert (got.metrics, got.description, got.kind, got.task) == (
        {"auc": 0.8}, "first", "river", "classification")
    assert registry.get("churn", 2).parent == 1 and registry.get("churn", 2).epsilon == 1.5
    assert other.feature_names == FEATURES and other.kind == "onnx"
    assert _path(v1.artifact_uri).is_file() and "/models/churn/1/" in v1.artifact_uri
    # Another registry object on the same lake sees the same thing.
    assert IcebergModelRegistry(lake_catalog_of(registry), "lab").versions("churn") == [v1, v2]


def lake_catalog_of(registry: IcebergModelRegistry) -> Any:
    props = registry.catalog.properties
    return lake_catalog(props["uri"], props["warehouse"])


def test_load__rebuilds_the_registered_model(registry: IcebergModelRegistry) -> None:
    model = _learned()
    registry.register("churn", model, alias="champion")
    onnx = onnx_mlp_classifier(FEATURES, classes=("no", "yes")).model()
    registry.register("mlp", onnx, alias="champion")
    version, loaded = registry.load("churn")
    assert version.version == 1 and loaded.name == "churn@v1"
    assert loaded.predict_many(ROWS) == model.predict_many(ROWS)
    _, loaded_onnx = registry.load("mlp", version=1)
    assert loaded_onnx.predict_many(ROWS) == onnx.predict_many(ROWS)
    assert registry.get("mlp", 1).model_meta["classes"] == ["no", "yes"]


def _overwrite(registry: IcebergModelRegistry, uri: str, data: bytes) -> None:
    with registry.io.new_output(uri).create(overwrite=True) as out:
        out.write(data)


def test_load__refuses_an_artifact_changed_after_it_was_stored(
        registry: IcebergModelRegistry) -> None:
    model = _learned()
    v1 = registry.register("churn", model, alias="champion")
    assert v1.artifact_sha256 is not None and len(v1.artifact_sha256) == 64
    _, intact = registry.load("churn")  # an intact artifact loads
    assert intact.predict_many(ROWS) == model.predict_many(ROWS)
    # A different (valid) pickle swapped in behind the registry's back is never unpickled.
    _overwrite(registry, v1.artifact_uri, _learned(seed=7).to_bytes())
    with pytest.raises(ArtifactDigestError, match=r"'churn' version 1") as err:
        registry.load("churn")
    assert err.value.expected == v1.artifact_sha256 and err.value.actual != err.value.expected
    assert v1.artifact_uri in str(err.value)
    # A checkpoint is checked too, and the error names it.
    _overwrite(registry, v1.artifact_uri, model.to_bytes())
    cp = registry.save_checkpoint("churn", 1, model, offsets={"t": {0: 1}}, examples=1,
                                  state={})
    assert cp.artifact_sha256 is not None
    _overwrite(registry, cp.artifact_uri, b"tampered")
    with pytest.raises(ArtifactDigestError, match=r"version 1 checkpoint 1"):
        registry.load_checkpoint(cp)


def test_load__a_version_stored_without_a_digest_loads_unchecked(
        registry: IcebergModelRegistry) -> None:
    model = _learned()
    registry.register("churn", model, alias="champion")
    table = registry._table(VERSIONS_TABLE)
    rows = table.scan().to_arrow().to_pylist()
    for row in rows:
        row["artifact_sha256"] = None  # as rows written before digests were recorded
    table.overwrite(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()))
    old = registry.get("churn", 1)
    assert old.artifact_sha256 is None
    _, loaded = registry.load("churn")
    assert loaded.predict_many(ROWS) == model.predict_many(ROWS)


def test_promote_then_rollback__walks_back_through_the_holders(
        registry: IcebergModelRegistry) -> None:
    for _ in range(3):
        registry.register("churn", _learned())
    registry.promote("churn", 1, reason="first")
    registry.promote("churn", 2)
    registry.promote("churn", 3, reason="better auc")
    registry.promote("churn", 3)  # already the holder: no event
    registry.promote("churn", 2, alias="challenger-a")
    assert registry.aliases("churn") == {"challenger-a": 2, "champion": 3}
    assert registry.resolve("churn").version == 3
    assert registry.rollback("churn").version == 2
    assert registry.rollback("churn").version == 1
    assert registry.resolve("churn").version == 1
    with pytest.raises(NoPreviousVersionError,
                       match="cannot roll back alias 'champion': it has held only version 1"):
        registry.rollback("churn")
    events = registry.alias_events("churn", "champion")
    assert [(e.seq, e.event, e.version, e.previous_version) for e in events] == [
        (1, "promote", 1, None), (2, "promote", 2, 1), (3, "promote", 3, 2),
        (4, "rollback", 2, 3), (5, "rollback", 1, 2)]
    assert events[2].reason == "better auc"
    assert registry.aliases("churn")["challenger-a"] == 2  # other aliases untouched


def test_concurrent_promotions__end_consistent(lake: dict[str, str]) -> None:
    first, second = _registry(lake), _registry(lake)
    for _ in range(4):
        first.register("churn", _learned(5))
    errors: list[BaseException] = []

    def promote(registry: IcebergModelRegistry, versions: list[int]) -> None:
        try:
            for v in versions * 3:
                registry.promote("churn", v, reason=f"thread {versions}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(first, [1, 2])),
               threading.Thread(target=promote, args=(second, [3, 4]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    events = _registry(lake).alias_events("churn", "champion")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.row_id for e in events}) == len(events)
    assert len(events) >= 6  # each thread's own promotions alternate, so none is a no-op alone
    for before, after in zip(events, events[1:], strict=False):
        assert after.previous_version == holders([e for e in events if e.seq <= before.seq])[-1]
    assert first.aliases("churn") == second.aliases("churn") == {"champion": events[-1].version}


def test_checkpoint__save_and_load_give_the_same_predictions_and_offsets(
        registry: IcebergModelRegistry) -> None:
    registry.register("churn", _learned(10), alias="champion")
    assert registry.latest_checkpoint("churn", 1) is None
    learner = registry.load("churn")[1]
    for x, label, _ in synthetic_rows(FEATURES, 100, seed=3):
        learner.learn_one(x, label)
    cp1 = registry.save_checkpoint("churn", 1, learner, offsets={"examples": {0: 40, 1: 61}},
                                   examples=100, state={"rolling_accuracy": 0.7})
    for x, label, _ in synthetic_rows(FEATURES, 50, seed=4):
        learner.learn_one(x, label)
    cp2 = registry.save_checkpoint("churn", 1, learner, offsets={"examples": {0: 70, 1: 81}},
                                   examples=150, state={"recent": ["p1", "p2"]})
    assert (cp1.seq, cp2.seq) == (1, 2)
    latest = registry.latest_checkpoint("churn", 1)
    assert latest == cp2
    assert latest is not None and latest.offsets == {"examples": {0: 70, 1: 81}}
    assert latest.examples == 150 and latest.state == {"recent": ["p1", "p2"]}
    assert registry.load_checkpoint(latest).predict_many(ROWS) == learner.predict_many(ROWS)
    assert registry.load("churn")[1].predict_many(ROWS) == learner.predict_many(ROWS)
    older = registry.load_checkpoint(cp1).predict_many(ROWS)
    assert older != learner.predict_many(ROWS)
    assert registry.load("churn", version=1)[1].predict_many(ROWS) == learner.predict_many(ROWS)


def test_prune_checkpoints__keeps_the_newest_per_version_and_deletes_rows_then_files(
        registry: IcebergModelRegistry) -> None:
    registry.register("churn", _learned(5), alias="champion")
    registry.register("churn", _learned(6))
    model = _learned(5)
    saved = {v: [registry.save_checkpoint("churn", v, model, offsets={"examples": {0: i}},
                                          examples=i, state={}) for i in range(1, n + 1)]
             for v, n in ((1, 5), (2, 2))}
    with pytest.raises(RegistryDataError, match="checkpoints of 'churn' to keep.*is 0"):
        registry.prune_checkpoints("churn", keep=0)
    pruned = registry.prune_checkpoints("churn", keep=2)
    assert [(cp.version, cp.seq) for cp in pruned] == [(1, 1), (1, 2), (1, 3)]
    assert [cp.seq for cp in registry.checkpoints("churn", 1)] == [4, 5]
    assert [cp.seq for cp in registry.checkpoints("churn", 2)] == [1, 2]
    for cp in pruned:
        assert not Path(urlsplit(cp.artifact_uri).path).exists(), cp.artifact_uri
    for cp in saved[1][3:] + saved[2]:
        assert Path(urlsplit(cp.artifact_uri).path).exists(), cp.artifact_uri
    assert registry.prune_checkpoints("churn", keep=2) == []  # nothing left to do
    # Sequence numbers go on after a prune; a restart resumes from the newest.
    nxt = registry.save_checkpoint("churn", 1, model, offsets={"examples": {0: 9}}, examples=9,
                                   state={})
    assert nxt.seq == 6
    assert registry.prune_checkpoints("churn", keep=1, version=1) == saved[1][3:]
    assert registry.latest_checkpoint("churn", 1) == nxt
    assert registry.load_checkpoint(nxt).predict_many(ROWS) == model.predict_many(ROWS)
    with pytest.raises(UnknownModelVersionError):
        registry.prune_checkpoints("churn", keep=1, version=7)


def test_prune_checkpoints__alongside_a_process_that_checkpoints(lake: dict[str, str]) -> None:
    writer, pruner = _registry(lake), _registry(lake)
    writer.register("churn", _learned(5), alias="champion")
    model = _learned(5)
    errors: list[BaseException] = []

    def checkpoint() -> None:
        try:
            for i in range(1, 9):
                writer.save_checkpoint("churn", 1, model, offsets={"examples": {0: i}},
                                       examples=i, state={})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=checkpoint)
    thread.start()
    pruned: list[int] = []
    while thread.is_alive():
        pruned += [cp.seq for cp in pruner.prune_checkpoints("churn", keep=2)]
    thread.join()
    pruned += [cp.seq for cp in pruner.prune_checkpoints("churn", keep=2)]
    assert not errors, errors
    left = [cp.seq for cp in pruner.checkpoints("churn", 1)]
    assert left == [7, 8]
    assert sorted(pruned) == [1, 2, 3, 4, 5, 6], "each checkpoint pruned once"


def test_delete_orphan_artifacts__removes_old_unreferenced_files_only(
        registry: IcebergModelRegistry) -> None:
    import os
    import time

    registry.register("churn", _learned(5), alias="champion")
    model = _learned(5)
    cps = [registry.save_checkpoint("churn", 1, model, offsets={}, examples=i, state={})
           for i in range(3)]
    pruned = registry.prune_checkpoints("churn", keep=1)
    root = Path(urlsplit(registry.artifact_root).path)
    stray = root / "churn" / "1" / "crashed-registration.pkl"
    stray.write_bytes(b"half a model")
    for cp in pruned:  # as if the prune had crashed before deleting its files
        Path(urlsplit(cp.artifact_uri).path).write_bytes(b"old")
    young = root / "churn" / "1" / "being-registered.pkl"
    young.write_bytes(b"in flight")
    old = time.time() - 2 * 24 * 3600
    for path in [stray, *(Path(urlsplit(cp.artifact_uri).path) for cp in pruned)]:
        os.utime(path, (old, old))
    expected = sorted([str(stray), *(urlsplit(cp.artifact_uri).path for cp in pruned)])
    assert registry.delete_orphan_artifacts(dry_run=True) == expected
    assert stray.exists()
    assert registry.delete_orphan_artifacts() == expected
    assert not stray.exists() and young.exists(), "younger than a day: maybe in flight"
    # Everything a row points to is still there and loads.
    assert registry.load("churn")[1].predict_many(ROWS) == model.predict_many(ROWS)
    assert Path(urlsplit(registry.get("churn", 1).artifact_uri).path).exists()
    assert registry.load_checkpoint(cps[-1]).predict_many(ROWS) == model.predict_many(ROWS)


def test_checkpoint__bad_input_is_refused(registry: IcebergModelRegistry) -> None:
    registry.register("churn", _learned(5))
    onnx = onnx_mlp_regressor(FEATURES).model()
    with pytest.raises(ModelKindMismatchError, match="is a river model; a onnx model"):
        registry.save_checkpoint("churn", 1, onnx, offsets={}, examples=0, state={})
    with pytest.raises(RegistryDataError, match="state of the checkpoint .* is not JSON-able"):
        registry.save_checkpoint("churn", 1, _learned(5), offsets={}, examples=0,
                                 state={"when": object()})
    with pytest.raises(RegistryDataError, match="offsets of topic 'examples'"):
        registry.save_checkpoint("churn", 1, _learned(5), offsets={"examples": {"zero": 1}},
                                 examples=0, state={})
    assert registry.latest_checkpoint("churn", 1) is None


def test_revision__changes_after_promote_and_checkpoint_and_not_otherwise(
        lake: dict[str, str]) -> None:
    registry, watcher = _registry(lake), _registry(lake)
    registry.register("churn", _learned(5))
    registry.register("churn", _learned(6))
    r0 = watcher.revision("churn")
    assert watcher.revision("churn") == r0
    registry.register("churn", _learned(7))  # no alias: serving has nothing to reload
    registry.register("other", _learned(5), alias="champion")
    registry.save_checkpoint("other", 1, _learned(5), offsets={}, examples=1, state={})
    registry.load("other")
    assert watcher.revision("churn") == r0
    registry.promote("churn", 1)
    r1 = watcher.revision("churn")
    assert r1 != r0
    registry.save_checkpoint("churn", 1, _learned(8), offsets={"examples": {0: 1}}, examples=1,
                             state={})
    r2 = watcher.revision("churn")
    assert r2 not in (r0, r1)
    registry.promote("churn", 2)
    registry.rollback("churn")  # back to the same holder: still a change
    r3 = watcher.revision("churn")
    assert r3 not in (r0, r1, r2)
    assert watcher.revision("churn") == r3


class _Crash(BaseException):
    """Stands for the process dying between the artifact write and the commit."""


def _failing_commit(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    import refluent.registry.store as store

    real = store.transaction

    def failing(table: Any, autocommit: bool = False) -> Any:
        tx = real(table, autocommit)

        def commit() -> Any:
            raise error

        tx.commit_transaction = commit  # type: ignore[method-assign]
        return tx

    monkeypatch.setattr(store, "transaction", failing)


def _files(lake: dict[str, str]) -> list[Path]:
    root = _path(lake["warehouse"]) / "models"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_crash_safety__no_row_without_a_landed_commit(lake: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _registry(lake)
    registry.register("churn", _learned(5))
    with monkeypatch.context() as m:
        _failing_commit(m, OSError("disk full"))
        with pytest.raises(RegistryCommitError, match="disk full"):
            registry.register("churn", _learned(6))
    assert [v.version for v in _registry(lake).versions("churn")] == [1]
    assert len(_files(lake)) == 1  # the failed attempt's artifact was removed
    with monkeypatch.context() as m:
        _failing_commit(m, _Crash())
        with pytest.raises(_Crash):
            registry.register("churn", _learned(7))
        with pytest.raises(_Crash):
            registry.save_checkpoint("churn", 1, _learned(7), offsets={}, examples=1, state={})
    fresh = _registry(lake)
    assert [v.version for v in fresh.versions("churn")] == [1]
    assert fresh.latest_checkpoint("churn", 1) is None
    assert len(_files(lake)) == 3  # orphans, but no row points to a missing file
    for v in fresh.versions():
        assert _path(v.artifact_uri).is_file()
    assert fresh.register("churn", _learned(8)).version == 2


def test_concurrent_commit__is_retried_against_the_new_head(
        lake: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    registry, rival = _registry(lake), _registry(lake)
    registry.register("churn", _learned(5))
    import refluent.registry.store as store

    real = store.transaction
    landed: list[int] = []

    def racing(table: Any, autocommit: bool = False) -> Any:
        # Just before our first commit, another registry registers a version.
        if not landed and table.name()[-1] == VERSIONS_TABLE:
            landed.append(-1)  # the rival's own commit goes through here too
            landed[0] = rival.register("churn", _learned(6)).version
        return real(table, autocommit)

    monkeypatch.setattr(store, "transaction", racing)
    mine = registry.register("churn", _learned(7))
    assert landed == [2] and mine.version == 3
    assert [v.version for v in _registry(lake).versions("churn")] == [1, 2, 3]
    assert all(_path(v.artifact_uri).is_file() for v in registry.versions("churn"))
    assert len(_files(lake)) == 3  # the artifact written for version 2 was replaced


def test_concurrent_promotion__previous_holder_is_recomputed(
        lake: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    registry, rival = _registry(lake), _registry(lake)
    for _ in range(3):
        registry.register("churn", _learned(5))
    registry.promote("churn", 1)
    import refluent.registry.store as store

    real = store.transaction
    raced: list[bool] = []

    def racing(table: Any, autocommit: bool = False) -> Any:
        if not raced and table.name()[-1] == ALIASES_TABLE:
            raced.append(True)
            rival.promote("churn", 2, reason="rival")
        return real(table, autocommit)

    monkeypatch.setattr(store, "transaction", racing)
    registry.promote("churn", 3, reason="mine")
    events = _registry(lake).alias_events("churn", "champion")
    assert [(e.seq, e.version, e.previous_version, e.reason) for e in events] == [
        (1, 1, None, ""), (2, 2, 1, "rival"), (3, 3, 2, "mine")]
    assert registry.rollback("churn").version == 2


def test_unknown_names__raise_errors_naming_them(registry: IcebergModelRegistry) -> None:
    with pytest.raises(UnknownModelError, match="model 'nope' is not registered .no models"):
        registry.versions("nope")
    registry.register("churn", _learned(5))
    for call in (lambda: registry.get("nope", 1), lambda: registry.aliases("nope"),
                 lambda: registry.resolve("nope"), lambda: registry.load("nope"),
                 lambda: registry.rollback("nope"), lambda: registry.promote("nope", 1),
                 lambda: registry.latest_checkpoint("nope", 1)):
        with pytest.raises(UnknownModelError, match="'nope' is not registered .known models: "
                                                    "churn"):
            call()
    with pytest.raises(UnknownModelVersionError, match="has no version 7 .known versions: 1"):
        registry.get("churn", 7)
    with pytest.raises(UnknownModelVersionError, match="no version 3"):
        registry.register("churn", _learned(5), parent=3)
    with pytest.raises(UnknownModelVersionError, match="no version 2"):
        registry.promote("churn", 2)
    with pytest.raises(UnknownAliasError, match="has no alias 'champion' .no aliases yet"):
        registry.resolve("churn")
    with pytest.raises(UnknownAliasError, match="no alias 'champion'"):
        registry.rollback("churn")
    with pytest.raises(InvalidNameError, match="model '../etc'"):
        registry.register("../etc", _learned(5))
    with pytest.raises(InvalidNameError, match="alias 'a b'"):
        registry.promote("churn", 1, alias="a b")


def test_from_settings__artifacts_go_under_the_configured_root(lake: dict[str, str],
                                                               tmp_path: Path) -> None:
    default = ModelRegistry.from_settings(Settings(lake=lake))
    v = default.register("churn", _learned(5))
    assert v.artifact_uri.startswith(lake["warehouse"].rstrip("/") + "/models/churn/1/")
    root = (tmp_path / "artifacts").as_uri()
    custom = ModelRegistry.from_settings(Settings(lake=lake, registry={"artifact_root": root}))
    v2 = custom.register("churn", _learned(5))
    assert v2.version == 2 and v2.artifact_uri.startswith(root + "/churn/2/")
    assert custom.load("churn", 1)[1].predict_many(ROWS) == default.load(
        "churn", 2)[1].predict_many(ROWS)
    assert (("refluent", VERSIONS_TABLE) in default.catalog.list_tables("refluent"))


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------


def test_cli__register_list_show_promote_rollback(lake: dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUENT_LAKE__CATALOG_URI", lake["catalog_uri"])
    monkeypatch.setenv("REFLUENT_LAKE__WAREHOUSE", lake["warehouse"])
    river_file = tmp_path / "churn.pkl"
    river_file.write_bytes(pickle.dumps(_learned(20).estimator))  # type: ignore[attr-defined]
    onnx_file = tmp_path / "churn.onnx"
    onnx_file.write_bytes(onnx_mlp_classifier(FEATURES).data)
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(models_app, list(args), env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
        return result.output

    assert "no models registered yet" in cli("list")
    out = cli("register", "churn", str(river_file), "--kind", "river", "--features",
              "x1,x2,x3", "--alias", "champion", "-m", "auc=0.81", "-m", "log_loss=0.45")
    assert "registered churn version 1" in out and "champion -> 1" in out
    out = cli("register", "churn", str(onnx_file), "--kind", "onnx", "--parent", "1",
              "--epsilon", "2.5", "--description", "DP-SGD retrain")
    assert "registered churn version 2 (onnx classification, 3 features)" in out
    listing = cli("list")
    assert "churn" in listing and "champion" in listing and "auc=0.81" in listing
    assert "2.5" in listing
    assert "-> version 2 (was 1)" in cli("promote", "churn", "2", "--reason", "better auc")
    shown = cli("show", "churn")
    assert "churn version 2" in shown and "DP-SGD retrain" in shown and "better auc" in shown
    assert "x1, x2, x3" in shown and "no checkpoints of version 2" in shown
    assert "-> version 1 (was 2)" in cli("rollback", "churn")
    reg = ModelRegistry.from_settings(Settings(lake=lake))
    assert reg.aliases("churn") == {"champion": 1}
    assert reg.get("churn", 1).metrics == {"auc": 0.81, "log_loss": 0.45}
    assert reg.get("churn", 2).parent == 1
    shown = cli("show", "churn", "--version", "1")
    assert "churn version 1" in shown and "source_file" in shown
    learner = reg.load("churn", version=1)[1]
    for i in range(4):
        reg.save_checkpoint("churn", 1, learner, offsets={}, examples=i, state={})
    assert "churn v1: 3 checkpoint(s) deleted (1..3), the newest 1 kept" in cli(
        "prune", "churn", "--keep", "1")
    assert "nothing to prune" in cli("prune", "churn", "--keep", "1", "--version", "1")
    stray = Path(urlsplit(reg.artifact_root).path) / "churn" / "stray.pkl"
    stray.write_bytes(b"left by a crash")
    assert "would delete 1 unreferenced artifact file(s)" in cli(
        "gc", "--older-than-hours", "0", "--dry-run")
    assert "would delete 0" in cli("gc", "--dry-run"), "younger than a day"
    assert "deleted 1 unreferenced artifact file(s)" in cli("gc", "--older-than-hours", "0")
    assert not stray.exists()

    bad = runner.invoke(models_app, ["show", "nope"])
    assert isinstance(bad.exception, UnknownModelError)
    bad = runner.invoke(models_app, ["register", "churn", str(onnx_file), "--kind", "sklearn"])
    assert bad.exit_code == 2 and "not one of river, onnx" in bad.output
    bad = runner.invoke(models_app, ["register", "churn", str(river_file), "--kind", "river",
                                     "-m", "auc"])
    assert bad.exit_code == 2 and "is not NAME=NUMBER" in bad.output
