"""DFA and OTTT on spiking models: each update against a hand computation on a tiny network,
learning on digits, OTTT's memory constant in T (saved tensors counted, not timed), refusals."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import models
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.rules.common import layer_generator


def arctan_prime(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def tiny_snn(T: int, beta: float = 0.9, readout: str = "count", seed: int = 0, **kwargs) -> nn.Module:
    """snn-mlp 3-4-2 in double precision, weights scaled up so that both layers spike."""
    torch.manual_seed(seed)
    model = models.build("snn-mlp", (3,), 2, widths=(4,), T=T, beta=beta, readout=readout, **kwargs).double()
    with torch.no_grad():
        model.fc1.weight.mul_(3.0)
        model.out.weight.mul_(3.0)
        model.fc1.bias.add_(0.5)
        model.out.bias.add_(0.6)
    return model


def lif_forward(current, T, beta, theta=1.0, constant=False):
    """Hand-unrolled LIF (subtract reset one step later): membranes and spikes, lists over t."""
    U, S = [], []
    for t in range(T):
        i_t = current if constant else current[t]
        u = i_t if t == 0 else beta * U[-1] + i_t - theta * S[-1]
        U.append(u)
        S.append((u > theta).double())
    return U, S


def lif_backward(dS_in, U, beta, theta=1.0):
    """BPTT through one LIF layer by hand: dL/dU_t given dL/dS_t from outside the layer,
    through the surrogate, the leak and the (not detached) reset."""
    T = len(U)
    dU = [None] * T
    for t in reversed(range(T)):
        dS = dS_in[t] - (theta * dU[t + 1] if t + 1 < T else 0)
        dU[t] = dS * arctan_prime(U[t] - theta) + (beta * dU[t + 1] if t + 1 < T else 0)
    return dU


# -- DFA --------------------------------------------------------------------------------------------


def test_dfa_on_snn_mlp_is_the_hand_computed_update():
    T, beta, B = 3, 0.9, 5
    model = tiny_snn(T, beta)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, generator=gen, dtype=torch.float64) * 1.5
    y = torch.tensor([0, 1, 1, 0, 1])
    learner = bbp.rules.get("dfa").attach(model)
    got = learner.estimate((x, y))

    W1, b1, W2, b2 = (p.detach() for p in (model.fc1.weight, model.fc1.bias, model.out.weight, model.out.bias))
    U1, S1 = lif_forward(x @ W1.T + b1, T, beta, constant=True)
    U2, S2 = lif_forward([s @ W2.T + b2 for s in S1], T, beta)
    counts = sum(S2)
    assert 0 < float(sum(S1).sum()) < T * B * 4 and float(counts.sum()) > 0  # both layers spike, not always
    e = (torch.softmax(counts, 1) - F.one_hot(y, 2).double()) / B  # dL/dS_t^out, the same at every step
    torch.testing.assert_close(model(x), counts)
    # one fixed matrix for the hidden layer (n_out x width / sqrt(width)), shared by the 3 steps
    Bmat = torch.randn(2, 4, generator=layer_generator(0, 0, salt="dfa")).double() / math.sqrt(4)
    dU1 = lif_backward([e @ Bmat] * T, U1, beta)
    dU2 = lif_backward([e] * T, U2, beta)
    want = {
        "fc1.weight": sum(d.T @ x for d in dU1), "fc1.bias": sum(d.sum(0) for d in dU1),
        "out.weight": sum(d.T @ s for d, s in zip(dU2, S1)), "out.bias": sum(d.sum(0) for d in dU2),
    }
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)
    bp = learner.backprop_gradients((x, y))
    torch.testing.assert_close(bp["out.weight"], want["out.weight"])  # the output layer: its true gradient
    assert not torch.allclose(bp["fc1.weight"], want["fc1.weight"])


def test_dfa_error_at_the_output_current_varies_per_step():
    """error_at='out' reads e_t = dL/dI_t^out (through the output neurons): hand check of fc1."""
    T, beta, B = 3, 0.9, 4
    model = tiny_snn(T, beta)
    x = torch.rand(B, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1.5
    y = torch.tensor([1, 0, 1, 1])
    got = bbp.rules.get("dfa", error_at="out").attach(model).estimate((x, y))
    W1, b1, W2, b2 = (p.detach() for p in (model.fc1.weight, model.fc1.bias, model.out.weight, model.out.bias))
    U1, S1 = lif_forward(x @ W1.T + b1, T, beta, constant=True)
    U2, S2 = lif_forward([s @ W2.T + b2 for s in S1], T, beta)
    e = (torch.softmax(sum(S2), 1) - F.one_hot(y, 2).double()) / B
    e_t = lif_backward([e] * T, U2, beta)  # dL/dI_t^out = dL/dU_t^out
    Bmat = torch.randn(2, 4, generator=layer_generator(0, 0, salt="dfa")).double() / math.sqrt(4)
    dU1 = lif_backward([et @ Bmat for et in e_t], U1, beta)
    torch.testing.assert_close(got["fc1.weight"], sum(d.T @ x for d in dU1), rtol=1e-10, atol=1e-12)


def test_dfa_refuses_logits_error_and_undeclared_time_step_models():
    model = models.build("snn-mlp", (4,), 2, T=3, widths=(8,))
    with pytest.raises(ConfigError, match="error='logits'"):
        bbp.rules.get("dfa", error="logits").attach(model)

    class Undeclared(nn.Sequential):
        pass

    plain = Undeclared(*[m for _, m in model.named_children()])
    with pytest.raises(UnsupportedModuleError, match="does not declare its time-step layout"):
        bbp.rules.get("dfa").attach(plain)


def train_digits(learner, ds, epochs, lr=3e-3, batch=64):
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = torch.randperm(len(ds.x_train), generator=order)
        for i in range(0, len(ds.x_train), batch):
            idx = perm[i : i + batch]
            learner.step((ds.x_train[idx], ds.y_train[idx]), opt)
    return float((learner.predict(ds.x_test).argmax(1) == ds.y_test).float().mean())


@pytest.mark.parametrize("name", ["dfa", "ottt"])
def test_dfa_and_ottt_train_snn_mlp_on_digits(name, digits):
    torch.manual_seed(0)
    model = models.build("snn-mlp", (1, 8, 8), 10, T=4, widths=(64,))
    learner = bbp.rules.get(name).attach(model)
    assert set(learner.trained_layers()) == {"fc1", "out"}
    acc = train_digits(learner, digits, epochs=3)
    assert acc >= 0.75, f"{name} on snn-mlp: {acc:.3f}"  # chance 0.10


# -- OTTT -------------------------------------------------------------------------------------------


def one_layer(T: int, beta: float, readout: str, encoder: str) -> nn.Module:
    torch.manual_seed(0)
    model = models.build("snn-mlp", (3,), 2, widths=(), T=T, beta=beta, readout=readout, encoder=encoder).double()
    with torch.no_grad():
        model.out.weight.mul_(3.0)
        model.out.bias.add_(0.6)
    return model


@pytest.mark.parametrize("readout", ["count", "membrane"])
@pytest.mark.parametrize("encoder", ["direct", "rate"])
def test_ottt_one_layer_is_the_hand_computed_trace_gradient(readout, encoder):
    """One weight layer, T = 3: ∇W = Σ_t δ_t â_tᵀ with â_t = β â_{t−1} + x_t, δ_t the gradient
    of L_t = ((1−λ) CE(o_t) + λ MSE(o_t, onehot)) / T through step t alone."""
    T, beta, B, lam = 3, 0.8, 4, 0.05
    model = one_layer(T, beta, readout, encoder)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(B, 3, generator=gen, dtype=torch.float64) * 1.5
    y = torch.tensor([0, 1, 1, 0])
    learner = bbp.rules.get("ottt").attach(model)
    torch.manual_seed(7)
    got = learner.estimate((x, y))
    torch.manual_seed(7)  # the rate encoder draws the same spikes
    inputs = [x] * T if encoder == "direct" else list(model.encoder(x).view(T, B, 3))

    W, b = model.out.weight.detach(), model.out.bias.detach()
    onehot = F.one_hot(y, 2).double()
    gW, gb = torch.zeros_like(W), torch.zeros_like(b)
    trace, u, s = None, None, None
    for t in range(T):
        trace = inputs[t] if trace is None else beta * trace + inputs[t]
        current = inputs[t] @ W.T + b
        if readout == "count":  # LIF output layer; membrane and reset are constants in the backward
            u = current if u is None else beta * u + current - s
            s = (u > 1).double()
            o, do_di = s, arctan_prime(u - 1)
        else:  # leaky integrator: o_t = U_t, dU_t/dI_t = 1 with the past detached
            u = current if u is None else beta * u + current
            o, do_di = u, torch.ones_like(u)
        p = torch.softmax(o, 1)
        dL_do = ((1 - lam) * (p - onehot) / B + lam * 2 * (o - onehot) / o.numel()) / T
        delta = dL_do * do_di
        gW += delta.T @ trace
        gb += delta.sum(0)
    torch.testing.assert_close(got["out.weight"], gW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["out.bias"], gb, rtol=1e-10, atol=1e-12)


def test_ottt_two_layers_hidden_delta_is_one_step_backprop():
    """Hidden layer: δ_t^1 = σ'(U_t^1 − θ) ⊙ (W_2ᵀ δ_t^2) at step t only; ∇W_1 = Σ_t δ_t^1 â_tᵀ of
    the (constant) input; ∇W_2 = Σ_t δ_t^2 â_tᵀ of the hidden spikes; input_trace=False uses x."""
    T, beta, B, lam = 3, 0.9, 5, 0.05
    model = tiny_snn(T, beta)
    x = torch.rand(B, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    y = torch.tensor([0, 1, 1, 0, 1])
    got = bbp.rules.get("ottt").attach(model).estimate((x, y))
    W1, b1, W2, b2 = (p.detach() for p in (model.fc1.weight, model.fc1.bias, model.out.weight, model.out.bias))
    U1, S1 = lif_forward(x @ W1.T + b1, T, beta, constant=True)
    U2, S2 = lif_forward([s @ W2.T + b2 for s in S1], T, beta)
    onehot = F.one_hot(y, 2).double()
    g = {k: 0 for k in ("fc1.weight", "fc1.bias", "out.weight", "out.bias", "fc1.weight.raw")}
    trace_x, trace_s = None, None
    for t in range(T):
        trace_x = x if trace_x is None else beta * trace_x + x
        trace_s = S1[t] if trace_s is None else beta * trace_s + S1[t]
        o = S2[t]
        dL_do = ((1 - lam) * (torch.softmax(o, 1) - onehot) / B + lam * 2 * (o - onehot) / o.numel()) / T
        d2 = dL_do * arctan_prime(U2[t] - 1)
        d1 = (d2 @ W2) * arctan_prime(U1[t] - 1)
        g["out.weight"] += d2.T @ trace_s
        g["out.bias"] += d2.sum(0)
        g["fc1.weight"] += d1.T @ trace_x
        g["fc1.weight.raw"] += d1.T @ x
        g["fc1.bias"] += d1.sum(0)
    for k in ("fc1.weight", "fc1.bias", "out.weight", "out.bias"):
        torch.testing.assert_close(got[k], g[k], rtol=1e-10, atol=1e-12, msg=k)
    raw = bbp.rules.get("ottt", input_trace=False).attach(tiny_snn(T, beta)).estimate((x, y))
    torch.testing.assert_close(raw["fc1.weight"], g["fc1.weight.raw"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(raw["out.weight"], g["out.weight"], rtol=1e-10, atol=1e-12)


def test_ottt_on_snn_cnn_weight_gradient_uses_the_trace():
    """snn-cnn, T = 2: conv2's gradient equals the convolution weight gradient with the trace
    β S_0 + S_1 of lif1's spikes as input (checked against autograd on a fresh graph)."""
    torch.manual_seed(0)
    model = models.build("snn-cnn", (1, 16, 16), 3, T=2, beta=0.7).double()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2])
    got = bbp.rules.get("ottt", loss_lambda=0.0).attach(model).estimate((x, y))
    # by hand with autograd per step: the state detached, conv2 applied to the trace for its weight
    lif1, lif2, out_neurons = model.lif1, model.lif2, model.out_neurons
    c1 = model.pool1(model.conv1(x)).detach()
    st1 = st2 = st3 = None
    tr = None
    total = torch.zeros_like(model.conv2.weight)
    for t in range(2):
        s1, st1 = lif1.step(c1, st1)
        s1 = s1.detach()
        tr = s1 if tr is None else 0.7 * tr + s1
        w = model.conv2.weight.detach().clone().requires_grad_(True)
        cur_value = F.conv2d(s1, w.detach(), model.conv2.bias.detach())
        cur_trace = F.conv2d(tr, w, None)
        cur = cur_value + (cur_trace - cur_trace.detach())  # value from spikes, weight gradient from the trace
        s2, st2 = lif2.step(model.pool2(cur), None if st2 is None else type(st2)(*(v.detach() if v is not None else v for v in st2)))
        st3 = None if st3 is None else type(st3)(*(v.detach() if v is not None else v for v in st3))
        o, st3 = out_neurons.step(model.out(model.flatten(s2)), st3)
        (gw,) = torch.autograd.grad(F.cross_entropy(o, y) / 2, w)
        total += gw
    torch.testing.assert_close(got["conv2.weight"], total, rtol=1e-9, atol=1e-12)


def peak_saved_bytes(fn) -> int:
    """Most bytes held at once by tensors autograd saved for backward while ``fn`` runs (each
    packed tensor counted until autograd frees it)."""
    live, peak = [0], [0]

    class Held:
        __slots__ = ("tensor", "__weakref__")

        def __init__(self, tensor):
            self.tensor = tensor

    def release(n):
        live[0] -= n

    def pack(t):
        n = t.numel() * t.element_size()
        live[0] += n
        peak[0] = max(peak[0], live[0])
        held = Held(t)
        weakref.finalize(held, release, n)
        return held

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda held: held.tensor):
        fn()
    return peak[0]


def saved_peak(rule: str, T: int) -> int:
    torch.manual_seed(0)
    model = models.build("snn-mlp", (1, 8, 8), 10, T=T, widths=(64,))
    learner = bbp.rules.get(rule).attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    return peak_saved_bytes(lambda: learner.step((x, y), opt))


def test_ottt_memory_is_constant_in_T_and_bptt_grows():
    ottt = {T: saved_peak("ottt", T) for T in (4, 8, 32)}
    bptt = {T: saved_peak("backprop", T) for T in (4, 8, 32)}
    assert ottt[4] > 0 and ottt[4] == ottt[8] == ottt[32]  # bytes, exactly
    # BPTT: a constant part plus the same amount per step (linear in T)
    per_step = (bptt[8] - bptt[4]) / 4
    assert per_step > 0 and bptt[32] - bptt[4] == pytest.approx(28 * per_step, rel=0.02)
    assert bptt[32] > 8 * ottt[32]


def test_ottt_online_updates_every_step_and_accumulate_once():
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    counts = {}
    for update in ("accumulate", "online"):
        model = tiny_snn(4, 0.9)
        learner = bbp.rules.get("ottt", update=update).attach(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        calls = []
        opt.register_step_post_hook(lambda *a: calls.append(1))
        metrics = learner.step((x, y), opt)
        counts[update] = len(calls)
        assert set(metrics) == {"loss", "ottt_loss"} and all(math.isfinite(v) for v in metrics.values())
    assert counts == {"accumulate": 1, "online": 4}
    # OTTT_A's one step is the estimate's direction: W -= lr * estimate
    model = tiny_snn(4, 0.9)
    learner = bbp.rules.get("ottt").attach(model)
    direction = learner.estimate((x, y))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    learner.step((x, y), torch.optim.SGD(model.parameters(), lr=0.1))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - 0.1 * direction[n])


def test_ottt_reported_loss_is_the_readout_loss_and_predict_is_the_models_forward():
    model = tiny_snn(3, 0.9)
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    y = torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        want = F.cross_entropy(model(x), y)
    learner = bbp.rules.get("ottt").attach(model)
    metrics = learner.step((x, y), torch.optim.SGD(model.parameters(), lr=0.0))
    assert metrics["loss"] == pytest.approx(float(want), rel=1e-12)
    with torch.no_grad():
        assert torch.equal(learner.predict(x), model(x))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: models.build("mlp", (4,), 2), "declare their time-step layout"),
        (lambda: models.build("lenet", (1, 16, 16), 2), "declare their time-step layout"),
    ],
)
def test_ottt_refuses_models_it_cannot_run_in_one_sentence(build, match):
    with pytest.raises(UnsupportedModuleError, match=match) as info:
        bbp.rules.get("ottt").attach(build())
    assert len(str(info.value).rstrip(".").split(". ")) == 1


def test_ottt_refuses_unknown_layers_by_name_and_type():
    model = models.build("snn-mlp", (4,), 2, T=3, widths=(8,))
    model.flatten = nn.ReLU()  # an unknown module in the chain
    with pytest.raises(UnsupportedModuleError, match=r"module 'flatten' of type ReLU"):
        bbp.rules.get("ottt").attach(model)
    model = models.build("snn-mlp", (4,), 2, T=3, widths=(8,))
    del model.lif1  # fc1 feeds out directly: no neurons to take the trace's decay from
    with pytest.raises(UnsupportedModuleError, match="layer 'fc1' does not"):
        bbp.rules.get("ottt").attach(model)
