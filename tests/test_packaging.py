"""The offline editable install the GPU check does (pip --no-deps --no-build-isolation --no-index -e .) works in a
fresh virtual environment whose setuptools is the minimum pyproject.toml's [build-system] asks for.

Slow (a venv, and setuptools downloaded from the package index once, then from pip's cache); skipped offline.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def minimum_setuptools() -> str:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    (spec,) = [r for r in requires if r.startswith("setuptools")]
    m = re.fullmatch(r"setuptools>=(\d+)", spec.replace(" ", ""))
    assert m, f"expected setuptools>=N in [build-system] requires, not {spec!r}"
    return m.group(1)


@pytest.mark.slow
def test_offline_editable_install_with_the_minimum_setuptools(tmp_path):
    major = minimum_setuptools()
    assert int(major) >= 77  # license = "BSD-3-Clause" (an SPDX string) needs setuptools 77
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = str(venv / "bin" / "python")
    pin = f"setuptools=={major}.0.3" if major == "77" else f"setuptools~={major}.0"  # 77.0.3: 77's first fixed release
    got = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--timeout", "20", pin],
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot install {pin} (offline?): {got.stderr.strip().splitlines()[-1:]}")
    run = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(ROOT)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    # the package is found from the checkout (find_spec does not import it: torch is not in this venv)
    where = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('alexnet').origin)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert Path(where) == ROOT / "src" / "alexnet" / "__init__.py"
    version = subprocess.run([py, "-c", "import setuptools; print(setuptools.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version.split(".")[0] == major
