"""Every ``--set`` key has a range: out of it, ``train`` says so in one line naming the key, before anything
is built or written; and ``eval`` refuses a prepared folder whose class names are not the checkpoint's.

The cases run ``alexnet.cli.main.main`` in this process (an exception that escapes it is a traceback) and
feed the fault suite's CLI tally.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from alexnet.cli.main import main

import fault_kit
from fault_kit import TALLY, TINY, fingerprint

HUGE = "1" + "0" * 400  # an int no float holds

# (id, the --set value, the key the error line must name)
CASES = [
    ("seed-2**64", "run.seed=18446744073709551616", "run.seed"),
    ("seed-negative", "run.seed=-1", "run.seed"),
    ("seed-float", "run.seed=1.5", "run.seed"),
    ("threads-10**20", "run.threads=100000000000000000000", "run.threads"),
    ("threads-negative", "run.threads=-1", "run.threads"),
    ("device-meta", "run.device=meta", "run.device"),
    ("device-mps", "run.device=mps", "run.device"),
    ("device-gpu", "run.device=gpu", "run.device"),
    ("device-cuda-text", "run.device=cuda:x", "run.device"),
    ("device-cuda-negative", "run.device=cuda:-1", "run.device"),
    ("device-cuda-huge", "run.device=cuda:100000000000000000000", "run.device"),
    ("width-10000", "model.width=10000", "model.width"),
    ("width-zero", "model.width=0", "model.width"),
    ("width-just-over", "model.width=8.001", "model.width"),
    ("input-size-100000", "model.input_size=100000", "model.input_size"),
    ("input-size-zero", "model.input_size=0", "model.input_size"),
    ("name-unknown", "model.name=nosuch", "model.name"),
    ("dropout-one", "model.dropout=1", "model.dropout"),
    ("bias-nan", "model.bias=.nan", "model.bias"),
    ("bias-huge", "model.bias=1e6", "model.bias"),
    ("lrn-alpha-inf", "model.lrn_alpha=.inf", "model.lrn_alpha"),
    ("towers-three", "model.towers=3", "model.towers"),
    ("epochs-zero", "run.epochs=0", "run.epochs"),
    ("epochs-10**20", "run.epochs=100000000000000000000", "run.epochs"),
    ("batch-10**20", "data.batch_size=100000000000000000000", "data.batch_size"),
    ("workers-negative", "data.workers=-1", "data.workers"),
    ("workers-huge", "data.workers=1000000", "data.workers"),
    ("lighting-negative", "data.lighting=-0.1", "data.lighting"),
    ("lighting-inf", "data.lighting=inf", "data.lighting"),
    ("scale-zero", "data.scale=0", "data.scale"),
    ("lr-1e400", "optim.lr=1e400", "optim.lr"),
    ("lr-huge-int", f"optim.lr={HUGE}", "optim.lr"),
    ("lr-list", "optim.lr=[1, 2]", "optim.lr"),
    ("lr-batch-zero", "optim.lr_batch=0", "optim.lr_batch"),
    ("momentum-nan", "optim.momentum=nan", "optim.momentum"),
    ("weight-decay-negative", "optim.weight_decay=-1e-4", "optim.weight_decay"),
    ("accumulate-10**20", "optim.accumulate=100000000000000000000", "optim.accumulate"),
    ("label-smoothing-one", "optim.label_smoothing=1", "optim.label_smoothing"),
    ("factor-over-one", "schedule.factor=1.5", "schedule.factor"),
    ("patience-negative", "schedule.patience=-1", "schedule.patience"),
    ("min-delta-nan", "schedule.min_delta=.nan", "schedule.min_delta"),
    ("warmup-10**20", "schedule.warmup_steps=100000000000000000000", "schedule.warmup_steps"),
    ("checkpoint-minutes-inf", "run.checkpoint_minutes=.inf", "run.checkpoint_minutes"),
    ("checkpoint-steps-negative", "run.checkpoint_steps=-1", "run.checkpoint_steps"),
    ("log-every-zero", "run.log_every=0", "run.log_every"),
    ("max-nonfinite-zero", "run.max_nonfinite_steps=0", "run.max_nonfinite_steps"),
    ("seed-list", "run.seed=[1]", "run.seed"),
]


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``main(argv)`` counted in the CLI tally: (exit code, stderr lines)."""
    rc, lines, clean = fault_kit.run_cli(argv, capsys)
    TALLY["cli"]["clean"] += clean
    return rc, lines


@pytest.mark.parametrize("case, item, key", CASES, ids=[c[0] for c in CASES])
def test_out_of_range_set_is_one_line_naming_the_key(case, item, key, tiny, tmp_path, capsys):
    if case == "device-mps" and torch.backends.mps.is_built():
        pytest.skip("this build has MPS")
    out = tmp_path / "run"
    before = fingerprint(*tiny.roots)
    # the tiny recipe (on the CPU) first: a value that got through would go on to train
    sets = [a for s in [*TINY, "run.epochs=1", item] for a in ("--set", s)]
    rc, lines = run_cli(["train", "--data", str(tiny.prep), "--out", str(out), "--quiet", *sets], capsys)
    written = out.exists() or fingerprint(*tiny.roots) != before
    TALLY["cli"]["corrupted"] += written
    assert rc == 2 and len(lines) == 1, (rc, lines)
    assert lines[0].startswith("alexnet train: error: ") and key in lines[0], lines[0]
    assert "must be" in lines[0], lines[0]
    assert not written


# ------------------------------------------------------------------ eval: class names as well as ids
@pytest.fixture(scope="module")
def named(tiny, tmp_path_factory):
    """The tiny checkpoint relabelled as an IDX/WebDataset set would be: ids 0..2, with names."""
    w = tmp_path_factory.mktemp("names")
    ckpt = torch.load(tiny.ckpt, weights_only=True)
    ckpt["classes"], ckpt["class_names"] = ["0", "1", "2"], ["cat", "dog", "bird"]
    torch.save(ckpt, w / "named.ckpt")
    return w


def relabelled(tiny, folder: Path, names: list[str] | None) -> Path:
    """A copy of the tiny prepared folder with class ids 0..2 and ``names`` (None: no class_names)."""
    shutil.copytree(tiny.prep, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["classes"] = ["0", "1", "2"]
    meta.pop("class_names", None)
    if names is not None:
        meta["class_names"] = names
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("names, first", [
    (["cat", "dog", "car"], "'car'"),
    (["T-shirt", "Trouser", "Pullover"], "'T-shirt'"),
    (["cat", "dog\nbird", "x" * 500], "'dog\\nbird'"),  # a name cannot break the line
], ids=["last-differs", "all-differ", "newline-in-name"])
def test_eval_refuses_other_class_names(names, first, tiny, named, tmp_path, capsys):
    data = relabelled(tiny, tmp_path / "prep", names)
    before = fingerprint(tmp_path)
    rc, lines = run_cli(["eval", str(named / "named.ckpt"), "--data", str(data), "--device", "cpu"], capsys)
    assert rc == 2 and len(lines) == 1, (rc, lines)
    assert first in lines[0] and "class" in lines[0], lines[0]
    assert len(lines[0]) < 600, lines[0]
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("names", [["cat", "dog", "bird"], None, ["0", "1", "2"]],
                         ids=["same-names", "folder-without-names", "folder-names-are-ids"])
def test_eval_passes_the_same_names(names, tiny, named, tmp_path, capsys):
    data = relabelled(tiny, tmp_path / "prep", names)
    assert main(["eval", str(named / "named.ckpt"), "--data", str(data), "--device", "cpu"]) == 0, \
        capsys.readouterr().err


def test_eval_refuses_other_ids_naming_the_first(tiny, tmp_path, capsys):
    data = tmp_path / "prep"
    shutil.copytree(tiny.prep, data)
    meta = json.loads((data / "meta.json").read_text())
    meta["classes"] = [meta["classes"][0], "zz", *meta["classes"][2:]]
    (data / "meta.json").write_text(json.dumps(meta))
    rc, lines = run_cli(["eval", str(tiny.ckpt), "--data", str(data), "--device", "cpu"], capsys)
    assert rc == 2 and len(lines) == 1 and "'zz'" in lines[0], (rc, lines)


@pytest.mark.parametrize("device", ["meta", "cuda:x", "cpu:0"])
def test_eval_refuses_a_device_this_build_does_not_run_on(device, tiny, capsys):
    rc, lines = run_cli(["eval", str(tiny.ckpt), "--data", str(tiny.prep), "--device", device], capsys)
    assert rc == 2 and len(lines) == 1 and "unknown device" in lines[0] and "cpu" in lines[0], (rc, lines)
