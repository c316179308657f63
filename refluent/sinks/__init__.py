"""Sinks: the pipeline that moves topics into the lake and the online store, one sink per
backend (:mod:`refluent.sinks.iceberg`, :mod:`refluent.sinks.redis`), found by URL scheme.
"""
