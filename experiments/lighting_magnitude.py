"""How far the PCA lighting moves an image's colour, in grey levels, on a prepared folder.

Draws the per-image coefficients exactly as the training loader does (from
per-sample uniforms, Box-Muller) for ``--draws`` images and prints, for each
principal component of the training colours: its standard deviation
(sqrt of the eigenvalue), the mean |offset| along it and the largest, and the
mean length of the whole RGB offset.

    alexnet data synth synth256/ --size 256 && alexnet prepare synth256/ prep256/
    python experiments/lighting_magnitude.py prep256/
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from alexnet.data import load_stats
from alexnet.data.transforms import TrainTransform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="a prepared folder (alexnet prepare)")
    ap.add_argument("--lighting", type=float, default=0.1, help="std of the coefficients (data.lighting)")
    ap.add_argument("--draws", type=int, default=100_000)
    args = ap.parse_args()
    stats = load_stats(args.data)
    t = TrainTransform(8, stats, lighting=args.lighting)
    channels = len(stats["eigval"])
    u = torch.rand(args.draws, t.uniforms_needed(channels), generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    params = t.sample(args.draws, 8, 8, uniforms=u)
    offsets = t.offsets(params).double().numpy()  # draws x C, grey levels
    along = offsets @ np.asarray(stats["eigvec"], np.float64)
    print(f"{args.data}: PCA lighting, a_i ~ N(0, {args.lighting}^2), shift a_i * sqrt(eigval_i) along component i")
    print(f"{'component':>9} {'std (grey levels)':>18} {'mean |offset|':>14} {'expected':>9} {'max |offset|':>13}")
    for i in range(channels):
        sd = math.sqrt(max(float(stats["eigval"][i]), 0.0))
        a = np.abs(along[:, i])
        print(f"{i + 1:>9} {sd:>18.2f} {a.mean():>14.2f} {args.lighting * sd * math.sqrt(2 / math.pi):>9.2f} {a.max():>13.2f}")
    print(f"mean length of the RGB offset: {np.linalg.norm(offsets, axis=1).mean():.2f} grey levels")


if __name__ == "__main__":
    main()
