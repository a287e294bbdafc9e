"""``alexnet ablate``: the paper's claims rerun on small data, arm against arm, over seeds.

:mod:`.studies` names the claims and their arms, :mod:`.runner` trains every
arm x seed with the project's trainer (resumable), :mod:`.table` writes the
Markdown table, the summary and the figure.
"""

from .runner import run_study
from .studies import NAMES, STUDIES, Arm, Study, resolve
from .table import markdown, write_outputs

__all__ = ["Arm", "NAMES", "STUDIES", "Study", "markdown", "resolve", "run_study", "write_outputs"]
