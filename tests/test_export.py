"""`alexnet export`: each format computes what the eager model computes and carries what a deployer needs.

Everything here runs on the CPU (exported programs are checked with onnxruntime's CPU provider and on CPU
tensors), whatever the machine has.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet import models
from alexnet.cli.main import main as cli
from alexnet.data.transforms import eval_spec, preprocess_image
from alexnet.checkpoint import load_checkpoint, load_safetensors, make_checkpoint, save_checkpoint
from alexnet.interop.export import FORMATS, SUFFIXES, export_checkpoint, onnx_program, read_metadata

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript's deprecation notice

PROGRAMS = ("onnx", "torchscript", "torch-export")
# Small enough for a CPU test: alexnet-small, and the 224/227 px variants at a quarter of their width.
VARIANTS = [("alexnet-small", {}), ("alexnet", {"width": 0.25}), ("alexnet-caffe", {"width": 0.25}),
            ("alexnet-owt", {"width": 0.25})]
REPO = Path(__file__).resolve().parents[1]


def _checkpoint(path, name="alexnet-small", options=None, classes=5, mean="image"):
    options = {"num_classes": classes, **(options or {})}
    model = models.create(name, **options).eval()
    size = model.cfg.input_size
    save_checkpoint(path, make_checkpoint(
        name, options, model.state_dict(), [f"n{i:08d}" for i in range(classes)],
        [f"class {i}" for i in range(classes)], eval_spec(size if size <= 64 else 256, size, mean, scale=255.0),
        {"mean_image": torch.rand(size, size, 3) * 255, "mean_rgb": torch.tensor([120.0, 110.0, 100.0])}))
    return model


def _input(model, n=3):
    """A batch the size of the model's input, at the scale its initialisation was chosen for: pixel values
    (minus a mean) for the paper's and Caffe's networks, where LRN's alpha matters, [0, 1]-ish otherwise."""
    size = model.cfg.input_size
    return torch.randn(n, model.cfg.in_channels, size, size) * (255.0 / 4 if model.cfg.input_scale == 255 else 1.0)


def _run_program(path, fmt, x):
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")(x)
    return torch.export.load(str(path)).module()(x)


def _graph_text(path, fmt):
    """The exported graph as text, with each op's namespace (where a leaked alexnet:: op would show)."""
    if fmt == "onnx":
        import onnx

        return " ".join(f"{n.domain}::{n.op_type}" for n in onnx.load(str(path)).graph.node)
    if fmt == "torchscript":
        return str(torch.jit.load(str(path), map_location="cpu").inlined_graph)
    return str(torch.export.load(str(path)).graph)


def _lrn_nodes(proto):
    return [{a.name: (a.f if a.type == a.FLOAT else a.i) for a in n.attribute}
            for n in proto.graph.node if n.op_type == "LRN"]


@pytest.mark.slow  # an export and a run of each program for each variant: the longest tests here
@pytest.mark.parametrize("name,options", VARIANTS, ids=[v[0] for v in VARIANTS])
@pytest.mark.parametrize("fmt", PROGRAMS)
def test_program_matches_eager(tmp_path, name, options, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (pip install onnx onnxscript)")
    model = _checkpoint(tmp_path / "m.ckpt", name, options)
    out = tmp_path / f"m{SUFFIXES[fmt]}"
    export_checkpoint(tmp_path / "m.ckpt", fmt, out)
    x = _input(model)  # batch 3: the example had 2
    with torch.no_grad():
        want, got = model(x), _run_program(out, fmt, x)  # eager uses the fused LRN kernel (or the band form)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    graph = _graph_text(out, fmt)
    assert "alexnet::" not in graph and "lrn_cpu" not in graph  # no custom op: runs without alexnet
    if fmt == "onnx":
        import onnx

        lrn = _lrn_nodes(onnx.load(str(out)))
        cfg = model.cfg.lrn if model.cfg.has_lrn else None
        if cfg is None:
            assert lrn == []
        else:
            towers = model.cfg.towers if cfg.per_tower else 1  # the paper's LRN per tower; Caffe's over all channels
            assert towers == (1 if name == "alexnet-caffe" else 2)
            alpha = cfg.alpha if cfg.alpha_per_channel else cfg.alpha * cfg.size
            assert len(lrn) == 2 * towers  # after conv1 and conv2
            assert all(n["alpha"] == pytest.approx(alpha, rel=1e-6) and n["bias"] == cfg.k and n["size"] == cfg.size
                       for n in lrn)


@pytest.mark.parametrize("alpha_per_channel,groups", [(False, 2), (True, 1)], ids=["paper-per-tower", "caffe"])
def test_onnx_lrn_scales_alpha_and_keeps_towers_apart(alpha_per_channel, groups, lrn_reference):
    """ONNX's LRN divides alpha by size: the exporter writes the paper's alpha times size, one LRN per tower.
    Checked against the paper's formula in float64 at pixel scale, where a 5x error in alpha shows."""
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (pip install onnx onnxscript)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")
    from alexnet.models import LocalResponseNorm

    size, alpha, k = 5, 1e-4, (1.0 if alpha_per_channel else 2.0)
    eff = alpha / size if alpha_per_channel else alpha  # alpha of the sum form, the paper's
    layer = torch.nn.Sequential(LocalResponseNorm(size, alpha, 0.75, k, groups, alpha_per_channel)).eval()
    proto = onnx_program(layer, torch.randn(2, 12, 5, 5))
    ops = [n.op_type for n in proto.graph.node]
    assert ops == (["Split", "LRN", "LRN", "Concat"] if groups == 2 else ["LRN"])
    # ONNX: x / (bias + alpha / size * sum) ** beta, so alpha is written as eff * size (5e-4 for the paper's 1e-4)
    assert [n["alpha"] for n in _lrn_nodes(proto)] == [pytest.approx(eff * size, rel=1e-6)] * groups
    x = torch.randn(3, 12, 5, 5) * 300  # sums of squares ~1e6: alpha * sum ~ 10^2, far above k
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {proto.graph.input[0].name: x.numpy()})[0]
    want = lrn_reference(x, size, eff, 0.75, k, groups)
    torch.testing.assert_close(torch.from_numpy(got).double(), want, rtol=1e-5, atol=1e-5)
    # The test can fail: eff copied into ONNX's LRN unscaled (the mistake the scaling avoids) is far off.
    assert (lrn_reference(x, size, eff / size, 0.75, k, groups) - want).abs().max() > 0.1
    with torch.no_grad():  # and the eager layer agrees with both
        torch.testing.assert_close(layer(x).double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_carries_classes_and_transform(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (pip install onnx onnxscript)")
    _checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / f"m{SUFFIXES[fmt]}"
    assert cli(["export", str(tmp_path / "m.ckpt"), "--format", fmt, "--out", str(out)]) == 0
    meta = {k: (v if k == "format" else json.loads(v)) for k, v in read_metadata(out, fmt).items()}
    ckpt = load_checkpoint(tmp_path / "m.ckpt")
    assert meta["format"] == "alexnet-export/1"
    assert meta["model"] == ckpt["model"] and meta["classes"] == ckpt["classes"]
    assert meta["class_names"] == ckpt["class_names"] and meta["eval_transform"] == ckpt["eval_transform"]
    assert meta["data_stats"]["mean_rgb"] == [120.0, 110.0, 100.0]
    assert meta["input"] == {"name": "image", "shape": ["batch", 3, 32, 32], "output": "logits"}
    image = meta["data_stats"]["mean_image"]
    if fmt == "safetensors":  # a tensor of the file
        assert image == {"tensor": "mean_image", "shape": [32, 32, 3], "dtype": "float32"}
    else:  # base64 in the program's metadata
        a = np.frombuffer(__import__("base64").b64decode(image["base64"]), "<f4").reshape(image["shape"])
        assert np.array_equal(a, ckpt["data_stats"]["mean_image"].numpy())
    assert (tmp_path / "config.json").is_file() == (fmt == "safetensors")


def test_safetensors_pair_reads_back_as_the_checkpoint(tmp_path):
    model = _checkpoint(tmp_path / "m.ckpt")
    export_checkpoint(tmp_path / "m.ckpt", "safetensors", tmp_path / "out" / "model.safetensors")
    ckpt, back = load_checkpoint(tmp_path / "m.ckpt"), load_safetensors(tmp_path / "out" / "model.safetensors")
    for key in ("schema", "model", "classes", "class_names", "eval_transform"):
        assert back[key] == ckpt[key], key
    for key in ("mean_image", "mean_rgb"):
        assert torch.equal(back["data_stats"][key], ckpt["data_stats"][key])
    assert back["state_dict"].keys() == ckpt["state_dict"].keys()  # the mean image is not a weight
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(models.from_checkpoint(back).eval()(x), model(x))
        for path in (tmp_path / "out" / "model.safetensors", tmp_path / "out"):  # models.create: the file or the folder
            m = models.create("alexnet-small", checkpoint_path=path).eval()
            assert torch.equal(m(x), model(x)) and m.pretrained_cfg["label_names"][3] == "n00000003"
    assert torch.equal(m.pretrained_cfg["mean_image"], ckpt["data_stats"]["mean_image"])
    # load_checkpoint reads it too, so every command that takes a checkpoint takes the exported file.
    assert cli(["export", str(tmp_path / "out" / "model.safetensors"), "--format", "torchscript",
                "--out", str(tmp_path / "m.pt")]) == 0


def test_config_json_is_what_a_deployer_needs(tmp_path):
    """config.json and the .safetensors alone (no alexnet): rebuild the input and the weights."""
    from PIL import Image
    from safetensors.torch import load_file

    model = _checkpoint(tmp_path / "m.ckpt")
    ckpt = load_checkpoint(tmp_path / "m.ckpt")
    assert cli(["export", str(tmp_path / "m.ckpt"), "--format", "safetensors",
                "--out", str(tmp_path / "out" / "model.safetensors")]) == 0
    data = (tmp_path / "out" / "model.safetensors").read_bytes()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["weights"] == "model.safetensors" and config["weights_sha256"] == hashlib.sha256(data).hexdigest()
    assert config["model"] == {"name": "alexnet-small", "options": {"num_classes": 5}}
    assert config["classes"][2] == "n00000002" and config["class_names"][2] == "class 2"
    spec = config["eval_transform"]
    assert spec == {"resize": 32, "crop": 32, "mean": "image", "scale": 255.0, "normalize": None, "channels": 3}
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["std"] == [1 / 255] * 3 and cfg["interpolation"] == "bicubic"
    assert cfg["mean_image"]["tensor"] == "mean_image" and cfg["mean_image"]["units"] == "pixels 0..255"
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    mean_image = tensors.pop(config["data_stats"]["mean_image"]["tensor"])  # H x W x C, pixel units
    assert torch.equal(mean_image, ckpt["data_stats"]["mean_image"])
    net = models.create(config["model"]["name"], **config["model"]["options"]).eval()
    net.load_state_dict(tensors)  # the rest are the model's weights under its own keys
    # The documented input: (pixel - mean image) * scale / 255 (here the image is already resize x resize).
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = ((torch.from_numpy(pixels).float() - mean_image) * spec["scale"] / 255).permute(2, 0, 1)[None]
    stats = {k: v.numpy() for k, v in ckpt["data_stats"].items()}
    torch.testing.assert_close(x[0], preprocess_image(Image.fromarray(pixels), spec, stats))
    with torch.no_grad():
        assert torch.equal(net(x), model(x))


def test_weights_resaved_without_metadata_load_through_config_json(tmp_path):
    """Weights fine-tuned and saved by other code (no metadata) beside the export's config.json still load."""
    from safetensors.torch import load_file, save_file

    _checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "out" / "model.safetensors"
    export_checkpoint(tmp_path / "m.ckpt", "safetensors", out)
    tensors = load_file(out)
    tensors["fc8.bias"] = tensors["fc8.bias"] + 1
    save_file(tensors, out, metadata={"format": "pt"})  # what a plain save_file / save_pretrained writes
    with pytest.warns(UserWarning, match="sha256 differs"):  # not the exported bytes, as it says
        m = models.create("alexnet-small", checkpoint_path=tmp_path / "out")
    assert torch.equal(m.fc8.bias, tensors["fc8.bias"]) and m.pretrained_cfg["label_names"][0] == "n00000000"
    # config.json naming another file does not describe this one
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    (tmp_path / "out" / "config.json").write_text(json.dumps({**config, "weights": "other.safetensors"}))
    from alexnet.errors import UserError

    with pytest.raises(UserError, match="no alexnet metadata"):
        models.create("alexnet-small", checkpoint_path=out)


def test_torch_hub_loads_an_exported_pair(tmp_path):
    """torch.hub.load(REPO, entry, source="local", checkpoint_path=EXPORT_FOLDER): offline, nothing downloaded."""
    want = _checkpoint(tmp_path / "m.ckpt", "alexnet-owt", {"width": 0.25}, mean="rgb")
    export_checkpoint(tmp_path / "m.ckpt", "safetensors", tmp_path / "export" / "model.safetensors")
    m = torch.hub.load(str(REPO), "alexnet_owt", source="local", pretrained=True,
                       checkpoint_path=str(tmp_path / "export"), verbose=False).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(m(x), want(x))
    assert m.pretrained_cfg["mean"] == pytest.approx((120 / 255, 110 / 255, 100 / 255))


def test_safetensors_without_alexnet_metadata_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    for name, says in (("plain", "no alexnet metadata"), ("junk", "not a safetensors file")):
        assert cli(["export", str(tmp_path / f"{name}.safetensors"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    _checkpoint(tmp_path / "m.ckpt")
    (tmp_path / "exists.safetensors").write_bytes(b"keep")
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / "config.json").write_text("{}")
    st = ["--format", "safetensors", "--out"]
    cases = [
        (["export", str(tmp_path / "none.ckpt"), *st, str(tmp_path / "o.safetensors")], "not found"),
        (["export", str(tmp_path / "m.ckpt"), *st, str(tmp_path / "file" / "o.safetensors")], "not a folder"),
        (["export", str(tmp_path / "m.ckpt"), *st, str(tmp_path / "exists.safetensors")], "--force"),
        (["export", str(tmp_path / "m.ckpt"), *st, str(tmp_path / "pair" / "m.safetensors")], "config.json exists"),
        (["export", str(tmp_path / "m.ckpt"), *st, str(tmp_path / "o.st")], "*.safetensors"),
        (["export", str(tmp_path / "m.ckpt"), "--format", "tflite", "--out", str(tmp_path / "o")], "invalid choice"),
    ]
    for argv, says in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "exists.safetensors").read_bytes() == b"keep"
    assert (tmp_path / "pair" / "config.json").read_text() == "{}" and not (tmp_path / "pair" / "m.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.safetensors", "file", "m.ckpt", "pair"]
    assert cli(["export", str(tmp_path / "m.ckpt"), *st, str(tmp_path / "exists.safetensors"), "--force"]) == 0
    assert np.frombuffer((tmp_path / "exists.safetensors").read_bytes()[:8], "<u8")[0] > 0  # a safetensors header now
    assert json.loads((tmp_path / "config.json").read_text())["weights"] == "exists.safetensors"
