"""Shared test setup (kept small).

The project's machines have 2 cores shared by several processes; for the small models the
tests train, extra intra-op threads only add contention (a busy machine made a 2-thread run
20× slower than a 1-thread one), so the whole suite runs torch single-threaded.

Ray, where a test starts it (``ray.init()`` in-process, or ``ray start`` in a subprocess that
inherits this environment), stays on the loopback interface: left alone it binds to the
machine's network address, and a test must send nothing to any address but 127.0.0.1.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stops Ray from swapping 127.0.0.1 for that address;
usage statistics are off.
"""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """sklearn's bundled 8×8 digits (1437 train / 360 test), loaded once per session."""
    from beyondbp import data

    return data.load("digits")
