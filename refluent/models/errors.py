"""Errors of model kinds: building, loading, scoring and teaching a model."""

from __future__ import annotations

from refluent.errors import RefluentError


class ModelError(RefluentError):
    """A model could not be built, loaded, asked for a prediction or taught."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"model {model}: {detail}")


class ModelInputError(ModelError):
    """A feature the model needs is missing or has a value the model cannot take."""

    def __init__(self, model: str, feature: str, problem: str) -> None:
        self.feature = feature
        self.problem = problem
        super().__init__(model, f"feature {feature!r} {problem}")


class ModelCannotLearnError(ModelError):
    """``learn_one`` was called on a model that only predicts (an exported ONNX graph)."""

    def __init__(self, model: str, kind: str) -> None:
        self.kind = kind
        super().__init__(model, f"a {kind} model cannot learn online; retrain it with a batch "
                                "job and register the new version")


class ModelLoadError(ModelError):
    """An artifact or its metadata does not describe a model of the stated kind."""

    def __init__(self, model: str, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(model, f"cannot load the {kind} artifact: {detail}")


class UnknownModelKindError(ModelError):
    """A model kind is neither a built-in kind nor the dotted path of a model class."""

    def __init__(self, kind: str, known: tuple[str, ...], detail: str | None = None) -> None:
        self.kind = kind
        self.known = known
        message = (f"is not one of {', '.join(known)} (nor the dotted path of a ServableModel "
                   "class)")
        if detail:
            message += f": {detail}"
        RefluentError.__init__(self, f"model kind {kind!r} {message}")
        self.model = kind
        self.detail = message
