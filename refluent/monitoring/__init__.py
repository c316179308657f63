"""Monitors: concept drift on the error stream, data drift on features and scores."""
