"""The network against the paper's numbers and against independent references."""

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision

from alexnet import models
from alexnet.cli.main import main as cli
from alexnet.models.lrn import local_response_norm

# At each variant's own input size and class count (alexnet-small: 32 px, 10 classes).
PARAMS = {"alexnet": 60_965_224, "alexnet-caffe": 60_965_224, "alexnet-owt": 61_100_840, "alexnet-small": 1_011_978}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count(name):
    m = models.create(name)
    assert sum(p.numel() for p in m.parameters()) == PARAMS[name]


def test_paper_shapes_and_names():
    m = models.create("alexnet").eval()
    acts = m.extract(torch.randn(1, 3, 224, 224), m.layer_names())
    sides = {n: acts[n].shape[-1] for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")}
    assert sides == {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13, "conv4": 13, "conv5": 13, "pool5": 6}
    assert [acts[f"conv{i}"].shape[1] for i in range(1, 6)] == [96, 256, 384, 384, 256]
    assert acts["fc7"].shape == (1, 4096) and acts["fc8"].shape == (1, 1000)
    for i, groups in zip(range(1, 6), (1, 2, 1, 2, 2)):
        conv = getattr(m, f"conv{i}")
        assert isinstance(conv, torch.nn.Conv2d) and conv.groups == groups
    assert [n for n, _ in m.named_children() if n.startswith(("conv", "fc"))] == [
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert m.conv1.padding == (2, 2) and m.pool1.kernel_size == 3 and m.pool1.stride == 2


def test_caffe_shapes():
    m = models.create("alexnet-caffe").eval()
    acts = m.extract(torch.randn(1, 3, 227, 227), ("conv1", "pool5"))
    assert acts["conv1"].shape[-1] == 55 and acts["pool5"].shape[-1] == 6
    assert m.conv1.padding == (0, 0)
    assert m.norm1.groups == 1 and m.norm1.k == 1.0 and m.norm1.alpha_per_channel


def test_small_shapes():
    m = models.create("alexnet-small", num_classes=10).eval()
    acts = m.extract(torch.randn(2, 3, 32, 32), m.layer_names())
    assert [acts[n].shape[-1] for n in ("conv1", "pool1", "pool2", "pool5")] == [32, 15, 7, 3]
    g = models.create("alexnet-small", in_channels=1, input_size=28).eval()
    assert g(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [5, 3, 4])
def test_lrn_matches_formula(groups, size, lrn_reference):
    x = torch.randn(3, 96, 5, 5) * 30  # large enough that the normalization bites
    got = local_response_norm(x, size, 1e-4, 0.75, 2.0, groups)
    want = lrn_reference(x, size, 1e-4, 0.75, 2.0, groups)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_lrn_alpha_semantics():
    x = torch.randn(2, 16, 4, 4) * 20
    paper = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    # PyTorch divides alpha by n: the paper's alpha=1e-4 is 5e-4 there.
    torch.testing.assert_close(paper, F.local_response_norm(x, 5, 5e-4, 0.75, 2.0), rtol=1e-5, atol=1e-6)
    caffe = local_response_norm(x, 5, 1e-4, 0.75, 1.0, alpha_per_channel=True)
    torch.testing.assert_close(caffe, F.local_response_norm(x, 5, 1e-4, 0.75, 1.0), rtol=1e-5, atol=1e-6)


def test_lrn_tower_boundary():
    m = models.create("alexnet")
    assert m.norm1.groups == 2 and m.norm2.groups == 2
    x = torch.ones(1, 96, 3, 3)
    base = m.norm1(x)
    x2 = x.clone()
    x2[:, 47] = 1000.0  # last channel of tower 1
    out = m.norm1(x2)
    assert torch.equal(out[:, 48:], base[:, 48:])  # tower 2 untouched
    assert not torch.allclose(out[:, 46], base[:, 46])  # its own neighbours feel it
    caffe = models.create("alexnet-caffe")
    assert not torch.allclose(caffe.norm1(x2)[:, 48], caffe.norm1(x)[:, 48])  # Caffe mixes towers


def test_lrn_backward_matches_autograd_reference(lrn_reference):
    x = (torch.randn(2, 12, 3, 3, dtype=torch.float64) * 20).requires_grad_()
    g = torch.randn(2, 12, 3, 3, dtype=torch.float64)
    for groups, size in ((1, 5), (2, 5), (2, 4)):
        (ours,) = torch.autograd.grad(local_response_norm(x, size, 1e-3, 0.75, 2.0, groups), x, g)
        (ref,) = torch.autograd.grad(lrn_reference(x, size, 1e-3, 0.75, 2.0, groups), x, g)
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


def test_lrn_under_autocast_keeps_dtype_and_float32_accuracy(lrn_reference):
    conv = torch.nn.Conv2d(3, 32, 3)
    x = torch.randn(4, 3, 8, 8) * 30  # large enough that the normalization bites
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = conv(x)
        y = local_response_norm(a, 5, 1e-4, 0.75, 2.0, 2)
    assert a.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    # Computed in float32 and rounded once to bf16 (8 significant bits); the
    # same formula in bf16 is off by about 10%.
    want = lrn_reference(a, 5, 1e-4, 0.75, 2.0, 2)
    torch.testing.assert_close(y.double(), want, rtol=2**-7, atol=1e-3)


def two_tower_reference(m, x, lrn_reference):
    """The paper's network written as two explicit towers (one per GPU)."""
    def split(conv, t):  # weights of tower t of a conv layer
        n = conv.out_channels // 2
        return conv.weight[t * n : (t + 1) * n], conv.bias[t * n : (t + 1) * n]

    def lrn(a):
        return lrn_reference(a, 5, 1e-4, 0.75, 2.0).float()

    def pool(a):
        return F.max_pool2d(a, 3, 2)

    towers = []
    for t in range(2):
        w, b = split(m.conv1, t)
        towers.append(pool(lrn(F.relu(F.conv2d(x, w, b, 4, 2)))))
    towers = [pool(lrn(F.relu(F.conv2d(towers[t], *split(m.conv2, t), padding=2)))) for t in range(2)]
    both = torch.cat(towers, 1)  # conv3 sees both towers
    towers = [F.relu(F.conv2d(both, *split(m.conv3, t), padding=1)) for t in range(2)]
    towers = [F.relu(F.conv2d(towers[t], *split(m.conv4, t), padding=1)) for t in range(2)]
    towers = [pool(F.relu(F.conv2d(towers[t], *split(m.conv5, t), padding=1))) for t in range(2)]
    h = torch.cat(towers, 1).flatten(1)
    h = F.relu(F.linear(h, m.fc6.weight, m.fc6.bias))
    h = F.relu(F.linear(h, m.fc7.weight, m.fc7.bias))
    return F.linear(h, m.fc8.weight, m.fc8.bias)


@pytest.mark.slow
def test_grouped_net_equals_two_towers(lrn_reference):
    m = models.create("alexnet", num_classes=20).eval()
    with torch.no_grad():  # larger weights so LRN and every layer matter
        for p in m.parameters():
            p.mul_(5.0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, want = m(x), two_tower_reference(m, x, lrn_reference)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_owt_loads_torchvision_weights():
    tv = torchvision.models.alexnet(num_classes=1000).eval()
    ours = models.create("alexnet-owt").eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x), tv(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    # and round-trips through our own state_dict
    again = models.create("alexnet-owt")
    again.load_state_dict(ours.state_dict())
    assert torch.equal(again.fc8.weight, tv.classifier[6].weight)


def test_paper_init_statistics():
    m = models.create("alexnet")
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        w = getattr(m, name).weight
        assert abs(w.std().item() - 0.01) < 0.0005, name
        assert abs(w.mean().item()) < 0.001, name
    for name, b in {"conv1": 0, "conv2": 1, "conv3": 0, "conv4": 1, "conv5": 1, "fc6": 1, "fc7": 1, "fc8": 0}.items():
        assert torch.all(getattr(m, name).bias == b), name


def test_caffe_init_statistics():
    m = models.create("alexnet-caffe")
    assert abs(m.fc6.weight.std().item() - 0.005) < 0.0003
    assert abs(m.conv1.weight.std().item() - 0.01) < 0.0005
    for name, b in {"conv1": 0, "conv2": 0.1, "conv3": 0, "conv4": 0.1, "conv5": 0.1, "fc6": 0.1, "fc7": 0.1, "fc8": 0}.items():
        assert torch.allclose(getattr(m, name).bias, torch.full_like(getattr(m, name).bias, b)), name


def _dropped(seen: torch.Tensor, kept: torch.Tensor, p: float = 0.5) -> bool:
    """Whether ``seen`` is ``kept`` through dropout p (some units zeroed, the rest scaled by 1/(1-p)), not ``kept`` itself."""
    if torch.equal(seen, kept):
        return False
    torch.testing.assert_close(seen, kept * (seen != 0) / (1 - p))
    return True


@pytest.mark.parametrize("name, options, before", [("alexnet", {}, False), ("alexnet-small", {}, False),
                                                   ("alexnet-owt", {"width": 0.25}, True)])
def test_dropout_after_relu_in_paper_before_fc_in_owt(name, options, before):
    """The paper drops fc6's and fc7's outputs (fc8 sees a dropped fc7); torchvision drops fc6's and fc7's inputs."""
    m = models.create(name, num_classes=5, **options).train()
    assert m.cfg.dropout_before_fc is before
    seen = {}
    for layer in ("fc6", "fc7", "fc8"):
        getattr(m, layer).register_forward_hook(lambda mod, inp, out, layer=layer: seen.update({layer: (inp[0], out)}))
    s = m.cfg.input_size
    x = torch.randn(2, 3, s, s) * m.cfg.input_scale
    with torch.no_grad():
        m(x)
        run = dict(seen)
        features = m.forward_features(x).flatten(1)  # nothing random before fc6
        fc7 = m.extract(x, ("fc7",))["fc7"]
    assert _dropped(run["fc6"][0], features) is before  # dropout on pool5's features
    assert _dropped(run["fc8"][0], F.relu(run["fc7"][1])) is not before  # dropout on fc7's output
    assert _dropped(run["fc7"][0], F.relu(run["fc6"][1]))  # between fc6 and fc7 in both
    assert torch.equal(fc7, F.relu(seen["fc7"][1]))  # extract's fc7: after the ReLU, before dropout


@pytest.mark.parametrize("name", [n if n == "alexnet-small" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in models.names()])
def test_forward_backward_and_eval_determinism(name):
    m = models.create(name, num_classes=7)
    s = m.cfg.input_size
    x = torch.randn(2, 3, s, s)
    m.train()
    loss = F.cross_entropy(m(x), torch.tensor([1, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        a, b = m(x), m(x)
        feats = m.forward_head(m.forward_features(x), pre_logits=True)
    assert torch.equal(a, b)
    assert feats.shape == (2, m.num_features)
    torch.testing.assert_close(feats, m.extract(x, ("fc7",))["fc7"])


@pytest.mark.parametrize("opt", [dict(lrn="off"), dict(pool="2/2"), dict(activation="tanh"), dict(dropout=0.0), dict(width=0.5), dict(in_channels=1), dict(bias=0.0)])
def test_ablation_options(opt):
    m = models.create("alexnet-small", **opt).eval()
    x = torch.randn(2, m.cfg.in_channels, 32, 32)
    assert m(x).shape == (2, 10)
    if "lrn" in opt:
        assert not hasattr(m, "norm1")
    if "pool" in opt:
        assert m.pool1.kernel_size == 2
    if "bias" in opt:
        assert all(torch.all(getattr(m, n).bias == 0) for n in ("conv2", "conv4", "conv5", "fc6", "fc7"))


@pytest.mark.parametrize("order", ["lrn-pool", "pool-lrn"])
def test_order_puts_lrn_before_or_after_the_pool(order):
    torch.manual_seed(0)
    m = models.create("alexnet-small", order=order, input_size=28, in_channels=1).double().eval()  # CPU
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64) * 3
    t = m.extract(x, ("conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "fc8"))
    for i in "12":
        conv, norm, pool = t[f"conv{i}"], t[f"norm{i}"], t[f"pool{i}"]
        if order == "lrn-pool":  # the paper: ReLU, LRN, max-pool
            torch.testing.assert_close(norm, getattr(m, f"norm{i}")(conv), rtol=0, atol=0)
            torch.testing.assert_close(pool, getattr(m, f"pool{i}")(norm), rtol=0, atol=0)
        else:  # CaffeNet: ReLU, max-pool, LRN
            torch.testing.assert_close(pool, getattr(m, f"pool{i}")(conv), rtol=0, atol=0)
            torch.testing.assert_close(norm, getattr(m, f"norm{i}")(pool), rtol=0, atol=0)
    other = models.create("alexnet-small", order="pool-lrn" if order == "lrn-pool" else "lrn-pool", input_size=28,
                          in_channels=1).double().eval()
    other.load_state_dict(m.state_dict())
    assert not torch.allclose(other(x), t["fc8"])  # the same weights, another network


def test_lrn_alpha_sets_the_strength_of_every_lrn_layer():
    torch.manual_seed(0)
    m = models.create("alexnet-small", lrn_alpha=6.5025, input_size=28, in_channels=1).double()  # CPU
    assert m.cfg.lrn.alpha == 6.5025 and m.cfg.lrn.k == 2.0
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(m.norm1(x), local_response_norm(x, 5, 6.5025, 0.75, 2.0, groups=2))
    # what 1e-4 x 255^2 stands for: on 255x larger input, the paper's alpha gives 255x the output
    paper = models.create("alexnet-small").norm1.double()
    torch.testing.assert_close(paper(255 * x), 255 * m.norm1(x))
    with pytest.raises(ValueError, match="lrn_alpha sets LRN's alpha, but alexnet-owt has LRN off"):
        models.create("alexnet-owt", lrn_alpha=1.0)
    with pytest.raises(ValueError, match="lrn_alpha must be greater than 0"):
        models.create("alexnet-small", lrn_alpha=0)


def test_bad_options():
    with pytest.raises(ValueError, match="pool"):
        models.create("alexnet", pool="4/4")
    with pytest.raises(ValueError, match="order must be one of lrn-pool, pool-lrn, not 'pool-first'"):
        models.create("alexnet", order="pool-first")
    with pytest.raises(ValueError, match="activation"):
        models.create("alexnet", activation="gelu")
    with pytest.raises(models.UnknownModelError, match="known models: alexnet"):
        models.create("vgg16")
    with pytest.raises(ValueError, match="unknown model option"):
        models.create("alexnet", colour="red")


def test_extract_unknown_layer():
    m = models.create("alexnet-small")
    with pytest.raises(ValueError, match="unknown layer"):
        m.extract(torch.randn(1, 3, 32, 32), ("fc9",))


def test_info_json(capsys):
    assert cli(["info", "alexnet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 60_965_224
    assert 0.72e9 < out["macs"] < 0.73e9
    assert [l["name"] for l in out["layers"]][:3] == ["conv1", "norm1", "pool1"]
    assert cli(["info", "alexnet-owt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 61_100_840


def test_info_unknown_model(capsys):
    assert cli(["info", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "alexnet-owt" in err and "Traceback" not in err


# ------------------------------------------------------------------ refused combinations
def test_refused_combinations():
    with pytest.raises(ValueError, match="alexnet-owt has no LRN layer, so lrn=on cannot be honoured"):
        models.create("alexnet-owt", lrn="on")
    with pytest.raises(ValueError, match="alexnet-owt has no LRN layer"):
        models.config_with(models.CONFIGS["alexnet-owt"], lrn=True)
    assert models.create("alexnet-owt", lrn="off", width=0.25).cfg.lrn is None  # nothing to turn off: honoured
    with pytest.raises(ValueError, match="bias .* init=torch"):
        models.create("alexnet-owt", bias=0.0)
    m = models.create("alexnet-owt", bias=0.5, init="paper", width=0.25)  # an init with constant biases: honoured
    assert torch.all(m.fc6.bias == 0.5)
    with pytest.raises(ValueError, match="lrn must be on or off"):
        models.create("alexnet", lrn="maybe")
    with pytest.raises(ValueError, match="init must be one of null, paper, caffe, kaiming, torch, not 'xavier'"):
        models.create("alexnet-small", init="xavier")
    with pytest.raises(ValueError, match=r"dropout must be at least 0 and below 1, not 1.0"):
        models.create("alexnet-small", dropout=1.0)


# ------------------------------------------------------------------ towers
@pytest.mark.parametrize("name", models.names())
def test_towers_option(name):
    small = {} if name == "alexnet-small" else {"width": 0.25}
    two, one = (models.create(name, towers=t, **small) for t in (2, 1))
    assert [getattr(two, c).groups for c in two.conv_names] == [1, 2, 1, 2, 2]
    assert [getattr(one, c).groups for c in one.conv_names] == [1, 1, 1, 1, 1]
    # the same total width, and the same state-dict keys
    assert [getattr(two, c).out_channels for c in two.conv_names] == [getattr(one, c).out_channels for c in one.conv_names]
    assert list(two.state_dict()) == list(one.state_dict())
    if two.cfg.has_lrn:
        per_tower = two.cfg.lrn.per_tower  # the paper's and alexnet-small's; Caffe's LRN spans all channels
        assert two.norm1.groups == (2 if per_tower else 1) and one.norm1.groups == 1
    s = two.cfg.input_size
    assert one.eval()(torch.randn(1, 3, s, s)).shape == two.eval()(torch.randn(1, 3, s, s)).shape


def test_one_tower_lrn_crosses_the_tower_boundary():
    m = models.create("alexnet", towers=1, width=0.25)
    x = torch.ones(1, 24, 3, 3)
    x2 = x.clone()
    x2[:, 11] = 1000.0  # the last channel of the first half
    assert not torch.allclose(m.norm1(x2)[:, 12], m.norm1(x)[:, 12])


def test_two_towers_are_one_tower_with_block_diagonal_kernels():
    """towers=2 is towers=1 with the kernels of conv2/4/5 that would cross the towers set to zero (LRN off)."""
    two = models.create("alexnet-small", towers=2, lrn="off").eval()
    one = models.create("alexnet-small", towers=1, lrn="off").eval()
    state = two.state_dict()
    for name in ("conv2", "conv4", "conv5"):
        w = state[f"{name}.weight"]
        o, i = w.shape[0] // 2, w.shape[1]
        full = torch.zeros(2 * o, 2 * i, *w.shape[2:])
        for t in range(2):
            full[t * o : (t + 1) * o, t * i : (t + 1) * i] = w[t * o : (t + 1) * o]
        state[f"{name}.weight"] = full
    one.load_state_dict(state)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(one(x), two(x), rtol=1e-5, atol=1e-5)


def test_width_that_does_not_split_into_towers():
    # 48 * 0.3125 = 15 kernels in conv1: the towers cannot halve them.
    with pytest.raises(ValueError) as err:
        models.create("alexnet-small", width=0.3125)
    assert str(err.value) == ("width 0.3125 gives conv1 15 channels, which do not split into 2 towers: "
                              "choose another width, or towers=1")
    m = models.create("alexnet-small", width=0.3125, towers=1).eval()
    assert m.conv1.out_channels == 15 and m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert models.create("alexnet-small", width=0.3).conv2.out_channels == 30  # own-tower layers round up (28.8 -> 30)
    with pytest.raises(ValueError, match="towers must be 1 or 2, not 3"):
        models.create("alexnet", towers=3)


# ------------------------------------------------------------------ timm-style API
def test_num_classes_and_reset_classifier():
    m = models.create("alexnet-small")
    assert m.num_classes == 10 and m.pretrained_cfg["num_classes"] == 10
    conv1 = m.conv1.weight.clone()
    m.reset_classifier(3)
    assert m.num_classes == 3 and m.cfg.num_classes == 3 and m.fc8.out_features == 3
    assert torch.equal(m.conv1.weight, conv1)  # only the head is new
    assert abs(m.fc8.weight.std().item() - 0.01) < 0.002 and torch.all(m.fc8.bias == 0)  # the variant's fc8 init
    assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    m.reset_classifier(0)  # timm's convention: no classifier, the output is fc7's
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.forward_head(m.forward_features(x), pre_logits=True))
    assert "fc8.weight" not in m.state_dict() and m.num_classes == 0
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        m.reset_classifier(-1)


def test_reset_classifier_keeps_dtype_and_foreign_keys():
    m = models.create("alexnet-owt", width=0.25).double()
    m.reset_classifier(7)
    assert m.fc8.weight.dtype == torch.float64
    assert m.state_dict()["classifier.6.weight"].shape == (7, 1024)
    bound = 1 / 1024**0.5  # torch's Linear init, the variant's
    assert m.fc8.weight.abs().max() <= bound and m.fc8.weight.std() > bound / 4


def test_pretrained_cfg_defaults():
    paper = models.create("alexnet", width=0.25).pretrained_cfg
    assert paper["input_size"] == (3, 224, 224) and paper["crop_pct"] == 224 / 256
    assert paper["interpolation"] == "bicubic" and paper["crop_mode"] == "center"
    assert paper["std"] == (1 / 255,) * 3 and paper["input_scale"] == 255  # raw pixels minus the mean
    assert paper["first_conv"] == "conv1" and paper["classifier"] == "fc8" and paper["fixed_input_size"]
    owt = models.create("alexnet-owt", width=0.25).pretrained_cfg
    assert owt["mean"] == (0.485, 0.456, 0.406) and owt["std"] == (0.229, 0.224, 0.225) and not owt["fixed_input_size"]
    small = models.create("alexnet-small", in_channels=1, input_size=28).pretrained_cfg
    assert small["input_size"] == (1, 28, 28) and small["crop_pct"] == 1.0 and small["std"] == (1.0,)


def _save(path, name="alexnet-small", options=None, mean="rgb", scale=255.0, classes=5):
    from alexnet.data.transforms import eval_spec
    from alexnet.checkpoint import save_checkpoint

    options = {"num_classes": classes, **(options or {})}
    model = models.create(name, **options)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh model has
    size = model.cfg.input_size
    save_checkpoint(path, {
        "model": {"name": name, "options": options},
        "state_dict": model.state_dict(),
        "classes": [f"n{i:08d}" for i in range(classes)],
        "class_names": [f"class {i}" for i in range(classes)],
        "eval_transform": eval_spec(size, size, mean, scale=scale),
        "data_stats": {"mean_image": torch.rand(size, size, 3) * 255, "mean_rgb": torch.tensor([120.0, 110.0, 100.0])},
    })
    return model.eval()


def test_create_from_checkpoint(tmp_path):
    want = _save(tmp_path / "run" / "best.ckpt", options={"width": 0.5})
    x = torch.randn(2, 3, 32, 32)
    for path in (tmp_path / "run" / "best.ckpt", tmp_path / "run"):  # the file, or the run's folder
        m = models.create("alexnet-small", checkpoint_path=path).eval()
        assert m.cfg.width == 0.5 and m.num_classes == 5
        with torch.no_grad():
            assert torch.equal(m(x), want(x))
    cfg = m.pretrained_cfg
    assert cfg["label_names"][0] == "n00000000" and cfg["label_descriptions"][0] == "class 0"
    assert cfg["mean"] == pytest.approx((120 / 255, 110 / 255, 100 / 255)) and cfg["std"] == (1 / 255,) * 3
    # timm's reading of it, (pixel / 255 - mean) / std, is this project's (pixel - mean) * scale / 255
    pixel = torch.rand(3) * 255
    timm = (pixel / 255 - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])
    torch.testing.assert_close(timm, (pixel - torch.tensor([120.0, 110.0, 100.0])) * 255 / 255)
    # a new head of another size: every other layer loaded
    m3 = models.create("alexnet-small", checkpoint_path=tmp_path / "run", num_classes=3)
    assert m3.num_classes == 3 and torch.equal(m3.conv1.weight, want.conv1.weight)
    assert m3.pretrained_cfg["label_names"] is None


def test_create_from_checkpoint_mean_image(tmp_path):
    _save(tmp_path / "a.ckpt", mean="image", scale=1.0)
    cfg = models.create("alexnet-small", checkpoint_path=tmp_path / "a.ckpt").pretrained_cfg
    assert cfg["mean_image"].shape == (32, 32, 3) and cfg["std"] == (1.0,) * 3
    torch.testing.assert_close(torch.tensor(cfg["mean"]), cfg["mean_image"].mean((0, 1)) / 255)


def test_create_from_exported_safetensors(tmp_path):
    from alexnet.interop.export import export_checkpoint

    want = _save(tmp_path / "a.ckpt", name="alexnet-owt", options={"width": 0.25})
    export_checkpoint(tmp_path / "a.ckpt", "safetensors", tmp_path / "export" / "model.safetensors")
    x = torch.randn(2, 3, 224, 224)
    for path in (tmp_path / "export" / "model.safetensors", tmp_path / "export"):
        m = models.create("alexnet-owt", checkpoint_path=path).eval()
        with torch.no_grad():
            assert torch.equal(m(x), want(x))
    assert m.pretrained_cfg["label_names"][4] == "n00000004"


def test_create_from_checkpoint_refusals(tmp_path):
    from alexnet.errors import UserError

    _save(tmp_path / "a.ckpt")
    with pytest.raises(UserError, match="holds model 'alexnet-small', not 'alexnet'"):
        models.create("alexnet", checkpoint_path=tmp_path / "a.ckpt")
    with pytest.raises(UserError, match="do not fit model alexnet-small"):
        models.create("alexnet-small", checkpoint_path=tmp_path / "a.ckpt", width=0.5)
    with pytest.raises(UserError, match="not found|no such|does not exist"):
        models.create("alexnet-small", checkpoint_path=tmp_path / "missing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no best.ckpt, last.ckpt or .safetensors file"):
        models.create("alexnet-small", checkpoint_path=tmp_path / "empty")


def test_torch_hub_local(tmp_path):
    """torch.hub.load(REPO, entry, source="local") on this checkout: offline, one entry per variant."""
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    for name in models.names():
        m = torch.hub.load(repo, name.replace("-", "_"), source="local", width=0.25, num_classes=4, verbose=False)
        assert isinstance(m, models.AlexNet) and m.cfg.name == name and m.num_classes == 4
    want = _save(tmp_path / "a.ckpt")
    m = torch.hub.load(repo, "alexnet_small", source="local", pretrained=True, checkpoint_path=str(tmp_path / "a.ckpt"),
                       verbose=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), want(x))
    with pytest.raises(ValueError, match="no weights are published for alexnet-owt; pass checkpoint_path"):
        torch.hub.load(repo, "alexnet_owt", source="local", pretrained=True, verbose=False)
