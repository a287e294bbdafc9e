"""`alexnet export`: each format computes what the eager model computes and carries what a deployer needs."""

import json

import numpy as np
import pytest
import torch

from alexnet import models
from alexnet.cli.main import main as cli
from alexnet.data.transforms import eval_spec
from alexnet.engine.checkpoint import build_model, load_checkpoint, make_checkpoint, save_checkpoint
from alexnet.engine.export import FORMATS, SUFFIXES, export_checkpoint, load_safetensors, read_metadata

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript's deprecation notice

PROGRAMS = ("onnx", "torchscript", "torch-export")
# Small enough for a CPU test: alexnet-small, and the 224/227 px variants at a quarter of their width.
VARIANTS = [("alexnet-small", {}), ("alexnet", {"width": 0.25}), ("alexnet-caffe", {"width": 0.25}),
            ("alexnet-owt", {"width": 0.25})]


def _checkpoint(path, name="alexnet-small", options=None, classes=5):
    options = {"num_classes": classes, **(options or {})}
    model = models.create(name, **options).eval()
    size = model.cfg.input_size
    save_checkpoint(path, make_checkpoint(
        name, options, model.state_dict(), [f"n{i:08d}" for i in range(classes)],
        [f"class {i}" for i in range(classes)], eval_spec(size if size <= 64 else 256, size, "image", scale=255.0),
        {"mean_image": torch.rand(size, size, 3) * 255, "mean_rgb": torch.tensor([120.0, 110.0, 100.0])}))
    return model


def _run_program(path, fmt, x):
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    return torch.export.load(str(path)).module()(x)


def _graph_text(path, fmt):
    """The exported graph as text, with each op's namespace (where a leaked alexnet:: op would show)."""
    if fmt == "onnx":
        import onnx

        return " ".join(f"{n.domain}::{n.op_type}" for n in onnx.load(str(path)).graph.node)
    if fmt == "torchscript":
        return str(torch.jit.load(str(path)).inlined_graph)
    return str(torch.export.load(str(path)).graph)


@pytest.mark.slow  # an export and a run of each program for each variant: the longest tests here
@pytest.mark.parametrize("name,options", VARIANTS, ids=[v[0] for v in VARIANTS])
@pytest.mark.parametrize("fmt", PROGRAMS)
def test_program_matches_eager(tmp_path, name, options, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (pip install onnx onnxscript)")
    model = _checkpoint(tmp_path / "m.ckpt", name, options)
    out = tmp_path / f"m{SUFFIXES[fmt]}"
    export_checkpoint(tmp_path / "m.ckpt", fmt, out)
    x = torch.randn(3, 3, model.cfg.input_size, model.cfg.input_size)  # batch 3: the example had 2
    with torch.no_grad():
        want, got = model(x), _run_program(out, fmt, x)  # eager uses the fused LRN kernel (or the band form)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    graph = _graph_text(out, fmt)
    assert "alexnet::" not in graph and "lrn_cpu" not in graph  # LRN as plain tensor ops, no custom op


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


def test_safetensors_reads_back_as_the_checkpoint(tmp_path, capsys):
    model = _checkpoint(tmp_path / "m.ckpt")
    export_checkpoint(tmp_path / "m.ckpt", "safetensors", tmp_path / "m.safetensors")
    ckpt, back = load_checkpoint(tmp_path / "m.ckpt"), load_safetensors(tmp_path / "m.safetensors")
    for key in ("schema", "model", "classes", "class_names", "eval_transform"):
        assert back[key] == ckpt[key], key
    for key in ("mean_image", "mean_rgb"):
        assert torch.equal(back["data_stats"][key], ckpt["data_stats"][key])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(build_model(back).eval()(x), model(x))
    # The weights alone load into the model as they are (a deployer's path without alexnet's reader).
    from safetensors.torch import load_file

    models.create("alexnet-small", num_classes=5).load_state_dict(load_file(tmp_path / "m.safetensors"))
    # load_checkpoint reads it too, so every command that takes a checkpoint takes the exported file.
    assert cli(["export", str(tmp_path / "m.safetensors"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0


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
    (tmp_path / "exists.st").write_bytes(b"keep")
    (tmp_path / "file").write_bytes(b"")
    cases = [
        (["export", str(tmp_path / "none.ckpt"), "--format", "safetensors", "--out", str(tmp_path / "o")], "not found"),
        (["export", str(tmp_path / "m.ckpt"), "--format", "safetensors", "--out", str(tmp_path / "file" / "o")], "not a folder"),
        (["export", str(tmp_path / "m.ckpt"), "--format", "safetensors", "--out", str(tmp_path / "exists.st")], "--force"),
        (["export", str(tmp_path / "m.ckpt"), "--format", "tflite", "--out", str(tmp_path / "o")], "invalid choice"),
    ]
    for argv, says in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "exists.st").read_bytes() == b"keep" and not (tmp_path / "o").exists()
    assert cli(["export", str(tmp_path / "m.ckpt"), "--format", "safetensors", "--out", str(tmp_path / "exists.st"),
                "--force"]) == 0
    assert np.frombuffer((tmp_path / "exists.st").read_bytes()[:8], "<u8")[0] > 0  # a safetensors header now
