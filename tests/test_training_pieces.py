"""The run layer's shared pieces (issue 22, item 6): batches of in-memory tensors, their
evaluation, seeding and optimizer construction — used by the run loop and the satellites."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from beyondbp.errors import ConfigError
from beyondbp.training import (
    RunConfig,
    ShuffledBatches,
    batch_slices,
    build_optimizer,
    evaluate,
    evaluate_tensors,
    make_optimizer,
    seeded,
)


def sizes(slices):
    return [s.stop - s.start for s in slices]


def test_batch_slices_cover_the_samples_and_can_join_a_final_single_sample():
    assert sizes(batch_slices(10, 4)) == [4, 4, 2]
    assert sizes(batch_slices(9, 4)) == [4, 4, 1]
    assert sizes(batch_slices(9, 4, join_single=True)) == [4, 5]
    assert sizes(batch_slices(1, 4, join_single=True)) == [1]
    assert batch_slices(0, 4) == []
    with pytest.raises(ConfigError, match="batch size"):
        batch_slices(10, 0)


@pytest.mark.parametrize("n, batch_size", [(12, 4), (13, 4), (5, 8)])
def test_loader_stream_draws_what_a_shuffling_dataloader_draws(n, batch_size):
    """The run loop's batches are those it had when it iterated a DataLoader, epoch after
    epoch, and the generator ends in the same state."""
    x = torch.arange(n)
    loader_gen = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True, generator=loader_gen)
    batches = ShuffledBatches(n, batch_size, 3, loader_stream=True)
    assert len(batches) == len(loader)
    for _ in range(3):
        expected = [b[0].tolist() for b in loader]
        assert [x[idx].tolist() for idx in batches.epoch()] == expected
        assert torch.equal(batches.generator.get_state(), loader_gen.get_state())


def test_shuffled_batches_are_one_permutation_per_epoch_from_the_generator_only():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    g = torch.Generator().manual_seed(7)
    batches = ShuffledBatches(10, 3, g)
    epoch = batches.epoch()
    assert torch.equal(torch.cat(epoch), torch.randperm(10, generator=torch.Generator().manual_seed(7)))
    assert sizes(batches.slices) == [3, 3, 3, 1]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is not touched
    second = ShuffledBatches(10, 3, torch.Generator().manual_seed(7))
    second.epoch()
    assert torch.equal(torch.cat(second.epoch()), torch.cat(batches.epoch()))  # same seed, same epochs
    assert sorted(torch.cat(batches.epoch()).tolist()) == list(range(10))


def test_evaluate_tensors_counts_in_chunks_with_loss_and_a_logit_offset():
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    x, y = torch.randn(23, 5), torch.randint(0, 4, (23,))
    logits = model(x).detach()
    got = evaluate_tensors(model, x, y, batch_size=7, loss_fn=nn.functional.cross_entropy)
    assert got["count"] == 23
    assert got["correct"] == int((logits.argmax(1) == y).sum())
    assert got["accuracy"] == got["correct"] / 23
    assert got["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    mask = torch.tensor([0.0, 0.0, float("-inf"), float("-inf")])
    masked = evaluate_tensors(model, x, y, batch_size=5, logit_offset=mask)
    assert masked["correct"] == int(((logits + mask).argmax(1) == y).sum())
    assert np.isnan(masked["loss"])  # no loss function given
    assert np.isnan(evaluate_tensors(model, x[:0], y[:0])["accuracy"])


def test_evaluate_over_a_loader_matches_evaluate_tensors():
    torch.manual_seed(1)
    model = nn.Linear(3, 3)
    x, y = torch.randn(17, 3), torch.randint(0, 3, (17,))

    class Learner:
        predict = staticmethod(model)
        loss_fn = staticmethod(nn.functional.cross_entropy)

    over_loader = evaluate(Learner(), DataLoader(TensorDataset(x, y), batch_size=4), torch.device("cpu"))
    over_tensors = evaluate_tensors(model, x, y, batch_size=4, loss_fn=nn.functional.cross_entropy)
    assert over_loader == {"test_loss": over_tensors["loss"], "test_accuracy": over_tensors["accuracy"]}


def test_seeded_builds_from_a_seed_and_gives_the_callers_streams_back():
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    with seeded(11):
        a = nn.Linear(4, 4).weight.detach().clone()
        inner = (random.random(), np.random.rand())
    with seeded(11):
        b = nn.Linear(4, 4).weight.detach().clone()
        assert (random.random(), np.random.rand()) == inner
    assert torch.equal(a, b)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_build_optimizer_from_settings_and_the_runs_optimizer_are_the_same():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer("sgd", params, lr=0.1)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.0 and sgd.defaults["lr"] == 0.1
    adam = build_optimizer("adam", params, lr=1e-3, betas=(0.5, 0.9))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.5, 0.9)
    assert isinstance(build_optimizer("adamw", params, lr=1e-3, weight_decay=0.1), torch.optim.AdamW)
    config = RunConfig(rule="backprop", model="mlp", data="mnist1d", optimizer="sgd", lr=0.05, momentum=0.5)
    run_opt = make_optimizer(config, params)
    assert run_opt.defaults == build_optimizer("sgd", params, lr=0.05, momentum=0.5).defaults
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        build_optimizer("rmsprop", params, lr=0.1)
    with pytest.raises(ConfigError, match="no betas"):
        build_optimizer("sgd", params, lr=0.1, betas=(0.9, 0.99))
    with pytest.raises(ConfigError, match="no momentum"):
        build_optimizer("adam", params, lr=0.1, momentum=0.9)
