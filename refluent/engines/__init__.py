"""Engines run the feature views: the interface and shared core (:mod:`refluent.engines.base`),
Faust (:mod:`refluent.engines.faust`) and the in-memory engine (:mod:`refluent.engines.memory`).
"""
