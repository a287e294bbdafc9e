"""Run the test suite as if this machine had a GPU, to find tests that would use one by accident.

On a CUDA machine five tests once failed that pass on a CPU, because they let ``device: auto``
pick the GPU (a DDP test put two processes on one GPU; bitwise resume and feature comparisons met
cuDNN and TF32 arithmetic). The suite guards against that in two ways:

* ``tests/conftest.py`` sets ``ALEXNET_DEVICE_AUDIT=1`` and installs ``tests/audit/sitecustomize.py``:
  device ``auto`` is then an error, in the pytest process and in every Python process a test starts,
  so each test must name its device;
* this script runs the suite (or the tests you name) with ``torch.cuda.is_available()`` made to
  answer True (and ``device_count()`` 1) to this project's code and tests, in pytest and in every
  Python process it starts (a ``sitecustomize`` module on ``PYTHONPATH``; it stands in for the
  system's, which on Debian only adds crash reporting; in the processes a test starts, the audit hook
  runs it after its own). There is no GPU behind the answer, so any code path that follows it to
  CUDA (device ``auto``, RNG state of the GPUs, pinned memory, a CUDA kernel) fails loudly instead
  of running on the CPU. The tests marked ``gpu`` are left out: they need a real one.

    python scripts/device_audit.py                       # the fast suite: -m "not slow and not gpu"
    python scripts/device_audit.py tests/test_engine.py  # some files (pytest arguments; gpu tests still left out)

On a machine that really has CUDA the script changes nothing and says so: run the suite itself there.
Exit status: pytest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The answer is faked for this project's code and its tests; torch's, torchvision's and triton's own checks get
# the truth (torch.compile, for one, would otherwise try to save the RNG state of the missing GPU).
SITECUSTOMIZE = '''\
import os
import sys
if os.environ.get("ALEXNET_FAKE_CUDA") == "1":
    import torch

    def _faked(real, answer):
        def fake():
            caller = sys._getframe(1).f_globals.get("__name__", "")
            return real() if caller.split(".")[0] in ("torch", "torchvision", "triton") else answer
        return fake

    torch.cuda.is_available = _faked(torch.cuda.is_available, True)
    torch.cuda.device_count = _faked(torch.cuda.device_count, 1)
'''


def main(argv: list[str]) -> int:
    import torch

    if torch.cuda.is_available():
        print("device_audit: this machine has CUDA; run the suite itself (pytest) instead", file=sys.stderr)
        return 2
    args = argv or ["-m", "not slow and not gpu", "-q", "-x"]
    if not any(a == "-m" or a.startswith("-m") for a in args):
        args = ["-m", "not gpu", *args]
    with tempfile.TemporaryDirectory(prefix="device-audit-") as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        path = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "ALEXNET_FAKE_CUDA": "1"}
        check = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True, env=env)
        if check.stdout.strip() != "True":
            print(f"device_audit: could not make CUDA look available ({check.stderr.strip()[-300:]})", file=sys.stderr)
            return 2
        print(f"device_audit: torch.cuda.is_available() answers True in every process; pytest {' '.join(args)}",
              flush=True)
        return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
