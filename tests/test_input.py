"""What the network's first layer is fed: the paper's raw pixels minus the mean, or a checkpoint's own transform.

A prepared folder of flat grey images (values 60 and 200, one class each)
has a mean of 130 at every pixel, so under the paper's recipe conv1 must see
exactly -70 and +70; a torchvision-converted checkpoint must see its own
``(v / 255 - mean) / std``. Statistics and checkpoints of [0, 1] values (schema 1)
are refused in one line.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.checkpoint import load_checkpoint, save_checkpoint
from alexnet.data import load_stats, prepare
from alexnet.data.stats import STATS_FILE
from alexnet.errors import UserError
from alexnet.engine.config import load_config
from alexnet.engine.trainer import Trainer
from alexnet.engine.inference import load_image

GREYS = {"dark": 60, "light": 200}


@pytest.fixture(scope="module")
def grey_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey")
    for split in ("train", "val"):
        for name, v in GREYS.items():
            (root / "raw" / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((96, 96, 3), v, np.uint8)).save(root / "raw" / split / name / f"{i}.png")
    prepare(root / "raw", root / "prep", workers=1, progress=False)
    return root / "prep"


def conv1_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[0]


def test_stats_are_in_pixel_units(grey_prepared):
    stats = load_stats(grey_prepared)
    np.testing.assert_allclose(stats["mean_image"], 130.0, atol=1e-9)
    np.testing.assert_allclose(stats["mean_rgb"], 130.0, atol=1e-9)
    np.testing.assert_allclose(stats["eigval"][0], 3 * 70.0**2, rtol=1e-9)  # all the variance on the grey axis
    assert int(stats["schema"]) == 2


@pytest.mark.parametrize("recipe,scale", [("paper", 255.0), ("small-data", 1.0)])
def test_recipes_feed_their_documented_input(grey_prepared, tmp_path, recipe, scale):
    """paper: conv1 sees v - mean (raw pixels); small-data: (v - mean) / 255, as its recipe says."""
    cfg = load_config(recipe, ["data.workers=0", "data.batch_size=4", "data.lighting=0.0", "run.device=cpu", "run.channels_last=false"])
    trainer = Trainer(cfg, grey_prepared, tmp_path / "run", progress=False)
    assert trainer.scale == scale
    for train in (True, False):
        images, labels = next(iter(trainer.loader("train", train=train)))
        x = conv1_input(trainer.state.model, images)
        assert x.shape[-2:] == (224, 224)
        want = torch.tensor([GREYS[trainer.meta["classes"][i]] - 130.0 for i in labels])[:, None, None, None]
        want = want * scale / 255
        torch.testing.assert_close(x, want.expand_as(x), atol=1e-4, rtol=0)
    payload = trainer.payload({})
    assert payload["eval_transform"]["scale"] == scale
    np.testing.assert_allclose(payload["data_stats"]["mean_rgb"].numpy(), 130.0, atol=1e-4)


def test_small_nets_keep_unit_scale_and_schema_1_stats_are_refused(grey_prepared, tmp_path):
    cfg = load_config("demo", ["data.workers=0", "run.device=cpu", "model.input_size=32"])
    assert Trainer(cfg, grey_prepared, tmp_path / "a", progress=False).scale == 1.0
    # statistics of [0, 1] values with no schema key (schema 1): one line, not a silent misreading
    old = tmp_path / "old"
    old.mkdir()
    for f in grey_prepared.iterdir():
        (old / f.name).symlink_to(f)
    (old / STATS_FILE).unlink()
    stats = load_stats(grey_prepared)
    np.savez(old / STATS_FILE, **{k: (v / 255 if k in ("mean_image", "mean_rgb") else v / 255**2
                                      if k in ("eigval", "cov") else v) for k, v in stats.items() if k != "schema"})
    with pytest.raises(UserError) as e:
        load_stats(old)
    assert "statistics schema 1" in str(e.value) and "prepare the folder again" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_schema_1_checkpoint_is_refused(tmp_path):
    from helpers import small_checkpoint

    small_checkpoint(tmp_path / "new.ckpt")
    ckpt = load_checkpoint(tmp_path / "new.ckpt")
    save_checkpoint(tmp_path / "old.ckpt", {**ckpt, "schema": 1})
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / "old.ckpt")
    assert "checkpoint schema 1" in str(e.value) and "not supported" in str(e.value) and "\n" not in str(e.value)


def test_converted_and_current_checkpoints_see_their_own_transform(tmp_path):
    from alexnet.interop.convert import IMAGENET_MEAN, IMAGENET_STD

    v = 90
    Image.fromarray(np.full((300, 260, 3), v, np.uint8)).save(tmp_path / "grey.png")
    tv = {"model": {"name": "alexnet-owt"}, "eval_transform": {"resize": 256, "crop": 224, "mean": "rgb",
          "normalize": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}}, "schema": 2}
    x = load_image(tmp_path / "grey.png", tv)
    want = (v / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x, want[:, None, None].expand_as(x))
    # the paper's: the mean in pixel units, scale 255
    new = {"model": {"name": "alexnet"}, "schema": 2,
           "eval_transform": {"resize": 256, "crop": 224, "mean": "rgb", "normalize": None, "scale": 255.0},
           "data_stats": {"mean_rgb": torch.tensor([102.0, 127.5, 153.0])}}
    x = load_image(tmp_path / "grey.png", new)
    torch.testing.assert_close(x, (v - torch.tensor([102.0, 127.5, 153.0]))[:, None, None].expand_as(x))
