"""W processes at batch B see exactly what one process at batch W*B sees (DDP equivalence)."""

import pytest
import torch

from alexnet.data import generate_synth, make_loader, prepare


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddpdata")
    generate_synth(root / "raw", classes=3, train_per_class=23, val_per_class=5, size=32, seed=3, progress=False)
    prepare(root / "raw", root / "prep", progress=False)
    return root / "prep"


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_global_batch(small, world):
    b = 4
    one = make_loader(small, "train", b * world, train=True, num_workers=0, epoch=1)
    ranks = [make_loader(small, "train", b, train=True, num_workers=0, epoch=1, rank=r, world_size=world)
             for r in range(world)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(one)
    for step, (x, y) in enumerate(one):
        parts = [list(r)[step] for r in ranks]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x)  # same samples, same crops/flips/lighting
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
