"""The networks a DP retrain trains: the default tabular MLP, or a user's own factory.

What is trained is the network alone, so Opacus clips per-example gradients of its layers only;
what is exported is :class:`Servable`: the input scaling, the network, and a softmax for a
classifier, so the ONNX graph takes the served features as they are and answers with class
probabilities.

The input scaling (:class:`FeatureScaling`) spends no privacy, since it uses no statistic of the
private rows: a feature with a declared centre and scale (``retrain.feature_scales``: public
knowledge of its range, such as a schema's) is standardised with them; any other goes through
``retrain.input_transform``: ``symlog`` (``sign(x) * log1p(|x|)``, which brings counts, amounts
and durations to a few units whatever their scale) or nothing. Declared scales train best:
DP-SGD has few, noisy steps to learn an offset with.

Examples:
    >>> import torch
    >>> net = tabular_mlp(3, 2, hidden=(8,))
    >>> scaling = FeatureScaling(("a", "b", "c"), {"b": (100.0, 20.0)}, "symlog")
    >>> scaling(torch.tensor([[0.0, 120.0, 9.0]])).tolist()
    [[0.0, 1.0, 2.3025851249694824]]
    >>> Servable(net, "classification", scaling)(torch.zeros(4, 3)).shape
    torch.Size([4, 2])
    >>> [round(v, 3) for v in symlog(torch.tensor([-9.0, 0.0, 99.0])).tolist()]
    [-2.303, 0.0, 4.605]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refluent.jobs.errors import JobError
from refluent.plugins import ClassPathError, load_callable


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log1p(|x|)``: the default input transform."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def tabular_mlp(n_inputs: int, n_outputs: int, hidden: Sequence[int] = (64, 32)) -> nn.Module:
    """Linear layers with ReLU between them (every layer one Opacus can ghost-clip)."""
    layers: list[nn.Module] = []
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def build_network(n_inputs: int, n_outputs: int, *, hidden: Sequence[int] = (64, 32),
                  factory: str | None = None) -> nn.Module:
    """The network to train: ``factory(n_inputs=..., n_outputs=...)`` when a factory's import
    path is given, else :func:`tabular_mlp`.

    Raises:
        JobError: the factory cannot be imported or does not return a ``torch.nn.Module``.
    """
    if factory is None:
        return tabular_mlp(n_inputs, n_outputs, hidden)
    try:
        make = load_callable(factory)
    except ClassPathError as exc:
        raise JobError(f"retrain.module_factory: {exc}") from exc
    net = make(n_inputs=n_inputs, n_outputs=n_outputs)
    if not isinstance(net, nn.Module):
        raise JobError(f"retrain.module_factory: {factory} returned "
                       f"{type(net).__name__}, not a torch.nn.Module")
    return net


class FeatureScaling(nn.Module):
    """Per feature: ``(x - centre) / scale`` for a declared one, else ``transform``.

    Args:
        features: The inputs in order.
        scales: Feature -> (centre, scale) declared public.
        transform: ``symlog`` or ``none``, for the features without a declared scale.

    Raises:
        JobError: a scale that is not positive, or a scale declared for no input.
    """

    def __init__(self, features: Sequence[str], scales: Mapping[str, Sequence[float]],
                 transform: str = "symlog") -> None:
        super().__init__()
        unknown = sorted(set(scales) - set(features))
        if unknown:
            raise JobError(f"retrain.feature_scales: {', '.join(unknown)} not among the "
                           f"model's features ({', '.join(features)})")
        centre, scale, log = [], [], []
        for f in features:
            c, s = scales.get(f, (0.0, 1.0))
            if not s > 0:
                raise JobError(f"retrain.feature_scales: the scale of {f!r} is {s}; it must "
                               "be positive")
            centre.append(float(c))
            scale.append(float(s))
            log.append(f not in scales and transform == "symlog")
        self.centre: torch.Tensor
        self.scale: torch.Tensor
        self.log: torch.Tensor
        self.register_buffer("centre", torch.tensor(centre))
        self.register_buffer("scale", torch.tensor(scale))
        self.register_buffer("log", torch.tensor(log))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.centre) / self.scale
        return torch.where(self.log, symlog(z), z)


class Servable(nn.Module):
    """What is exported: input scaling, the trained network, softmax for a classifier.

    Args:
        net: The trained network (logits, or the value of a regression).
        task: ``classification`` or ``regression``.
        inputs: The input scaling the network was trained behind.
    """

    def __init__(self, net: nn.Module, task: str, inputs: nn.Module) -> None:
        super().__init__()
        self.net, self.task, self.inputs = net, task, inputs

    def forward(self, x: torch.Tensor) -> Any:
        out = self.net(self.inputs(x))
        return torch.softmax(out, dim=1) if self.task == "classification" else out


@dataclass(frozen=True)
class NetworkSpec:
    """What rebuilds an exported network for more training: the architecture, not the weights
    (those are the graph's initializers). It travels in the graph's metadata
    (:data:`~refluent.models.onnx.META_NETWORK`) as :meth:`to_json`.

    Examples:
        >>> spec = NetworkSpec(3, 2, hidden=(8,))
        >>> NetworkSpec.from_json(spec.to_json()) == spec
        True
        >>> spec.servable(("a", "b", "c"), "classification").net
        Sequential(
          (0): Linear(in_features=3, out_features=8, bias=True)
          (1): ReLU()
          (2): Linear(in_features=8, out_features=2, bias=True)
        )
    """

    n_inputs: int
    n_outputs: int
    hidden: tuple[int, ...] = (64, 32)
    factory: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"n_inputs": self.n_inputs, "n_outputs": self.n_outputs,
                "hidden": list(self.hidden), "factory": self.factory}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> NetworkSpec:
        """The spec :meth:`to_json` wrote.

        Raises:
            JobError: a field is missing or of the wrong type.
        """
        try:
            factory = value.get("factory")
            return cls(int(value["n_inputs"]), int(value["n_outputs"]),
                       tuple(int(h) for h in value.get("hidden", ())),
                       None if factory is None else str(factory))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JobError(f"network spec {value!r} cannot be read: {exc}") from exc

    def servable(self, features: Sequence[str], task: str) -> Servable:
        """A fresh :class:`Servable` of this architecture (weights and scaling to be loaded)."""
        net = build_network(self.n_inputs, self.n_outputs, hidden=self.hidden,
                            factory=self.factory)
        return Servable(net, task, FeatureScaling(features, {}, "none"))


__all__ = ["FeatureScaling", "NetworkSpec", "Servable", "build_network", "symlog",
           "tabular_mlp"]
