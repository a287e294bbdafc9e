"""Training, evaluation and inference: config, loops, distributed plumbing.

``inference`` is a checkpoint loaded to run
(:class:`~alexnet.engine.inference.Checkpoint`, read through
:mod:`alexnet.checkpoint`), which ``evaluate``, ``predict``,
:mod:`alexnet.interop` and :mod:`alexnet.features` use; ``trainer`` wires a
config and a prepared folder to ``loop`` and ``optim``.
"""
