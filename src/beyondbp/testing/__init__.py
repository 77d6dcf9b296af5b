"""The rule contract: the checks every credit-assignment rule passes, for any rule class.

beyondbp's own test suite runs these checks on every registered rule
(``tests/test_rules_contract.py``); a rule written outside the package runs the same ones:

>>> from beyondbp.testing import check_rule
>>> check_rule(MyRule)                       # doctest: +SKIP

:func:`check_rule` runs every check that applies and raises one :class:`AssertionError` naming
each failing check; under pytest, :func:`parametrize_with_rules` makes one test per rule and
check instead::

    from beyondbp.testing import parametrize_with_rules

    @parametrize_with_rules([MyRule])
    def test_my_rule(rule, check):
        check(rule)

pytest is needed only by :func:`parametrize_with_rules` (imported when it is called); a check
that does not apply at run time raises :class:`unittest.SkipTest`, which pytest reports as a skip.

The checks train on scikit-learn's ``digits`` (8x8 images upsampled to 1x16x16 so LeNet's two 5x5
conv + pool stages fit), with beyondbp's ``mlp`` (widths 128, 128) and ``lenet``, and the
spiking ``snn-mlp`` (T = 4, one hidden layer of 128) and ``snn-cnn`` (T = 4; not in the learning
check, see :data:`LEARN_KINDS`). The attach, estimate and detach checks also run on the
recurrent ``wrnn``, ``irnn``, ``elm`` and ``branch-elm`` (:data:`RNN_KINDS`: rows as 16 time
steps of 16 channels) and the bias-free ``deep-linear``, tiny sizes all, and the determinism
check on ``elm``, ``branch-elm`` and ``deep-linear`` too; a rule that refuses one of these
(:data:`OWN_KINDS`: at attach, or at its first step) skips it with its refusal as the reason
(no example model stands in there). Each check runs with one torch CPU thread (restored after).

What a rule class declares to tell the checks what applies (:class:`beyondbp.rules.Rule`)
--------------------------------------------------------------------------------------------
``refuses_unknown`` (default True)
    False for rules that train every module type (backprop). Such a rule must attach to a model
    holding an ``nn.LSTM``; every other rule must refuse that model with an
    :class:`UnsupportedModuleError` whose message names the module path and its type, and must
    leave the model untouched.
``handles_time_steps`` (default True)
    False for rules that refuse spiking models; the checks on ``snn-mlp`` and ``snn-cnn`` are
    then left out.
``example_model(input_shape, num_classes)`` (default: ``None``)
    A model the rule can train. The checks first attach the rule to their own MLP and LeNet;
    when attach raises :class:`UnsupportedModuleError` and the hook returns a model, they use
    ``example_model((1, 16, 16), 10)`` instead (built right after ``torch.manual_seed(seed)``,
    so it must take its initial weights from the global RNG). A rule without one must attach to
    both the MLP and LeNet.
``example_optimizer(parameters)`` (default ``Adam(lr=3e-3)``)
    The optimizer of the learning and determinism checks, built from
    ``learner.optimizer_parameters()``.
``plain_backward`` (default ``None``: True when the learner does not override ``Learner.step``)
    Whether a user's own loop — ``optimizer.zero_grad(); loss_fn(model(x), y).backward();
    optimizer.step(); scheduler.step()`` with the model attached and no ``learner.step`` —
    trains exactly as ``learner.step`` does (feedback-path rules).
``exact_gradients`` (default False)
    True only for backprop itself: the checks then do not ask for trained layers, nor for an
    ``estimate`` different from backprop's gradient.
a ``seed`` option
    A rule with one must train differently with another seed.

What every rule is checked for: attaches to the MLP, LeNet and the spiking models (or its
example model) without touching the global RNG; learns digits to >= 0.70 test accuracy after 12
epochs of batch-64 steps (chance is 0.10; backprop reaches ~0.95); same seed gives bit-identical
losses, weights and predictions (:data:`SEED_KINDS`), and a rule's ``seed`` option changes the
training; refuses an unsupported layer by path and type and leaves the model untouched;
attaching twice is refused until ``detach``; ``estimate`` changes no parameter, buffer or
existing ``.grad`` and (except for backprop) is not backprop's gradient; ``predict`` keeps the
training mode; ``detach`` restores the exact original outputs, gradients, parameters, hooks and
instance attributes; ``copy.deepcopy`` of an attached model is refused or independent; for
``plain_backward`` rules the user's own optimizer + LR scheduler + ``loss.backward()`` loop equals
``learner.step`` bit for bit.
"""

from __future__ import annotations

# The public kit is ``__all__``; the kinds, the checks and their helpers stay reachable here as
# they were when the kit was one module (``beyondbp.testing.standard_model``, ``.check_attaches``).
from .checks import (  # noqa: F401
    accuracy,
    bp_reference,
    check_attach_keeps_the_global_rng,
    check_attaches,
    check_attaches_to_any_module,
    check_attaching_twice_is_refused_until_detached,
    check_deep_copy_is_refused_or_independent,
    check_detach_restores_the_model,
    check_estimate_changes_nothing,
    check_estimate_is_not_backprop,
    check_learns_digits,
    check_predict_keeps_the_training_mode,
    check_refuses_an_unsupported_layer,
    check_rule_seed_changes_the_training,
    check_same_seed_same_numbers,
    check_users_own_loop,
    hook_counts,
    make_optimizer,
    plain_backward,
    snapshot,
    train,
)
from .kinds import (  # noqa: F401
    BATCH,
    EPOCHS,
    INPUT_SHAPE,
    KINDS,
    LEARN_KINDS,
    MIN_ACCURACY,
    NUM_CLASSES,
    OWN_KINDS,
    RNN_KINDS,
    SEED_KINDS,
    SPIKING_KINDS,
    attached,
    digits,
    standard_model,
    unattached,
)
from .kit import Check, check_rule, parametrize_with_rules, rule_checks

__all__ = ["Check", "check_rule", "parametrize_with_rules", "rule_checks"]
