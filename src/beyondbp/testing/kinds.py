"""The checks' data and models: ``digits`` at 1x16x16 and the standard model kinds, built as
the checks build them (or the rule's example model where the rule refuses one); see
:mod:`beyondbp.testing`."""

from __future__ import annotations

import functools
import unittest
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data, models
from ..errors import ConfigError, UnsupportedModuleError
from ..rules import Learner, Rule

INPUT_SHAPE = (1, 16, 16)
NUM_CLASSES = 10
BATCH = 64
EPOCHS = 12
MIN_ACCURACY = 0.70
#: The models every check that takes a model runs on.
KINDS = ("mlp", "lenet", "snn-mlp", "snn-cnn", "wrnn", "irnn", "elm", "branch-elm", "deep-linear")
#: Recurrent models (digits read row by row, 16 steps of 16 channels).
RNN_KINDS = ("wrnn", "irnn", "elm", "branch-elm")
#: The models a rule may refuse: on them a refusal (at attach, or at the first step) makes the
#: check a skip whose reason is the rule's refusal, instead of a run on the rule's example model.
OWN_KINDS = (*RNN_KINDS, "deep-linear")
#: The models of the learning check: snn-cnn is left out there (inference learning alone takes
#: ~50 s on it, and SoftHebb reaches 0.63 < 0.70 on it after 12 epochs; beyondbp's
#: tests/test_spiking.py trains it with backprop, fa and kp).
LEARN_KINDS = ("mlp", "lenet", "snn-mlp")
#: The models of the determinism check.
SEED_KINDS = ("lenet", "snn-mlp", "elm", "branch-elm", "deep-linear")
#: Spiking models (beyondbp.spiking): rules with ``handles_time_steps = False`` refuse them.
SPIKING_KINDS = ("snn-mlp", "snn-cnn")


@functools.lru_cache(maxsize=1)
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of ``digits`` upsampled to 1x16x16."""
    ds = data.load("digits")
    up = lambda x: F.interpolate(x.float(), scale_factor=2, mode="nearest")  # noqa: E731
    return up(ds.x_train), ds.y_train, up(ds.x_test), ds.y_test


_STANDARD = {"mlp": {"widths": (128, 128)}, "snn-mlp": {"T": 4, "widths": (128,)}, "snn-cnn": {"T": 4}, "lenet": {},
             "wrnn": {"channels": 4, "ring": 16}, "irnn": {"hidden": 32}, "elm": {"memory": 8},
             "branch-elm": {"memory": 8, "branches": 4}, "deep-linear": {"depth": 3, "width": 32}}


def standard_model(kind: str) -> nn.Module:
    kind = kind if kind in _STANDARD else "lenet"
    return models.build(kind, INPUT_SHAPE, NUM_CLASSES, **_STANDARD[kind])


def _skip_if_refused(rule_cls: type[Rule], kind: str) -> None:
    """Rules that declare they do not handle time steps refuse the spiking models; the other
    checks do not apply to them there (:func:`rule_checks` leaves these out)."""
    if kind in SPIKING_KINDS and not rule_cls.handles_time_steps:
        raise unittest.SkipTest(f"rule {rule_cls.name} refuses spiking models (handles_time_steps = False)")
    if kind in OWN_KINDS:  # a refusal at attach, or at the first step (softhebb: a layer run T times)
        with torch.random.fork_rng(devices=[]):
            try:
                rule_cls().attach(standard_model(kind)).estimate((digits()[0][:2], digits()[1][:2]))
            except (UnsupportedModuleError, ConfigError) as exc:
                what = "the recurrent model" if kind in RNN_KINDS else "the model"
                raise unittest.SkipTest(f"rule {rule_cls.name} refuses {what} {kind}: {exc}") from None


def _example_model(rule_cls: type[Rule], model_seed: int, refusal: UnsupportedModuleError) -> nn.Module:
    torch.manual_seed(model_seed)
    model = rule_cls.example_model(INPUT_SHAPE, NUM_CLASSES)
    if model is None:
        raise refusal
    return model


def attached(rule_cls: type[Rule], kind: str, model_seed: int = 0, **options: Any) -> tuple[nn.Module, Learner]:
    """(model, learner): the checks' model of ``kind``, or the rule's example model if the rule
    refuses it and offers one. ``options`` go to the rule."""
    _skip_if_refused(rule_cls, kind)
    rule = rule_cls(**options)
    torch.manual_seed(model_seed)
    model = standard_model(kind)
    try:
        return model, rule.attach(model)
    except UnsupportedModuleError as exc:
        model = _example_model(rule_cls, model_seed, exc)
    return model, rule.attach(model)


def unattached(rule_cls: type[Rule], kind: str, model_seed: int = 0) -> nn.Module:
    """The model ``attached(rule_cls, kind, model_seed)`` uses, built fresh and not attached."""
    _skip_if_refused(rule_cls, kind)
    torch.manual_seed(model_seed)
    model = standard_model(kind)
    try:
        rule_cls().check_model(model)
        return model
    except UnsupportedModuleError as exc:
        return _example_model(rule_cls, model_seed, exc)
