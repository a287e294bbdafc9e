"""Weights from someone else: a checkpoint, an exported .safetensors and its config.json, crafted or damaged.

Each case is a file whose entries lie (wrong types, sizes past any real
network, classes that do not match the outputs, a sha256 that does not match)
run through ``alexnet predict`` and ``alexnet eval``: it must end as one clean
line with exit 2, before the lie allocates anything, and change nothing on disk.
The cases feed the fault suite's CLI tally.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from fault_kit import TALLY, run_cli


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _crafted(tiny, tmp_path, name, change):
    ckpt = _load(tiny.ckpt)
    change(ckpt)
    path = tmp_path / f"{name}.ckpt"
    torch.save(ckpt, path)
    return path


def _options(**kw):
    def change(ckpt):
        ckpt["model"]["options"].update(kw)
    return change


def _set(key, value):
    def change(ckpt):
        ckpt[key] = value
    return change


def _transform(**kw):
    def change(ckpt):
        ckpt["eval_transform"].update(kw)
    return change


def _nested(depth):
    value = "a"
    for _ in range(depth):
        value = [value]
    return value


# (id, how the checkpoint is changed, words the error line must contain)
CKPT_CASES = [
    ("model-is-a-string", _set("model", "alexnet"), "model entry"),
    ("options-is-a-list", lambda c: c["model"].update(options=[1, 2]), "model entry"),
    ("option-is-a-dict", _options(width={"a": 1}), "model option"),
    ("width-huge", _options(width=100000), "width"),
    ("width-30", _options(width=30), "width"),
    ("width-larger-than-its-weights", _options(width=4.0), "do not fit"),
    ("input-size-huge", _options(input_size=100000), "input_size"),
    ("classes-huge", _options(num_classes=10**9), "num_classes"),
    ("crop-huge", _transform(crop=1000000, resize=1000000), "eval_transform"),
    ("resize-huge", _transform(resize=100000), "eval_transform"),
    ("crop-not-the-model's", _transform(crop=64, resize=64), "crops 64 px"),
    ("crop-text", _transform(crop="big"), "eval_transform"),
    ("mean-unknown", _transform(mean="median"), "eval_transform mean"),
    ("scale-negative", _transform(scale=-1.0), "scale"),
    ("class-names-nested", _set("class_names", _nested(50)), "class_names"),
    ("classes-too-few", lambda c: c.update(classes=["a"], class_names=["a"]), "1 classes for a model with 3 outputs"),
    ("class-names-too-few", _set("class_names", ["a"]), "class names"),
    ("classes-not-a-list", _set("classes", "abc"), "classes"),
    ("schema-text", _set("schema", "2"), "schema"),
    ("mean-image-shape", lambda c: c["data_stats"].update(mean_image=torch.zeros(5)), "mean_image"),
    ("state-dict-not-tensors", lambda c: c["state_dict"].update({"conv1.weight": [1, 2]}), "state_dict"),
]


def _run_clean(argv, words, capsys, watch):
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in watch}
    rc, lines, clean = run_cli(argv + ["--device", "cpu"], capsys)
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in watch}
    if before != after:
        TALLY["cli"]["corrupted"] += 1
    TALLY["cli"]["clean"] += clean
    assert clean, (rc, lines)
    assert words in lines[0], lines[0]
    assert len(lines[0]) < 600, len(lines[0])  # never an unbounded value
    assert before == after


@pytest.mark.parametrize("case, change, words", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_crafted_checkpoint_is_refused(case, change, words, tiny, tmp_path, capsys):
    path = _crafted(tiny, tmp_path, case, change)
    image = next((tiny.raw / "val").rglob("*.png"))
    _run_clean(["predict", str(path), str(image)], words, capsys, [path, image])


def test_eval_refuses_classes_that_do_not_match_the_outputs(tiny, tmp_path, capsys):
    path = _crafted(tiny, tmp_path, "few", lambda c: c.update(classes=["c0"], class_names=["c0"]))
    _run_clean(["eval", str(path), "--data", str(tiny.prep)], "1 classes for a model with 3 outputs", capsys, [path])


@pytest.mark.slow
def test_a_huge_network_is_refused_before_it_allocates(tiny, tmp_path):
    """Options that describe a network far larger than the file's own weights (alexnet at width 8: 3.9e9
    parameters, from a 1 MB file) allocated it all before load_state_dict refused it; the network is now
    first built on the meta device and compared with the weights: the process stays small."""
    def change(ckpt):  # within the option bounds: only the meta probe stops it before 15 GB of parameters
        ckpt["model"] = {"name": "alexnet", "options": {"num_classes": 3, "width": 8.0}}
    path = _crafted(tiny, tmp_path, "wide", change)
    image = next((tiny.raw / "val").rglob("*.png"))

    def peak(ckpt):
        code = ("import resource, sys\nfrom alexnet.cli.main import main\n"
                f"rc = main(['predict', {str(ckpt)!r}, {str(image)!r}, '--device', 'cpu'])\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        *lines, kb = r.stderr.splitlines()
        return r.returncode, lines, int(kb)

    TALLY["cli"]["tried"] += 1
    TALLY["cli"]["process"] += 1
    rc, lines, crafted = peak(path)
    clean = rc == 2 and len(lines) == 1 and "do not fit" in lines[0]
    TALLY["cli"]["clean"] += clean
    assert clean, lines
    rc, _, plain = peak(tiny.ckpt)  # the same command on the honest file: what importing torch and predicting costs
    assert rc == 0
    assert crafted < plain + 256_000, f"peak RSS {crafted / 1e3:.0f} MB vs {plain / 1e3:.0f} MB for the honest file"


# ---------------------------------------------------------------- safetensors and config.json
@pytest.fixture
def export(tiny, tmp_path):
    from alexnet.interop.export import export_checkpoint

    out = tmp_path / "export" / "model.safetensors"
    export_checkpoint(tiny.ckpt, "safetensors", out)
    return out


def _edit_config(export, change):
    config_path = export.parent / "config.json"
    config = json.loads(config_path.read_text())
    change(config)
    config_path.write_text(json.dumps(config))


def _resave_without_metadata(export):
    from safetensors.torch import load_file, save_file

    save_file(load_file(export), export, metadata={"format": "pt"})


SAFETENSORS_CASES = [
    ("config-sha-differs", lambda e: _edit_config(e, lambda c: c.update(weights_sha256="0" * 64)), "sha256"),
    ("config-nested-deep", lambda e: (_resave_without_metadata(e), (e.parent / "config.json").write_text(
        '{"format": "alexnet-export/1", "weights": "model.safetensors", "classes": ' + "[" * 100000 + "]" * 100000
        + "}")), "config.json"),
    ("config-classes-too-few", lambda e: (_resave_without_metadata(e), _edit_config(
        e, lambda c: c.update(weights_sha256=None, classes=["a"], class_names=["a"]))), "1 classes"),
    ("config-crop-huge", lambda e: (_resave_without_metadata(e), _edit_config(
        e, lambda c: (c.update(weights_sha256=None), c["eval_transform"].update(crop=10**6, resize=10**6)))),
     "eval_transform"),
    ("config-model-a-string", lambda e: (_resave_without_metadata(e), _edit_config(
        e, lambda c: c.update(weights_sha256=None, model="alexnet"))), "model entry"),
]


@pytest.mark.parametrize("case, change, words", SAFETENSORS_CASES, ids=[c[0] for c in SAFETENSORS_CASES])
def test_crafted_export_is_refused(case, change, words, export, tiny, capsys):
    change(export)
    image = next((tiny.raw / "val").rglob("*.png"))
    _run_clean(["predict", str(export), str(image)], words, capsys, [export, export.parent / "config.json"])


# ---------------------------------------------------------------- resume across datasets
def test_resume_refuses_a_checkpoint_of_other_classes(tiny, tmp_path, capsys):
    """Same class count, one class renamed: resuming would train output 'c1' as 'ring'."""
    from fault_kit import TINY

    prep = tmp_path / "renamed"
    shutil.copytree(tiny.prep, prep)
    meta = json.loads((prep / "meta.json").read_text())
    meta["classes"][1] = "ring"
    if meta.get("class_names"):
        meta["class_names"][1] = "ring"
    (prep / "meta.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    argv = ["train", "--data", str(prep), "--out", str(run), "--resume", "--no-progress"]
    argv += [a for s in TINY for a in ("--set", s)]
    _run_clean(argv, "trained on other classes: output 1 is 'c1' there and 'ring' in the data", capsys,
               [run / "last.ckpt"])
