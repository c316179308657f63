"""The networks a DP retrain trains: the default tabular MLP, or a user's own factory.

What is trained is the network alone, so Opacus clips per-example gradients of its layers only;
what is exported is :class:`Servable`: the data-independent input transform, the network, and a
softmax for a classifier, so the ONNX graph takes the served features as they are and answers
with class probabilities.

The input transform spends no privacy: ``symlog`` (``sign(x) * log1p(|x|)``) brings counts,
amounts and durations to a few units whatever their scale, and uses no statistic of the rows.

Examples:
    >>> import torch
    >>> net = tabular_mlp(3, 2, hidden=(8,))
    >>> Servable(net, "classification", "symlog")(torch.zeros(4, 3)).shape
    torch.Size([4, 2])
    >>> [round(v, 3) for v in symlog(torch.tensor([-9.0, 0.0, 99.0])).tolist()]
    [-2.303, 0.0, 4.605]
"""

from __future__ import annotations

from collections.abc import Sequence
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


class Servable(nn.Module):
    """What is exported: input transform, the trained network, softmax for a classifier.

    Args:
        net: The trained network (logits, or the value of a regression).
        task: ``classification`` or ``regression``.
        transform: ``symlog`` or ``none``.
    """

    def __init__(self, net: nn.Module, task: str, transform: str) -> None:
        super().__init__()
        self.net, self.task, self.transform = net, task, transform

    def forward(self, x: torch.Tensor) -> Any:
        if self.transform == "symlog":
            x = symlog(x)
        out = self.net(x)
        return torch.softmax(out, dim=1) if self.task == "classification" else out


__all__ = ["Servable", "build_network", "symlog", "tabular_mlp"]
