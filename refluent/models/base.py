"""One scoring interface over River online learners and exported ONNX graphs.

A :class:`ServableModel` takes one feature mapping (or a batch of them) and answers with a
:class:`Scored`: the regression value, or the predicted class with the class probabilities and
the probability of the positive class as ``score``. River models also learn one example at a
time; ONNX models only predict. Neither ever mutates the features it is given.

Every model serialises to bytes (:meth:`ServableModel.to_bytes`) and, with the metadata from
:meth:`ServableModel.metadata`, is rebuilt by its class's :meth:`ServableModel.from_bytes`
(:func:`refluent.models.kinds.load_model` finds the class from the kind name); the model
registry stores both.

What differs between kinds is said by class attributes, never by testing the kind's name:
``numeric_inputs`` (every input must be a number), ``artifact_extension``, ``platform``.

Examples:
    >>> from refluent.examples.models import river_regressor
    >>> model = river_regressor()
    >>> model.learn_one({"x1": 1.0, "x2": 0.0}, 2.0)
    >>> copy = type(model).from_bytes(model.to_bytes(), model.metadata())
    >>> copy.predict_one({"x1": 1.0, "x2": 0.0}) == model.predict_one({"x1": 1.0, "x2": 0.0})
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from refluent.models.errors import ModelError, ModelInputError, ModelLoadError
from refluent.streams.contracts import FeatureValue

Task = Literal["classification", "regression"]
"""What a model predicts: a class with its probabilities, or a number."""
ModelKind = str
"""The runtime a model's artifact is for: a kind name (``"river"``, ``"onnx"``) or the dotted
path of a user's own :class:`ServableModel` class (see :mod:`refluent.models.kinds`)."""
Label = str | int | bool
"""A class label."""

TASKS: tuple[Task, ...] = ("classification", "regression")

_POSITIVE_TEXT = ("true", "1", "yes", "positive", "pos")


@dataclass(frozen=True, slots=True)
class Scored:
    """A model's answer for one row.

    Attributes:
        score: The regression value; for a classifier the probability of the positive class
            (binary) or of the predicted class (more than two classes). None when an
            untrained classifier knows no class yet.
        label: The predicted class (classification), else None.
        probabilities: Class (as text) -> probability (classification), else None.
    """

    score: float | None
    label: Label | None
    probabilities: dict[str, float] | None


def positive_class(classes: Sequence[Any]) -> Any | None:
    """The positive class of a binary classifier: ``True``, ``1``, a text such as ``"yes"`` or
    ``"positive"``, else the second class in sorted order (scikit-learn's ``classes_[1]``).
    None unless there are exactly two classes.

    Examples:
        >>> positive_class([False, True]), positive_class(["spam", "ham"]), positive_class([0, 1])
        (True, 'spam', 1)
        >>> positive_class(["a", "b", "c"]) is None
        True
    """
    if len(classes) != 2:
        return None
    for cls in classes:
        if cls is True or (isinstance(cls, int) and not isinstance(cls, bool) and cls == 1):
            return cls
    for cls in classes:
        if isinstance(cls, str) and cls.strip().lower() in _POSITIVE_TEXT:
            return cls
    return sorted(classes, key=str)[1]


def scored_from_probabilities(proba: Mapping[Any, float],
                              classes: Sequence[Any] | None = None) -> Scored:
    """A classifier's :class:`Scored` from its class -> probability mapping.

    The label is the most probable class (the first one in ``proba``'s order on a tie, as
    River's ``predict_one``); ``classes`` fixes which classes count when telling the positive
    one (default: the keys of ``proba``).

    Examples:
        >>> scored_from_probabilities({False: 0.25, True: 0.75})
        Scored(score=0.75, label=True, probabilities={'False': 0.25, 'True': 0.75})
        >>> scored_from_probabilities({})
        Scored(score=None, label=None, probabilities={})
    """
    if not proba:
        return Scored(None, None, {})
    if classes is None and len(proba) == 2 and False in proba and True in proba \
            and all(type(c) is bool for c in proba):
        # The common binary case (River's classifiers answer {False: p, True: q}).
        no, yes = float(proba[False]), float(proba[True])
        first = next(iter(proba))
        label = first if proba[first] >= proba[not first] else not first
        return Scored(yes, label, {"False": no, "True": yes} if first is False
                      else {"True": yes, "False": no})
    probabilities = {str(cls): float(p) for cls, p in proba.items()}
    label = max(proba, key=lambda c: proba[c])
    known = list(classes) if classes is not None else list(proba)
    positive = positive_class(known)
    if positive is not None:
        score = float(proba.get(positive, 0.0))
    else:
        score = float(proba[label])
    return Scored(score, plain_label(label), probabilities)


def plain_label(label: Any) -> Label:
    """A numpy scalar or other label as a plain ``str``, ``int`` or ``bool``."""
    if isinstance(label, bool | int | str):
        return label
    item = getattr(label, "item", None)
    if callable(item):
        value = item()
        if isinstance(value, bool | int | str):
            return value
        if isinstance(value, bytes):
            return value.decode()
    if isinstance(label, bytes):
        return label.decode()
    return str(label)


def numeric_value(model: str, feature: str, value: Any) -> float:
    """``value`` as a float for a model that takes numbers; booleans count as 0 and 1.

    Raises:
        ModelInputError: the value is missing (None) or not a number.

    Examples:
        >>> numeric_value("m", "age", 41), numeric_value("m", "vip", True)
        (41.0, 1.0)
        >>> numeric_value("m", "age", "41")
        Traceback (most recent call last):
        ...
        refluent.models.errors.ModelInputError: model m: feature 'age' is '41' (str), not a number
    """
    if isinstance(value, bool | int | float) and not isinstance(value, complex):
        return float(value)
    if value is None:
        raise ModelInputError(model, feature, "is null")
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        inner = item()
        if isinstance(inner, bool | int | float):
            return float(inner)
    raise ModelInputError(model, feature, f"is {value!r} ({type(value).__name__}), not a number")


class ServableModel(ABC):
    """A model the prediction service can score with, and an online learner can teach.

    Attributes:
        kind: The runtime (``"river"``, ``"onnx"``, or the dotted path of a user's class).
        numeric_inputs: True when every input must be a number (the scorer checks the row
            before scoring, so a bad value is rejected naming the feature).
        artifact_extension: File extension of the artifact the registry writes.
        platform: The runtime as the Open Inference Protocol's model metadata names it.
        input_datatype: The protocol datatype of the model's inputs.
        task: ``"classification"`` or ``"regression"``.
        feature_names: The inputs in order. An ONNX model takes exactly these; a River model
            is given only these when there are some, and any features when empty.
        can_learn: True when :meth:`learn_one` updates the model (River).
        onnx_graph: True when :meth:`to_bytes` is an ONNX graph (one a DP retrain exported
            with its architecture can be fine-tuned by DP updates).
        name: How errors name the model (the registry sets ``name@vN``).

    Implementations never mutate the feature mappings they are given and do no I/O.
    """

    kind: ClassVar[ModelKind]
    numeric_inputs: ClassVar[bool] = False
    artifact_extension: ClassVar[str] = "bin"
    platform: ClassVar[str] = "python"
    input_datatype: ClassVar[str] = "FP64"
    onnx_graph: ClassVar[bool] = False
    task: Task
    feature_names: tuple[str, ...]
    can_learn: bool
    name: str

    @abstractmethod
    def predict_one(self, x: Mapping[str, FeatureValue]) -> Scored:
        """Score one row.

        Raises:
            ModelInputError: a feature is missing or cannot be taken by the model.
        """

    def predict_many(self, xs: Sequence[Mapping[str, FeatureValue]]) -> list[Scored]:
        """Score rows; the answer for each row equals :meth:`predict_one`'s. Backends override
        this with one batched call where their runtime supports it.

        Raises:
            ModelInputError: a feature of some row is missing or cannot be taken by the model.
        """
        return [self.predict_one(x) for x in xs]

    @abstractmethod
    def learn_one(self, x: Mapping[str, FeatureValue], y: float | int | bool | str) -> None:
        """Update the model with one labelled example.

        Raises:
            ModelCannotLearnError: the model only predicts.
            ModelInputError: a feature is missing or cannot be taken by the model.
        """

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The artifact: everything :meth:`from_bytes` needs besides :meth:`metadata`."""

    @classmethod
    def from_bytes(cls, data: bytes, meta: Mapping[str, Any]) -> ServableModel:
        """Rebuild a model from :meth:`to_bytes`'s artifact and :meth:`metadata`.

        Raises:
            ModelLoadError: the bytes are not a model of this kind (and always, for a class
                that does not override this: it cannot be stored in the registry).
        """
        name = str(meta.get("name") or cls.__name__)
        raise ModelLoadError(name, str(getattr(cls, "kind", cls.__name__)),
                             f"{cls.__name__} does not implement from_bytes")

    @abstractmethod
    def clone(self) -> ServableModel:
        """An independent copy with the same learned state."""

    def metadata(self) -> dict[str, Any]:
        """JSON-able facts :meth:`from_bytes` needs beside the artifact."""
        return {"task": self.task, "feature_names": list(self.feature_names)}

    def check_features(self, x: Mapping[str, FeatureValue]) -> None:
        """Raise :class:`ModelInputError` naming the first declared feature ``x`` lacks."""
        for feature in self.feature_names:
            if feature not in x:
                raise ModelInputError(self.name, feature, "is missing")

    def __repr__(self) -> str:
        features = ", ".join(self.feature_names) or "any"
        return f"{type(self).__name__}({self.name!r}, {self.task}, features: {features})"


def check_task(model: str, task: Any) -> Task:
    """``task`` if it is one of :data:`TASKS`.

    Raises:
        ModelError: any other value.
    """
    if task not in TASKS:
        raise ModelError(model, f"task {task!r} is not one of {', '.join(TASKS)}")
    return task


def feature_tuple(model: str, names: Iterable[Any] | None) -> tuple[str, ...]:
    """Feature names as a tuple of distinct non-empty strings.

    Raises:
        ModelError: a name is empty, not text, or repeated.
    """
    out: list[str] = []
    for name in names or ():
        if not isinstance(name, str) or not name:
            raise ModelError(model, f"feature name {name!r} is not a non-empty string")
        if name in out:
            raise ModelError(model, f"feature {name!r} is declared twice")
        out.append(name)
    return tuple(out)

