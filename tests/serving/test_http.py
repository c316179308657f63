"""The HTTP front end (Open Inference Protocol v2): request parsing, responses, the app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from refluent.config import Settings
from refluent.examples.models import onnx_mlp_classifier, river_regressor, synthetic_rows
from refluent.models.base import ServableModel
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import FeatureView
from refluent.processors.windows import Tumbling
from refluent.registry import ModelRegistry
from refluent.serving.http import (
    HttpFrontEnd,
    InferRequestError,
    create_app,
    infer_response,
    parse_inputs,
)
from refluent.serving.publisher import PredictionPublisher
from refluent.serving.scorer import build_scorer, prediction_id
from refluent.sinks.base import SinkRecord
from refluent.sinks.redis import RedisOnlineStore
from refluent.streams.contracts import FeatureUpdate, Prediction
from refluent.streams.kafka import TopicAdmin
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import read_all
from refluent.testing.services import RunningServices

FEATURES = ("x1", "x2", "x3")
ACCT = FeatureView("acct", "account_id", ("logs.app",), tuple(
    Aggregation(f, "last", f, Tumbling(timedelta(hours=1))) for f in ("x2", "x3")))


def tensor(name: str, data: list[Any], datatype: str = "FP32",
           shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


# ---------------------------------------------------------------------------------------------
# unit: parsing and responses
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_parse__one_tensor_per_feature_with_entities_from_a_bytes_input() -> None:
    rows, entities = parse_inputs({"inputs": [
        tensor("x1", [1, 2]), tensor("flag", [True, False], "BOOL"),
        tensor("n", [[3], [4]], "INT64", [2, 1]),
        tensor("entity_id", ["a", "b"], "BYTES")]})
    assert rows == [{"x1": 1.0, "flag": True, "n": 3}, {"x1": 2.0, "flag": False, "n": 4}]
    assert entities == ["a", "b"]


@pytest.mark.unit
def test_parse__a_2d_input_matrix_in_feature_order_and_a_shared_entity_parameter() -> None:
    rows, entities = parse_inputs(
        {"inputs": [tensor("input", [[1, 2, 3], [4, 5, 6]], "FP32", [2, 3])],
         "parameters": {"entity_id": "c7"}}, FEATURES)
    assert rows == [{"x1": 1.0, "x2": 2.0, "x3": 3.0}, {"x1": 4.0, "x2": 5.0, "x3": 6.0}]
    assert entities == ["c7", "c7"]


@pytest.mark.unit
def test_parse__an_entity_alone_is_one_row_and_a_wide_tensor_is_a_vector() -> None:
    assert parse_inputs({"parameters": {"entity_id": "c1"}}) == ([{}], ["c1"])
    rows, _ = parse_inputs({"inputs": [tensor("emb", [1, 2, 3, 4], "FP32", [2, 2])]})
    assert rows == [{"emb": [1.0, 2.0]}, {"emb": [3.0, 4.0]}]


@pytest.mark.unit
@pytest.mark.parametrize(("body", "message"), [
    ([], "request: must be a JSON object"),
    ({"inputs": [tensor("x1", [1, 2], shape=[3])]}, "input 'x1': shape [3] holds 3"),
    ({"inputs": [tensor("x1", ["a"])]}, "input 'x1' row 0: 'a' is not a number"),
    ({"inputs": [tensor("x1", [1], "FP99")]}, "datatype 'FP99' is not one of"),
    ({"inputs": [tensor("x1", [1.5], "INT32")]}, "1.5 is not an integer"),
    ({"inputs": [tensor("x1", [1]), tensor("x2", [1, 2])]}, "has 2 row(s), another"),
    ({"inputs": [tensor("x1", [1]), tensor("x1", [2])]}, "repeated tensor name(s) ['x1']"),
    ({"inputs": []}, "nothing to score"),
    ({"inputs": [tensor("input", [1, 2], "FP32", [1, 2])]}, "has 2 column(s); the model"),
    ({"inputs": [tensor("x1", [1])], "parameters": {"entity_id": 5}},
     "parameters.entity_id: must be a string"),
    ({"inputs": [{"name": "x1"}]}, "input 'x1': datatype None"),
])
def test_parse__malformed_requests_name_the_part_at_fault(body: Any, message: str) -> None:
    with pytest.raises(InferRequestError) as info:
        parse_inputs(body, FEATURES)
    assert message in str(info.value)


@pytest.mark.unit
def test_infer_response__outputs_in_protocol_shape() -> None:
    preds = [Prediction(request_id=f"r{i}", model_name="m", model_version="3", entity_id="e",
                        score=p, label=p > 0.5, probabilities={"False": 1 - p, "True": p})
             for i, p in enumerate((0.25, 0.75))]
    body = infer_response("m", "classification", "req-1", preds)
    assert body["model_name"] == "m" and body["model_version"] == "3" and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["score"] == {"name": "score", "datatype": "FP64", "shape": [2],
                            "data": [0.25, 0.75]}
    assert out["label"]["datatype"] == "BOOL" and out["label"]["data"] == [False, True]
    assert out["probabilities"]["shape"] == [2, 2]
    assert out["probabilities"]["data"] == [0.75, 0.25, 0.25, 0.75]
    assert out["probabilities"]["parameters"] == {"classes": ["False", "True"]}
    assert body["parameters"]["prediction_ids"] == [p.prediction_id for p in preds]
    only = infer_response("m", "classification", None, preds, ["label"])
    assert [o["name"] for o in only["outputs"]] == ["label"] and "id" not in only


# ---------------------------------------------------------------------------------------------
# integration: the app on the real registry, Redis and broker
# ---------------------------------------------------------------------------------------------


@dataclass
class App:
    client: TestClient
    settings: Settings
    registry: ModelRegistry
    onnx: ServableModel
    regressor: ServableModel
    topic: str
    publisher: PredictionPublisher
    front: HttpFrontEnd


@pytest.fixture()
def app(services: RunningServices) -> Iterator[App]:
    tag = uuid.uuid4().hex[:8]
    settings = services.settings(lake={"namespace": f"http_{tag}"},
                                 redis={"key_prefix": f"h{tag}"},
                                 serving={"view_policies": {"acct": "reject"}})
    registry = ModelRegistry.from_settings(settings)
    onnx = onnx_mlp_classifier(FEATURES, seed=4).model()
    registry.register("clf", onnx, alias="champion")
    regressor = river_regressor(("x1", "x2"))
    for x, _, y in synthetic_rows(("x1", "x2"), 100, 1):
        regressor.learn_one(x, y)
    registry.register("reg", regressor, alias="champion")
    registry.register("reg", river_regressor(("x1", "x2")))  # version 2, never promoted
    store = RedisOnlineStore(settings.redis.url or "", key_prefix=settings.redis.key_prefix)
    store.setup()
    store.write([SinkRecord("features.acct", 0, 0, b"c1", FeatureUpdate(
        view="acct", entity_id="c1", values={"x2": 0.5, "x3": -1.5},
        event_time=datetime.now(UTC) - timedelta(seconds=2)))])
    store.close()
    topic = f"predictions-{tag}"
    spec = TopicCatalog.from_settings(settings.topics).get("predictions")
    TopicAdmin(settings.kafka, services.bootstrap_servers).ensure([replace(spec, name=topic)])
    scorer = build_scorer(settings, models=["clf", "reg"], views=[ACCT], registry=registry)
    assert scorer.reader is not None
    scorer.reader.setup()
    scorer.holder.start(poll=False)
    publisher = PredictionPublisher(settings, services.bootstrap_servers, topic)
    front = HttpFrontEnd(scorer, publisher, max_batch_size=16, linger_s=0.001)
    with TestClient(create_app(front, registry=registry)) as client:
        yield App(client, settings, registry, onnx, regressor, topic, publisher, front)
    publisher.close()
    registry.close()


@pytest.mark.integration
def test_http__health_server_and_model_metadata(app: App) -> None:
    c = app.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/v2").json()["name"] == "refluent"
    meta = c.get("/v2/models/clf").json()
    assert meta["name"] == "clf" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": f, "datatype": "FP32", "shape": [-1]} for f in FEATURES]
    assert [o["name"] for o in meta["outputs"]] == ["score", "label", "probabilities"]
    assert meta["parameters"]["online_features"] == ["acct.x2", "acct.x3"]
    reg = c.get("/v2/models/reg").json()
    assert reg["platform"] == "river" and reg["versions"] == ["1", "2"]
    assert [o["name"] for o in reg["outputs"]] == ["score"]
    assert c.get("/v2/models/reg/versions/2/ready").json()["ready"] is True
    missing = c.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and "'nope'" in missing.json()["error"]


@pytest.mark.integration
def test_http__infer_with_feature_tensors_matches_the_model(app: App) -> None:
    rows = [[0.1, -0.2, 0.3], [1.0, 2.0, -3.0]]
    body = {"id": "q1", "inputs": [tensor(f, [r[i] for r in rows]) for i, f in
                                   enumerate(FEATURES)]}
    resp = app.client.post("/v2/models/clf/infer", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["model_name"] == "clf" and out["model_version"] == "1" and out["id"] == "q1"
    outputs = {o["name"]: o for o in out["outputs"]}
    for i, row in enumerate(rows):
        want = app.onnx.predict_one(dict(zip(FEATURES, row, strict=True)))
        assert outputs["score"]["data"][i] == pytest.approx(want.score, rel=1e-6)
        assert outputs["label"]["data"][i] == want.label
    assert out["parameters"]["prediction_ids"] == [prediction_id("clf", "q1:0"),
                                                   prediction_id("clf", "q1:1")]
    matrix = {"id": "q1", "inputs": [tensor("input", rows, "FP32", [2, 3])]}
    again = app.client.post("/v2/models/clf/infer", json=matrix).json()
    assert again["outputs"] == out["outputs"]


@pytest.mark.integration
def test_http__online_features_fill_in_and_every_prediction_is_published(app: App) -> None:
    resp = app.client.post("/v2/models/clf/infer", json={
        "id": "q2", "inputs": [tensor("x1", [0.25])], "parameters": {"entity_id": "c1"}})
    assert resp.status_code == 200, resp.text
    score = resp.json()["outputs"][0]["data"][0]
    want = app.onnx.predict_one({"x1": 0.25, "x2": 0.5, "x3": -1.5})
    assert score == pytest.approx(want.score, rel=1e-6)
    app.publisher.flush()
    records = read_all(app.settings, app.topic, 2, timeout=3.0)
    assert len(records) == 1 and records[0].key == b"c1"
    logged = Prediction.model_validate_json(records[0].value or b"")
    assert logged.request_id == "q2" and logged.prediction_id == prediction_id("clf", "q2")
    assert logged.features == {"x1": 0.25, "x2": 0.5, "x3": -1.5}
    assert set(logged.feature_ages_ms) == {"acct"} and not logged.stale


@pytest.mark.integration
def test_http__pinned_version_answers_with_that_version(app: App) -> None:
    body = {"inputs": [tensor("x1", [0.5], "FP64"), tensor("x2", [0.5], "FP64")]}
    champion = app.client.post("/v2/models/reg/infer", json=body).json()
    pinned = app.client.post("/v2/models/reg/versions/2/infer", json=body).json()
    assert champion["model_version"] == "1" and pinned["model_version"] == "2"
    assert champion["outputs"][0]["data"][0] == pytest.approx(
        app.regressor.predict_one({"x1": 0.5, "x2": 0.5}).score)
    assert pinned["outputs"][0]["data"] != champion["outputs"][0]["data"]


@pytest.mark.integration
@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v2/models/nope/infer", {"inputs": [tensor("x1", [1])]}, 404, "model 'nope'"),
    ("/v2/models/reg/versions/9/infer", {"inputs": [tensor("x1", [1])]}, 404, "version 9"),
    ("/v2/models/clf/infer", {"inputs": [tensor("x1", ["a"], "FP32")]}, 422, "'a' is not a"),
    ("/v2/models/clf/infer", {"inputs": [tensor("x1", [1.0])]}, 400, "'x2' is missing"),
    ("/v2/models/clf/infer", {"inputs": [tensor("x1", [1.0])],
                              "parameters": {"entity_id": "ghost"}}, 400, "missing_entity"),
    ("/v2/models/clf/infer", {"inputs": [tensor("x1", ["a"], "BYTES")],
                              "parameters": {"entity_id": "c1"}}, 400, "feature_type"),
    ("/v2/models/clf/infer", {"inputs": [tensor("x1", [1.0])], "outputs": [{"name": "z"}]},
     422, "'z' is not one of"),
    ("/v2/models/clf/infer", [1, 2], 422, "must be a JSON object"),
    ("/v2/models/clf/infer", {"inputs": [tensor("x1", [1.0])], "id": 7}, 422, "id: 7"),
])
def test_http__errors_are_json_with_the_right_status(app: App, path: str, body: Any,
                                                     status: int, message: str) -> None:
    resp = app.client.post(path, json=body)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]


@pytest.mark.integration
def test_http__malformed_json_is_a_422(app: App) -> None:
    resp = app.client.post("/v2/models/clf/infer", content=b"{nope",
                           headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "not JSON" in resp.json()["error"]
    assert app.client.get("/v2/nothing/here").json() == {"error": "Not Found"}


@pytest.mark.integration
def test_http__body_over_the_limit_is_a_413_and_is_not_read(app: App) -> None:
    app.front.max_request_bytes = 2048
    big = {"inputs": [tensor("x1", [1.0] * 1000), tensor("x2", [1.0] * 1000)]}
    resp = app.client.post("/v2/models/reg/infer", json=big)
    assert resp.status_code == 413, resp.text
    assert "larger than 2048 bytes" in resp.json()["error"]
    # Streamed without a length, the body is cut off at the limit too.
    chunks = iter([b'{"inputs": [', b" " * 4096, b"]}"])
    resp = app.client.post("/v2/models/reg/infer", content=chunks)
    assert resp.status_code == 413, resp.text


@pytest.mark.integration
def test_http__more_rows_than_allowed_is_a_413(app: App) -> None:
    app.front.max_request_rows = 2
    rows = {"inputs": [tensor("x1", [1.0, 2.0, 3.0]), tensor("x2", [1.0, 2.0, 3.0])]}
    resp = app.client.post("/v2/models/reg/infer", json=rows)
    assert resp.status_code == 413 and "3 rows, more than 2" in resp.json()["error"]
    ok = {"inputs": [tensor("x1", [1.0, 2.0]), tensor("x2", [1.0, 2.0])]}
    assert app.client.post("/v2/models/reg/infer", json=ok).status_code == 200


@pytest.mark.integration
def test_http__internal_errors_answer_an_error_id_never_the_exception_text(
        app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(requests: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.front.scorer, "score", broken)
    body = {"inputs": [tensor("x1", [1.0]), tensor("x2", [1.0])]}
    with caplog.at_level("ERROR", logger="refluent.serving.http"):
        resp = app.client.post("/v2/models/reg/infer", json=body)
    assert resp.status_code == 500
    error = resp.json()["error"]
    assert "secret" not in error and "RuntimeError" not in error
    error_id = error.split("(id ", 1)[1].split(")", 1)[0]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
