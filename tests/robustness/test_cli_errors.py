"""Every command with bad input: one line on stderr, exit 2, no traceback, nothing written or changed.

Each case runs ``alexnet.cli.main.main`` in this process (an exception that
escapes it is a traceback); a few run as real processes too. Around each
case the whole workspace (inputs, prepared data, checkpoints, the folder the
outputs would go to) is fingerprinted: a case may change nothing.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet.cli.main import main

from fault_kit import TALLY, fingerprint
from helpers import write_images

# (id, argv with {placeholders}, words the error line must contain)
CASES = [
    # info
    ("info-unknown-model", "info nosuch", "unknown model"),
    ("info-num-classes-negative", "info --num-classes -5", "at least 1"),
    ("info-num-classes-zero", "info --num-classes 0", "at least 1"),
    ("info-num-classes-text", "info --num-classes five", "whole number"),
    ("info-input-size-zero", "info --input-size 0", "at least 1"),
    ("info-input-too-small", "info alexnet --input-size 20", "alexnet"),
    ("unknown-command", "frobnicate", "invalid choice"),
    # data synth
    ("synth-unwritable", "data synth /proc/alexnet-synth", "/proc"),
    ("synth-out-is-file", "data synth {text}", "is a file"),
    ("synth-one-class", "data synth {out} --classes 1", "between 2 and 10"),
    ("synth-size-small", "data synth {out} --size 4", "between 8 and 4096"),
    ("synth-no-train", "data synth {out} --train-per-class 0", "at least 1"),
    # prepare
    ("prepare-missing-source", "prepare {w}/nope {out}", "not found"),
    ("prepare-source-is-file", "prepare {text} {out}", "not a file"),
    ("prepare-empty-source", "prepare {empty} {out}", "empty"),
    ("prepare-no-class-folders", "prepare {noclass} {out}", "no class folders"),
    ("prepare-one-class", "prepare {oneclass} {out}", "at least two"),
    ("prepare-all-bad", "prepare {allbad} {out} --no-progress --workers 1", "no usable training images"),
    ("prepare-unwritable", "prepare {raw} /proc/alexnet-prep", "/proc"),
    ("prepare-out-is-file", "prepare {raw} {text}", "is a file"),
    ("prepare-out-under-file", "prepare {raw} {text}/sub", "is a file"),
    ("prepare-out-not-empty", "prepare {raw} {full}", "not empty"),
    ("prepare-size-zero", "prepare {raw} {out} --size 0", "at least 1"),
    ("prepare-workers-zero", "prepare {raw} {out} --workers 0", "at least 1"),
    ("prepare-max-pixels-negative", "prepare {raw} {out} --max-pixels -1", "at least 1"),
    # train
    ("train-missing-data", "train --data {w}/nope --out {out}", "not a prepared data folder"),
    ("train-raw-not-prepared", "train --data {raw} --out {out}", "not a prepared data folder"),
    ("train-broken-meta", "train --data {brokenprep} --out {out}", "not valid JSON"),
    ("train-one-class", "train --data {oneprep} --out {out}", "at least two"),
    ("train-unwritable", "train --data {prep} --out /proc/alexnet-run", "/proc"),
    ("train-out-is-file", "train --data {prep} --out {text}", "is a file"),
    ("train-lr-negative", "train --data {prep} --out {out} --set optim.lr=-1", "greater than 0"),
    ("train-lr-nan", "train --data {prep} --out {out} --set optim.lr=nan", "finite"),
    ("train-lr-inf", "train --data {prep} --out {out} --set optim.lr=.inf", "finite"),
    ("train-key-typo", "train --data {prep} --out {out} --set optim.lrr=0.1", "did you mean optim.lr"),
    ("train-unknown-section", "train --data {prep} --out {out} --set nosection.x=1", "unknown config key"),
    ("train-batch-text", "train --data {prep} --out {out} --set data.batch_size=two", "must be int"),
    ("train-batch-zero", "train --data {prep} --out {out} --set data.batch_size=0", "at least 1"),
    ("train-momentum-one", "train --data {prep} --out {out} --set optim.momentum=1", "below 1"),
    ("train-bad-choice", "train --data {prep} --out {out} --set run.precision=fp8", "run.precision"),
    ("train-set-no-equals", "train --data {prep} --out {out} --set optim.lr", "section.key=value"),
    ("train-missing-recipe", "train --config nope.yaml --data {prep} --out {out}", "config file not found"),
    ("train-binary-recipe", "train --config {binary} --data {prep} --out {out}", "not a text file"),
    ("train-invalid-yaml", "train --config {badyaml} --data {prep} --out {out}", "not valid YAML"),
    ("train-resume-nothing", "train --data {prep} --out {out} --resume", "no checkpoint to resume"),
    ("train-resume-other-model", "train --data {prep} --out {run} --resume --set model.name=alexnet", "holds model"),
    ("train-existing-run", "train --data {prep} --out {run}", "already holds a run"),
    # eval
    ("eval-missing-checkpoint", "eval {w}/nope.ckpt --data {prep}", "not found"),
    ("eval-checkpoint-is-folder", "eval {empty} --data {prep}", "checkpoint"),
    ("eval-checkpoint-is-text", "eval {text} --data {prep}", "not a torch checkpoint"),
    ("eval-hostile-pickle", "eval {hostile} --data {prep}", "refusing to load"),
    ("eval-raw-pickle", "eval {rawpickle} --data {prep}", "not a torch checkpoint"),
    ("eval-wrong-shapes", "eval {mismatch} --data {prep}", "do not fit"),
    ("eval-batch-zero", "eval {ckpt} --data {prep} --batch-size 0", "at least 1"),
    ("eval-no-split", "eval {ckpt} --data {prep} --split nosuch", "no split"),
    ("eval-data-missing", "eval {ckpt} --data {w}/nope", "not found"),
    # convert
    ("convert-missing-weights", "convert torchvision {w}/nope.pth {out}.ckpt", "not found"),
    ("convert-not-torchvision", "convert torchvision {plainsd} {out}.ckpt", "not a torchvision AlexNet"),
    ("convert-out-exists", "convert torchvision {plainsd} {ckpt}", "--force"),
    ("convert-unwritable", "convert torchvision {plainsd} /proc/alexnet.ckpt", "/proc"),
    ("convert-hostile", "convert torchvision {hostile} {out}.ckpt", "refusing to load"),
    ("caffe-missing-prototxt", "convert caffe {w}/nope.prototxt {w}/nope.caffemodel {out}.ckpt", "not found"),
    ("caffe-not-a-prototxt", "convert caffe {binary} {text} {out}.ckpt", "prototxt"),
    ("caffe-out-exists", "convert caffe {w}/nope.prototxt {w}/nope.caffemodel {ckpt}", "--force"),
    # export
    ("export-missing-checkpoint", "export {w}/nope.ckpt --format onnx --out {out}.onnx", "not found"),
    ("export-unknown-format", "export {ckpt} --format tflite --out {out}.tflite", "invalid choice"),
    ("export-unwritable", "export {ckpt} --format safetensors --out /proc/alexnet.safetensors", "/proc"),
    ("export-out-exists", "export {ckpt} --format torchscript --out {ckpt}", "--force"),
    ("export-config-json-exists", "export {ckpt} --format safetensors --out {pair}/model.safetensors", "config.json exists"),
    ("export-not-safetensors-name", "export {ckpt} --format safetensors --out {out}.st", "*.safetensors"),
    ("export-state-dict-not-ours", "export {plainsd} --format onnx --out {out}.onnx", "not an alexnet checkpoint"),
    ("export-hostile", "export {hostile} --format onnx --out {out}.onnx", "refusing to load"),
    ("export-foreign-safetensors", "export {plainst} --format onnx --out {out}.onnx", "no alexnet metadata"),
    ("export-broken-safetensors", "export {brokenst} --format onnx --out {out}.onnx", "not a safetensors file"),
    # features
    ("features-not-npy", "features {ckpt} --data {prep} --out {out}.txt", ".npy"),
    ("features-unwritable", "features {ckpt} --data {prep} --out /proc/alexnet.npy", "/proc"),
    ("features-out-is-folder", "features {ckpt} --data {prep} --out {npydir}", "is a folder"),
    ("features-unknown-layer", "features {ckpt} --data {prep} --layer fc9 --out {out}.npy", "fc9"),
    ("features-batch-zero", "features {ckpt} --data {prep} --out {out}.npy --batch-size 0", "at least 1"),
    # neighbors
    ("neighbors-no-query", "neighbors {ckpt} --data {prep}", "--query"),
    ("neighbors-k-zero", "neighbors {ckpt} --data {prep} --query {image} -k 0", "at least 1"),
    ("neighbors-out-is-file", "neighbors {ckpt} --data {prep} --query {image} --out {text}", "is a file"),
    ("neighbors-missing-query", "neighbors {ckpt} --data {prep} --query {w}/nope.png --no-cache", "not found"),
    # predict
    ("predict-batch-zero", "predict {ckpt} {image} --batch-size 0", "at least 1"),
    ("predict-topk-zero", "predict {ckpt} {image} --topk 0", "at least 1"),
    ("predict-image-is-folder", "predict {ckpt} {empty}", "is a folder"),
    ("predict-image-is-fifo", "predict {ckpt} {fifo}", "FIFO"),
    ("predict-image-is-text", "predict {ckpt} {text}", "cannot read image"),
    ("predict-missing-checkpoint", "predict {w}/nope.ckpt {image}", "not found"),
    # viz
    ("viz-unwritable", "viz filters {ckpt} --out /proc/alexnet.png", "/proc"),
    ("viz-not-png", "viz filters {ckpt} --out {out}.jpg", "PNG"),
    ("viz-unknown-layer", "viz filters {ckpt} --layer conv9 --out {out}.png", "conv9"),
    ("viz-out-is-folder", "viz confusion {ckpt} --data {prep} --out {pngdir}", "is a folder"),
    ("viz-curves-missing-run", "viz curves {w}/nope", "not found"),
    ("viz-count-zero", "viz neighbors {ckpt} --data {prep} --count 0 --out {out}.png", "at least 1"),
    # report
    ("report-missing-run", "report {w}/nope", "not found"),
    ("report-unwritable", "report {run} --out /proc/alexnet.html", "/proc"),
    ("report-k-zero", "report {run} -k 0", "at least 1"),
    # demo
    ("demo-bad-set", "demo --set nosection.x=1 --out {out}", "unknown config key"),
    ("demo-out-is-file", "demo --out {text}", "is a file"),
    ("demo-unwritable", "demo --out /proc/alexnet-demo", "/proc"),
]


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def ws(tiny, tmp_path_factory):
    """Bad inputs of every kind, next to the good ones of ``tiny``."""
    w = tmp_path_factory.mktemp("cli-cases")
    (w / "notes.txt").write_text("not an image, a checkpoint or a folder\n")
    (w / "empty").mkdir()
    write_images(w / "oneclass", {"train": 2}, classes=1)
    for c in ("x", "y"):
        (w / "allbad" / "train" / c).mkdir(parents=True)
        (w / "allbad" / "train" / c / "a.jpg").write_text("nope")
    (w / "noclass" / "train").mkdir(parents=True)
    (w / "noclass" / "train" / "a.jpg").write_text("flat")
    (w / "full").mkdir()
    (w / "full" / "thesis.tex").write_text("mine")
    (w / "binary.yaml").write_bytes(bytes(range(256)))
    (w / "bad.yaml").write_text("optim: [lr: 0.1\n")
    torch.save({"model": Hostile(), "state_dict": {}}, w / "hostile.ckpt")
    with open(w / "raw.ckpt", "wb") as f:
        pickle.dump({"model": Hostile(), "state_dict": {}}, f)
    ckpt = torch.load(tiny.ckpt, weights_only=True)
    ckpt["model"]["options"]["num_classes"] = 5
    torch.save(ckpt, w / "mismatch.ckpt")
    torch.save({"features.0.weight": torch.zeros(3)}, w / "plain.pth")
    from safetensors.torch import save_file

    save_file({"features.0.weight": torch.zeros(3)}, w / "plain.safetensors")  # torchvision's, say: no alexnet metadata
    (w / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (w / "pair").mkdir()
    (w / "pair" / "config.json").write_text("{}")  # another export's
    os.mkfifo(w / "fifo.png")
    (w / "x.npy").mkdir()
    (w / "d.png").mkdir()
    shutil.copytree(tiny.prep, w / "oneprep")
    meta = json.loads((w / "oneprep" / "meta.json").read_text())
    meta["classes"] = meta["class_names"] = ["c0"]
    (w / "oneprep" / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(tiny.prep, w / "brokenprep")
    (w / "brokenprep" / "meta.json").write_text("{cut short")
    return {
        "w": w, "text": w / "notes.txt", "empty": w / "empty", "oneclass": w / "oneclass", "allbad": w / "allbad",
        "noclass": w / "noclass", "full": w / "full", "binary": w / "binary.yaml", "badyaml": w / "bad.yaml",
        "hostile": w / "hostile.ckpt", "rawpickle": w / "raw.ckpt", "mismatch": w / "mismatch.ckpt", "plainsd": w / "plain.pth",
        "fifo": w / "fifo.png", "npydir": w / "x.npy", "pngdir": w / "d.png", "oneprep": w / "oneprep",
        "brokenprep": w / "brokenprep", "raw": tiny.raw, "prep": tiny.prep, "run": tiny.run, "ckpt": tiny.ckpt,
        "image": tiny.raw / "val" / "c0" / "0.png", "plainst": w / "plain.safetensors",
        "brokenst": w / "broken.safetensors", "pair": w / "pair",
    }


def on_device(argv: list[str]) -> bool:
    """Whether the command takes --device (the cases run on the CPU, whatever the machine has)."""
    return argv[0] in ("train", "demo", "ablate", "eval", "predict", "features", "neighbors", "report") or argv[:2] in (
        ["viz", "neighbors"], ["viz", "confusion"])


@pytest.mark.parametrize("case, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(case, argv, words, ws, tiny, capsys):
    argv = [a.format(**ws, out=ws["w"] / f"out-{case}") for a in argv.split()]
    before = fingerprint(ws["w"], *tiny.roots)
    TALLY["cli"]["tried"] += 1
    try:
        rc = main(argv + (["--device", "cpu"] if on_device(argv) else []))
    except BaseException:
        TALLY["cli"]["tracebacks"] += 1
        raise
    out, err = capsys.readouterr()
    after = fingerprint(ws["w"], *tiny.roots)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if case == "prepare-all-bad":  # the error points at OUT/skipped.txt; OUT is an unfinished prepare, no meta.json
        assert (ws["w"] / f"out-{case}" / "skipped.txt").is_file()
        assert not (ws["w"] / f"out-{case}" / "meta.json").exists()
        changed = [p for p in changed if f"out-{case}" not in p]
    if changed:
        TALLY["cli"]["corrupted"] += 1
    lines = err.splitlines()
    clean = rc == 2 and len(lines) == 1 and lines[0].startswith("alexnet") and ": error: " in lines[0]
    TALLY["cli"]["clean"] += clean
    assert clean, (rc, err)
    assert words in lines[0], lines[0]
    assert not changed, changed


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["info", "--num-classes", "-5"],
    ["prepare", "{raw}", "/proc/alexnet-prep"],
    ["predict", "{ckpt}", "{fifo}", "--device", "cpu"],
], ids=["info", "prepare", "predict"])
def test_real_process_prints_one_line(argv, ws):
    """The same in a real process: exit 2, one stderr line, no 'Traceback', not killed by a signal."""
    TALLY["cli"]["tried"] += 1
    TALLY["cli"]["process"] += 1
    r = subprocess.run([sys.executable, "-m", "alexnet.cli.main", *[a.format(**ws) for a in argv]],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode < 0:
        TALLY["cli"]["crashes"] += 1
    if "Traceback" in r.stderr:
        TALLY["cli"]["tracebacks"] += 1
    clean = r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    TALLY["cli"]["clean"] += clean
    assert clean, (r.returncode, r.stderr)


def test_demo_bad_set_generates_nothing(ws, capsys):
    """demo --set nosection.x=1 generated and prepared 6,011 files before saying no."""
    out = ws["w"] / "demo-out"
    assert main(["demo", "--no-progress", "--out", str(out), "--set", "nosection.x=1"]) == 2
    assert not out.exists()


def test_checkpoint_folder_is_called_a_folder(ws, capsys):
    assert main(["eval", str(ws["empty"]), "--data", str(ws["prep"]), "--device", "cpu"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_raw_pickle_checkpoint_draws_no_warning(ws, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["eval", str(ws["rawpickle"]), "--data", str(ws["prep"]), "--device", "cpu"]) == 2
    assert not caught, [str(w.message) for w in caught]


def test_resume_with_a_changed_model_says_what_differs(ws, tiny, capsys):
    run = ws["w"] / "resume-wider"
    shutil.copytree(tiny.run, run)
    from fault_kit import TINY

    argv = ["train", "--data", str(tiny.prep), "--out", str(run), "--resume", "--no-progress"]
    assert main(argv + [a for s in TINY + ["model.width=0.5"] for a in ("--set", s)]) == 2
    assert "size mismatch" in capsys.readouterr().err


@pytest.mark.slow
def test_training_without_validation_says_so(ws, tiny, capsys):
    from fault_kit import TINY

    prep = ws["w"] / "noval"
    shutil.copytree(tiny.prep, prep)
    meta = json.loads((prep / "meta.json").read_text())
    del meta["splits"]["val"]
    (prep / "meta.json").write_text(json.dumps(meta))
    argv = ["train", "--data", str(prep), "--out", str(ws["w"] / "noval-run"), "--no-progress"]
    assert main(argv + [a for s in TINY + ["run.epochs=1"] for a in ("--set", s)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[-1])["best_top1_err"] is None  # strict JSON: no Infinity
    assert "val" in err and "warning" in err
