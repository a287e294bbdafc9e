"""``python tests/kill_after_step.py N ARGS...``: run ``alexnet ARGS...`` and die by SIGKILL right after training
step N, as a killed job would. The hook is patched in here, so the trainer carries no test code."""

import os
import sys

from alexnet.engine import trainer

STEP = int(sys.argv[1])
_on_step = trainer.Trainer._on_step


def _on_step_then_die(self, state, loss, ips):
    _on_step(self, state, loss, ips)
    if state.step == STEP:
        os.kill(os.getpid(), 9)


trainer.Trainer._on_step = _on_step_then_die

if __name__ == "__main__":
    from alexnet.cli.main import main

    sys.exit(main(sys.argv[2:]))
