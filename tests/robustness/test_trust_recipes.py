"""Recipes from someone else: YAML tags that would run code or build Python objects are refused, in one line,
and nothing they ask for happens. (The alias bomb is in test_trust_folders.py.)"""

from __future__ import annotations

import pytest

from fault_kit import TALLY, run_cli

TAGS = [
    ("apply", "run: !!python/object/apply:os.system ['touch {marker}']\n"),
    ("new", "run: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n"),
    ("name", "run:\n  epochs: !!python/name:os.system\n"),
    ("module", "run:\n  epochs: !!python/module:os\n"),
    ("object", "model: !!python/object:argparse.Namespace {{name: alexnet}}\n"),
    ("set", "run:\n  epochs: !!set {{1: null}}\n"),
    ("binary", "run:\n  device: !!binary aGVsbG8=\n"),
    ("timestamp", "run:\n  seed: 2001-12-14t21:59:43.10-05:00\n"),
]


@pytest.mark.parametrize("case, text", TAGS, ids=[t[0] for t in TAGS])
def test_yaml_tags_are_refused(case, text, tiny, tmp_path, capsys):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text.format(marker=marker))
    out = tmp_path / "out"
    rc, lines, clean = run_cli(["train", "--config", str(recipe), "--data", str(tiny.prep), "--out", str(out),
                                "--device", "cpu"], capsys)
    TALLY["cli"]["clean"] += clean
    if marker.exists() or out.exists():
        TALLY["cli"]["corrupted"] += 1
    assert clean, lines
    assert not marker.exists() and not out.exists()
