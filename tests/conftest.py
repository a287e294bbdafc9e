import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- inference and engine: shared by test_features, test_predict, test_report and test_engine (issue 13) ----
@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One alexnet-small trained for an epoch on the built-in data by the trainer (helpers.train_builtin):
    ``{"root", "src", "prep", "run", "ckpt", "meta"}``."""
    from helpers import train_builtin

    return train_builtin(tmp_path_factory.mktemp("trained"))
# ---- end inference and engine ----
