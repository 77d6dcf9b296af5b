"""A batch size larger than the whole training split is refused in one sentence (README, "Bounds"),
as ``continual`` and ``adapt`` already did; a batch larger than an ``n_train`` subset is the subset."""

from __future__ import annotations

import pytest

import beyondbp as bbp
from beyondbp import data
from beyondbp.errors import ConfigError


def test_a_batch_larger_than_the_training_split_is_refused():
    n = data.load("digits").num_train
    with pytest.raises(ConfigError, match=rf"^invalid batch_size {n + 1}: it must be at most {n}, the training "
                                          r"samples of 'digits'$"):
        bbp.run(bbp.RunConfig(model="mlp", data="digits", steps=1, batch_size=n + 1, model_options={"widths": [8]}))


def test_a_batch_larger_than_an_n_train_subset_is_that_subset():
    result = bbp.run(bbp.RunConfig(model="mlp", data="digits", steps=2, batch_size=64, n_train=32, n_test=32,
                                   model_options={"widths": [8]}))
    assert result.history[-1]["step"] == 2  # two steps of the whole 32-sample subset
