"""Jobs over the lake: training sets (and, to come, the training runs that use them)."""
