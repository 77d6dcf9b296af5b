"""Each feedback-path rule's defining equations, checked exactly (float64, tight tolerances).

* FA: with its feedback matrix set to ``W`` it *is* backprop (Linear, Conv1d, Conv2d with
  stride / padding / groups / dilation / reflect and circular padding / ``padding="same"``);
  with a random ``B`` the input error is ``δ B`` and the output layer still gets ``e hᵀ``.
* DFA: ``δ_l = (e B_l) ⊙ f'(a_l)`` by hand on one- and two-hidden-layer nets (``B`` read from
  the learner's state); with ``points=[names]`` the error ``e B_k`` arrives exactly at those
  modules' outputs and ordinary backprop runs below them; its backward pass does exactly the
  FLOPs of the weight gradients plus the projections (no ``Wᵀδ``), fewer than backprop's.
* Sign symmetry: the feedback used in the backward pass has ``sign(W)``'s signs; uSF is exactly
  ``s·sign(W)``; frSF keeps its magnitudes across steps; brSF draws new ones every batch.
* KP: ``W − B`` is multiplied by exactly ``(1 − ηλ)`` at every SGD step (zero gradient or not),
  and the learner refuses an optimizer that does not hold ``B``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import beyondbp as bbp
from beyondbp import models
from beyondbp.errors import ConfigError

DT = torch.float64


@pytest.fixture(autouse=True)
def float64_one_thread():
    previous_dtype, previous_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(DT)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(previous_dtype)
    torch.set_num_threads(previous_threads)


def close(a, b, tol=1e-10):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def squared_error(out, target):
    return 0.5 * ((out - target) ** 2).sum()


def gradients(model, x, target, loss_fn=squared_error, input_grad=True):
    """(parameter gradients, input gradient or None) of ``loss_fn(model(x), target)``.

    DFA makes every layer input that requires grad a feedback point, so its tests pass
    ``input_grad=False`` (data that needs no gradient, as in training)."""
    for p in model.parameters():
        p.grad = None
    x = x.clone().requires_grad_(input_grad)
    loss_fn(model(x), target).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for p in model.parameters():
        p.grad = None
    return grads, (x.grad.clone() if input_grad else None)


# -- FA ------------------------------------------------------------------------------------------

CONV2D_CASES = {
    "plain": dict(kernel_size=3),
    "stride_padding": dict(kernel_size=3, stride=2, padding=1),
    "groups": dict(kernel_size=3, padding=2, groups=2),
    "dilation": dict(kernel_size=3, padding=2, dilation=2),
    "reflect": dict(kernel_size=3, padding=1, padding_mode="reflect"),
    "circular_asym": dict(kernel_size=3, padding=(1, 2), padding_mode="circular"),
    "same_odd": dict(kernel_size=3, padding="same"),
    "same_even": dict(kernel_size=4, padding="same"),
    "same_even_reflect": dict(kernel_size=4, padding="same", padding_mode="reflect"),
    "same_dilated": dict(kernel_size=3, padding="same", dilation=2),
    "no_bias": dict(kernel_size=3, padding=1, bias=False),
}


def fa_case(kind: str, case: str):
    torch.manual_seed(0)
    if kind == "linear":
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4, bias=False), nn.Tanh(), nn.Linear(4, 3))
        return model, torch.randn(6, 5)
    if kind == "linear3d":
        model = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 3))
        return model, torch.randn(2, 4, 5)
    if kind == "conv1d":
        model = nn.Sequential(
            nn.Conv1d(4, 6, 3, stride=2, padding=1), nn.Tanh(), nn.Conv1d(6, 6, 4, padding="same", groups=3),
            nn.Tanh(), nn.Conv1d(6, 2, 3, padding=1, padding_mode="reflect"),
        )
        return model, torch.randn(3, 4, 11)
    opts = CONV2D_CASES[case]
    model = nn.Sequential(nn.Conv2d(4, 6, **opts), nn.Tanh(), nn.Conv2d(6, 2, 3, padding=1), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(3, 4, 9, 9)
    model(x)  # materialise the lazy layer
    return model, x


FA_CASES = [("linear", ""), ("linear3d", ""), ("conv1d", "")] + [("conv2d", c) for c in CONV2D_CASES]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kind, case", FA_CASES, ids=[f"{k}-{c}" if c else k for k, c in FA_CASES])
def test_fa_with_feedback_equal_to_w_is_backprop(kind, case):
    model, x = fa_case(kind, case)
    target = torch.randn(model(x).shape)
    bp_grads, bp_dx = gradients(model, x, target)
    learner = bbp.rules.get("fa").attach(model, loss_fn=squared_error)
    # the default random feedback changes the hidden layers' gradients ...
    fa_grads, _ = gradients(model, x, target)
    first = next(iter(learner.trained_layers()))
    assert not close(fa_grads[f"{first}.weight"], bp_grads[f"{first}.weight"], 1e-3)
    # ... and B = W restores backprop exactly, for every parameter and for the input
    with torch.no_grad():
        for module in learner.trained_layers().values():
            module.bbp_feedback.copy_(module.weight)
    fa_grads, fa_dx = gradients(model, x, target)
    assert fa_grads.keys() == bp_grads.keys()
    for n in bp_grads:
        assert close(fa_grads[n], bp_grads[n]), n
    assert close(fa_dx, bp_dx)


def test_fa_sends_delta_through_b_and_leaves_the_output_layer_exact():
    torch.manual_seed(1)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(5, 7), act=nn.Tanh(), out=nn.Linear(7, 3)))
    x, target = torch.randn(4, 5), torch.randn(4, 3)
    learner = bbp.rules.get("fa", seed=2).attach(model, loss_fn=squared_error)
    B = learner.feedback_matrix("out")
    assert B.shape == model.out.weight.shape and not close(B, model.out.weight, 1e-3)
    grads, dx = gradients(model, x, target)
    # by hand: a1 = W1 x + b1, h1 = tanh(a1), y = W2 h1 + b2, e = y − t
    a1 = x @ model.fc1.weight.T + model.fc1.bias
    h1 = torch.tanh(a1)
    e = h1 @ model.out.weight.T + model.out.bias - target
    delta1 = (e @ B) * (1 - h1**2)
    assert close(grads["out.weight"], e.T @ h1)
    assert close(grads["out.bias"], e.sum(0))
    assert close(grads["fc1.weight"], delta1.T @ x)
    assert close(grads["fc1.bias"], delta1.sum(0))
    assert close(dx, delta1 @ learner.feedback_matrix("fc1"))


def test_fa_conv_input_error_is_the_transposed_convolution_with_b():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, groups=1)
    learner = bbp.rules.get("fa").attach(conv, loss_fn=lambda out, g: (out * g).sum())
    x = torch.randn(2, 3, 8, 8)
    g = torch.randn(conv(x).shape)
    _, dx = gradients(conv, x, g, loss_fn=lambda out, g: (out * g).sum())
    B = learner.feedback_matrix("")
    expected = torch.nn.grad.conv2d_input(x.shape, B, g, stride=2, padding=1)
    assert close(dx, expected)
    assert not close(dx, torch.nn.grad.conv2d_input(x.shape, conv.weight, g, stride=2, padding=1), 1e-3)


def test_fa_feedback_is_fixed_and_seeded():
    torch.manual_seed(0)
    model = models.build("mlp", (6,), 3, widths=(8,))
    learner = bbp.rules.get("fa", seed=4).attach(model)
    before = {n: learner.feedback_matrix(n) for n in learner.trained_layers()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner.step((torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])), opt)
    for n, B in before.items():
        assert torch.equal(learner.feedback_matrix(n), B)
        assert not torch.equal(B, learner.trained_layers()[n].weight.detach())
    learner.detach()
    again = bbp.rules.get("fa", seed=4).attach(model)
    assert all(torch.equal(again.feedback_matrix(n), B) for n, B in before.items())
    again.detach()
    other = bbp.rules.get("fa", seed=5).attach(model)
    assert all(not torch.equal(other.feedback_matrix(n), B) for n, B in before.items())


# -- DFA -----------------------------------------------------------------------------------------


def logits_error(model, x, y):
    """e = dL/dlogits for cross-entropy, computed by plain autograd on detached logits."""
    with torch.no_grad():
        logits = model(x)
    logits = logits.clone().requires_grad_(True)
    F.cross_entropy(logits, y).backward()
    return logits.grad


def test_dfa_one_hidden_layer_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(6, 5), act=nn.Tanh(), out=nn.Linear(5, 3)))
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    e = logits_error(model, x, y)
    learner = bbp.rules.get("dfa", seed=3, points="layers").attach(model)
    grads, _ = gradients(model, x, y, loss_fn=F.cross_entropy, input_grad=False)
    B = learner.rule_state()["matrix.0"]  # (n_out, width): the point's error is e B
    assert B.shape == (3, 5)
    a1 = x @ model.fc1.weight.T + model.fc1.bias
    h1 = torch.tanh(a1)
    delta1 = (e @ B) * (1 - torch.tanh(a1) ** 2)
    assert close(grads["fc1.weight"], delta1.T @ x)
    assert close(grads["fc1.bias"], delta1.sum(0))
    assert close(grads["out.weight"], e.T @ h1)  # the output layer learns from e itself
    assert close(grads["out.bias"], e.sum(0))
    # Nøkland's normalisation default: N(0, 1) entries divided by sqrt(width)
    assert B.abs().max() < 6 / math.sqrt(5)


def test_dfa_two_hidden_layers_each_get_their_own_projection_and_nothing_propagates():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(6, 5), a1=nn.ReLU(), fc2=nn.Linear(5, 4), a2=nn.Tanh(), out=nn.Linear(4, 3))
    )
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    e = logits_error(model, x, y)
    learner = bbp.rules.get("dfa", seed=0, points="layers").attach(model)
    grads, _ = gradients(model, x, y, loss_fn=F.cross_entropy, input_grad=False)
    state = learner.rule_state()
    B1, B2 = state["matrix.0"], state["matrix.1"]  # points in forward order: fc2's input, out's input
    assert B1.shape == (3, 5) and B2.shape == (3, 4)
    pre1 = x @ model.fc1.weight.T + model.fc1.bias
    h1 = F.relu(pre1)
    pre2 = h1 @ model.fc2.weight.T + model.fc2.bias
    h2 = torch.tanh(pre2)
    d1 = (e @ B1) * (pre1 > 0).to(DT)
    d2 = (e @ B2) * (1 - h2**2)
    assert close(grads["fc1.weight"], d1.T @ x)
    assert close(grads["fc2.weight"], d2.T @ h1)
    assert close(grads["out.weight"], e.T @ h2)
    # nothing propagates layer to layer: fc1's update does not depend on fc2's weights
    with torch.no_grad():
        model.fc2.weight.mul_(-3.0)
    e2 = logits_error(model, x, y)
    grads2, _ = gradients(model, x, y, loss_fn=F.cross_entropy, input_grad=False)
    assert close(grads2["fc1.weight"], ((e2 @ B1) * (pre1 > 0).to(DT)).T @ x)


def test_dfa_shared_matrix_gives_each_point_its_first_columns():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(6, 5), a1=nn.Tanh(), fc2=nn.Linear(5, 4), a2=nn.Tanh(), out=nn.Linear(4, 3))
    )
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    e = logits_error(model, x, y)
    learner = bbp.rules.get("dfa", seed=0, points="layers", shared=True).attach(model)
    grads, _ = gradients(model, x, y, loss_fn=F.cross_entropy, input_grad=False)
    S = learner.rule_state()["shared"]
    assert S.shape == (3, 5)
    h1 = torch.tanh(x @ model.fc1.weight.T + model.fc1.bias)
    h2 = torch.tanh(h1 @ model.fc2.weight.T + model.fc2.bias)
    assert close(grads["fc1.weight"], ((e @ S) * (1 - h1**2)).T @ x)
    assert close(grads["fc2.weight"], ((e @ S[:, :4]) * (1 - h2**2)).T @ h1)


def test_dfa_points_inject_the_projection_exactly_at_module_outputs():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6))
    model = nn.Sequential(OrderedDict(block=block, act=nn.Tanh(), head=nn.Linear(6, 3)))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    e = logits_error(model, x, y)
    learner = bbp.rules.get("dfa", seed=1, points=["block.0", "block"]).attach(model)
    grads, _ = gradients(model, x, y, loss_fn=F.cross_entropy, input_grad=False)
    state = learner.rule_state()
    B0, B1 = state["matrix.0"], state["matrix.1"]  # forward order: block.0 finishes first
    assert B0.shape == (3, 6) and B1.shape == (3, 6)

    def grads_of(out, params, upstream):
        return torch.autograd.grad(out, params, upstream)

    # block.0's output receives e B0; block's output receives e B1, and backprop runs inside
    # the block down to (not past) block.0's output; the head learns from e by backprop.
    with learner.disabled():  # plain modules, no feedback points, for the reference
        h0 = block[0](x)
        g_b0 = grads_of(h0, list(block[0].parameters()), e @ B0)
        h_block = block[2](block[1](h0.detach()))
        g_b2 = grads_of(h_block, list(block[2].parameters()), e @ B1)
        logits = model.head(model.act(h_block.detach()))
        g_head = grads_of(F.cross_entropy(logits, y), list(model.head.parameters()), None)
    for got, want in zip(
        [grads["block.0.weight"], grads["block.0.bias"], grads["block.2.weight"], grads["block.2.bias"],
         grads["head.weight"], grads["head.bias"]],
        [*g_b0, *g_b2, *g_head],
    ):
        assert close(got, want)
    # and the injected error is not backprop's
    bp = learner.backprop_gradients((x, y))
    assert not close(grads["block.0.weight"], bp["block.0.weight"], 1e-3)


def test_dfa_backward_does_fewer_flops_than_backprop_exactly_as_counted():
    N, din, widths, k = 32, 20, (64, 48, 40), 10
    counts = {}
    for name in ("backprop", "fa", "dfa"):
        torch.manual_seed(0)
        model = models.build("mlp", (din,), k, widths=widths)
        bbp.rules.get(name).attach(model)
        x, y = torch.randn(N, din), torch.randint(0, k, (N,))
        loss = F.cross_entropy(model(x), y)
        with FlopCounterMode(display=False) as counter:
            loss.backward()
        counts[name] = counter.get_total_flops()
    dims = [din, *widths, k]
    weight_grads = sum(2 * N * a * b for a, b in zip(dims[:-1], dims[1:]))
    input_grads = sum(2 * N * a * b for a, b in zip(dims[1:-1], dims[2:]))  # not into the data
    projections = sum(2 * N * k * w for w in widths)
    assert counts["backprop"] == weight_grads + input_grads
    assert counts["fa"] == counts["backprop"]
    assert counts["dfa"] == weight_grads + projections
    assert counts["dfa"] < counts["backprop"]


# -- sign symmetry -------------------------------------------------------------------------------


def used_feedback(layer: nn.Linear) -> torch.Tensor:
    """The matrix (times its scale) the rule used in one backward pass through ``layer``: with
    one input row per output unit and an identity upstream gradient, dL/dx = I · B = B."""
    out_f, in_f = layer.weight.shape
    x = torch.randn(out_f, in_f, requires_grad=True)
    (layer(x) * torch.eye(out_f)).sum().backward()
    layer.weight.grad = None
    if layer.bias is not None:
        layer.bias.grad = None
    return x.grad.detach().clone()


def sign_model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(12, 9), act=nn.ReLU(), out=nn.Linear(9, 4)))


@pytest.mark.parametrize(
    "scale, expected",
    [
        ("xavier", lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
        ("fan_in", lambda fi, fo: 1.0 / math.sqrt(fi)),
        (0.25, lambda fi, fo: 0.25),
    ],
)
def test_usf_feedback_is_exactly_s_times_sign_w(scale, expected):
    model = sign_model()
    learner = bbp.rules.get("usf", scale=scale).attach(model)
    for name, layer in learner.trained_layers().items():
        fo, fi = layer.weight.shape
        want = expected(fi, fo) * torch.sign(layer.weight.detach())
        assert close(used_feedback(layer), want)
        assert close(learner.feedback_matrix(name), want)
    # it follows W: flip the output layer's weights and the feedback flips too
    before = used_feedback(model.out)
    with torch.no_grad():
        model.out.weight.neg_()
    assert close(used_feedback(model.out), -before)


def test_frsf_magnitude_is_fixed_and_sign_follows_w():
    model = sign_model()
    learner = bbp.rules.get("frsf", seed=0).attach(model)
    first = {n: used_feedback(layer) for n, layer in learner.trained_layers().items()}
    for n, layer in learner.trained_layers().items():
        w = layer.weight.detach()
        assert torch.equal(torch.sign(first[n]), torch.sign(w))
        bound = math.sqrt(6.0 / sum(w.shape))  # xavier_uniform magnitudes
        assert first[n].abs().max() <= bound and first[n].abs().std() > 0
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 12), torch.randint(0, 4, (16,))
    for _ in range(3):
        learner.step((x, y), opt)
    with torch.no_grad():
        model.fc1.weight[::2].neg_()  # flip some signs outright
    for n, layer in learner.trained_layers().items():
        now = used_feedback(layer)
        assert torch.equal(now.abs(), first[n].abs())
        assert torch.equal(torch.sign(now), torch.sign(layer.weight.detach()))
    assert not torch.equal(torch.sign(used_feedback(model.fc1)), torch.sign(first["fc1"]))


def test_brsf_magnitude_is_redrawn_every_batch_with_signs_of_w():
    model = sign_model()
    learner = bbp.rules.get("brsf", seed=0).attach(model)
    draws = {n: [used_feedback(layer) for _ in range(3)] for n, layer in learner.trained_layers().items()}
    for n, layer in learner.trained_layers().items():
        w = layer.weight.detach()
        bound = math.sqrt(6.0 / sum(w.shape))
        for B in draws[n]:
            assert torch.equal(torch.sign(B), torch.sign(w))
            assert B.abs().max() <= bound
        assert not torch.equal(draws[n][0].abs(), draws[n][1].abs())
        assert not torch.equal(draws[n][1].abs(), draws[n][2].abs())
    # the same seed repeats the same sequence of draws
    again = sign_model()
    learner2 = bbp.rules.get("brsf", seed=0).attach(again)
    for n, layer in learner2.trained_layers().items():
        assert torch.equal(used_feedback(layer), draws[n][0])


@pytest.mark.parametrize("name", ["brsf", "frsf"])
@pytest.mark.parametrize("init", ["xavier_uniform", "kaiming_uniform", "xavier_normal", "kaiming_normal"])
def test_random_magnitudes_follow_the_init_distribution(name, init):
    torch.manual_seed(0)
    layer = nn.Linear(300, 200)
    learner = bbp.rules.get(name, init=init).attach(layer)
    w = layer.weight.detach()
    fan_in, fan_out = 300, 200
    mags = used_feedback(layer).abs() if name == "brsf" else learner.feedback_matrix("").abs()
    if init.endswith("uniform"):
        bound = math.sqrt(6 / (fan_in + fan_out)) if init == "xavier_uniform" else 1 / math.sqrt(fan_in)
        u = mags / bound  # should be U(0, 1): mean 1/2, variance 1/12, each half equally likely
        assert u.max() < 1.0 and u.min() > 0.0
        assert abs(float(u.mean()) - 0.5) < 0.005
        assert abs(float(u.var()) - 1 / 12) < 0.003
        assert abs(float((u > 0.5).double().mean()) - 0.5) < 0.01
    else:
        std = math.sqrt(2 / (fan_in + fan_out)) if init == "xavier_normal" else math.sqrt(2 / fan_in)
        assert abs(float(mags.mean()) / std - math.sqrt(2 / math.pi)) < 0.01  # mean of |N(0, σ)|
        assert abs(float((mags**2).mean()) / std**2 - 1.0) < 0.02
    assert torch.equal(torch.sign(mags * torch.sign(w)), torch.sign(w))


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_sign_rules_on_conv_layers_share_the_kernel_signs(name):
    torch.manual_seed(0)
    model = models.build("lenet", (1, 16, 16), 10)
    learner = bbp.rules.get(name).attach(model)
    for layer_name, layer in learner.trained_layers().items():
        fb = learner.feedback_matrix(layer_name)
        assert fb.shape == layer.weight.shape
        assert torch.equal(torch.sign(fb), torch.sign(layer.weight.detach()))


# sign rules rebuild their feedback every forward into a buffer reused across steps; these
# check that reuse never changes a gradient, whatever order forwards and backwards come in


def twin_sign_models(name):
    a, b = sign_model(), sign_model()
    return (a, bbp.rules.get(name).attach(a)), (b, bbp.rules.get(name).attach(b))


def param_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_two_forwards_then_one_backward_equals_separate_backwards(name):
    (ma, _), (mb, _) = twin_sign_models(name)
    x1, x2, t1, t2 = torch.randn(5, 12), torch.randn(5, 12), torch.randn(5, 4), torch.randn(5, 4)
    (squared_error(ma(x1), t1) + squared_error(ma(x2), t2)).backward()
    squared_error(mb(x1), t1).backward()
    squared_error(mb(x2), t2).backward()
    ga, gb = param_grads(ma), param_grads(mb)
    assert ga.keys() == gb.keys() and all(close(ga[k], gb[k]) for k in ga)


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_a_graph_dropped_without_backward_does_not_disturb_the_next(name):
    (ma, _), (mb, _) = twin_sign_models(name)
    x1, x2, t2 = torch.randn(5, 12), torch.randn(5, 12), torch.randn(5, 4)
    kept = ma(x1)  # a forward whose graph stays alive, never backpropagated
    squared_error(ma(x2), t2).backward()
    del kept
    squared_error(ma(x2), t2).backward()
    _ = mb(x1)  # the twin makes the same forwards (same brSF draws), dropping this graph early
    del _
    squared_error(mb(x2), t2).backward()
    squared_error(mb(x2), t2).backward()
    ga, gb = param_grads(ma), param_grads(mb)
    assert all(close(ga[k], gb[k]) for k in ga)


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_retain_graph_backward_twice_doubles_the_gradient(name):
    model, _ = twin_sign_models(name)[0]
    x, t = torch.randn(5, 12), torch.randn(5, 4)
    loss = squared_error(model(x), t)
    loss.backward(retain_graph=True)
    once = param_grads(model)
    loss.backward()
    twice = param_grads(model)
    assert all(close(twice[k], 2 * once[k]) for k in once)


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_feedback_buffer_is_reused_across_steps_of_a_plain_loop(name):
    model, _ = twin_sign_models(name)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pointers = []
    loss = None  # the previous step's loss stays referenced during the next forward, as in user code
    for _ in range(4):
        opt.zero_grad()
        out = model(torch.randn(5, 12))
        pointers.append(out.grad_fn.bbp_scratch.tensor.data_ptr())
        loss = squared_error(out, torch.zeros(5, 4))
        loss.backward()
        opt.step()
    assert len(set(pointers)) == 1


# -- Kolen-Pollack -------------------------------------------------------------------------------


def kp_setup(kind="mlp"):
    torch.manual_seed(0)
    if kind == "mlp":
        model = models.build("mlp", (12,), 4, widths=(10, 8))
        x = torch.randn(16, 12)
    else:
        model = models.build("lenet", (1, 16, 16), 4)
        x = torch.randn(8, 1, 16, 16)
    y = torch.randint(0, 4, (len(x),))
    return model, x, y


def differences(learner):
    return {n: (m.weight - m.bbp_feedback).detach().clone() for n, m in learner.trained_layers().items()}


@pytest.mark.parametrize("kind", ["mlp", "lenet"])
@pytest.mark.parametrize("zero_gradient", [True, False], ids=["zero-grad", "real-grad"])
def test_kp_w_minus_b_shrinks_by_one_minus_eta_lambda_per_step(kind, zero_gradient):
    model, x, y = kp_setup(kind)
    loss_fn = (lambda out, t: out.sum() * 0.0) if zero_gradient else None
    learner = bbp.rules.get("kp", seed=0).attach(model, loss_fn=loss_fn)
    eta, lam = 0.1, 0.05
    opt = torch.optim.SGD(model.parameters(), lr=eta, weight_decay=lam)
    d = differences(learner)
    assert all(v.abs().max() > 0.01 for v in d.values())
    b0 = {n: m.bbp_feedback.detach().clone() for n, m in learner.trained_layers().items()}
    for _ in range(4):
        learner.step((x, y), opt)
        d_next = differences(learner)
        for n in d:
            assert close(d_next[n], (1 - eta * lam) * d[n])
        d = d_next
    # B learned (by weight decay alone when the gradient is zero)
    assert all(not torch.equal(m.bbp_feedback, b0[n]) for n, m in learner.trained_layers().items())


def test_kp_feedback_gets_exactly_the_weight_gradient():
    model, x, y = kp_setup("lenet")
    learner = bbp.rules.get("kp").attach(model)
    est = learner.estimate((x, y))
    for name in learner.trained_layers():
        assert torch.equal(est[f"{name}.bbp_feedback"], est[f"{name}.weight"])


def test_kp_learns_its_feedback_towards_w():
    model, x, y = kp_setup("mlp")
    learner = bbp.rules.get("kp").attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, weight_decay=0.5)
    start = {n: v.norm() for n, v in differences(learner).items()}
    for _ in range(30):
        learner.step((x, y), opt)
    for n, v in differences(learner).items():
        assert close(v.norm(), start[n] * (1 - 0.2 * 0.5) ** 30)


def test_kp_refuses_an_optimizer_without_b():
    model, x, y = kp_setup("mlp")
    early = torch.optim.SGD(model.parameters(), lr=0.1)  # created before attach: no B inside
    learner = bbp.rules.get("kp").attach(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        learner.step((x, y), early)
    assert "bbp_feedback" in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_kp_refuses_different_hyperparameters_for_w_and_b():
    model, x, y = kp_setup("mlp")
    learner = bbp.rules.get("kp").attach(model)
    feedback = [p for n, p in model.named_parameters() if n.endswith("bbp_feedback")]
    others = [p for n, p in model.named_parameters() if not n.endswith("bbp_feedback")]
    opt = torch.optim.SGD([{"params": others}, {"params": feedback, "weight_decay": 0.1}], lr=0.1)
    with pytest.raises(ConfigError):
        learner.step((x, y), opt)


def test_dfa_reads_a_user_models_structure_and_refuses_bad_names():
    """The structure protocol is open to any model: a user's model naming its blocks gets DFA's
    block-level placement; a name that is not a module is refused with one sentence."""
    class Net(nn.Module):
        def __init__(self, names=None):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
            self.out = nn.Linear(8, 3)
            self.names = names

        def forward(self, x):
            return self.out(self.body(x))

        def structure(self):
            return {"blocks": self.names or ["body.1", "body.3"], "head": "out"}

    torch.manual_seed(0)
    learner = bbp.rules.get("dfa").attach(Net())
    learner.estimate((torch.randn(5, 4), torch.randint(0, 3, (5,))))
    assert learner.points == ["body.1", "body.3"] and learner.shared
    with pytest.raises(ConfigError, match="'body.9', which is not a module"):
        bbp.rules.get("dfa").attach(Net(["body.1", "body.9"]))
