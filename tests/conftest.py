"""Shared test setup (kept small).

The project's machines have 2 cores shared by several processes; for the small models the
tests train, extra intra-op threads only add contention (a busy machine made a 2-thread run
20× slower than a 1-thread one), so the whole suite runs torch single-threaded.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """sklearn's bundled 8×8 digits (1437 train / 360 test), loaded once per session."""
    from beyondbp import data

    return data.load("digits")
