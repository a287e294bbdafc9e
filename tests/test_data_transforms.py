"""Transforms: exact patch positions, the PCA lighting's distribution, mean subtraction where the crop was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data.transforms import (
    TENCROP_ORDER, CenterCrop, EvalTransform, Normalize, PCALighting, RandomCrop, RandomFlip, SubtractMean,
    TenCrop, TrainTransform, eval_spec, preprocess_image,
)


def numbered(b: int = 2, c: int = 3, h: int = 9, w: int = 11) -> torch.Tensor:
    """Every pixel a different value, so a patch shows exactly where it was cut."""
    return torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)


def random_stats(h: int, w: int, seed: int = 0) -> dict:
    """Statistics as stats.npz holds them: pixel units (0..255; eigenvalues in grey levels squared)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return {"mean_image": rng.uniform(0, 255, (h, w, 3)), "mean_rgb": rng.uniform(0, 255, 3),
            "eigval": np.array([4000.0, 250.0, 40.0]), "eigvec": q}


def test_ten_crop_positions_exact_and_documented_order():
    x = numbered(h=9, w=11)
    out = TenCrop(5)(x)
    assert out.shape == (2, 10, 3, 5, 5)
    corners = {"top-left": (0, 0), "top-right": (0, 6), "bottom-left": (4, 0), "bottom-right": (4, 6), "centre": (2, 3)}
    assert TENCROP_ORDER[:5] == tuple(corners)
    for k, name in enumerate(TENCROP_ORDER):
        t, l = corners[name.replace(" flipped", "")]
        want = x[:, :, t:t + 5, l:l + 5]
        if name.endswith("flipped"):
            assert k >= 5
            want = want.flip(-1)
        assert torch.equal(out[:, k], want), name
    # the centre patch is CenterCrop's
    assert torch.equal(out[:, 4], CenterCrop(5)(x))


def test_ten_crop_of_a_padded_small_image():
    x = numbered(b=1, h=6, w=6)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect"))
    out = TenCrop(6, padding=2)(x)
    assert torch.equal(out[:, 0], padded[:, :, :6, :6]) and torch.equal(out[:, 3], padded[:, :, 4:, 4:])
    assert torch.equal(out[:, 4], x)  # the centre of the padded image is the image


def test_random_crop_is_an_exact_patch_at_every_position():
    x = numbered(b=400, c=1, h=8, w=8)
    crop = RandomCrop(5)
    g = torch.Generator().manual_seed(0)
    patch = crop.sample(400, 8, 8, g)
    out = patch.apply(x)
    for i in range(400):
        t, l = int(patch.top[i]), int(patch.left[i])
        assert torch.equal(out[i], x[i, :, t:t + 5, l:l + 5])
    assert set(patch.top.tolist()) == set(range(4)) and set(patch.left.tolist()) == set(range(4))  # uniform over 4 x 4
    padded = RandomCrop(8, padding=2).sample(400, 8, 8, g)
    assert set(padded.top.tolist()) == set(range(5))
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    got = padded.apply(x)
    for i in range(0, 400, 37):
        t, l = int(padded.top[i]), int(padded.left[i])
        np.testing.assert_array_equal(got[i].numpy(), ref[i, :, t:t + 8, l:l + 8])


def test_random_flip_half_the_time():
    x = numbered(b=2000, c=1, h=2, w=3)
    out = RandomFlip()(x, torch.Generator().manual_seed(1))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all()) and 0.45 < flipped.float().mean().item() < 0.55


def test_pca_lighting_offsets_have_the_documented_covariance():
    """Along principal component i the offset has standard deviation 0.1 * sqrt(eigval_i) grey levels."""
    stats = random_stats(1, 1)
    light = PCALighting(stats["eigval"], stats["eigvec"], std=0.1)
    g = torch.Generator().manual_seed(0)
    n = 40000
    # both ways of drawing a: torch's normal generator, and Box-Muller from the loader's per-sample uniforms
    for alpha in (light.sample(n, g), light.from_uniform(torch.rand(n, 6, generator=g, dtype=torch.float64))):
        offsets = light.offsets(alpha).double().numpy()  # n x 3 colours added to the images
        in_basis = offsets @ stats["eigvec"]  # coordinates along the eigenvectors: a_i * sqrt(eigval_i)
        cov = np.cov(in_basis, rowvar=False)
        expected = 0.01 * np.diag(stats["eigval"])
        np.testing.assert_allclose(np.diag(cov), np.diag(expected), rtol=0.05)
        off_diag = cov - np.diag(np.diag(cov))
        assert np.abs(off_diag).max() < 0.05 * expected.max()
        assert abs(in_basis.mean(0) / np.sqrt(np.diag(expected))).max() < 0.05  # zero mean
    # the same colour is added to every pixel of an image, a different one per image
    x = torch.zeros(3, 3, 4, 5)
    y = light(x, torch.Generator().manual_seed(2))
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y)) and not torch.allclose(y[0], y[1])


def test_mean_image_is_cut_where_the_crop_was():
    stats = random_stats(10, 10)
    x = torch.randint(0, 256, (64, 3, 10, 10), dtype=torch.uint8)
    mean = torch.from_numpy(stats["mean_image"]).permute(2, 0, 1).float()
    t = TrainTransform(7, stats, lighting=0.0)
    params = t.sample(64, 10, 10, torch.Generator().manual_seed(0))
    out = t.apply(x, params)
    # the same as subtracting the mean image from the whole image, then cropping and flipping (pixel units)
    whole = x.float() - mean
    want = params["patch"].apply(whole)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=0)
    assert params["patch"].flip.any() and not params["patch"].flip.all()
    # scale=1: the same in [0, 1] units
    t1 = TrainTransform(7, stats, lighting=0.0, scale=1.0)
    torch.testing.assert_close(t1.apply(x, params), want / 255, atol=1e-6, rtol=0)
    assert torch.equal(SubtractMean(mean)(whole + mean), whole + mean - mean)


@pytest.mark.parametrize("options", [dict(), dict(mean="rgb"), dict(padding=2), dict(scale=1.0),
                                     dict(normalize={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})])
def test_fused_pipeline_equals_the_composition(options):
    stats = random_stats(12, 12, seed=3)
    x = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    t = TrainTransform(10, stats, lighting=0.1, **options)
    params = t.sample(16, 12, 12, torch.Generator().manual_seed(0))
    fused, ref = t.apply(x, params), t.reference(x, params)
    tol = 2e-6 * options.get("scale", 255.0 if "normalize" not in options else 1.0)
    torch.testing.assert_close(fused, ref, atol=tol, rtol=0)
    # and the reference is the small transforms one after another: lighting in grey levels, then the mean
    patch = params["patch"]
    y = patch.apply(x).float()
    y = PCALighting(stats["eigval"], stats["eigvec"])(y, alpha=params["alpha"])
    if "normalize" in options:
        y = Normalize(**options["normalize"])(y / 255)
    elif options.get("mean") == "rgb":
        y = SubtractMean(stats["mean_rgb"])(y)
    else:
        y = SubtractMean(torch.from_numpy(stats["mean_image"]).permute(2, 0, 1))(y, patch)
    if "scale" in options:
        y = y * options["scale"] / 255
    torch.testing.assert_close(ref, y, atol=tol / 2, rtol=0)
    for tta in ("center", "10crop"):
        e = EvalTransform(10, stats, tta, padding=options.get("padding", 0), mean=options.get("mean", "image"),
                          normalize=options.get("normalize"), scale=options.get("scale", 255.0))
        torch.testing.assert_close(e.apply(x), e.reference(x), atol=tol, rtol=0)


def test_normalize_and_generator_determinism():
    x = torch.rand(2, 3, 4, 4)
    n = Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.5])
    torch.testing.assert_close(n(x)[:, 1], (x[:, 1] - 0.4) / 0.25)
    stats = random_stats(8, 8)
    t = TrainTransform(6, stats)
    u = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    a = t(u, torch.Generator().manual_seed(7))
    assert torch.equal(a, t(u, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, t(u, torch.Generator().manual_seed(8)))


def test_preprocess_image_is_the_eval_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    stats = random_stats(48, 48)
    spec = eval_spec(resize=48, crop=40, mean="image")
    out = preprocess_image(tmp_path / "x.png", spec, stats)
    assert out.shape == (3, 40, 40)
    # by hand: shorter side to 48 with the central square, centre 40, minus the mean image's centre (pixel units)
    im = Image.fromarray(arr).resize((48, 48), Image.Resampling.BICUBIC, box=(15, 0, 75, 60))
    u = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None]
    want = EvalTransform(40, stats, "center")(u)[0]
    torch.testing.assert_close(out, want)
    mean = torch.from_numpy(stats["mean_image"]).permute(2, 0, 1).float()[:, 4:44, 4:44]
    torch.testing.assert_close(out, u[0, :, 4:44, 4:44].float() - mean, atol=1e-4, rtol=0)
    # a spec with scale 1 ([0, 1] units), and one without "scale" (an older checkpoint's: [0, 1] units too)
    for s in (eval_spec(48, 40, "image", scale=1.0), {k: v for k, v in spec.items() if k != "scale"}):
        torch.testing.assert_close(preprocess_image(tmp_path / "x.png", s, stats), out / 255, atol=1e-6, rtol=0)
    ten = preprocess_image(Image.fromarray(arr), spec, stats, tta="10crop")
    assert ten.shape == (10, 3, 40, 40) and torch.equal(ten[4], out)
    # converted torchvision weights: normalize, no statistics needed; one channel for grey models
    norm = {"mean": [0.5], "std": [0.25]}
    grey = preprocess_image(tmp_path / "x.png", eval_spec(48, 40, normalize=norm, channels=1), None)
    assert grey.shape == (1, 40, 40) and grey.min() >= -2 and grey.max() <= 2
    # a mean image stored at another size is resized to the spec's
    small = {"mean_image": np.full((24, 24, 3), 127.5), "mean_rgb": np.full(3, 127.5)}
    torch.testing.assert_close(preprocess_image(tmp_path / "x.png", spec, small), u[0, :, 4:44, 4:44].float() - 127.5,
                               atol=1e-4, rtol=0)


def test_gather_patches_equal_sliced_patches():
    """The GPU's batched gather cuts the same pixels as the CPU's per-sample slices."""
    x = numbered(b=33, h=12, w=10)
    g = torch.Generator().manual_seed(3)
    for padding in (0, 2):
        patch = RandomCrop(7, padding).sample(33, 12, 10, g)
        patch.flip = RandomFlip().sample(33, g)
        assert torch.equal(patch.apply(x, "gather"), patch.apply(x, "slices"))
        mean = numbered(b=1, h=12, w=10)[0]
        assert torch.equal(patch.apply(mean, "gather"), patch.apply(mean, "slices"))
