"""The README's API loop, as a user writes it, learns with every registered rule (issue 21:
SoftHebb stayed at chance in a Hebbian phase that this loop never ended)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import beyondbp as bbp
from beyondbp import data, models
from beyondbp.errors import UnsupportedModuleError

RULES = bbp.rules.names()

#: The README's "A short API tour" loop, which the next test runs with every rule.
README_TOUR_LINES = (
    "model = models.build(\"mlp\", ds.input_shape, ds.num_classes)",
    "learner = rules.get(\"dfa\", seed=0).attach(model)",
    "opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)",
    "for x, y in ds.train_loader(batch_size=64, seed=0):",
    "metrics = learner.step((x, y), opt)",
    "logits = learner.predict(ds.x_test)",
)


def test_the_readme_tour_loop_is_the_one_tested():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    tour = readme[readme.index("## A short API tour"):]
    for line in README_TOUR_LINES:
        assert line in tour, f"README's tour changed ({line!r}): update test_the_readme_tour_loop_learns"


@pytest.mark.parametrize("name", RULES)
def test_the_readme_tour_loop_learns(name):
    """``rules.get(name, seed=0)``, the library's ``mlp`` (or the rule's example model when it
    refuses the MLP), Adam 1e-3, ``learner.step`` over a few epochs and nothing else (no
    ``on_epoch_start`` / ``on_epoch_end``) learns digits well above chance (0.10)."""
    ds = data.load("digits")
    torch.manual_seed(0)
    rule = bbp.rules.get(name, seed=0)
    model = models.build("mlp", ds.input_shape, ds.num_classes)
    try:
        learner = rule.attach(model)
    except UnsupportedModuleError:
        torch.manual_seed(0)
        model = type(rule).example_model(ds.input_shape, ds.num_classes)
        assert model is not None, f"rule {name} refuses the mlp and offers no example model"
        learner = rule.attach(model)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-3)
    for epoch in range(5):
        for x, y in ds.train_loader(batch_size=64, seed=epoch):
            metrics = learner.step((x, y), opt)
    logits = learner.predict(ds.x_test)
    acc = float((logits.argmax(1) == ds.y_test).float().mean())
    assert math.isfinite(metrics["loss"])
    assert acc >= 0.6, f"{name}: test accuracy {acc:.3f} after the README's loop (chance 0.10)"  # measured 0.77-0.96
