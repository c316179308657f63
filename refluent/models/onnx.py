"""Exported ONNX graphs behind the :class:`~refluent.models.base.ServableModel` interface.

:class:`OnnxModel` runs a graph with onnxruntime, on the CUDA execution provider when the
installed onnxruntime has it (``onnxruntime-gpu`` on a machine with a GPU) and on the CPU
otherwise. The graph takes one input, a ``[batch, features]`` float matrix; the row mapping is
turned into it in ``feature_names`` order, so a missing or non-numeric feature is an error that
names the feature and the model. Booleans count as 0 and 1.

Outputs understood:

- regression: a float tensor ``[batch]`` or ``[batch, 1]``;
- classification: a probability tensor ``[batch, classes]`` (or ``[batch, 1]``, the
  probability of the positive class), or the scikit-learn converter's ``ZipMap`` output (a
  sequence of class -> probability maps), with or without a label tensor beside it. The label
  tensor, when there is one, gives the predicted class; otherwise the most probable class does.

What the graph cannot say itself travels as metadata: the task, the feature names and the
classes, read from the graph's ``metadata_props`` (``refluent.task``,
``refluent.feature_names``, ``refluent.classes``, JSON values) and overridden by the arguments
(the registry passes what it recorded). The model only predicts: ``learn_one`` raises
:class:`~refluent.models.errors.ModelCannotLearnError`; a new version comes from retraining.

Examples:
    >>> from refluent.examples.models import onnx_mlp_regressor
    >>> model = OnnxModel(onnx_mlp_regressor(("a", "b")).data)
    >>> model.task, model.feature_names, model.can_learn
    ('regression', ('a', 'b'), False)
    >>> model.predict_one({"a": 1.0})
    Traceback (most recent call last):
    ...
    refluent.models.errors.ModelInputError: model onnx: feature 'b' is missing
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from refluent.errors import require
from refluent.models.base import (
    ModelKind,
    Scored,
    ServableModel,
    Task,
    check_task,
    feature_tuple,
    numeric_value,
    plain_label,
    positive_class,
    scored_from_probabilities,
)
from refluent.models.errors import (
    ModelCannotLearnError,
    ModelError,
    ModelInputError,
    ModelLoadError,
)
from refluent.streams.contracts import FeatureValue

META_TASK = "refluent.task"
"""metadata_props key of the task."""
META_FEATURES = "refluent.feature_names"
"""metadata_props key of the feature names (a JSON list)."""
META_CLASSES = "refluent.classes"
"""metadata_props key of the classes in output order (a JSON list)."""
META_NETWORK = "refluent.network"
"""metadata_props key of the trained network's architecture (a JSON object, written by a DP
retrain): with it the graph's weights can be trained further (incremental DP updates)."""

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_FLOATS = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}
_LABELS = ("tensor(int64)", "tensor(int32)", "tensor(string)", "tensor(bool)")
_NUMBERS = frozenset((float, int))


def default_providers() -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when the installed onnxruntime
    offers CUDA, else ``["CPUExecutionProvider"]``."""
    ort = require("onnxruntime", "onnx")
    available = ort.get_available_providers()  # type: ignore[attr-defined]
    return [CUDA, CPU] if CUDA in available else [CPU]


def _json_list(name: str, key: str, raw: str) -> list[Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ModelLoadError(name, "onnx", f"metadata {key} is not JSON: {exc}") from exc
    if not isinstance(value, list):
        raise ModelLoadError(name, "onnx", f"metadata {key} is not a JSON list")
    return value


class OnnxModel(ServableModel):
    """An ONNX graph scored with onnxruntime (see the module docstring for what it accepts).

    Args:
        data: The serialised graph.
        feature_names: The graph's inputs in column order (default: ``refluent.feature_names``
            in the graph's metadata).
        task: ``"classification"`` or ``"regression"`` (default: the metadata, else read off
            the outputs).
        classes: Classes in output order (default: the metadata, the ZipMap's keys, else
            0, 1, ...).
        name: How errors name the model.
        providers: onnxruntime execution providers (default: :func:`default_providers`).
        intra_op_threads: Threads onnxruntime uses inside one operator (default: its own
            choice, one per core).

    Raises:
        ModelLoadError: the bytes are not a graph onnxruntime can run, or its inputs, outputs
            or metadata do not fit the interface.

    Thread safety: :meth:`predict_one` and :meth:`predict_many` may be called from several
    threads at once (onnxruntime sessions are thread safe); clones share the session.
    """

    kind: ClassVar[ModelKind] = "onnx"
    numeric_inputs: ClassVar[bool] = True
    artifact_extension: ClassVar[str] = "onnx"
    platform: ClassVar[str] = "onnxruntime_onnx"
    input_datatype: ClassVar[str] = "FP32"
    onnx_graph: ClassVar[bool] = True

    def __init__(self, data: bytes, *, feature_names: Sequence[str] | None = None,
                 task: Task | None = None, classes: Sequence[Any] | None = None,
                 name: str | None = None, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        self.name = name or "onnx"
        self.can_learn = False
        self._data = bytes(data)
        self._np: Any = require("numpy", "onnx")
        self.session = self._session(providers, intra_op_threads)
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self._plan_input(feature_names, props)
        self._plan_outputs(task, classes, props)
        self._plans: dict[int, tuple[tuple[Any, ...], tuple[str, ...], int | None]] = {}
        names = self.feature_names
        self._getter: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            operator.itemgetter(*names) if len(names) > 1 else lambda x: (x[names[0]],))

    @classmethod
    def from_bytes(cls, data: bytes, meta: Mapping[str, Any]) -> OnnxModel:
        """:meth:`ServableModel.from_bytes` for ONNX: ``meta`` may hold
        ``feature_names``, ``task``, ``classes`` and ``name``."""
        return cls(data, feature_names=meta.get("feature_names") or None,
                   task=meta.get("task"), classes=meta.get("classes") or None,
                   name=meta.get("name"))

    # -- set-up --------------------------------------------------------------------------------
    def _session(self, providers: Sequence[str] | None, threads: int | None) -> Any:
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()  # type: ignore[attr-defined]
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(  # type: ignore[attr-defined]
                self._data, options, providers=list(providers or default_providers()))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(self.name, "onnx", f"{type(exc).__name__}: {exc}") from exc

    def _plan_input(self, feature_names: Sequence[str] | None, props: dict[str, str]) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(self.name, "onnx", f"the graph has {len(inputs)} inputs "
                                 f"({', '.join(i.name for i in inputs)}); one [batch, features] "
                                 "matrix is expected")
        spec = inputs[0]
        if spec.type not in _FLOATS or len(spec.shape) != 2:
            raise ModelLoadError(self.name, "onnx", f"input {spec.name!r} is {spec.type} of "
                                 f"shape {spec.shape}; a [batch, features] float matrix is "
                                 "expected")
        self._input_name = spec.name
        self._dtype = getattr(self._np, _FLOATS[spec.type])
        if feature_names is None and META_FEATURES in props:
            feature_names = _json_list(self.name, META_FEATURES, props[META_FEATURES])
        if not feature_names:
            raise ModelLoadError(self.name, "onnx", "the feature names are unknown: the graph "
                                 f"has no {META_FEATURES} metadata; give them (--features)")
        self.feature_names = feature_tuple(self.name, feature_names)
        width = spec.shape[1]
        if isinstance(width, int) and width != len(self.feature_names):
            raise ModelLoadError(self.name, "onnx", f"input {spec.name!r} takes {width} "
                                 f"features but {len(self.feature_names)} names were given")

    def _plan_outputs(self, task: Task | None, classes: Sequence[Any] | None,
                      props: dict[str, str]) -> None:
        outputs = self.session.get_outputs()
        seqmap = [o for o in outputs if o.type.startswith("seq(map(")]
        labels = [o for o in outputs if o.type in _LABELS]
        floats = [o for o in outputs if o.type in _FLOATS]
        if task is None and META_TASK in props:
            task = props[META_TASK]  # type: ignore[assignment]
        if task is None:
            task = self._infer_task(seqmap, labels, floats)
        self.task = check_task(self.name, task)
        if classes is None and META_CLASSES in props:
            classes = _json_list(self.name, META_CLASSES, props[META_CLASSES])
        self.classes: tuple[Any, ...] = tuple(classes or ())
        self._label_output: str | None = None
        self._zipmap = False
        if self.task == "regression":
            if not floats:
                raise ModelLoadError(self.name, "onnx", "a regressor needs a float tensor "
                                     f"output; the graph has {self._describe(outputs)}")
            self._outputs = [floats[0].name]
            return
        if seqmap:
            self._zipmap = True
            prob = seqmap[0].name
        elif floats:
            prob = floats[0].name
        else:
            raise ModelLoadError(self.name, "onnx", "a classifier needs a probability output "
                                 f"(tensor or ZipMap); the graph has {self._describe(outputs)}")
        self._outputs = [prob]
        if labels:
            self._label_output = labels[0].name
            self._outputs.append(labels[0].name)

    def _infer_task(self, seqmap: list[Any], labels: list[Any], floats: list[Any]) -> Task:
        if seqmap or labels:
            return "classification"
        if floats:
            shape = floats[0].shape
            width = shape[-1] if len(shape) > 1 else 1
            if width == 1:
                return "regression"
            if isinstance(width, int):
                return "classification"
        raise ModelLoadError(self.name, "onnx", "cannot tell the task from the outputs; give "
                             f"it (--task) or set {META_TASK} in the graph's metadata")

    @staticmethod
    def _describe(outputs: Sequence[Any]) -> str:
        return ", ".join(f"{o.name}: {o.type}" for o in outputs) or "no outputs"

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, best first."""
        return list(self.session.get_providers())

    def metadata(self) -> dict[str, Any]:
        """Task, feature names and classes (see :func:`~refluent.models.kinds.load_model`)."""
        meta = super().metadata()
        if self.task == "classification" and self.classes:
            meta["classes"] = [plain_label(c) for c in self.classes]
        return meta

    # -- scoring -------------------------------------------------------------------------------
    def _matrix(self, xs: Sequence[Mapping[str, FeatureValue]]) -> Any:
        np, shape, get = self._np, (len(xs), len(self.feature_names)), self._getter
        if len(xs) == 1:  # the per-request path: a type check beats numpy's inference
            try:
                row = get(xs[0])
            except KeyError:
                row = None
            if row is not None and _NUMBERS.issuperset(map(type, row)):
                return np.array((row,), dtype=self._dtype)
        try:
            # No dtype: text, None or a list makes a non-numeric (or ragged) array instead of
            # being converted silently, and sends the batch to the checking path.
            array = np.array([get(x) for x in xs])
        except (KeyError, ValueError, TypeError):
            array = None
        if array is None or array.dtype.kind not in "fiub" or array.shape != shape:
            # Names the bad feature, or converts what numpy could not (numpy scalars).
            array = np.array([self._checked_row(x) for x in xs]).reshape(shape)
        return array.astype(self._dtype, copy=False)

    def _checked_row(self, x: Mapping[str, FeatureValue]) -> list[float]:
        row: list[float] = []
        for f in self.feature_names:
            try:
                v = x[f]
            except KeyError:
                raise ModelInputError(self.name, f, "is missing") from None
            row.append(v if type(v) is float else numeric_value(self.name, f, v))
        return row

    def _run(self, matrix: Any) -> list[Any]:
        try:
            return list(self.session.run(self._outputs, {self._input_name: matrix}))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(self.name, f"inference failed: {type(exc).__name__}: {exc}") from exc

    def _decode(self, outputs: list[Any], n: int) -> list[Scored]:
        if self.task == "regression":
            values = outputs[0].reshape(n, -1)[:, 0].tolist()
            return [Scored(float(v), None, None) for v in values]
        labels = outputs[1].tolist() if self._label_output is not None else None
        if not self._zipmap:
            return self._decode_tensor(outputs[0].reshape(n, -1), labels)
        rows = [{plain_label(k): float(p) for k, p in row.items()} for row in outputs[0]]
        if self.classes:  # the declared class order, not the map's
            rows = [{c: r[c] for c in self.classes if c in r} | r for r in rows]
        known = self.classes or (tuple(rows[0]) if rows else ())
        out = []
        for i, proba in enumerate(rows):
            scored = scored_from_probabilities(proba, known)
            if labels is not None:
                scored = Scored(scored.score, plain_label(labels[i]), scored.probabilities)
            out.append(scored)
        return out

    def _tensor_plan(self, width: int) -> tuple[tuple[Any, ...], tuple[str, ...], int | None]:
        """Classes, their keys and the positive class's column for a probability tensor
        ``width`` wide (worked out once per width)."""
        plan = self._plans.get(width)
        if plan is None:
            if width == 1:  # one column: the probability of the positive class
                classes = self.classes or (0, 1)
                if len(classes) != 2:
                    raise ModelError(self.name, "one probability column needs two classes, "
                                                f"not {list(classes)}")
            else:
                classes = self.classes or tuple(range(width))
                if len(classes) != width:
                    raise ModelError(self.name, f"the graph gives {width} probabilities but "
                                     f"{len(classes)} classes are declared ({list(classes)})")
            plain = tuple(plain_label(c) for c in classes)
            positive = positive_class(plain)
            column = next((i for i, c in enumerate(plain) if c is positive), None)
            plan = (plain, tuple(str(c) for c in plain), column)
            self._plans[width] = plan
        return plan

    def _decode_tensor(self, probs: Any, labels: list[Any] | None) -> list[Scored]:
        classes, keys, positive = self._tensor_plan(probs.shape[1])
        if probs.shape[1] == 1:
            probs = self._np.concatenate([1.0 - probs, probs], axis=1)
        best = probs.argmax(axis=1).tolist()  # the first of equal maxima, as max() would
        out = []
        for i, row in enumerate(probs.tolist()):
            b = best[i]
            label = plain_label(labels[i]) if labels is not None else classes[b]
            score = row[positive] if positive is not None else row[b]
            out.append(Scored(score, label, dict(zip(keys, row, strict=True))))
        return out

    def predict_one(self, x: Mapping[str, FeatureValue]) -> Scored:
        """Score one row (see :meth:`ServableModel.predict_one`)."""
        return self._decode(self._run(self._matrix((x,))), 1)[0]

    def predict_many(self, xs: Sequence[Mapping[str, FeatureValue]]) -> list[Scored]:
        """Score rows with one session call for the whole batch."""
        if not xs:
            return []
        return self._decode(self._run(self._matrix(xs)), len(xs))

    # -- learning, state -----------------------------------------------------------------------
    def learn_one(self, x: Mapping[str, FeatureValue], y: float | int | bool | str) -> None:
        """Always raises :class:`ModelCannotLearnError`: an ONNX graph only predicts."""
        raise ModelCannotLearnError(self.name, self.kind)

    def to_bytes(self) -> bytes:
        """The serialised graph, as given."""
        return self._data

    def clone(self) -> OnnxModel:
        """A copy sharing the (immutable, thread-safe) session."""
        other = object.__new__(OnnxModel)
        other.__dict__.update(self.__dict__)
        return other
