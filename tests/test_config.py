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
    ("model.dropout=2", "at least 0 and below 1"),
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


def every_key():
    import dataclasses
    import typing

    for section, cls in typing.get_type_hints(TrainConfig).items():
        for f in dataclasses.fields(cls):
            yield f"{section}.{f.name}"


def test_every_key_has_a_range_or_choices():
    """A key added without a range or a choice list fails here: its values would reach the code unchecked.
    The model's options have theirs in alexnet.models.options, the other keys in the config's tables."""
    from alexnet.engine.config import CHOICES, RANGES
    from alexnet.models.options import OPTIONS

    keys = list(every_key())
    assert len(keys) > 40
    options = {k for k in keys if k.startswith("model.") and k[6:] in OPTIONS}
    missing = [k for k in keys if k not in RANGES and k not in CHOICES and k not in options]
    assert not missing, f"keys without a range or choices: {missing}"
    assert not (set(RANGES) | set(CHOICES)) - set(keys), "ranges or choices for keys that do not exist"
    assert not (set(RANGES) | set(CHOICES)) & options, "a model option checked in two places"
    unchecked = [k for k, f in OPTIONS.items() if f.metadata["choices"] is None and f.metadata["limits"] is None]
    assert not unchecked, f"model options without a range or choices: {unchecked}"


def test_recipe_model_keys_are_the_options_of_create():
    """One option set: a recipe's model section is the model's name and create()'s options (all but those
    the data gives); a value means the same in both, and a checkpoint stores what the recipe set."""
    import dataclasses

    from alexnet import models
    from alexnet.engine.config import ModelConfig
    from alexnet.engine.trainer import model_options
    from alexnet.models.options import FROM_DATA, OPTIONS

    assert [f.name for f in dataclasses.fields(ModelConfig)] == ["name", *(k for k in OPTIONS if k not in FROM_DATA)]
    cfg = load_config(None, ["model.name=alexnet-small", "model.lrn=off", "model.pool=2/2", "model.order=pool-lrn"])
    assert cfg.model.lrn is False
    opts = model_options(cfg, {"classes": ["a", "b"], "size": 32})
    assert opts == {"input_size": 32, "activation": "relu", "lrn": False, "pool": "2/2", "order": "pool-lrn",
                    "dropout": 0.5, "width": 1.0, "num_classes": 2, "in_channels": 3}
    from_recipe = models.create("alexnet-small", **opts)
    from_python = models.create("alexnet-small", lrn="off", pool="2/2", order="pool-lrn", num_classes=2)
    assert from_recipe.cfg == from_python.cfg and from_recipe.cfg.lrn is None
    # the same words for a wrong value, with the recipe's key or the keyword
    with pytest.raises(UserError, match="model.lrn must be on or off"):
        load_config(None, ["model.lrn=maybe"])
    with pytest.raises(ValueError, match="^lrn must be on or off"):
        models.create("alexnet-small", lrn="maybe")
    with pytest.raises(UserError, match="model.pool must be one of overlap, 2/2, not '3/3'"):
        load_config(None, ["model.pool=3/3"])
    with pytest.raises(ValueError, match="^pool must be one of overlap, 2/2, not '3/3'"):
        models.create("alexnet-small", pool="3/3")
    with pytest.raises(ValueError, match="unknown model option 'widht'; did you mean width?"):
        models.create("alexnet-small", widht=0.5)


def test_defaults_are_in_range():
    from alexnet.engine.config import set_key, to_dict

    cfg = TrainConfig()
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value)


HUGE = "1" + "0" * 400


@pytest.mark.parametrize("item, words", [
    ("run.seed=18446744073709551616", "run.seed must be"),
    ("run.seed=-1", "run.seed must be"),
    ("run.threads=100000000000000000000", "run.threads must be"),
    ("run.device=meta", "run.device must be one of auto, cpu"),
    ("run.device=cuda:-1", "run.device must be"),
    ("run.device=cpu:0", "run.device must be"),
    ("model.width=10000", "model.width must be"),
    ("model.width=8.5", "model.width must be"),
    ("model.input_size=100000", "model.input_size must be"),
    ("model.dropout=1", "model.dropout must be"),
    ("model.name=nosuch", "model.name must be one of alexnet"),
    ("model.bias=.nan", "finite"),
    ("optim.lr=1e400", "finite"),
    (f"optim.lr={HUGE}", "optim.lr must be"),
    (f"model.width={HUGE}", "model.width must be"),
    ("optim.lr=[1, 2]", "optim.lr must be float, not list"),
    ("data.lighting=-1", "data.lighting must be"),
    ("data.batch_size=100000000000000000000", "data.batch_size must be"),
    ("schedule.min_delta=-.inf", "finite"),
    ("run.epochs=100000000000000000000", "run.epochs must be"),
])
def test_out_of_range_values_are_one_line_errors(item, words):
    with pytest.raises(UserError) as e:
        load_config(None, [item])
    assert words in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 300


@pytest.mark.parametrize("item", ["run.seed=9223372036854775807", "run.seed=0", "run.threads=1024", "run.threads=0",
                                  "model.width=8", "model.width=0.01", "model.input_size=2048", "model.input_size=1",
                                  "model.input_size=null", "run.device=cpu", "run.device=auto", "model.dropout=0",
                                  "optim.label_smoothing=0.99", "data.lighting=0", "data.workers=0"])
def test_edges_of_the_ranges_are_accepted(item):
    load_config(None, [item])


def test_largest_seed_seeds_everything():
    """run.seed's upper end is what torch, numpy and the loader's counter-based draws take."""
    import numpy as np
    import torch

    from alexnet.data.loader import rank_order, sample_uniforms
    from alexnet.engine.trainer import seed_everything

    seed = load_config(None, ["run.seed=9223372036854775807"]).run.seed
    seed_everything(seed)
    torch.Generator().manual_seed(seed)
    np.random.default_rng([seed, 89])
    rank_order(10, True, seed, 89, 0, 1)
    sample_uniforms(seed, 89, np.arange(3), 2)
    with pytest.raises(UserError):
        load_config(None, [f"run.seed={seed + 1}"])


def test_cuda_devices_follow_the_build():
    import torch

    if torch.backends.cuda.is_built():
        assert load_config(None, ["run.device=cuda:3"]).run.device == "cuda:3"
        assert load_config(None, ["run.device=cuda"]).run.device == "cuda"
    else:
        with pytest.raises(UserError, match="run.device"):
            load_config(None, ["run.device=cuda"])


def test_a_number_too_long_to_read_is_one_line(tmp_path):
    """Python reads at most 4300 digits (ValueError past that): a --set value or a recipe says so in one line."""
    with pytest.raises(UserError) as e:
        load_config(None, ["run.seed=" + "7" * 5000])
    assert str(e.value).startswith("run.seed must be") and "\n" not in str(e.value)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("run:\n  seed: " + "7" * 5000 + "\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(recipe)
