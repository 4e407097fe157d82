"""The commands of the ``segtrain`` CLI: each validates its config once and dispatches on ``cfg.task``.

Nothing here is imported by training itself (tested): the task modules, ``segtrain.runtime`` and the
library (models, data, losses, metrics, inference) never reach back into a command.
"""
