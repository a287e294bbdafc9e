"""Figures (PNG, matplotlib without pyplot) and the self-contained HTML run report.

``from alexnet.viz.report import write_report`` writes ``RUN_DIR/report.html``;
:mod:`alexnet.viz.figures` draws conv1's kernels, the fc7 neighbours, the
training curves and the confusion matrix.
"""
