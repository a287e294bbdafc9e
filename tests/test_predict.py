"""Prediction on a checkpoint trained on the built-in data; confusion matrix; neighbour figures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli.main import main as cli
from alexnet.data import preprocess_image
from alexnet import models
from alexnet.checkpoint import load_checkpoint
from alexnet.engine.evaluate import confusion_matrix
from alexnet.engine.inference import checkpoint_stats
from alexnet.engine.predict import predict

from helpers import CLASSES, VAL_PER_CLASS, png_ok


def val_images(trained, n=3):
    return [sorted((trained["src"] / "val" / c).glob("*.jpg"))[0] for c in trained["meta"]["classes"][:n]]


def test_predict_json(trained, capsys):
    images = val_images(trained)
    assert cli(["predict", str(trained["ckpt"]), *map(str, images), "--topk", "3", "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in res] == [str(p) for p in images]
    ckpt = load_checkpoint(trained["ckpt"])
    model = models.from_checkpoint(ckpt).eval()
    names = ckpt["class_names"]
    for r, path in zip(res, images):
        top = r["top"]
        assert len(top) == 3 and all(set(t) >= {"class", "index", "prob"} for t in top)
        probs = [t["prob"] for t in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["class"] == names[t["index"]] and t["class"].endswith(" shape") for t in top)
        # the probabilities are the network's softmax on the eval preprocessing of the file
        x = preprocess_image(path, ckpt["eval_transform"], checkpoint_stats(ckpt))
        with torch.no_grad():
            p = torch.softmax(model(x[None]), 1)[0]
        np.testing.assert_allclose(probs, p.sort(descending=True).values[:3].numpy(), rtol=1e-4, atol=1e-6)
        assert top[0]["index"] == int(p.argmax())


def test_predict_10crop_and_text(trained, capsys):
    img = val_images(trained, 1)[0]
    center = predict(trained["ckpt"], [img], topk=CLASSES, device="cpu")[0]["top"]
    ten = predict(trained["ckpt"], [img], topk=CLASSES, tta="10crop", device="cpu")[0]["top"]
    assert sum(t["prob"] for t in ten) == pytest.approx(1.0, abs=1e-5)
    assert {t["index"]: t["prob"] for t in ten} != pytest.approx({t["index"]: t["prob"] for t in center}, abs=1e-7)
    assert cli(["predict", str(trained["ckpt"]), str(img), "--topk", "99", "--device", "cpu"]) == 0  # topk clipped
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(img) and len(out) == 1 + CLASSES and out[1].strip().endswith(")")


def test_predict_user_errors(trained, tmp_path, capsys):
    (tmp_path / "text.jpg").write_text("not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "cut.jpg").write_bytes((trained["src"] / "val" / "circle" / "circle_00000.jpg").read_bytes()[:200])
    ck = str(trained["ckpt"])
    cases = [[ck, str(tmp_path / "text.jpg")], [ck, str(tmp_path / "missing.jpg")], [ck, str(tmp_path / "cut.jpg")],
             [ck, str(tmp_path / "ok.png"), "--topk", "0"], [str(tmp_path / "ok.png"), str(tmp_path / "ok.png")]]
    for argv in cases:
        assert cli(["predict", *argv, "--device", "cpu"]) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(cases) and all(e.startswith("alexnet predict: error:") for e in err), err
    assert cli(["predict", ck, str(tmp_path / "ok.png"), "--json", "--device", "cpu"]) == 0  # any size, any format


def test_confusion_and_figures(trained, tmp_path):
    cm = confusion_matrix(trained["ckpt"], trained["prep"], "val", workers=0, device="cpu", progress=False)
    assert cm.shape == (CLASSES, CLASSES) and cm.sum() == CLASSES * VAL_PER_CLASS
    np.testing.assert_array_equal(cm.sum(1), [VAL_PER_CLASS] * CLASSES)
    ck, prep = str(trained["ckpt"]), str(trained["prep"])
    assert cli(["viz", "confusion", ck, "--data", prep, "--workers", "0", "--device", "cpu",
                "--out", str(tmp_path / "c.png")]) == 0
    png_ok(tmp_path / "c.png")
    assert cli(["viz", "neighbors", ck, "--data", prep, "--count", "3", "-k", "4", "--workers", "0",
                "--device", "cpu", "--out", str(tmp_path / "n.png")]) == 0
    png_ok(tmp_path / "n.png")
    assert cli(["viz", "neighbors", ck, "--data", prep, "--query", *map(str, val_images(trained, 2)), "-k", "3",
                "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "q.png")]) == 0
    png_ok(tmp_path / "q.png")
    assert cli(["neighbors", ck, "--data", prep, "--query", str(val_images(trained, 1)[0]), "--workers", "0",
                "--device", "cpu", "--no-progress", "--out", str(tmp_path / "nb")]) == 0
    png_ok(tmp_path / "nb" / "neighbors.png")
    assert len(json.loads((tmp_path / "nb" / "neighbors.json").read_text())[0]["neighbors"]) == 6


def test_predict_reports_each_bad_file_and_predicts_the_rest(trained, tmp_path, capsys):
    """`predict a.jpg bad.txt b.jpg` stopped at bad.txt and printed no prediction at all."""
    a, b = val_images(trained, 2)
    (tmp_path / "bad.txt").write_text("not an image")
    argv = ["predict", str(trained["ckpt"]), str(a), str(tmp_path / "bad.txt"), str(b), str(tmp_path / "gone.jpg"), "--json",
            "--device", "cpu"]
    assert cli(argv) == 2
    out, err = capsys.readouterr()
    assert [r["image"] for r in json.loads(out)] == [str(a), str(b)]
    err = err.splitlines()
    assert len(err) == 2 and "bad.txt" in err[0] and "gone.jpg" in err[1], err
    assert predict(trained["ckpt"], [a, tmp_path / "bad.txt"], errors="report", device="cpu")[1]["error"].startswith(
        "cannot read image")
