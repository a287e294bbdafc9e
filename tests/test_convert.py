"""torchvision weights become a checkpoint that carries its own eval transform."""

import json

import torch
import torchvision
from source_writers import tiny_jpeg

from alexnet.cli.main import main as cli
from alexnet.data import prepare
from alexnet import models
from alexnet.checkpoint import load_checkpoint
from alexnet.interop.convert import imagenet_synsets


def test_convert_torchvision(tmp_path, capsys):
    tv = torchvision.models.alexnet().eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    assert cli(["convert", "torchvision", str(tmp_path / "tv.pth"), str(tmp_path / "tv.ckpt")]) == 0
    ckpt = load_checkpoint(tmp_path / "tv.ckpt")
    model = models.from_checkpoint(ckpt).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)
    spec = ckpt["eval_transform"]
    assert spec["normalize"]["std"] == [0.229, 0.224, 0.225] and spec["crop"] == 224
    assert len(ckpt["class_names"]) == 1000 and ckpt["class_names"][0] == "tench"
    assert ckpt["classes"] == imagenet_synsets() and ckpt["classes"][0] == "n01440764"


def test_synset_ids_are_torchvisions_order():
    ids = imagenet_synsets()
    assert len(set(ids)) == 1000 and ids == sorted(ids)
    names = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    # Imagenette's ten synsets (torchvision.datasets.Imagenette names them) at torchvision's indices.
    for wnid, name in [("n01440764", "tench"), ("n02102040", "English springer"), ("n02979186", "cassette player"),
                       ("n03000684", "chain saw"), ("n03028079", "church"), ("n03394916", "French horn"),
                       ("n03417042", "garbage truck"), ("n03425413", "gas pump"), ("n03445777", "golf ball"),
                       ("n03888257", "parachute")]:
        assert names[ids.index(wnid)] == name, wnid


def test_converted_weights_evaluate_on_prepared_ilsvrc(tmp_path, capsys):
    """The documented path: convert torchvision's weights, evaluate on a prepared ILSVRC-2012 folder."""
    src = tmp_path / "ilsvrc"
    ids = imagenet_synsets()
    for wnid in ids:  # one small training image per synset: the prepared folder's classes are the 1000 ids
        tiny_jpeg(src / "train" / wnid / f"{wnid}_0.JPEG", size=(72, 66))  # over 64 px: prepared at 256
    truth = [ids[0], ids[500], ids[999]]
    for i in range(len(truth)):
        tiny_jpeg(src / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", colour=(30, 30 * i, 200), size=(72, 66))
    rows = [f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 3 4" for i, w in enumerate(truth)]
    (src / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    prepare(src, tmp_path / "prepared", workers=1, progress=False)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "tv.pth")
    assert cli(["convert", "torchvision", str(tmp_path / "tv.pth"), str(tmp_path / "tv.ckpt")]) == 0
    capsys.readouterr()
    assert cli(["eval", str(tmp_path / "tv.ckpt"), "--data", str(tmp_path / "prepared"), "--json", "--device", "cpu",
                "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3


def test_convert_refuses_bad_input(tmp_path, capsys):
    assert cli(["convert", "torchvision", str(tmp_path / "none.pth"), str(tmp_path / "o.ckpt")]) == 2
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "partial.pth")
    assert cli(["convert", "torchvision", str(tmp_path / "partial.pth"), str(tmp_path / "o.ckpt")]) == 2
    assert "not a torchvision AlexNet" in capsys.readouterr().err
    assert not (tmp_path / "o.ckpt").exists()
