"""Pure feature logic: CDC semantics, windows, aggregations, view declarations and the runtime
every engine (:mod:`refluent.engines`) runs them with.
"""
