"""The HTTP front end in the Open Inference Protocol (v2) shape, so KServe and Seldon clients
work unchanged.

Endpoints:

====================================================  ==========================================
``GET /v2/health/live``                               the process answers
``GET /v2/health/ready``                              every model named at start is loaded (503
                                                      otherwise)
``GET /v2``                                           server metadata
``GET /v2/models/{name}[/versions/{v}]``              model metadata: versions, platform, inputs
                                                      and outputs with datatype and shape
``GET /v2/models/{name}[/versions/{v}]/ready``        the model can be served (404 otherwise)
``POST /v2/models/{name}[/versions/{v}]/infer``       predictions
====================================================  ==========================================

Inference request: ``inputs`` are named tensors (``name``, ``datatype``, ``shape``, ``data``,
row-major, flat or nested). Either one tensor per feature with shape ``[N]`` or ``[N, 1]`` (a
``[N, k]`` tensor gives each row a vector), or one 2-D ``FP32``/``FP64`` tensor named ``input``
of shape ``[N, F]`` holding the model's features in its declared order. The entity whose online
features are read is ``parameters.entity_id`` (one id for every row, or a list of N) or a
``BYTES`` input named ``entity_id``; online features fill what the tensors do not bring (see
:mod:`refluent.serving.policy`). The request's ``id`` becomes each row's ``request_id`` (with
``:<row>`` after it when there are several rows).

Response: ``outputs`` named after what the model answers: ``score`` (``FP64 [N]``), and for a
classifier ``label`` (``BYTES``, ``INT64`` or ``BOOL`` ``[N]``) and ``probabilities``
(``FP64 [N, C]``, the class order in the output's ``parameters.classes``), restricted to the
request's ``outputs`` when it names some. ``parameters`` carries each row's ``prediction_id``
and ``stale`` flag. Errors are ``{"error": "..."}``: 422 for a malformed request (the message
names the field or row at fault), 400 for a rejected row (the whole request is refused), 404
for an unknown model or version, 413 for a body larger than ``serving.max_request_bytes`` or
more rows than ``serving.max_request_rows``, 503 when the online store or the registry cannot
be read. An unexpected failure is logged with its traceback under an error id and answered 500
with that id only: internal exception text never reaches a client.

Every prediction answered is also published to the ``predictions`` topic (feature logging),
like the Kafka front end's.

Examples:
    >>> rows, entities = parse_inputs({"inputs": [
    ...     {"name": "age", "datatype": "FP32", "shape": [2], "data": [31, 42.5]},
    ...     {"name": "entity_id", "datatype": "BYTES", "shape": [2], "data": ["c1", "c2"]}]})
    >>> rows, entities
    ([{'age': 31.0}, {'age': 42.5}], ['c1', 'c2'])
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from refluent.errors import MissingExtraError, RefluentError

try:
    # At module level: FastAPI reads the endpoints' annotations from the module's globals.
    from fastapi import FastAPI, Request, Response
except ImportError as exc:  # pragma: no cover - fastapi ships with the serving extra
    raise MissingExtraError("fastapi", "serving") from exc

from refluent.observability import serving as m
from refluent.serving.batching import MicroBatcher
from refluent.serving.holder import LoadedModel, UnknownServedModelError
from refluent.serving.scorer import ScoreOutcome, ScoreRequest
from refluent.streams.contracts import FeatureValue, Prediction
from refluent.streams.processing import RecordRejected

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from refluent.serving.publisher import PredictionPublisher
    from refluent.serving.scorer import Scorer

NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
           "UINT32", "UINT64"}
DATATYPES = NUMERIC | {"BOOL", "BYTES"}
ENTITY_INPUT = "entity_id"
MATRIX_INPUT = "input"
OUTPUTS = ("score", "label", "probabilities")
_NOT_FOUND_REASONS = {"unknown_model", "unknown_version"}
MAX_REQUEST_BYTES = 4_194_304
"""Largest request body unless told otherwise (``serving.max_request_bytes``)."""
MAX_REQUEST_ROWS = 1024
"""Most rows per request unless told otherwise (``serving.max_request_rows``)."""

log = logging.getLogger(__name__)


class InferRequestError(RefluentError):
    """An inference request does not have the protocol's shape; names the part at fault."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


# ---------------------------------------------------------------------------------------------
# request parsing
# ---------------------------------------------------------------------------------------------


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise InferRequestError(where, "data must be a list")
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _value(datatype: str, v: Any, where: str) -> FeatureValue:
    if datatype == "BYTES":
        if isinstance(v, str):
            return v
        raise InferRequestError(where, f"{v!r} is not a string (BYTES)")
    if datatype == "BOOL":
        if isinstance(v, bool):
            return v
        raise InferRequestError(where, f"{v!r} is not a boolean (BOOL)")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InferRequestError(where, f"{v!r} is not a number ({datatype})")
    if datatype.startswith("FP"):
        f = float(v)
        if not math.isfinite(f):
            raise InferRequestError(where, f"{v!r} is not a finite number")
        return f
    if not isinstance(v, int):
        raise InferRequestError(where, f"{v!r} is not an integer ({datatype})")
    if datatype.startswith("UINT") and v < 0:
        raise InferRequestError(where, f"{v!r} is negative ({datatype})")
    return v


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]


def _tensor(raw: Any, i: int) -> _Tensor:
    where = f"inputs[{i}]"
    if not isinstance(raw, dict):
        raise InferRequestError(where, "must be an object with name, datatype, shape, data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InferRequestError(where, "needs a non-empty name")
    where = f"input {name!r}"
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise InferRequestError(where, f"datatype {datatype!r} is not one of "
                                       f"{', '.join(sorted(DATATYPES))}")
    shape = raw.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise InferRequestError(where, f"shape {shape!r} must be a non-empty list of sizes")
    data = _flatten(raw.get("data"), where)
    expected = math.prod(shape)
    if len(data) != expected:
        raise InferRequestError(where, f"shape {shape} holds {expected} value(s), data has "
                                       f"{len(data)}")
    return _Tensor(name, datatype, tuple(shape), data)


def parse_inputs(
    body: Any, feature_names: Sequence[str] = ()
) -> tuple[list[dict[str, FeatureValue]], list[str | None]]:
    """The rows of an inference request and the entity of each row.

    Args:
        body: The decoded JSON body.
        feature_names: The model's inputs in order (for an ``input`` matrix).

    Raises:
        InferRequestError: the body, a tensor or the entity ids are malformed or disagree on
            the number of rows.
    """
    if not isinstance(body, dict):
        raise InferRequestError("request", "must be a JSON object")
    raw_inputs = body.get("inputs", [])
    if not isinstance(raw_inputs, list):
        raise InferRequestError("inputs", "must be a list of tensors")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferRequestError("parameters", "must be an object")
    tensors = [_tensor(raw, i) for i, raw in enumerate(raw_inputs)]
    names = [t.name for t in tensors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InferRequestError("inputs", f"repeated tensor name(s) {dupes}")
    n_rows: int | None = None
    for t in tensors:
        if n_rows is None:
            n_rows = t.shape[0]
        elif t.shape[0] != n_rows:
            raise InferRequestError(f"input {t.name!r}", f"has {t.shape[0]} row(s), another "
                                                         f"input has {n_rows}")
    param_entity = params.get(ENTITY_INPUT)
    if n_rows is None:
        if isinstance(param_entity, list):
            n_rows = len(param_entity)
        elif param_entity is not None:
            n_rows = 1
        else:
            raise InferRequestError("inputs", "no tensors and no parameters.entity_id: "
                                              "nothing to score")
    if n_rows == 0:
        raise InferRequestError("inputs", "zero rows")
    rows: list[dict[str, FeatureValue]] = [{} for _ in range(n_rows)]
    entities: list[str | None] = [None] * n_rows
    for t in tensors:
        if t.name == ENTITY_INPUT:
            if t.datatype != "BYTES" or len(t.data) != n_rows:
                raise InferRequestError("input 'entity_id'", "must be BYTES with one id a row")
            for r, v in enumerate(t.data):
                entities[r] = str(_value("BYTES", v, f"input 'entity_id' row {r}"))
            continue
        width = len(t.data) // n_rows if n_rows else 0
        if t.name == MATRIX_INPUT and len(t.shape) == 2 and feature_names:
            if t.datatype not in NUMERIC:
                raise InferRequestError("input 'input'", "the feature matrix must be numeric")
            if width != len(feature_names):
                raise InferRequestError("input 'input'", f"has {width} column(s); the model "
                                        f"takes {len(feature_names)}: "
                                        f"{', '.join(feature_names)}")
            for r in range(n_rows):
                row = rows[r]
                for c, feature in enumerate(feature_names):
                    row[feature] = _value(t.datatype, t.data[r * width + c],
                                          f"input 'input' [{r}, {c}]")
            continue
        for r in range(n_rows):
            where = f"input {t.name!r} row {r}"
            if width == 1:
                rows[r][t.name] = _value(t.datatype, t.data[r], where)
            else:
                if t.datatype not in NUMERIC:
                    raise InferRequestError(f"input {t.name!r}", "only numeric tensors may "
                                            "give a row several values (a vector)")
                rows[r][t.name] = [float(_value("FP64", v, where))  # type: ignore[arg-type]
                                   for v in t.data[r * width:(r + 1) * width]]
    if param_entity is not None:
        if isinstance(param_entity, str):
            ids: list[Any] = [param_entity] * n_rows
        elif isinstance(param_entity, list) and len(param_entity) == n_rows:
            ids = param_entity
        else:
            raise InferRequestError("parameters.entity_id", f"must be a string or a list of "
                                                            f"{n_rows} strings")
        for r, v in enumerate(ids):
            if not isinstance(v, str) or not v:
                raise InferRequestError("parameters.entity_id", f"row {r}: {v!r} is not an id")
            if entities[r] is None:
                entities[r] = v
    return rows, entities


# ---------------------------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------------------------


def _label_datatype(labels: Sequence[Any]) -> str:
    present = [v for v in labels if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    return "BYTES"


def infer_response(model: str, task: str, request_id: str | None,
                   predictions: Sequence[Prediction],
                   wanted: Sequence[str] | None = None) -> dict[str, Any]:
    """The protocol's inference response for ``predictions`` (one per row, in order, all
    made by one version of ``model``)."""
    n = len(predictions)
    outputs: list[dict[str, Any]] = []
    names = [o for o in OUTPUTS if task == "classification" or o == "score"]
    if wanted:
        names = [o for o in names if o in wanted]
    for name in names:
        if name == "score":
            outputs.append({"name": "score", "datatype": "FP64", "shape": [n],
                            "data": [p.score for p in predictions]})
        elif name == "label":
            labels = [p.label for p in predictions]
            datatype = _label_datatype(labels)
            data = labels if datatype != "BYTES" else [None if v is None else str(v)
                                                       for v in labels]
            outputs.append({"name": "label", "datatype": datatype, "shape": [n], "data": data})
        else:
            classes: dict[str, None] = {}
            for p in predictions:
                classes.update(dict.fromkeys(p.probabilities or {}))
            order = list(classes)
            flat = [(p.probabilities or {}).get(c, 0.0) for p in predictions for c in order]
            outputs.append({"name": "probabilities", "datatype": "FP64",
                            "shape": [n, len(order)], "data": flat,
                            "parameters": {"classes": order}})
    response: dict[str, Any] = {
        "model_name": model,
        "model_version": predictions[0].model_version if predictions else "",
        "outputs": outputs,
        "parameters": {
            "prediction_ids": [p.prediction_id for p in predictions],
            "stale": [p.stale for p in predictions],
        },
    }
    if request_id is not None:
        response["id"] = request_id
    return response


def model_metadata(loaded: LoadedModel, versions: Sequence[int],
                   online: Sequence[str] = ()) -> dict[str, Any]:
    """The protocol's model metadata of the model being served."""
    model = loaded.model
    kind = model.kind
    datatype = "FP32" if kind == "onnx" else "FP64"
    inputs = [{"name": f, "datatype": datatype, "shape": [-1]} for f in model.feature_names]
    outputs: list[dict[str, Any]] = [{"name": "score", "datatype": "FP64", "shape": [-1]}]
    if model.task == "classification":
        outputs += [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP64", "shape": [-1, -1]}]
    return {
        "name": loaded.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx" if kind == "onnx" else "river",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "task": model.task,
            "served_version": str(loaded.number),
            "checkpoint": loaded.checkpoint,
            "alias": loaded.alias,
            "online_features": list(online),
            "entity_input": ENTITY_INPUT,
            "matrix_input": MATRIX_INPUT if model.feature_names else None,
        },
    }


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------


class HttpFrontEnd:
    """Scores HTTP requests through a :class:`~refluent.serving.batching.MicroBatcher`, so
    concurrent requests share a batch (at most ``max_batch_size`` rows, waiting at most
    ``linger_s``), and publishes the predictions.

    Args:
        scorer: The scoring path.
        publisher: Where predictions are published; None publishes nothing.
        max_batch_size: Most rows per batch.
        linger_s: Longest wait for more requests once a batch has one (0: a batch is what
            queued up while the previous one was scored).
        max_request_bytes: Largest request body; a larger one is answered 413 unread.
        max_request_rows: Most rows per request; more are answered 413.
    """

    def __init__(self, scorer: Scorer, publisher: PredictionPublisher | None = None, *,
                 max_batch_size: int = 64, linger_s: float = 0.0,
                 max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_request_rows: int = MAX_REQUEST_ROWS) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_request_rows = max_request_rows
        self.scorer = scorer.with_source("http")
        self.publisher = publisher
        self.batcher: MicroBatcher[ScoreRequest, ScoreOutcome] = MicroBatcher(
            self._score, max_batch_size, linger_s, name="refluent-http-batcher")

    def _score(self, requests: list[ScoreRequest]) -> list[ScoreOutcome]:
        return self.scorer.score(requests).outcomes

    def start(self) -> None:
        """Start the batching thread."""
        self.batcher.start()

    def close(self) -> None:
        """Finish the batches in hand and stop."""
        self.batcher.close()

    def ready(self) -> bool:
        """True when every model named at start is loaded."""
        return self.scorer.holder.is_ready()


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _rejection_status(exc: RecordRejected) -> int:
    return 404 if exc.reason in _NOT_FOUND_REASONS else 400


def _internal(exc: BaseException, where: str) -> Response:
    """A 500 naming an error id only; the exception and its traceback go to the log."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s", error_id, where, exc_info=exc)
    return _error(f"internal error (id {error_id}); the server log has the details", 500)


class _TooLarge(Exception):
    """The request body is larger than allowed."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a declared larger length is refused
    before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(front: HttpFrontEnd, *, registry: Any | None = None) -> FastAPI:
    """The FastAPI app of ``front`` (``registry`` lists a model's versions in its metadata).

    The batching thread starts with the app (or on the first request) and stops with it.
    """
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from refluent.online_store.errors import OnlineStoreError

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        front.start()
        try:
            yield
        finally:
            front.close()

    app = FastAPI(title="Refluent prediction service", lifespan=lifespan)
    holder = front.scorer.holder
    catalog = front.scorer.catalog

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return _error(str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Response:
        return _internal(exc, f"{request.method} {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error(f"{where}: {first.get('msg', 'malformed')}", 422)

    def _version(name: str, version: str | None) -> int | None:
        if version is None:
            return None
        try:
            return int(version)
        except ValueError:
            raise UnknownServedModelError(name, -1, f"version {version!r} is not a "
                                                    "number") from None

    def _loaded(name: str, version: str | None) -> LoadedModel:
        v = _version(name, version)
        try:
            return holder.get(name, v)
        except UnknownServedModelError:
            raise
        except RefluentError as exc:
            raise _Unavailable(str(exc)) from exc

    @app.get("/v2/health/live")
    def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    def ready() -> Response:
        ok = front.ready()
        return _json({"ready": ok}, 200 if ok else 503)

    @app.get("/v2")
    def server_metadata() -> Response:
        return _json({"name": "refluent", "version": _package_version(), "extensions": []})

    def _metadata(name: str, version: str | None) -> Response:
        try:
            loaded = _loaded(name, version)
        except UnknownServedModelError as exc:
            return _error(str(exc), 404)
        except _Unavailable as exc:
            return _error(str(exc), 503)
        versions: list[int] = [loaded.number]
        if registry is not None:
            try:
                versions = sorted(v.version for v in registry.versions(name))
            except RefluentError:
                pass
        online = []
        try:
            plan = catalog.plan(loaded.model.feature_names, name)
            online = [f"{r.view}.{f}" for r in plan.reads for f in (r.features or ("*",))]
        except RefluentError:
            pass
        return _json(model_metadata(loaded, versions, online))

    def _ready(name: str, version: str | None) -> Response:
        try:
            loaded = _loaded(name, version)
        except UnknownServedModelError as exc:
            return _error(str(exc), 404)
        except _Unavailable as exc:
            return _error(str(exc), 503)
        return _json({"name": loaded.name, "version": str(loaded.number), "ready": True})

    async def _infer(name: str, version: str | None, request: Request) -> Response:
        received = time.time()
        limit = front.max_request_bytes
        try:
            raw = await _read_body(request, limit)
        except _TooLarge:
            return _error(f"request body is larger than {limit} bytes "
                          "(serving.max_request_bytes)", 413)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(f"request body is not JSON: {exc}", 422)
        if not isinstance(body, dict):
            return _error("request body: must be a JSON object with \"inputs\"", 422)
        try:
            pinned = _version(name, version)
            # The feature order of an "input" matrix comes from the model being served. A held
            # model is a dict lookup; only a first request for it loads it, off the loop.
            loaded = holder.peek(name, pinned)
            if loaded is None:
                loaded = await asyncio.to_thread(holder.get, name, pinned)
            rows, entities = parse_inputs(body, loaded.model.feature_names)
            wanted = _wanted_outputs(body)
        except UnknownServedModelError as exc:
            return _error(str(exc), 404)
        except InferRequestError as exc:
            return _error(str(exc), 422)
        except RefluentError as exc:
            return _error(str(exc), 503)
        if len(rows) > front.max_request_rows:
            return _error(f"inputs: {len(rows)} rows, more than {front.max_request_rows} "
                          "(serving.max_request_rows)", 413)
        rid = body.get("id")
        if rid is not None and (not isinstance(rid, str) or not rid):
            return _error(f"id: {rid!r} is not a non-empty string", 422)
        base = rid or uuid.uuid4().hex
        requests = [
            ScoreRequest(base if len(rows) == 1 else f"{base}:{r}", name, entities[r], row,
                         None, received, pinned)
            for r, row in enumerate(rows)
        ]
        front.start()  # no-op once started (by the app's lifespan, normally)
        try:
            outcomes = await asyncio.wrap_future(front.batcher.submit(requests))
        except OnlineStoreError as exc:
            return _error(str(exc), 503)
        except Exception as exc:  # noqa: BLE001 - logged; the client gets an error id only
            return _internal(exc, f"scoring {name}")
        failures = [(r, o) for r, o in enumerate(outcomes) if isinstance(o, RecordRejected)]
        if failures:
            row, first = failures[0]
            status = _rejection_status(first)
            where = f"row {row}: " if len(rows) > 1 else ""
            more = f" (and {len(failures) - 1} more row(s))" if len(failures) > 1 else ""
            return _error(f"{where}{first}{more}", status)
        predictions = [o for o in outcomes if isinstance(o, Prediction)]
        if front.publisher is not None:
            front.publisher.publish(predictions)
        hist = m.REQUEST_SECONDS.labels(name, "http")
        elapsed = time.time() - received
        for _ in predictions:
            hist.observe(elapsed)
        return _json(infer_response(name, loaded.model.task, rid, predictions, wanted))

    @app.get("/v2/models/{name}")
    def model_meta(name: str) -> Response:
        return _metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    def model_version_meta(name: str, version: str) -> Response:
        return _metadata(name, version)

    @app.get("/v2/models/{name}/ready")
    def model_ready(name: str) -> Response:
        return _ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    def model_version_ready(name: str, version: str) -> Response:
        return _ready(name, version)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        return await _infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(name, version, request)

    return app


class _Unavailable(RefluentError):
    """The registry could not be read."""


def _wanted_outputs(body: dict[str, Any]) -> list[str] | None:
    raw = body.get("outputs")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InferRequestError("outputs", "must be a list of {\"name\": ...}")
    names = []
    for i, o in enumerate(raw):
        name = o.get("name") if isinstance(o, dict) else None
        if name not in OUTPUTS:
            raise InferRequestError(f"outputs[{i}]", f"{name!r} is not one of "
                                                     f"{', '.join(OUTPUTS)}")
        names.append(name)
    return names


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("refluent")
    except PackageNotFoundError:
        return "0+unknown"
