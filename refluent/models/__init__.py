"""Model kinds: one scoring interface over River online learners, ONNX graphs and a user's own
classes, and the registry of kinds that rebuilds a model from its artifact.

See :mod:`refluent.models.base` (the interface) and :mod:`refluent.models.kinds` (the kinds).
"""
