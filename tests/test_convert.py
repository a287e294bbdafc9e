"""torchvision weights become a checkpoint that carries its own eval transform."""

import torch
import torchvision

from alexnet.cli.main import main as cli
from alexnet.engine.checkpoint import load_model


def test_convert_torchvision(tmp_path, capsys):
    tv = torchvision.models.alexnet().eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    assert cli(["convert", "torchvision", str(tmp_path / "tv.pth"), str(tmp_path / "tv.ckpt")]) == 0
    model, ckpt = load_model(tmp_path / "tv.ckpt")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)
    spec = ckpt["eval_transform"]
    assert spec["normalize"]["std"] == [0.229, 0.224, 0.225] and spec["crop"] == 224
    assert len(ckpt["class_names"]) == 1000 and ckpt["class_names"][0] == "tench"


def test_convert_refuses_bad_input(tmp_path, capsys):
    assert cli(["convert", "torchvision", str(tmp_path / "none.pth"), str(tmp_path / "o.ckpt")]) == 2
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "partial.pth")
    assert cli(["convert", "torchvision", str(tmp_path / "partial.pth"), str(tmp_path / "o.ckpt")]) == 2
    assert "not a torchvision AlexNet" in capsys.readouterr().err
    assert not (tmp_path / "o.ckpt").exists()
