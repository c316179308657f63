"""Serving: online feature reads, model scoring and the prediction endpoint."""
