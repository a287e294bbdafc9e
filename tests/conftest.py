import importlib.util
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _install_device_audit() -> None:
    """Every test that runs a network names its device (run.device=cpu, --device cpu, device="cpu"): device
    "auto" is an error (tests/audit/sitecustomize.py), in this process and, through PYTHONPATH, in every Python
    process a test starts, so no test runs on the CPU here and on a GPU on a CUDA machine by accident."""
    folder = Path(__file__).resolve().parent / "audit"
    spec = importlib.util.spec_from_file_location("device_audit_hook", folder / "sitecustomize.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    os.environ[hook.AUDIT_ENV] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    hook.install()


_install_device_audit()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- inference and engine: shared by test_features, test_predict, test_report and test_engine ----
@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One alexnet-small trained for an epoch on the built-in data by the trainer (helpers.train_builtin):
    ``{"root", "src", "prep", "run", "ckpt", "meta"}``."""
    from helpers import train_builtin

    return train_builtin(tmp_path_factory.mktemp("trained"))
# ---- end inference and engine ----


# ---- models: shared by test_models.py and test_lrn_cpu.py ----
def _lrn_reference(x, size, alpha, beta, k, groups=1):
    """The paper's LRN formula evaluated directly, in float64, one channel at a time."""
    x = x.double()
    n, c, h, w = x.shape
    cg = c // groups
    out = torch.empty_like(x)
    for ch in range(c):
        g0 = (ch // cg) * cg
        lo = max(g0, ch - (size - 1) // 2)
        hi = min(g0 + cg - 1, ch + size // 2)
        s = (x[:, lo : hi + 1] ** 2).sum(1)
        out[:, ch] = x[:, ch] / (k + alpha * s) ** beta
    return out


@pytest.fixture
def lrn_reference():
    """``lrn_reference(x, size, alpha, beta, k, groups=1)``: the paper's formula in float64."""
    return _lrn_reference
# ---- end models ----


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory):
    """The prepared-data factory: ``prepared_data({"train": 8, "val": 3}, classes=3, seed=0, pattern="band",
    image_size=32)`` is a prepared folder (helpers.make_prepared; its images in ``.parent / "raw"``), made
    once a session for each set of arguments. Shared: a test that changes one copies it first."""
    from helpers import make_prepared

    made = {}

    def make(per_split: dict[str, int], **kw) -> Path:
        key = (tuple(per_split.items()), tuple(sorted(kw.items())))
        if key not in made:
            made[key] = make_prepared(tmp_path_factory.mktemp("prepared"), per_split, **kw)
        return made[key]

    return make


@pytest.fixture(scope="session")
def prepared(prepared_data):
    """4 easy classes of 32 px images (a bright square in the quadrant of the class): 48 train, 16 val each."""
    return prepared_data({"train": 48, "val": 16}, classes=4, seed=1, pattern="quadrant")
