"""The paper's augmentation and test-time patches, as small named batch transforms.

Each transform works on a batch ``B x C x H x W`` (uint8 or float, any
device) and takes its randomness from a ``torch.Generator`` (drawn on the
CPU, so CPU and GPU runs get the same crops):

=================  ===========================================================
``RandomCrop``     a ``size`` square at a uniform random position of the image
                   (optionally reflection-padded by ``padding`` on each side)
``RandomFlip``     horizontal reflection with probability ``p`` (1/2)
``CenterCrop``     the central ``size`` square
``TenCrop``        the ten test patches, in :data:`TENCROP_ORDER`
``PCALighting``    the paper's colour augmentation: for each image a ~ N(0,
                   std^2) per principal component, add
                   ``eigvec @ (a * sqrt(eigval))`` to every pixel (grey levels)
``SubtractMean``   the mean image (cut at each sample's patch position and
                   reflected with it) or the mean colour
``Normalize``      ``(x - mean) / std``, for weights converted from torchvision
=================  ===========================================================

A :class:`Patch` records where each output pixel came from (per-sample top,
left, flip, and the padding), so the mean image is subtracted exactly at the
pixels the crop took. The pixel pipeline is uint8 until the last step:
patch -> float -> lighting (training only, in grey levels) -> minus the mean
-> times ``scale / 255``, or torchvision's normalize. The paper's network sees
raw pixel values minus the mean (``scale=255``, the default: no division by
255, none by a standard deviation); ``scale=1`` gives [0, 1] units.

:class:`TrainTransform` and :class:`EvalTransform` are those pipelines in
one object each (with a fused CPU path that is tested equal to the
composition of the small transforms), built from a prepared folder's
statistics. An eval *spec*, a plain JSON-able dict stored in checkpoints::

    {"resize": 256, "crop": 224, "mean": "image" | "rgb", "scale": 255.0,
     "normalize": None | {"mean": [...], "std": [...]}, "channels": 3}

(a spec without ``"scale"``, from an older checkpoint, means 1.0: those
weights were trained on [0, 1] values.)

and :func:`preprocess_image` take a user's image file through exactly the
evaluation pipeline (convert, shorter side to ``resize``, central square,
then the centre patch or the ten patches, then the same normalization).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .meta import is_small

TENCROP_ORDER = (
    "top-left", "top-right", "bottom-left", "bottom-right", "centre",
    "top-left flipped", "top-right flipped", "bottom-left flipped", "bottom-right flipped", "centre flipped",
)


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def _on(owner, name: str, tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor``, a constant of ``owner`` (the mean image, the eigenvectors), on ``device``: copied there
    once and kept, not copied again from pageable memory (a copy that waits for the stream) for every batch."""
    device = torch.device(device)
    if device.type == "cpu" or tensor.device == device:
        return tensor
    cache = owner.__dict__.setdefault("_device_copies", {})
    key = (name, str(device))
    if key not in cache:
        cache[key] = tensor.to(device)
    return cache[key]


def pad_reflect(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Reflect-pad the last two dimensions (edge pixel not repeated, as numpy's ``reflect``)."""
    if padding == 0:
        return images
    squeeze = images.dim() == 3
    x = images[None] if squeeze else images
    x = F.pad(x, (padding,) * 4, mode="reflect")
    return x[0] if squeeze else x


def default_padding(size: int) -> int:
    """Padding of the random crop for small images (size // 8: 4 for 32 px, 3 for 28 px); 0 otherwise."""
    return size // 8 if is_small(size) else 0


# ---------------------------------------------------------------- patches
@dataclass
class Patch:
    """Where each sample's ``size x size`` output comes from.

    ``top``/``left`` (``B`` long tensors) index the image padded by
    ``padding`` (reflection); ``flip`` (``B`` bool, or None) mirrors the patch
    horizontally after cutting it.
    """

    top: torch.Tensor
    left: torch.Tensor
    size: int
    flip: torch.Tensor | None = None
    padding: int = 0

    def apply(self, images: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """Cut the patches from ``images`` (``B x C x H x W``, or one ``C x H x W`` shared by all samples).

        ``method``: ``"slices"`` (one copy per sample: fastest on a CPU), ``"gather"``
        (two batched gathers: for GPUs); default: by the device.
        """
        x = pad_reflect(images, self.padding)
        s, b = self.size, len(self.top)
        top, left = self.top.tolist(), self.left.tolist()
        shared = x.dim() == 3
        method = method or ("slices" if x.device.type == "cpu" else "gather")
        if len(set(top)) == 1 and len(set(left)) == 1:  # one position for the whole batch: one slice
            out = x[..., top[0]:top[0] + s, left[0]:left[0] + s]
            out = out.expand(b, *out.shape) if shared else out
        elif method == "gather":
            # non_blocking: the loader pins these on CUDA (pageable ones are copied as before)
            rows = (self.top.to(x.device, non_blocking=True)[:, None] + torch.arange(s, device=x.device))
            cols = (self.left.to(x.device, non_blocking=True)[:, None] + torch.arange(s, device=x.device))
            xb = x.expand(b, *x.shape) if shared else x
            c = xb.shape[1]
            out = xb.gather(2, rows[:, None, :, None].expand(b, c, s, xb.shape[3]))
            out = out.gather(3, cols[:, None, None, :].expand(b, c, s, s))
        else:
            out = torch.empty((b, x.shape[-3], s, s), dtype=x.dtype, device=x.device)
            for i in range(b):
                src = x if shared else x[i]
                out[i] = src[:, top[i]:top[i] + s, left[i]:left[i] + s]
        if self.flip is not None:
            out = torch.where(self.flip.to(out.device, non_blocking=True)[:, None, None, None], out.flip(-1), out)
        return out.contiguous()


class RandomCrop:
    """A ``size x size`` patch at a uniformly random position (of the image padded by ``padding``)."""

    def __init__(self, size: int, padding: int = 0):
        self.size, self.padding = int(size), int(padding)

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> Patch:
        return self.from_uniform(torch.rand(batch, 2, generator=generator, dtype=torch.float64), height, width)

    def from_uniform(self, u: torch.Tensor, height: int, width: int) -> Patch:
        """The patch positions from uniforms in [0, 1), ``B x 2`` (top, left)."""
        h, w = height + 2 * self.padding - self.size, width + 2 * self.padding - self.size
        if h < 0 or w < 0:
            raise ValueError(f"cannot crop {self.size} from {height} x {width} (padding {self.padding})")
        top = (u[:, 0] * (h + 1)).long().clamp_(max=h)
        left = (u[:, 1] * (w + 1)).long().clamp_(max=w)
        return Patch(top, left, self.size, None, self.padding)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator).apply(images)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomFlip:
    """Horizontal reflection of each sample with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.from_uniform(torch.rand(batch, generator=generator, dtype=torch.float64))

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """Which samples are flipped, from uniforms in [0, 1), ``B``."""
        return u < self.p

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        flip = self.sample(images.shape[0], generator).to(images.device)
        return torch.where(flip[:, None, None, None], images.flip(-1), images)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


class CenterCrop:
    """The central ``size x size`` patch (for an odd margin, the extra pixel is at the bottom/right)."""

    def __init__(self, size: int):
        self.size = int(size)

    def patch(self, batch: int, height: int, width: int) -> Patch:
        if height < self.size or width < self.size:
            raise ValueError(f"cannot crop {self.size} from {height} x {width}")
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return Patch(torch.full((batch,), top), torch.full((batch,), left), self.size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch(images.shape[0], images.shape[-2], images.shape[-1]).apply(images)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class TenCrop:
    """The paper's ten test patches, ``B x 10 x C x size x size``, in :data:`TENCROP_ORDER`.

    The four corners and the centre (as :class:`CenterCrop`) of the image
    padded by ``padding``, then the same five reflected horizontally.
    """

    order = TENCROP_ORDER

    def __init__(self, size: int, padding: int = 0):
        self.size, self.padding = int(size), int(padding)

    def positions(self, height: int, width: int) -> list[tuple[int, int, bool]]:
        """``(top, left, flipped)`` of the ten patches, in the padded image's coordinates."""
        h, w = height + 2 * self.padding - self.size, width + 2 * self.padding - self.size
        if h < 0 or w < 0:
            raise ValueError(f"cannot crop {self.size} from {height} x {width}")
        five = [(0, 0), (0, w), (h, 0), (h, w), (h // 2, w // 2)]
        return [(t, l, False) for t, l in five] + [(t, l, True) for t, l in five]

    def patches(self, batch: int, height: int, width: int) -> list[Patch]:
        return [Patch(torch.full((batch,), t), torch.full((batch,), l), self.size,
                      torch.full((batch,), f), self.padding) for t, l, f in self.positions(height, width)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        return torch.stack([p.apply(images) for p in self.patches(b, h, w)], dim=1)

    def __repr__(self) -> str:
        return f"TenCrop(size={self.size}, padding={self.padding})"


# ---------------------------------------------------------------- colour
class PCALighting:
    """The paper's colour augmentation (section 4.1), in pixel units (grey levels).

    For each image, ``a ~ N(0, std^2)`` (one per principal component, drawn
    again at every use), and ``sum_i a_i * sqrt(eigval_i) * eigvec[:, i]`` is
    added to every pixel. ``eigval``/``eigvec`` are those of the training
    set's colour covariance in pixel units (``stats.npz``; columns of
    ``eigvec`` are eigenvectors), so ``sqrt(eigval_i)`` is the standard
    deviation of the colours along component i and the shift along it is
    ``std`` (0.1) of that, whatever unit the pixels are counted in.

    The paper writes ``a_i * lambda_i``. Read literally in pixel units that is
    a mean shift of hundreds of grey levels along the first component (the
    eigenvalue is a variance: 0.08 x 75.7^2 = 457 on the built-in data); Krizhevsky's own cuda-convnet2 scales by the
    standard deviations (``pca_stdevs``), as here. fb.resnet.torch, MXNet
    and their copies scale by the eigenvalues of [0, 1] values (about half
    this shift on ImageNet). README, "Data", gives the measured magnitude.
    """

    def __init__(self, eigval, eigvec, std: float = 0.1):
        self.eigval, self.eigvec, self.std = _tensor(eigval), _tensor(eigvec), float(std)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The coefficients ``a``, ``B x C``."""
        return torch.randn(batch, len(self.eigval), generator=generator) * self.std

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """The coefficients ``a`` from uniforms in [0, 1), ``B x 2C`` (Box-Muller: 2 per normal)."""
        c = len(self.eigval)
        radius = torch.sqrt(-2 * torch.log1p(-u[:, :c]))
        return (radius * torch.cos(2 * torch.pi * u[:, c:2 * c])).float() * self.std

    def offsets(self, alpha: torch.Tensor) -> torch.Tensor:
        """The colour added to each image, ``B x C``: ``eigvec @ (alpha * sqrt(eigval))``, on alpha's device."""
        eigval, eigvec = (_on(self, n, t, alpha.device) for n, t in (("eigval", self.eigval), ("eigvec", self.eigvec)))
        return (alpha * eigval.clamp_min(0).sqrt()) @ eigvec.T

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 alpha: torch.Tensor | None = None) -> torch.Tensor:
        if alpha is None:
            alpha = self.sample(images.shape[0], generator)
        return images + self.offsets(alpha).to(images.device, images.dtype)[:, :, None, None]

    def __repr__(self) -> str:
        return f"PCALighting(eigval={self.eigval.tolist()}, std={self.std})"


class SubtractMean:
    """Subtract the training set's mean: an image ``C x H x W`` (cut like the sample) or a colour ``C``."""

    def __init__(self, mean):
        self.mean = _tensor(mean)

    @property
    def is_image(self) -> bool:
        return self.mean.dim() == 3

    def on(self, device) -> torch.Tensor:
        """The mean on ``device`` (copied there once)."""
        return _on(self, "mean", self.mean, device)

    def __call__(self, images: torch.Tensor, patch: Patch | None = None) -> torch.Tensor:
        m = self.on(images.device)
        if not self.is_image:
            return images - m[:, None, None]
        if patch is None:
            if m.shape[-2:] != images.shape[-2:]:
                raise ValueError(f"mean image {tuple(m.shape[-2:])} does not match images "
                                 f"{tuple(images.shape[-2:])}: pass the patch")
            return images - m
        return images - patch.apply(m)

    def __repr__(self) -> str:
        return f"SubtractMean({'image ' + 'x'.join(map(str, self.mean.shape)) if self.is_image else self.mean.tolist()})"


class Normalize:
    """``(x - mean) / std`` per channel, on [0, 1] units (torchvision's convention)."""

    def __init__(self, mean, std):
        self.mean, self.std = _tensor(mean), _tensor(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        m, s = _on(self, "mean", self.mean, images.device), _on(self, "std", self.std, images.device)
        return (images - m[:, None, None]) / s[:, None, None]

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


# ---------------------------------------------------------------- pipelines
class _Centering:
    """The last step, shared by both pipelines: lighting offsets, minus the mean, times scale / 255; or normalize.

    ``stats`` are in pixel units (``stats.npz``); the mean is kept here
    already multiplied by ``scale / 255``, so that ``x * scale / 255 - mean``
    is one multiply and one subtract per pixel.
    """

    def __init__(self, stats: dict | None, mean: str = "image", normalize: dict | None = None, scale: float = 255.0):
        if mean not in ("image", "rgb"):
            raise ValueError(f"mean must be 'image' or 'rgb', not {mean!r}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, not {scale!r}")
        self.normalize = Normalize(normalize["mean"], normalize["std"]) if normalize else None
        self.factor = float(scale) / 255  # input units per grey level
        self.subtract = None
        if self.normalize is None:
            if stats is None:
                raise ValueError("mean subtraction needs the statistics (mean_image, mean_rgb)")
            if mean == "image":  # stats hold H x W x C (as stats.npz); the transforms use C x H x W
                self.subtract = SubtractMean(_tensor(stats["mean_image"]).permute(2, 0, 1).contiguous() * self.factor)
            else:
                self.subtract = SubtractMean(_tensor(stats["mean_rgb"]) * self.factor)

    def reference(self, crops_u8: torch.Tensor, patch: Patch | None, offsets: torch.Tensor | None) -> torch.Tensor:
        """The composition of the small transforms (slow, obviously right)."""
        x = crops_u8.float()
        if offsets is not None:
            x = x + offsets.to(x.device, non_blocking=True)[:, :, None, None]
        if self.normalize is not None:
            return self.normalize(x / 255)
        return self.subtract(x * self.factor, patch)

    def affine(self, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = x * scale - shift`` per channel, before the mean image and lighting."""
        if self.normalize is not None:
            s = _on(self.normalize, "std", self.normalize.std, device)
            return (1 / (255 * s)), _on(self.normalize, "mean", self.normalize.mean, device) / s
        factor = torch.full((channels,), self.factor, device=device)
        if self.subtract.is_image:
            return factor, torch.zeros(channels, device=device)
        return factor, self.subtract.on(device)

    def lighting_scale(self, device) -> torch.Tensor:
        """Input units per grey level of a lighting offset, per channel."""
        if self.normalize is not None:
            return 1 / (255 * _on(self.normalize, "std", self.normalize.std, device))
        return _on(self, "factor", torch.tensor(self.factor), device)


class TrainTransform:
    """Random crop (+ reflect padding for small images), flip, PCA lighting, minus the mean.

    ``sample(B, H, W, generator)`` draws the batch's randomness (CPU);
    ``apply(images_u8, params)`` runs on the images' device. ``__call__``
    does both. On the CPU the patch and the float steps are fused per sample
    (equal to :meth:`reference`, the plain composition, within float32 rounding).
    """

    def __init__(self, size: int, stats: dict | None, padding: int = 0, lighting: float = 0.1,
                 mean: str = "image", normalize: dict | None = None, flip: float = 0.5, scale: float = 255.0):
        self.crop = RandomCrop(size, padding)
        self.flip = RandomFlip(flip)
        self.lighting = PCALighting(stats["eigval"], stats["eigvec"], lighting) if lighting and stats is not None else None
        self.centering = _Centering(stats, mean, normalize, scale)

    def uniforms_needed(self, channels: int) -> int:
        """Uniforms per sample: 2 for the crop, 1 for the flip, 2 per channel for the lighting."""
        return 3 + 2 * channels

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
               uniforms: torch.Tensor | None = None) -> dict:
        """The batch's random draws: from ``generator``, or from per-sample ``uniforms`` (``B x uniforms_needed``)
        so that a sample's augmentation can depend on the sample alone (the loader's use)."""
        channels = len(self.lighting.eigval) if self.lighting is not None else 0
        if uniforms is None:
            uniforms = torch.rand(batch, self.uniforms_needed(channels), generator=generator, dtype=torch.float64)
        patch = self.crop.from_uniform(uniforms[:, :2], height, width)
        patch.flip = self.flip.from_uniform(uniforms[:, 2])
        alpha = self.lighting.from_uniform(uniforms[:, 3:]) if self.lighting is not None else None
        return {"patch": patch, "alpha": alpha}

    def offsets(self, params: dict) -> torch.Tensor | None:
        return self.lighting.offsets(params["alpha"]) if params["alpha"] is not None else None

    def reference(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        return self.centering.reference(params["patch"].apply(images), params["patch"], self.offsets(params))

    def apply(self, images: torch.Tensor, params: dict, out: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's float output; ``out`` (``B x C x size x size`` float32) to write into a given tensor.

        ``images``: a uint8 batch, or a list of ``C x H x W`` images (decoded, not stacked: saves a copy).
        """
        if isinstance(images, (list, tuple)) and images[0].device.type != "cpu":
            images = torch.stack(list(images))
        if isinstance(images, torch.Tensor) and images.device.type != "cpu":
            alpha = params["alpha"]  # to the device first: the offsets are computed there, with its eigenvectors
            if alpha is not None:
                alpha = alpha.to(images.device, non_blocking=True)
            offsets = self.lighting.offsets(alpha) if alpha is not None else None
            y = self.centering.reference(params["patch"].apply(images), params["patch"], offsets)
            return y if out is None else out.copy_(y)
        return _fused(images, params["patch"], self.offsets(params), self.centering, out)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(images, self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator))


class EvalTransform:
    """Centre patch (``tta="center"``) or the ten patches (``"10crop"``), minus the mean; no randomness."""

    def __init__(self, size: int, stats: dict | None, tta: str = "center", padding: int = 0,
                 mean: str = "image", normalize: dict | None = None, scale: float = 255.0):
        if tta not in ("center", "10crop"):
            raise ValueError(f"tta must be 'center' or '10crop', not {tta!r}")
        self.size, self.tta, self.padding = int(size), tta, int(padding)
        self.centering = _Centering(stats, mean, normalize, scale)

    def patches(self, batch: int, height: int, width: int) -> list[Patch]:
        if self.tta == "center":
            return [CenterCrop(self.size).patch(batch, height, width)]
        return TenCrop(self.size, self.padding).patches(batch, height, width)

    def reference(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.centering.reference(p.apply(images), p, None) for p in self.patches(images.shape[0], *images.shape[-2:])]
        return out[0] if self.tta == "center" else torch.stack(out, 1)

    def output_shape(self, batch: int, channels: int) -> tuple[int, ...]:
        s = self.size
        return (batch, channels, s, s) if self.tta == "center" else (batch, 10, channels, s, s)

    def apply(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``B x C x size x size`` (``B x 10 x ...`` for 10crop); ``out`` to write into a given tensor."""
        patches = self.patches(images.shape[0], *images.shape[-2:])
        if out is None:
            out = torch.empty(self.output_shape(images.shape[0], images.shape[1]), device=images.device)
        if self.tta == "center":
            return _fused(images, patches[0], None, self.centering, out)
        for k, p in enumerate(patches):
            _fused(images, p, None, self.centering, out[:, k])
        return out

    __call__ = apply


def _fused(images: torch.Tensor, patch: Patch, offsets: torch.Tensor | None, centering: _Centering,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """patch -> float -> scale -> minus mean image / colour -> plus lighting, one sample at a time in cache.

    Written into ``out`` when given (e.g. a tensor in shared memory, so a
    loader worker hands its batch over without another copy).
    """
    top, left = patch.top.tolist(), patch.left.tolist()
    flips = patch.flip.tolist() if patch.flip is not None else [False] * len(top)
    one_position = len(set(top)) == 1 and len(set(left)) == 1 and len(set(flips)) == 1
    if isinstance(images, (list, tuple)):  # decoded images, not stacked yet: cut them where they are
        if patch.padding or one_position or images[0].device.type != "cpu":
            images = torch.stack(list(images))
    b, c = len(images), images[0].shape[0]
    dev = images[0].device
    scale, shift = centering.affine(c, dev)
    shift = shift.expand(b, c).clone()
    if offsets is not None:
        shift -= offsets.to(dev, non_blocking=True) * centering.lighting_scale(dev)
    mean_image = centering.subtract.on(dev) if centering.subtract is not None and centering.subtract.is_image else None
    s = patch.size
    if out is None:
        out = torch.empty((b, c, s, s), dtype=torch.float32, device=dev)
    if dev.type != "cpu" or one_position:
        # one position (or a GPU): batched ops
        out.copy_(patch.apply(images))
        out.mul_(scale[:, None, None])
        if mean_image is not None:
            out.sub_(patch.apply(mean_image))
        return out.sub_(shift[:, :, None, None])
    x = pad_reflect(images, patch.padding) if patch.padding else images
    m = pad_reflect(mean_image, patch.padding) if mean_image is not None else None
    scale = scale[:, None, None]
    for i in range(b):
        t, l = top[i], left[i]
        o = out[i]
        src = x[i][:, t:t + s, l:l + s]
        o.copy_(src.flip(-1) if flips[i] else src)
        o.mul_(scale)
        if m is not None:
            mp = m[:, t:t + s, l:l + s]
            o.sub_(mp.flip(-1) if flips[i] else mp)
        o.sub_(shift[i][:, None, None])
    return out


# ---------------------------------------------------------------- user images
def eval_spec(resize: int = 256, crop: int = 224, mean: str = "image", normalize: dict | None = None,
              channels: int = 3, scale: float = 255.0) -> dict:
    """The plain dict that tells :func:`preprocess_image` (and a checkpoint's reader) how to evaluate."""
    return {"resize": int(resize), "crop": int(crop), "mean": mean, "scale": float(scale), "normalize": normalize,
            "channels": int(channels)}


def _mean_for(stats: dict, spec: dict, side: int) -> dict:
    """``stats`` with the mean image (H x W x C) resized to ``side`` if it was stored at another size."""
    out = dict(stats)
    if spec.get("normalize") or spec.get("mean", "image") != "image":
        return out
    m = _tensor(stats["mean_image"])
    if tuple(m.shape[:2]) != (side, side):
        m = F.interpolate(m.permute(2, 0, 1)[None], size=(side, side), mode="bilinear", align_corners=False,
                          antialias=True)[0].permute(1, 2, 0)
    out["mean_image"] = m
    return out


def preprocess_image(image: str | os.PathLike | Any, spec: dict, stats: dict | None = None,
                     tta: str = "center") -> torch.Tensor:
    """A user's image through the evaluation pipeline of ``spec``: ``C x H x W`` (``10 x C x H x W`` for 10crop).

    ``image``: a path or a PIL image. ``stats``: a dict with ``mean_image``
    and ``mean_rgb`` in pixel units (numpy or torch; what a checkpoint
    carries), unused when ``spec["normalize"]`` is set. Steps: RGB (L for one
    channel), EXIF orientation, shorter side to ``spec["resize"]``, central
    square, then the centre (or ten) ``spec["crop"]`` patches, minus the mean
    times ``spec["scale"] / 255`` (1.0 when absent: an older checkpoint's), or normalize.
    """
    from PIL import Image, ImageOps

    from .images import BadImage, open_image, square, to_mode
    from ..errors import UserError

    channels, resize, crop = int(spec.get("channels", 3)), int(spec["resize"]), int(spec["crop"])
    if isinstance(image, (str, os.PathLike)):
        try:
            im = open_image(image)
            im.load()
        except BadImage as e:
            raise UserError(f"{image}: {e}") from None
        except OSError as e:
            raise UserError(f"{image}: cannot decode ({e})") from None
    elif isinstance(image, Image.Image):
        im = image
    else:
        raise TypeError(f"expected a path or a PIL image, not {type(image).__name__}")
    im = square(to_mode(ImageOps.exif_transpose(im), channels), resize)
    x = torch.from_numpy(np.array(im, dtype=np.uint8).reshape(resize, resize, channels)).permute(2, 0, 1)[None]
    padding = default_padding(resize) if tta == "10crop" else 0
    t = EvalTransform(crop, None if spec.get("normalize") else _mean_for(stats or {}, spec, resize), tta, padding,
                      spec.get("mean", "image"), spec.get("normalize"), float(spec.get("scale", 1.0)))
    return t(x.contiguous())[0]
