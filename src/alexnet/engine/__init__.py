"""Training, evaluation and inference: config, loops, checkpoints, distributed plumbing.

``checkpoint`` is the file (its layout, written and read); ``inference`` the
checkpoint loaded to run (:class:`~alexnet.engine.inference.Checkpoint`),
which ``evaluate``, ``predict``, ``export`` and :mod:`alexnet.features` use;
``trainer`` wires a config and a prepared folder to ``loop`` and ``optim``.
"""
