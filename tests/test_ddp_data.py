"""W processes at batch B see exactly what one process at batch W*B sees (DDP equivalence)."""

import pytest
import torch

from alexnet.data import make_loader


@pytest.fixture(scope="module")
def small(prepared_data):
    return prepared_data({"train": 23, "val": 5}, classes=3, seed=3, pattern="synth")


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
