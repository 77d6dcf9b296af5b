"""A batch larger than the training split is the whole split (README, "Bounds"): a tiny data set
trains at the default batch size, and a larger batch gives exactly the run of a batch of the
split's size."""

from __future__ import annotations

import beyondbp as bbp
from beyondbp import data


def _final(**settings):
    result = bbp.run(bbp.RunConfig(model="mlp", data="digits", steps=3, model_options={"widths": [8]}, **settings))
    return result.history[-1]


def test_a_batch_larger_than_the_training_split_is_the_whole_split():
    n = data.load("digits").num_train
    whole, larger = _final(batch_size=n), _final(batch_size=n + 1)
    assert larger["step"] == whole["step"] == 3
    assert larger["train_loss"] == whole["train_loss"] and larger["test_loss"] == whole["test_loss"]


def test_a_batch_larger_than_an_n_train_subset_is_that_subset():
    subset, larger = _final(batch_size=32, n_train=32, n_test=32), _final(batch_size=64, n_train=32, n_test=32)
    assert larger["step"] == subset["step"] == 3
    assert larger["train_loss"] == subset["train_loss"] and larger["test_loss"] == subset["test_loss"]
