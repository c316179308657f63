"""Classes by dotted path: the one loader engines, sinks and model kinds share."""

from __future__ import annotations

import pytest

from refluent.plugins import ClassPathError, load_class

pytestmark = pytest.mark.unit


class Base:
    pass


class Child(Base):
    pass


NOT_A_CLASS = object()


@pytest.mark.parametrize("path", [f"{__name__}:Child", f"{__name__}.Child"])
def test_load_class__both_spellings(path: str) -> None:
    assert load_class(path, Base) is Child


@pytest.mark.parametrize(("path", "says"), [
    ("Child", "'Child' is not a dotted path such as package.module:name"),
    ("no_such_module:Child", "cannot import no_such_module: No module named 'no_such_module'"),
    (f"{__name__}:Missing", f"{__name__}.Missing is nothing, not a subclass of {__name__}.Child"),
    (f"{__name__}:NOT_A_CLASS", "is <object object at"),
    (f"{__name__}:Base", f"is <class '{__name__}.Base'>, not a subclass of {__name__}.Child"),
])
def test_load_class__says_why_a_path_names_no_subclass(path: str, says: str) -> None:
    with pytest.raises(ClassPathError) as caught:
        load_class(path, Child)
    assert says in str(caught.value)
