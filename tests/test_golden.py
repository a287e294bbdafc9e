"""Golden outputs per registered model: a silent change to any variant fails here.

For each case (every registered model, and a few of the options every variant
takes) the stored values in ``golden/models.json`` pin down:

* ``keys``: the state-dict keys and shapes (checkpoints and converted weights
  depend on them);
* ``init``: each parameter's sum and mean |value| after ``torch.manual_seed(0)``
  and ``models.create`` (the variant's initialisation);
* ``eval``: with weights set by a fixed rule that does not depend on the
  initialisation, on a fixed input, in eval mode, fp32, CPU: the logits,
  ``forward_features``, ``forward_head(pre_logits=True)`` and ``extract`` of
  intermediate layers;
* ``train``: the logits in train mode after ``torch.manual_seed(1)`` (where
  dropout sits and what it drops).

Tolerance: relative 1e-4 of each tensor's mean |value| (float32 rounding, the
thread count and the fused against the PyTorch LRN differ by about 1e-6).

Regenerate only for an intended change, and say why in the commit::

    .venv/bin/python tests/test_golden.py --regen
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import pytest
import torch

from alexnet import models

GOLDEN = Path(__file__).with_name("golden") / "models.json"
RTOL = 1e-4
HEAD = 8  # leading values stored per tensor

# case -> (registered name, options)
CASES = {
    "alexnet": ("alexnet", {}),
    "alexnet-caffe": ("alexnet-caffe", {}),
    "alexnet-owt": ("alexnet-owt", {}),
    "alexnet-small": ("alexnet-small", {}),
    "alexnet-small lrn=off": ("alexnet-small", {"lrn": "off"}),
    "alexnet-small pool=2/2 activation=tanh dropout=0.3": ("alexnet-small", {"pool": "2/2", "activation": "tanh", "dropout": 0.3}),
    "alexnet-small width=0.5 in_channels=1 input_size=28 bias=0 num_classes=7": (
        "alexnet-small", {"width": 0.5, "in_channels": 1, "input_size": 28, "bias": 0.0, "num_classes": 7}),
    "alexnet width=0.25 init=kaiming": ("alexnet", {"width": 0.25, "init": "kaiming"}),
}
# Intermediate activations recorded through extract(), where the model has them.
LAYERS = ("conv1", "norm1", "pool2", "conv4", "pool5", "fc6", "fc7")


def _stats(t: torch.Tensor) -> dict:
    t = t.detach().double()
    return {"shape": list(t.shape), "sum": t.sum().item(), "abs_mean": t.abs().mean().item(),
            "head": t.flatten()[:HEAD].tolist()}


def _fixed_weights(model: torch.nn.Module) -> None:
    """Weights from a rule of their own (seeded by key name), whatever the initialisation."""
    state = {}
    for key, value in model.state_dict().items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        w = torch.randn(value.shape, generator=g, dtype=torch.float64)
        if value.dim() > 1:  # He-scaled, so activations keep their size and LRN's denominator matters
            w *= (2.0 / value[0].numel()) ** 0.5
        else:
            w *= 0.1
        state[key] = w.to(value.dtype)
    model.load_state_dict(state)


def record(case: str) -> dict:
    name, options = CASES[case]
    torch.manual_seed(0)
    model = models.create(name, **options)
    out = {"keys": {k: list(v.shape) for k, v in model.state_dict().items()},
           "init": {k: [v.double().sum().item(), v.double().abs().mean().item()] for k, v in model.state_dict().items()}}
    _fixed_weights(model)
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g) * 50
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        layers = [n for n in LAYERS if n in model.layer_names()]
        acts = model.extract(x, layers)
        out["eval"] = {
            "logits": _stats(logits),
            "argmax": logits.argmax(1).tolist(),
            "forward_features": _stats(feats),
            "pre_logits": _stats(model.forward_head(feats, pre_logits=True)),
            "head": _stats(model.forward_head(feats)),
            **{f"extract.{n}": _stats(t) for n, t in acts.items()},
        }
        model.train()
        torch.manual_seed(1)
        out["train"] = {"logits": _stats(model(x))}
    return out


def _close(got, want, where: str) -> None:
    assert got["shape"] == want["shape"], f"{where}: shape {got['shape']} != {want['shape']}"
    scale = want["abs_mean"]
    tol = RTOL * scale
    assert abs(got["abs_mean"] - scale) <= tol, f"{where}: mean |value| {got['abs_mean']!r} != {scale!r}"
    n = max(1, int(torch.tensor(want["shape"]).prod().item()))
    assert abs(got["sum"] - want["sum"]) <= tol * n, f"{where}: sum {got['sum']!r} != {want['sum']!r}"
    diffs = [abs(a - b) for a, b in zip(got["head"], want["head"])]
    assert max(diffs, default=0.0) <= tol, f"{where}: leading values {got['head']} != {want['head']}"


@pytest.fixture(scope="module")
def golden() -> dict:
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing: run `python {Path(__file__).name} --regen` once")
    return json.loads(GOLDEN.read_text())


_records: dict[str, dict] = {}


def _record(case: str) -> dict:
    if case not in _records:
        _records[case] = record(case)
    return _records[case]


def test_every_registered_model_has_a_golden_case(golden):
    assert {name for name, _ in CASES.values()} >= set(models.names())
    assert set(golden) == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_state_dict_keys(case, golden):
    assert _record(case)["keys"] == golden[case]["keys"]


@pytest.mark.parametrize("case", CASES)
def test_init(case, golden):
    got, want = _record(case)["init"], golden[case]["init"]
    assert list(got) == list(want)
    for key, (s, a) in want.items():
        n = max(1, int(torch.tensor(golden[case]["keys"][key]).prod().item()))
        assert abs(got[key][1] - a) <= RTOL * a, f"{case} {key}: mean |w| {got[key][1]!r} != {a!r}"
        assert abs(got[key][0] - s) <= RTOL * max(a, 1e-12) * n, f"{case} {key}: sum {got[key][0]!r} != {s!r}"


@pytest.mark.parametrize("case", CASES)
def test_eval_outputs(case, golden):
    got, want = _record(case)["eval"], golden[case]["eval"]
    assert sorted(got) == sorted(want)
    assert got["argmax"] == want["argmax"]
    for key in want:
        if key != "argmax":
            _close(got[key], want[key], f"{case} {key}")


@pytest.mark.parametrize("case", CASES)
def test_train_outputs(case, golden):
    _close(_record(case)["train"]["logits"], golden[case]["train"]["logits"], f"{case} train logits")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit(f"usage: python {sys.argv[0]} --regen   (rewrites {GOLDEN})")
    torch.set_num_threads(1)
    values = {case: record(case) for case in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(values, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({len(values)} cases)")
