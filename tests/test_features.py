"""fc7 (any layer) features of a prepared split: shape, determinism, files, cache; retrieval on real features."""

import json
import os
import stat

import numpy as np
import pytest
import torch

from alexnet.cli.main import main as cli
from alexnet.checkpoint import save_checkpoint
from alexnet.engine.inference import Checkpoint
from alexnet.features import cache as cache_mod
from alexnet.features.cache import cached_features
from alexnet.features.extract import extract_features
from alexnet.features.knn import evaluate_knn, knn_search
from alexnet.features.store import read_features

from helpers import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS


def test_features_cli_shape_files_and_determinism(trained, tmp_path, capsys):
    out = tmp_path / "feats" / "val.npy"
    assert cli(["features", str(trained["ckpt"]), "--data", str(trained["prep"]), "--split", "val",
                "--out", str(out), "--no-progress", "--workers", "0", "--device", "cpu"]) == 0
    n = CLASSES * VAL_PER_CLASS
    fs = read_features(out)
    assert isinstance(fs.features, np.memmap) and fs.features.shape == (n, 256) and fs.features.dtype == np.float32
    assert fs.ids.tolist() == list(range(n))
    info = json.loads((tmp_path / "feats" / "val.json").read_text())
    assert info["layer"] == "fc7" and info["split"] == "val" and info["count"] == n
    assert info["class_names"][0] == "circle shape"
    # labels in the order of the split, as the loader yields it
    ck = Checkpoint.load(trained["ckpt"], "cpu")
    model, loader = ck.model, ck.eval_loader(trained["prep"], "val", batch_size=7, workers=0)
    np.testing.assert_array_equal(fs.labels, np.concatenate([y.numpy() for _, y in loader]))
    # fc7 of the network for these images; the same again with another batch size
    with torch.no_grad():
        x = torch.cat([x for x, _ in loader])
        ref = model.forward_head(model.forward_features(x), pre_logits=True)
        np.testing.assert_allclose(fs.features, ref.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(ref.numpy(), model.extract(x, ("fc7",))["fc7"].numpy())
    again = extract_features(model, loader, "fc7", split="val", progress=False)
    np.testing.assert_allclose(again.features, fs.features, rtol=1e-4, atol=1e-5)
    same = extract_features(model, loader, "fc7", split="val", progress=False)
    np.testing.assert_array_equal(same.features, again.features)  # deterministic: same batches, same bits
    assert (fs.features > 0).any() and (fs.features >= 0).all()  # after the ReLU
    # no temporaries left, and ordinary permissions
    assert sorted(p.name for p in out.parent.iterdir()) == ["val.ids.npy", "val.json", "val.labels.npy", "val.npy"]
    assert stat.S_IMODE(os.stat(out).st_mode) & 0o044 or os.umask(0o022) & 0o044
    assert "256" in capsys.readouterr().out


@pytest.mark.parametrize("layer,dim", [("conv1", 24 * 32 * 32), ("pool5", 48 * 3 * 3), ("fc8", CLASSES),
                                       ("pixels", 3 * 32 * 32)])
def test_any_layer(trained, tmp_path, layer, dim):
    ck = Checkpoint.load(trained["ckpt"], "cpu")
    model, loader = ck.model, ck.eval_loader(trained["prep"], "val", batch_size=8, workers=0)
    fs = extract_features(model, loader, layer, out=tmp_path / f"{layer}.npy", dtype="float16", progress=False)
    assert fs.features.shape == (CLASSES * VAL_PER_CLASS, dim) and fs.features.dtype == np.float16
    if layer == "pixels":
        x = torch.cat([x for x, _ in loader]).flatten(1).numpy()
        np.testing.assert_allclose(fs.features.astype(np.float32), x, atol=2e-3)


def test_user_errors_are_one_line(trained, tmp_path, capsys):
    ck, prep = str(trained["ckpt"]), str(trained["prep"])
    bad = [
        ["features", ck, "--data", prep, "--layer", "fc99", "--out", str(tmp_path / "a.npy")],
        ["features", str(tmp_path / "none.ckpt"), "--data", prep, "--out", str(tmp_path / "a.npy")],
        ["features", ck, "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "a.npy")],
        ["features", ck, "--data", prep, "--split", "test", "--out", str(tmp_path / "a.npy")],
        ["features", ck, "--data", prep, "--out", str(tmp_path / "a.txt")],
        ["neighbors", ck, "--data", prep, "--query", str(tmp_path / "missing.jpg")],
        ["neighbors", ck, "--data", prep],
    ]
    for argv in bad:
        assert cli(argv + ["--no-progress", "--device", "cpu"]) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) and all(line.startswith("alexnet ") and ": error: " in line for line in err), err
    assert "fc99" in err[0] and "fc7" in err[0]  # names the known layers
    assert list(tmp_path.iterdir()) == []


def test_cache_beside_checkpoint_and_invalidation(trained, tmp_path, monkeypatch):
    ckpt = tmp_path / "copy.ckpt"
    ckpt.write_bytes(trained["ckpt"].read_bytes())
    first = cached_features(ckpt, trained["prep"], "train", workers=0, device="cpu", progress=False)
    folder = tmp_path / "copy.ckpt.features"
    files = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    assert len(files) == 4 and all(f.startswith("train-fc7-") for f in files)
    assert first.count == CLASSES * TRAIN_PER_CLASS

    def boom(*a, **kw):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(cache_mod, "extract_features", boom)
    second = cached_features(ckpt, trained["prep"], "train", workers=0, device="cpu", progress=False)
    assert isinstance(second.features, np.memmap)
    np.testing.assert_array_equal(second.features, first.features)
    monkeypatch.undo()

    # a rewritten checkpoint (other size/mtime) must not be served the old features
    torch.manual_seed(1)
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"] = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    save_checkpoint(ckpt, payload)
    os.utime(ckpt, ns=(os.stat(ckpt).st_atime_ns, os.stat(ckpt).st_mtime_ns + 10**9))
    third = cached_features(ckpt, trained["prep"], "train", workers=0, device="cpu", progress=False)
    assert not np.array_equal(third.features, first.features)
    new = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    assert len(new) == 4 and set(new).isdisjoint(files)  # stale files removed


def test_indexed_image_is_its_own_nearest_neighbour(trained, capsys):
    train = cached_features(trained["ckpt"], trained["prep"], "train", workers=0, device="cpu", progress=False)
    d, i = knn_search(train.features, train.features, 1)
    np.testing.assert_array_equal(i[:, 0], np.arange(train.count))
    assert (d[:, 0] == 0).all()
    # a training image given as a file: preprocessed like the eval transform, found at distance ~0
    query = sorted((trained["src"] / "train" / "ring").glob("*.jpg"))[3]
    assert cli(["neighbors", str(trained["ckpt"]), "--data", str(trained["prep"]), "--query", str(query),
                "-k", "4", "--json", "--no-progress", "--workers", "0", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 1 and res[0]["query"] == str(query)
    nbs = res[0]["neighbors"]
    assert len(nbs) == 4 and all({"id", "class", "distance"} <= set(n) for n in nbs)
    dist = [n["distance"] for n in nbs]
    assert dist == sorted(dist)
    assert dist[0] < 1e-3 * max(dist[1], 1e-6)
    assert nbs[0]["class"] == "ring shape" and train.labels[nbs[0]["id"]] == 1


def test_evaluate_fc7_against_pixels(trained, capsys):
    r = evaluate_knn(trained["ckpt"], trained["prep"], "val", k=5, workers=0, device="cpu", progress=False)
    assert r["count"] == CLASSES * VAL_PER_CLASS and r["train_count"] == CLASSES * TRAIN_PER_CLASS
    assert r["fc7"]["dim"] == 256 and r["pixels"]["dim"] == 3 * 32 * 32
    for space in ("fc7", "pixels"):
        for key in ("nn1_acc", "knn_acc", "precision_at_k"):
            assert 0.0 <= r[space][key] <= 1.0
    assert cli(["neighbors", str(trained["ckpt"]), "--data", str(trained["prep"]), "--evaluate", "train",
                "-k", "3", "--json", "--no-progress", "--no-pixels", "--workers", "0", "--device", "cpu"]) == 0
    loo = json.loads(capsys.readouterr().out)
    assert loo["split"] == "train" and "pixels" not in loo and loo["fc7"]["nn1_acc"] < 1.0  # leave-one-out
