"""Errors of the online feature store."""

from __future__ import annotations

from refluent.errors import RefluentError


class OnlineStoreError(RefluentError):
    """The online store could not be read or written; names the store and the view or key
    involved."""

    def __init__(self, store: str, detail: str) -> None:
        self.store = store
        self.detail = detail
        super().__init__(f"online store {store}: {detail}")


class ReservedFeatureNameError(OnlineStoreError):
    """A feature name starts with ``__``, which the store keeps for its meta fields."""

    def __init__(self, store: str, feature: str, view: str, key: str) -> None:
        self.feature = feature
        self.view = view
        self.key = key
        super().__init__(store, f"feature {feature!r} of view {view!r} (key {key}): names "
                                "starting with '__' are reserved for the store's meta fields")
