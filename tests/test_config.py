"""Config parsing: YAML 1.2 numbers, ranges checked where parsed, the closest key suggested."""

from __future__ import annotations

import math

import pytest

from alexnet.engine.config import TrainConfig, load_config, parse_yaml, recipe_names
from alexnet.errors import UserError


def test_numbers_follow_yaml_1_2():
    # PyYAML alone (YAML 1.1) reads 1e-3 and 5E4 as strings, 0777 as octal and 1:30 as 90
    got = parse_yaml("a: 1e-3\nb: 5E4\nc: .5\nd: 0777\ne: 0x1F\nf: 0o17\ng: -2.5e+2\nh: 1:30\ni: .inf\nj: .NaN\nk: 12")
    assert got == {"a": 0.001, "b": 50000.0, "c": 0.5, "d": 777, "e": 31, "f": 15, "g": -250.0, "h": "1:30",
                   "i": math.inf, "j": got["j"], "k": 12}
    assert math.isnan(got["j"]) and isinstance(got["k"], int) and isinstance(got["b"], float)
    assert parse_yaml("x: off")["x"] is False  # the README's lrn on|off still reads as a boolean


def test_scientific_notation_in_recipes_and_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n")
    cfg = load_config(recipe, ["schedule.min_delta=1e-4"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.schedule.min_delta) == (0.001, 0.0005, 0.0001)


@pytest.mark.parametrize("item, words", [
    ("optim.lr=-1", "optim.lr must be greater than 0, not -1"),
    ("optim.lr=0", "greater than 0"),
    ("optim.lr=nan", "optim.lr must be a finite number, not 'nan'"),
    ("optim.lr=.nan", "finite"),
    ("optim.lr=-.inf", "finite"),
    ("optim.momentum=1.5", "below 1"),
    ("model.dropout=2", "between 0 and 1"),
    ("schedule.factor=0", "greater than 0 and at most 1"),
    ("data.workers=-1", "at least 0"),
    ("data.batch_size=1e3", "must be int"),
    ("run.epochs=0", "at least 1"),
    ("optim.lrr=0.1", "did you mean optim.lr?"),
    ("optm.momentum=0.9", "did you mean optim.momentum?"),
    ("shedule.patience=2", "did you mean schedule.patience?"),
    ("nosection.x=1", "sections: model, data, optim, schedule, run"),
    ("run.zzzz=1", "run has:"),
])
def test_bad_values_are_one_line_errors(item, words):
    with pytest.raises(UserError) as e:
        load_config(None, [item])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_shipped_recipes_pass_the_checks():
    for name in recipe_names():
        load_config(name)


@pytest.mark.parametrize("name,lrn,has_lrn", [("alexnet-owt", None, False), ("alexnet-small", None, True),
                                              ("alexnet-small", False, False), ("alexnet", True, True)])
def test_model_options_pass_lrn_only_when_set(name, lrn, has_lrn):
    """``model.lrn`` unset leaves the variant's own choice (alexnet-owt has none), so every variant trains."""
    from alexnet import models
    from alexnet.engine.trainer import model_options

    cfg = TrainConfig()
    cfg.model.name, cfg.model.lrn = name, lrn
    opts = model_options(cfg, {"classes": ["a", "b"], "size": 256})
    assert ("lrn" in opts) is (lrn is not None)
    m = models.create(name, **opts)
    assert m.cfg.has_lrn is has_lrn
