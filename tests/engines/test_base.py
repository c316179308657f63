"""The engine registry and the state mapping every engine shares."""

from __future__ import annotations

import pytest

from refluent.engines.base import Engine, JsonStates, engine_class
from refluent.engines.errors import UnknownEngineError
from refluent.engines.faust import FaustEngine

pytestmark = pytest.mark.unit


class ToyEngine(Engine):
    name = "toy"

    def run(self, loglevel: str = "warn") -> None:
        raise NotImplementedError


def test_engine_class__finds_known_names_and_dotted_paths() -> None:
    assert engine_class("faust") is FaustEngine
    assert engine_class(f"{__name__}:ToyEngine") is ToyEngine
    assert engine_class(f"{__name__}.ToyEngine") is ToyEngine


@pytest.mark.parametrize(("name", "detail"), [
    ("spark", "(package.module:Class)"),
    ("no_such_module.Engine", "cannot import no_such_module: No module named"),
    ("tests.engines.test_base:Missing", "test_base.Missing is nothing, not a subclass of"),
    ("tests.engines.test_base:JsonStates", "not a subclass of refluent.engines.base.Engine"),
])
def test_engine_class__refuses_what_is_not_an_engine(name: str, detail: str) -> None:
    with pytest.raises(UnknownEngineError) as info:
        engine_class(name)
    assert f"unknown engine {name!r}" in str(info.value)
    assert "known engines are faust" in str(info.value)
    assert detail in str(info.value)


def test_json_states__reads_what_it_puts_and_copies_each_read() -> None:
    data: dict[str, bytes] = {}
    states = JsonStates(data)
    states.put({"a": {"n": 1}, "b": {"n": [1, 2]}})
    assert data == {"a": b'{"n":1}', "b": b'{"n":[1,2]}'}
    first = states.get("a")
    first["n"] = 99
    assert states.get("a") == {"n": 1}
    assert states.get("missing") == {}
    assert dict(states.items()) == {"a": {"n": 1}, "b": {"n": [1, 2]}}
