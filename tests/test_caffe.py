"""Caffe import: a caffemodel written here with protobuf's wire format, checked against a float64 Caffe forward.

The encoder below writes ``NetParameter`` messages from caffe.proto's field
numbers (new ``layer`` = 100 with string types and ``BlobShape``; old
``layers`` = 2 with enum types and 4-D num/channels/height/width), so the
importer is tested on the bytes Caffe writes, not on its own reader's idea of
them. The reference forward follows Caffe's semantics step by step: B, G, R
input minus the mean, grouped convolution, LRN across channels with
``k + alpha / n * sum`` over the zero-padded window, max pooling with the
output size rounded up, inner products on the flattened C x H x W blob.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alexnet.cli.main import main as cli
from alexnet.data.transforms import preprocess_image
from alexnet.interop.caffe import parse_mean, parse_prototxt, read_binaryproto, read_caffemodel
from alexnet import models
from alexnet.checkpoint import load_checkpoint
from alexnet.errors import UserError

CLASSES = 10
# bvlc_alexnet: (name, type, settings) in deploy.prototxt order
CONVS = {"conv1": (96, 3, 11, 4, 0, 1), "conv2": (256, 96, 5, 1, 2, 2), "conv3": (384, 256, 3, 1, 1, 1),
         "conv4": (384, 384, 3, 1, 1, 2), "conv5": (256, 384, 3, 1, 1, 2)}  # out, in, kernel, stride, pad, group
FCS = {"fc6": (4096, 9216), "fc7": (4096, 4096), "fc8": (CLASSES, 4096)}
V1_ENUM = {"Convolution": 4, "InnerProduct": 14, "LRN": 15, "Pooling": 17, "ReLU": 18, "Dropout": 6, "Softmax": 20}


# ------------------------------------------------------------------ protobuf wire format, written by hand
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_int(number: int, value: int) -> bytes:  # wire type 0: varint
    return varint(number << 3) + varint(value)


def blob(array: np.ndarray, legacy: bool = False) -> bytes:
    a = np.asarray(array, np.float32)
    if legacy:  # num, channels, height, width = fields 1..4; an fc weight as 1 x 1 x N x K, a bias as 1 x 1 x 1 x N
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(field_int(i + 1, d) for i, d in enumerate(dims))
    else:  # shape = 7: BlobShape { repeated int64 dim = 1 [packed] }
        head = field_bytes(7, field_bytes(1, b"".join(varint(d) for d in a.shape)))
    return head + field_bytes(5, a.astype("<f4").tobytes())  # data = 5, packed float


def layer_bytes(name: str, kind: str, blobs: list[bytes], v1: bool) -> bytes:
    if v1:  # NetParameter.layers = 2: V1LayerParameter { name = 4, type = 5 (enum), blobs = 6 }
        body = field_bytes(4, name.encode()) + field_int(5, V1_ENUM[kind]) + b"".join(field_bytes(6, b) for b in blobs)
        return field_bytes(2, body)
    body = field_bytes(1, name.encode()) + field_bytes(2, kind.encode()) + b"".join(field_bytes(7, b) for b in blobs)
    return field_bytes(100, body)  # NetParameter.layer = 100: LayerParameter { name = 1, type = 2, blobs = 7 }


def caffe_weights(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random weights in Caffe's layout (conv1 sees B, G, R), large enough that LRN changes the activations."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (o, i, k, *_rest) in CONVS.items():
        g = _rest[2]
        fan_in = i // g * k * k
        out[name] = (rng.normal(0, np.sqrt(2 / fan_in), (o, i // g, k, k)).astype(np.float32),
                     rng.normal(0, 0.5, o).astype(np.float32))
    for name, (o, i) in FCS.items():
        out[name] = (rng.normal(0, np.sqrt(2 / i), (o, i)).astype(np.float32), rng.normal(0, 0.5, o).astype(np.float32))
    return out


def caffemodel_bytes(weights: dict, v1: bool = False) -> bytes:
    net = field_bytes(1, b"AlexNet")
    for name in ("conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2", "conv3", "relu3", "conv4",
                 "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "prob"):
        kind = ("Convolution" if name in CONVS else "InnerProduct" if name in FCS else "ReLU" if name.startswith("relu")
                else "LRN" if name.startswith("norm") else "Pooling" if name.startswith("pool")
                else "Dropout" if name.startswith("drop") else "Softmax")
        blobs = [blob(a, legacy=v1) for a in weights[name]] if name in weights else []
        net += layer_bytes(name, kind, blobs, v1)
    return net


def deploy_prototxt(classes: int = CLASSES, v1: bool = False, **change) -> str:
    """bvlc_alexnet's deploy.prototxt (new syntax; ``v1``: the old ``layers { type: CONVOLUTION }`` one)."""
    def conv(name, bottom, out, k, stride=1, pad=0, group=1):
        p = f"num_output: {out} kernel_size: {k}" + (f" stride: {stride}" if stride != 1 else "")
        p += (f" pad: {pad}" if pad else "") + (f" group: {group}" if group != 1 else "")
        return f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n' \
               f'  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}\n' \
               f'  convolution_param {{ {change.get(name, p)} }} }}\n'

    def simple(name, kind, bottom, top, params=""):
        return f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" {params} }}\n'

    lrn = "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }"
    pool = "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"
    text = 'name: "AlexNet"\n# the deploy net of models/bvlc_alexnet\n'
    text += 'layer {\n  name: "data"\n  type: "Input"\n  top: "data"\n  input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } }\n}\n'
    text += conv("conv1", "data", 96, 11, stride=4) + simple("relu1", "ReLU", "conv1", "conv1")
    text += simple("norm1", "LRN", "conv1", "norm1", change.get("norm1", lrn)) + simple("pool1", "Pooling", "norm1", "pool1", pool)
    text += conv("conv2", "pool1", 256, 5, pad=2, group=2) + simple("relu2", "ReLU", "conv2", "conv2")
    text += simple("norm2", "LRN", "conv2", "norm2", lrn) + simple("pool2", "Pooling", "norm2", "pool2", pool)
    text += conv("conv3", "pool2", 384, 3, pad=1) + simple("relu3", "ReLU", "conv3", "conv3")
    text += conv("conv4", "conv3", 384, 3, pad=1, group=2) + simple("relu4", "ReLU", "conv4", "conv4")
    text += conv("conv5", "conv4", 256, 3, pad=1, group=2) + simple("relu5", "ReLU", "conv5", "conv5")
    text += simple("pool5", "Pooling", "conv5", "pool5", pool)
    for name, bottom, n in (("fc6", "pool5", 4096), ("fc7", "fc6", 4096), ("fc8", "fc7", classes)):
        text += simple(name, "InnerProduct", bottom, name, f"inner_product_param {{ num_output: {n} }}")
        if name != "fc8":
            text += simple(f"relu{name[2]}", "ReLU", name, name)
            text += simple(f"drop{name[2]}", "Dropout", name, name, "dropout_param { dropout_ratio: 0.5 }")
    text += simple("prob", "Softmax", "fc8", "prob")
    if v1:
        for new, old in (("Convolution", "CONVOLUTION"), ("InnerProduct", "INNER_PRODUCT"), ("ReLU", "RELU"),
                         ("LRN", "LRN"), ("Pooling", "POOLING"), ("Dropout", "DROPOUT"), ("Softmax", "SOFTMAX")):
            text = text.replace(f'type: "{new}"', f"type: {old}")
        text = text.replace("layer {", "layers {").replace('layers {\n  name: "data"\n  type: "Input"\n  top: "data"\n'
                                                          '  input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } }\n}\n',
                                                          'input: "data"\ninput_dim: 10\ninput_dim: 3\ninput_dim: 227\ninput_dim: 227\n')
    return text


# ------------------------------------------------------------------ Caffe's forward, float64
def caffe_lrn(x: torch.Tensor, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """Caffe's LRNLayer (ACROSS_CHANNELS): scale = k + alpha / n * sum of squares over the n channels around c."""
    sq = F.pad(x * x, (0, 0, 0, 0, (n - 1) // 2, n // 2))  # zeros beyond the first and last channel
    window = sum(sq[:, i:i + x.shape[1]] for i in range(n))
    return x * (k + alpha / n * window) ** -beta


def caffe_forward(bgr: np.ndarray, weights: dict) -> torch.Tensor:
    """``bgr``: N x 3 x 227 x 227, B, G, R pixel values minus the mean (float64): Caffe's fc8."""
    x = torch.from_numpy(bgr).double()
    w = {k: (torch.from_numpy(a).double(), torch.from_numpy(b).double()) for k, (a, b) in weights.items()}
    for name, (_, _, _, stride, pad, group) in CONVS.items():
        x = F.relu(F.conv2d(x, *w[name], stride=stride, padding=pad, groups=group))
        if name in ("conv1", "conv2"):
            x = caffe_lrn(x)
        if name in ("conv1", "conv2", "conv5"):
            x = F.max_pool2d(x, 3, 2, ceil_mode=True)  # Caffe rounds the pooled size up
    x = x.flatten(1)
    x = F.relu(F.linear(x, *w["fc6"]))
    x = F.relu(F.linear(x, *w["fc7"]))
    return F.linear(x, *w["fc8"])


def photo(seed: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    c = rng.uniform(-1, 1, (3, 4))
    img = np.stack([c[i, 0] * x + c[i, 1] * y + c[i, 2] * np.sin(9 * x * y + c[i, 3]) for i in range(3)], -1)
    return np.clip(128 + 90 * img + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def caffe_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("caffe")
    weights = caffe_weights()
    (d / "deploy.prototxt").write_text(deploy_prototxt())
    (d / "bvlc_alexnet.caffemodel").write_bytes(caffemodel_bytes(weights))
    mean_bgr = np.random.default_rng(1).uniform(60, 180, (3, 256, 256)).astype(np.float32)
    mean_bgr += np.array([0, 20, 40], np.float32)[:, None, None]  # channels differ: a B, G, R mix-up shows
    (d / "mean.binaryproto").write_bytes(blob(mean_bgr[None], legacy=True))  # as Caffe's imagenet_mean: 1 x 3 x 256 x 256
    lines = [f"n{i:08d} class {i}, the {i}th" for i in range(CLASSES)]
    (d / "synset_words.txt").write_text("\n".join(lines) + "\n")
    return d, weights, mean_bgr


@pytest.mark.slow  # about 10 s: full-size weights (233 MB) written, read and saved
def test_caffe_import_matches_a_float64_caffe_forward(caffe_files, capsys):
    d, weights, mean_bgr = caffe_files
    assert cli(["convert", "caffe", str(d / "deploy.prototxt"), str(d / "bvlc_alexnet.caffemodel"), str(d / "c.ckpt"),
                "--synsets", str(d / "synset_words.txt"), "--mean", str(d / "mean.binaryproto")]) == 0
    assert "alexnet-caffe, 10 classes, 227 px crop of 256 px" in capsys.readouterr().out
    ckpt = load_checkpoint(d / "c.ckpt")
    model = models.from_checkpoint(ckpt).eval()
    assert ckpt["classes"][3] == "n00000003" and ckpt["class_names"][3] == "class 3, the 3th"
    assert ckpt["eval_transform"]["mean"] == "image" and ckpt["eval_transform"]["scale"] == 255.0
    images = [photo(s) for s in range(2)]
    ours = torch.stack([preprocess_image(Image.fromarray(im), ckpt["eval_transform"], ckpt["data_stats"])
                        for im in images])
    with torch.no_grad():
        got = model(ours).double()
    top = (256 - 227) // 2  # Caffe's centre crop offset
    bgr = np.stack([im[top:top + 227, top:top + 227, ::-1].transpose(2, 0, 1) for im in images]).astype(np.float64)
    want = caffe_forward(bgr - mean_bgr[:, top:top + 227, top:top + 227], weights)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    print(f"caffe parity: max |diff| / max |logit| = {rel:.2e} (max |logit| {want.abs().max():.1f})")
    assert rel <= 1e-4
    assert torch.isfinite(got).all() and got.argmax(1).tolist() == want.argmax(1).tolist()
    # the LRN matters at these activations: without it the logits move by far more than the tolerance
    x = torch.from_numpy(bgr[:1] - mean_bgr[:, top:top + 227, top:top + 227])
    plain = F.conv2d(x, torch.from_numpy(weights["conv1"][0]).double(), torch.from_numpy(weights["conv1"][1]).double(), stride=4)
    assert (caffe_lrn(F.relu(plain)) - F.relu(plain)).abs().max() > 0.1 * F.relu(plain).abs().max()


@pytest.mark.slow
def test_old_layers_syntax_and_4d_blobs_give_the_same_weights(caffe_files, tmp_path):
    """bvlc_alexnet.caffemodel as distributed predates `layer`: V1 layers with enum types and num/channels/height/width."""
    d, weights, _ = caffe_files
    (tmp_path / "v1.prototxt").write_text(deploy_prototxt(v1=True))
    (tmp_path / "v1.caffemodel").write_bytes(caffemodel_bytes(weights, v1=True))
    assert "layers {" in (tmp_path / "v1.prototxt").read_text() and "CONVOLUTION" in (tmp_path / "v1.prototxt").read_text()
    assert cli(["convert", "caffe", str(tmp_path / "v1.prototxt"), str(tmp_path / "v1.caffemodel"),
                str(tmp_path / "v1.ckpt"), "--mean", "104,117,123"]) == 0
    v1 = load_checkpoint(tmp_path / "v1.ckpt")
    if not (d / "c.ckpt").exists():
        assert cli(["convert", "caffe", str(d / "deploy.prototxt"), str(d / "bvlc_alexnet.caffemodel"), str(d / "c.ckpt")]) == 0
    v2 = load_checkpoint(d / "c.ckpt")
    assert v1["state_dict"].keys() == v2["state_dict"].keys()
    for k in v1["state_dict"]:
        assert torch.equal(v1["state_dict"][k], v2["state_dict"][k]), k
    torch.testing.assert_close(v1["state_dict"]["conv1.weight"], torch.from_numpy(weights["conv1"][0]).flip(1))
    assert v1["eval_transform"]["mean"] == "rgb" and v1["data_stats"]["mean_rgb"].tolist() == [123.0, 117.0, 104.0]
    assert v1["classes"] == [str(i) for i in range(CLASSES)]


def test_mean_file_reads_bgr_as_rgb(tmp_path):
    d = tmp_path
    mean_bgr = np.random.default_rng(1).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    (d / "mean.binaryproto").write_bytes(blob(mean_bgr[None]))
    image = read_binaryproto(d / "mean.binaryproto")
    assert image.shape == (256, 256, 3)
    np.testing.assert_array_equal(image[..., 0], mean_bgr[2])  # R is Caffe's third channel
    layers = []
    _, rgb, _ = parse_mean("104, 117, 123", layers, d / "deploy.prototxt")
    assert rgb == [123.0, 117.0, 104.0]
    _, rgb, what = parse_mean(None, layers, d / "deploy.prototxt")
    assert rgb == [123.0, 117.0, 104.0] and "ILSVRC" in what
    with pytest.raises(UserError, match="B,G,R values"):
        parse_mean("1,2", layers, d / "deploy.prototxt")


def test_prototxt_text_format():
    msg = parse_prototxt('name: "a" # comment\nlayer: { dim: [1, 2, 3] s: "x" \'y\' k: 1e-4; t: MAX }\nlayer < n: -2 >\n')
    assert msg == [("name", "a"), ("layer", [("dim", 1), ("dim", 2), ("dim", 3), ("s", "xy"), ("k", 1e-4), ("t", "MAX")]),
                   ("layer", [("n", -2)])]


# ------------------------------------------------------------------ bad input: one line, exit 2
def _fail(argv, capsys) -> str:
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def _small_model(tmp_path, conv1_shape=(96, 3, 11, 11)) -> str:
    """A caffemodel with conv1 only (the importer checks layers in order and stops at the first problem)."""
    rng = np.random.default_rng(0)
    data = layer_bytes("conv1", "Convolution", [blob(rng.normal(size=conv1_shape)), blob(np.zeros(96))], v1=False)
    (tmp_path / "small.caffemodel").write_bytes(data)
    return str(tmp_path / "small.caffemodel")


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "deploy.prototxt").write_text(deploy_prototxt())
    proto, out = str(tmp_path / "deploy.prototxt"), str(tmp_path / "o.ckpt")
    assert "caffemodel not found" in _fail(["convert", "caffe", proto, str(tmp_path / "none.caffemodel"), out], capsys)
    assert "prototxt not found" in _fail(["convert", "caffe", str(tmp_path / "no.prototxt"), proto, out], capsys)
    (tmp_path / "junk.caffemodel").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "is not a Caffe model" in _fail(["convert", "caffe", proto, str(tmp_path / "junk.caffemodel"), out], capsys)
    # the arguments swapped: a prototxt where the weights go, weights where the prototxt goes
    assert "is not a Caffe model" in _fail(["convert", "caffe", proto, proto, out], capsys)
    small = _small_model(tmp_path)
    assert "not a prototxt" in _fail(["convert", "caffe", small, small, out], capsys)
    err = _fail(["convert", "caffe", proto, _small_model(tmp_path, (96, 3, 7, 7)), out], capsys)
    assert "layer conv1 weights have shape 96 x 3 x 7 x 7" in err and "96 x 3 x 11 x 11" in err
    assert "no weights for layer 'conv2'" in _fail(["convert", "caffe", proto, _small_model(tmp_path), out], capsys)
    assert not (tmp_path / "o.ckpt").exists()


def test_other_architectures_are_refused(tmp_path, capsys):
    small = _small_model(tmp_path)
    text = deploy_prototxt()
    norm1, pool1, conv2 = (text.index(f'layer {{ name: "{n}"') for n in ("norm1", "pool1", "conv2"))
    cases = {
        "group 1, but alexnet-caffe (bvlc_alexnet) has 2": deploy_prototxt(conv2="num_output: 256 kernel_size: 5 pad: 2"),
        "k 2.0, but": deploy_prototxt(norm1="lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 k: 2 }"),
        # CaffeNet (bvlc_reference_caffenet): conv1 relu1 pool1 norm1, pooling first
        "CaffeNet's order": text[:norm1] + text[pool1:conv2] + text[norm1:pool1] + text[conv2:],
    }
    for want, text in cases.items():
        (tmp_path / "x.prototxt").write_text(text)
        assert want in _fail(["convert", "caffe", str(tmp_path / "x.prototxt"), small, str(tmp_path / "o.ckpt")], capsys)
    (tmp_path / "x.prototxt").write_text(deploy_prototxt().replace("dim: 227 dim: 227", "dim: 224 dim: 224"))
    assert "takes 3 x 227 x 227" in _fail(["convert", "caffe", str(tmp_path / "x.prototxt"), small, "o.ckpt"], capsys)


def test_synset_file_must_match_the_outputs(tmp_path, capsys):
    (tmp_path / "deploy.prototxt").write_text(deploy_prototxt())
    (tmp_path / "syn.txt").write_text("n1 a\nn2 b\n")
    err = _fail(["convert", "caffe", str(tmp_path / "deploy.prototxt"), _small_model(tmp_path),
                 str(tmp_path / "o.ckpt"), "--synsets", str(tmp_path / "syn.txt")], capsys)
    assert "has 2 lines, but the net has 10 outputs" in err


def test_reader_reads_fields_it_was_not_asked_for_past(tmp_path):
    """Unknown fields of every wire type are skipped (a real caffemodel carries params, phase, loss weights...)."""
    extra = field_int(10, 1) + varint(5 << 3 | 5) + b"\0\0\x80?" + varint(9 << 3 | 1) + b"\0" * 8
    body = field_bytes(1, b"conv1") + extra + field_bytes(7, blob(np.ones((2, 3)))) + field_bytes(6, field_bytes(1, b"w"))
    (tmp_path / "m.caffemodel").write_bytes(field_bytes(1, b"net") + field_bytes(100, body) + field_int(5, 0))
    layers = read_caffemodel(tmp_path / "m.caffemodel")
    assert list(layers) == ["conv1"] and layers["conv1"][0].shape == (2, 3)
