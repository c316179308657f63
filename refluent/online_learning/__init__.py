"""Online learning: each model's champion and challengers scored by progressive validation on
the labelled stream, taught one example at a time, checkpointed and promoted.

See :mod:`refluent.online_learning.learner` (learners, checkpoints, promotion) and
:mod:`refluent.online_learning.metrics` (cumulative and rolling River metrics, the
``model_metrics`` lake table). The modules are imported on use: the metrics table needs the
lake extra.
"""
