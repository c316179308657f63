"""Refluent: event-driven streaming MLOps.

Applications produce CDC and log events to Kafka; Refluent turns them into features, lake tables,
predictions and labelled examples. ``import refluent`` stays light: backends import their SDKs
lazily.
"""

from __future__ import annotations

from refluent.errors import RefluentError

__version__ = "0.1.0"

__all__ = ["RefluentError", "__version__"]
