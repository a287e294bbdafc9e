"""The suite's device audit: device "auto" is an error while ``ALEXNET_DEVICE_AUDIT`` is set.

Every test that runs a network names its device (``run.device=cpu``, ``--device cpu``, ``device="cpu"``):
one that relied on "auto" would run on the CPU here and on the GPU of a CUDA machine. ``tests/conftest.py``
sets the variable, installs this hook in pytest's process and puts this folder first on ``PYTHONPATH``,
so that Python runs this module at start-up in every process a test starts (the CLI, torchrun's workers,
the drivers) and the hook is there too. It wraps ``alexnet.engine.distributed.resolve_device`` when that
module is first imported: the package itself carries no test code. Another ``sitecustomize`` further on
the path (the system's, or ``scripts/device_audit.py``'s) still runs, after this one.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

AUDIT_ENV = "ALEXNET_DEVICE_AUDIT"
TARGET = "alexnet.engine.distributed"


def audited(resolve):
    """``resolve_device`` that refuses "auto" (and None) while :data:`AUDIT_ENV` is set."""
    def resolve_device(name="auto", local_rank=0):
        if os.environ.get(AUDIT_ENV) and (name is None or str(name) == "auto"):
            raise RuntimeError(f"device 'auto' while {AUDIT_ENV} is set: a test must choose its device "
                               "(--device cpu, --set run.device=cpu, device='cpu')")
        return resolve(name, local_rank)

    resolve_device.__wrapped__ = resolve
    resolve_device.__doc__ = resolve.__doc__
    return resolve_device


def _patch(module) -> None:
    if not hasattr(module.resolve_device, "__wrapped__"):
        module.resolve_device = audited(module.resolve_device)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds :data:`TARGET` through the other finders, and patches it right after it runs (before any
    ``from .distributed import resolve_device`` elsewhere can take the unpatched function)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Audit ``resolve_device`` in this process (now if the module is loaded, else when it is)."""
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _run_next_sitecustomize() -> None:
    """Run the first ``sitecustomize.py`` on ``sys.path`` after this folder, as Python would without this one."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.getcwd())
        candidate = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_sitecustomize_after_audit", candidate)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


if __name__ == "sitecustomize":
    install()
    _run_next_sitecustomize()
