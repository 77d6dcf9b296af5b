"""beyondbp.spiking and the spiking models: surrogate derivatives, neuron dynamics by hand,
encoders, readouts, BPTT against a hand-unrolled network, the rules on spiking models, spike
statistics, and the run loop / CLI reporting them."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp
from beyondbp import models, spiking
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.spiking import surrogate as sg
from beyondbp.spiking.neurons import ALIF, LIF, LeakyIntegrator

FEEDBACK_PATH = ["backprop", "fa", "usf", "brsf", "frsf", "kp", "pfa"]


@pytest.fixture(scope="module")
def digits16(digits):
    """digits upsampled to 1x16x16 (snn-cnn needs 16x16 at least)."""
    up = lambda x: F.interpolate(x, scale_factor=2, mode="nearest")  # noqa: E731
    return up(digits.x_train), digits.y_train, up(digits.x_test), digits.y_test


# -- surrogate spike functions --------------------------------------------------------------------

GRID = torch.cat([torch.linspace(-3, 3, 601, dtype=torch.float64), torch.tensor([0.0, 1e-9, -1e-9, 0.25, -0.5], dtype=torch.float64)])


@pytest.mark.parametrize("name", sg.names())
@pytest.mark.parametrize("alpha", [None, 0.5, 3.0])
def test_surrogate_backward_is_the_derivative_of_its_primitive(name, alpha):
    cls = sg.get(name)
    a = cls.default_alpha if alpha is None else alpha
    x = GRID.clone().requires_grad_(True)
    out = cls.apply(x, a)
    assert torch.equal(out, (GRID > 0).double())  # Heaviside forward, strictly greater
    upstream = torch.linspace(0.5, 2.0, len(GRID), dtype=torch.float64)
    (got,) = torch.autograd.grad(out, x, upstream)
    x2 = GRID.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(cls.primitive(x2, a), x2, upstream)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got, upstream * cls.derivative(GRID, a), rtol=1e-12, atol=1e-15)


def test_surrogate_formulas_and_the_fields_defaults():
    x = torch.tensor([0.0, 0.3, -0.7], dtype=torch.float64)
    assert {n: sg.default_alpha(n) for n in sg.names()} == {
        "arctan": 2.0, "fast_sigmoid": 25.0, "sigmoid": 4.0, "triangle": 1.0, "straight_through": 1.0,
    }
    # arctan (snnTorch / SpikingJelly): α / (2 (1 + (π α x / 2)²))
    torch.testing.assert_close(sg.ArcTan.derivative(x, 2.0), 2.0 / (2 * (1 + (math.pi * 2.0 * x / 2) ** 2)))
    torch.testing.assert_close(sg.FastSigmoid.derivative(x, 25.0), 1 / (25 * x.abs() + 1) ** 2)
    s = torch.sigmoid(4 * x)
    torch.testing.assert_close(sg.Sigmoid.derivative(x, 4.0), 4 * s * (1 - s))
    torch.testing.assert_close(sg.Triangle.derivative(x, 1.0), torch.tensor([1.0, 0.7, 0.3], dtype=torch.float64))
    assert torch.equal(sg.StraightThrough.derivative(x, 1.0), torch.ones(3, dtype=torch.float64))
    # peaks: arctan α/2, sigmoid α/4, fast sigmoid 1, triangle α; the triangle has area 1
    zero = torch.zeros(1, dtype=torch.float64)
    assert float(sg.ArcTan.derivative(zero, 2.0)) == 1.0 and float(sg.Sigmoid.derivative(zero, 4.0)) == 1.0
    grid = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    assert float(torch.trapezoid(sg.Triangle.derivative(grid, 2.0), grid)) == pytest.approx(1.0, abs=1e-6)


def test_surrogate_registry_and_spike_helper():
    assert sg.names() == ["arctan", "fast_sigmoid", "sigmoid", "triangle", "straight_through"]
    with pytest.raises(ConfigError, match="Unknown surrogate 'erf'.*arctan"):
        sg.get("erf")
    x = torch.tensor([-0.1, 0.0, 0.2], requires_grad=True)
    out = spiking.spike(x, "fast_sigmoid", alpha=10.0)
    out.sum().backward()
    assert out.tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(x.grad, 1 / (10 * x.detach().abs() + 1) ** 2)


# -- neurons --------------------------------------------------------------------------------------


def lif_by_hand(currents, beta, theta, reset):
    """Membrane and spikes of one LIF neuron, from the module docstring's equations, in floats."""
    u, s, us, ss = 0.0, 0.0, [], []
    for i in currents:
        u = beta * u + i - theta * s if reset == "subtract" else beta * (1 - s) * u + i
        s = 1.0 if u - theta > 0 else 0.0
        us.append(u)
        ss.append(s)
    return us, ss


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_dynamics_by_hand(reset):
    currents = [0.6, 0.6, 0.6, 1.5, 0.0, 2.5, -0.3]
    lif = LIF(len(currents), beta=0.9, threshold=1.0, reset=reset)
    trace = lif.run(torch.tensor(currents, dtype=torch.float64).view(-1, 1, 1), record_membrane=True)
    us, ss = lif_by_hand(currents, 0.9, 1.0, reset)
    torch.testing.assert_close(trace.membrane.flatten(), torch.tensor(us, dtype=torch.float64), rtol=0, atol=1e-15)
    assert trace.spikes.flatten().tolist() == ss
    expected = {"subtract": [0, 1, 0, 1, 0, 1, 1], "zero": [0, 1, 0, 1, 0, 1, 0]}[reset]
    assert ss == [float(v) for v in expected]
    # the subtract reset at step 3: U_3 = 0.9 * 1.14 + 0.6 - 1
    if reset == "subtract":
        assert trace.membrane.flatten()[2].item() == pytest.approx(0.9 * 1.14 + 0.6 - 1)
    else:
        assert trace.membrane.flatten()[2].item() == pytest.approx(0.6)
    # forward() is run() on the time-major flattened layout
    out = lif(torch.tensor(currents).view(-1, 1))
    assert out.flatten().tolist() == ss


def test_lif_threshold_beta_one_and_state_reset_per_call():
    lif = LIF(4, beta=1.0, threshold=2.0)  # IF neuron: no leak
    x = torch.full((4, 1, 1), 0.75)
    trace = lif.run(x, record_membrane=True)
    assert trace.membrane.flatten().tolist() == [0.75, 1.5, 2.25, 1.0]
    assert trace.spikes.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    again = lif.run(x, record_membrane=True)  # a second call starts from zero state again
    assert torch.equal(again.membrane, trace.membrane)
    # continuing from the returned state instead
    more = lif.run(x, state=trace.state, record_membrane=True)
    assert more.membrane.flatten()[0].item() == pytest.approx(1.0 + 0.75 - 0.0)
    assert not list(lif.buffers()) and not list(lif.parameters())


def test_constant_input_equals_the_repeated_sequence():
    torch.manual_seed(0)
    x = torch.randn(3, 5)
    seq = LIF(6, beta=0.8)(x.unsqueeze(0).expand(6, 3, 5).reshape(18, 5))
    const = LIF(6, beta=0.8, constant_input=True)(x)
    assert torch.equal(seq, const)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_detached_reset_changes_only_gradients(reset):
    torch.manual_seed(1)
    currents = (torch.rand(8, 4, 6) * 1.2).double()
    results = {}
    for detach in (False, True):
        x = currents.clone().requires_grad_(True)
        trace = LIF(8, beta=0.9, reset=reset, detach_reset=detach).run(x, record_membrane=True)
        (trace.spikes * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum().backward()
        results[detach] = (trace.spikes.detach(), trace.membrane.detach(), x.grad)
    assert results[False][0].sum() > 0  # neurons did spike, so the reset mattered
    assert torch.equal(results[False][0], results[True][0]) and torch.equal(results[False][1], results[True][1])
    assert not torch.allclose(results[False][2], results[True][2])


@pytest.mark.parametrize("path", ["run", "forward"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [False, True])
def test_lif_bptt_gradient_equals_the_hand_derived_recurrence(reset, detach, path):
    """dL/dI_t for L = Σ_t c_t·S_t, from the reverse-time recurrence of the module docstring's
    equations: δ_t = dL/dU_t, dL/dI_t = δ_t,
    subtract: δ_t = σ'_t (c_t − θ δ_{t+1} [not detached]) + β δ_{t+1}
    zero:     δ_t = σ'_t (c_t − β U_t δ_{t+1} [not detached]) + β (1 − S_t) δ_{t+1}."""
    torch.manual_seed(2)
    T, beta, theta = 7, 0.85, 1.0
    currents = (torch.rand(T, 2, 5) * 1.3).double().requires_grad_(True)
    c = torch.randn(T, 2, 5, dtype=torch.float64)
    lif = LIF(T, beta=beta, threshold=theta, reset=reset, detach_reset=detach, surrogate="arctan")
    trace = lif.run(currents, record_membrane=True)
    if path == "run":  # the step-by-step graph
        (trace.spikes * c).sum().backward()
    else:  # the fused sequence node of LIF.forward
        spikes = lif(currents.reshape(T * 2, 5)).view(T, 2, 5)
        assert torch.equal(spikes, trace.spikes)
        (spikes * c).sum().backward()
    u, s = trace.membrane.detach(), trace.spikes.detach()
    dsig = sg.ArcTan.derivative(u - theta, 2.0)
    delta_next = torch.zeros_like(u[0])
    want = torch.zeros_like(u)
    for t in reversed(range(T)):
        keep = 0.0 if detach else 1.0
        if reset == "subtract":
            delta = dsig[t] * (c[t] - keep * theta * delta_next) + beta * delta_next
        else:
            delta = dsig[t] * (c[t] - keep * beta * u[t] * delta_next) + beta * (1 - s[t]) * delta_next
        want[t] = delta
        delta_next = delta
    torch.testing.assert_close(currents.grad, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("surrogate", sg.names())
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("constant", [False, True])
def test_lif_forward_fused_equals_the_step_by_step_graph(surrogate, reset, detach, constant):
    torch.manual_seed(4)
    T, B = 9, 4
    lif = LIF(T, beta=0.8, reset=reset, detach_reset=detach, constant_input=constant, surrogate=surrogate)
    x = ((torch.rand(B, 7) if constant else torch.rand(T * B, 7)) * 1.5).double().requires_grad_(True)
    c = torch.randn(T * B, 7, dtype=torch.float64)
    fused = lif(x)
    (g_fused,) = torch.autograd.grad((fused * c).sum(), x)
    stepwise = lif.run(x if constant else x.view(T, B, 7)).spikes.reshape(T * B, 7)
    (g_step,) = torch.autograd.grad((stepwise * c).sum(), x)
    assert fused.sum() > 0 and torch.equal(fused, stepwise)
    torch.testing.assert_close(g_fused, g_step, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("constant", [False, True])
def test_lif_on_channels_last_input_keeps_the_layout_and_the_numbers(reset, constant):
    """The fused LIF allocates its sequence in the input's layout (channels-last after snn-cnn's
    convs): spikes and input gradients are the same numbers as from a contiguous input, bit for bit
    (a constant input's gradient, summed over the steps, up to the order of that sum)."""
    torch.manual_seed(5)
    T, B = 6, 3
    lif = LIF(T, beta=0.9, reset=reset, constant_input=constant)
    rows = B if constant else T * B
    dense = (torch.rand(rows, 5, 4, 3) * 1.5).requires_grad_(True)
    nhwc = dense.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert not nhwc.is_contiguous()
    c = torch.randn(T * B, 5, 4, 3)
    a, b = lif(dense), lif(nhwc)
    assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
    assert a.sum() > 0 and torch.equal(a, b)
    (ga,) = torch.autograd.grad((a * c).sum(), dense)
    (gb,) = torch.autograd.grad((b * c).sum(), nhwc)
    assert ga.abs().sum() > 0
    if constant:
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(ga, gb)


def test_snn_cnn_channels_last_convs_compute_the_plain_conv_network():
    """snn-cnn's convs run channels-last (a speed choice): the same spike counts as with plain
    nn.Conv2d layers, and the same gradients up to float32 rounding (oneDNN sums the input
    gradient in another order); in float64 (no oneDNN) equal to 1e-12."""
    from beyondbp.models.snn import ChannelsLastConv2d

    for dtype, tol in [(torch.float32, dict(rtol=1e-4, atol=1e-6)), (torch.float64, dict(rtol=1e-10, atol=1e-12))]:
        torch.manual_seed(6)
        fast = models.build("snn-cnn", (1, 16, 16), 10, T=5).to(dtype)
        plain = models.build("snn-cnn", (1, 16, 16), 10, T=5).to(dtype)
        plain.load_state_dict(fast.state_dict())
        assert isinstance(fast.conv1, ChannelsLastConv2d) and isinstance(fast.conv2, ChannelsLastConv2d)
        plain.conv1.__class__ = plain.conv2.__class__ = nn.Conv2d
        x, y = torch.randn(8, 1, 16, 16, dtype=dtype) * 2, torch.randint(0, 10, (8,))
        out_fast, out_plain = fast(x), plain(x)
        assert out_fast.sum() > 0 and torch.equal(out_fast, out_plain)
        F.cross_entropy(out_fast, y).backward()
        F.cross_entropy(out_plain, y).backward()
        for (n, p), (_, q) in zip(fast.named_parameters(), plain.named_parameters()):
            assert q.grad.abs().sum() > 0, n
            torch.testing.assert_close(p.grad, q.grad, **tol, msg=n)


def alif_by_hand(currents, beta, theta0, rho, gamma):
    u, s, b, rows = 0.0, 0.0, 0.0, []
    for i in currents:
        theta_prev = theta0 + gamma * b
        u = beta * u + i - theta_prev * s
        b = rho * b + (1 - rho) * s
        theta = theta0 + gamma * b
        s = 1.0 if u - theta > 0 else 0.0
        rows.append((u, theta, s))
    return rows


def test_alif_threshold_adapts_as_in_the_lsnn_equations():
    currents = [1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 0.0, 0.0, 1.2, 1.2]
    alif = ALIF(len(currents), beta=0.9, threshold=1.0, adapt_decay=0.5, adapt_scale=1.5)
    x = torch.tensor(currents, dtype=torch.float64).view(-1, 1, 1)
    spikes, membranes, thresholds, state = [], [], [], None
    for t in range(len(currents)):
        s, state = alif.step(x[t], state)
        spikes.append(float(s))
        membranes.append(float(state.membrane))
        thresholds.append(float(alif.thresholds(state.adaptation)))
    rows = alif_by_hand(currents, 0.9, 1.0, 0.5, 1.5)
    assert spikes == [r[2] for r in rows]
    assert membranes == pytest.approx([r[0] for r in rows], abs=1e-12)
    assert thresholds == pytest.approx([r[1] for r in rows], abs=1e-12)
    assert max(thresholds) > 1.5 and thresholds[0] == 1.0  # it adapted, from θ₀
    assert torch.equal(alif.run(x).spikes.flatten(), torch.tensor(spikes, dtype=torch.float64))
    # the adaptation makes it fire less than the LIF under the same drive
    lif_spikes = LIF(len(currents), beta=0.9).run(x).spikes.sum()
    assert sum(spikes) < float(lif_spikes)
    # γ = 0: exactly the LIF
    flat = ALIF(len(currents), beta=0.9, adapt_scale=0.0).run(x, record_membrane=True)
    plain = LIF(len(currents), beta=0.9).run(x, record_membrane=True)
    assert torch.equal(flat.spikes, plain.spikes) and torch.equal(flat.membrane, plain.membrane)


def test_leaky_integrator_never_spikes():
    li = LeakyIntegrator(3, beta=0.5)
    out = li(torch.tensor([[4.0], [2.0], [1.0]]))
    assert out.flatten().tolist() == [4.0, 4.0, 3.0]
    assert LeakyIntegrator(3, beta=0.5, constant_input=True)(torch.tensor([[2.0]])).flatten().tolist() == [2.0, 3.0, 3.5]


def test_beta_from_tau():
    assert spiking.beta_from_tau(2) == 0.5 and spiking.beta_from_tau(1) == 0.0
    with pytest.raises(ConfigError, match="tau"):
        spiking.beta_from_tau(0.5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LIF(0), "time_steps"),
        (lambda: LIF(4, beta=0.0), "beta"),
        (lambda: LIF(4, beta=1.5), "beta"),
        (lambda: LIF(4, threshold=0.0), "threshold"),
        (lambda: LIF(4, reset="hard"), "reset"),
        (lambda: LIF(4, surrogate="erf"), "surrogate"),
        (lambda: LIF(4, alpha=-1.0), "alpha"),
        (lambda: ALIF(4, adapt_decay=1.0), "adapt_decay"),
        (lambda: ALIF(4, adapt_scale=-0.1), "adapt_scale"),
        (lambda: spiking.RateEncoder(0), "time_steps"),
        (lambda: spiking.make_encoder("poisson", 4), "Unknown encoder"),
        (lambda: LIF(4)(torch.zeros(6, 3)), r"multiple of 4"),
        (lambda: spiking.SpikeCount(4)(torch.zeros(6, 3)), r"\[T\*B"),
    ],
)
def test_bad_neuron_and_encoder_settings_are_one_sentence(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


# -- encoders and readouts ------------------------------------------------------------------------


def test_intensity_is_per_sample_min_max_and_ignores_standardisation():
    x = torch.tensor([[0.0, 0.25, 1.0], [2.0, 2.0, 2.0]]).view(2, 1, 3)
    p = spiking.intensity(x)
    assert p[0].flatten().tolist() == [0.0, 0.25, 1.0] and p[1].flatten().tolist() == [0.0, 0.0, 0.0]
    raw = torch.rand(4, 1, 5, 5)
    standardised = (raw - 0.2860) / 0.3530
    torch.testing.assert_close(spiking.intensity(standardised), spiking.intensity(raw))


def test_rate_encoder_statistics_and_seeding():
    raw = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).view(1, 1, 5)
    enc = spiking.RateEncoder(4000)
    torch.manual_seed(0)
    spikes = enc(raw)
    assert spikes.shape == (4000, 1, 5) and set(spikes.unique().tolist()) <= {0.0, 1.0}
    rates = spikes.mean(0).flatten()
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    assert rates[0] == 0 and rates[-1] == 1
    assert torch.all((rates - p).abs() <= 4 * torch.sqrt(p * (1 - p) / 4000) + 1e-9)
    torch.manual_seed(0)
    assert torch.equal(enc(raw), spikes)
    assert not torch.equal(enc(raw), spikes)  # the global RNG moved on


def test_latency_encoder_fires_once_earlier_for_brighter_pixels():
    x = torch.tensor([0.0, 0.5, 1.0, 0.75]).view(1, 4)
    enc = spiking.LatencyEncoder(9)
    spikes = enc(x).view(9, 1, 4)
    assert spikes.sum(0).flatten().tolist() == [0.0, 1.0, 1.0, 1.0]  # the darkest pixel never fires
    first = spikes.argmax(0).flatten().tolist()
    assert first[1:] == [4, 0, 2]  # round((1 - p)(T - 1)) for p = 0.5, 1, 0.75
    assert enc.spike_times(x).flatten().tolist() == [9, 4, 0, 2]
    assert torch.equal(enc(x), enc(x))  # deterministic


def test_direct_encoder_and_readouts():
    x = torch.randn(2, 3)
    rep = spiking.DirectEncoder(4)(x)
    assert rep.shape == (8, 3) and all(torch.equal(rep[t * 2 : t * 2 + 2], x) for t in range(4))
    assert spiking.make_encoder("direct", 4)(x) is x  # the models' form: the neurons repeat it
    seq = torch.arange(24.0).view(8, 3)  # T=4, B=2
    assert torch.equal(spiking.SpikeCount(4)(seq), seq.view(4, 2, 3).sum(0))
    assert torch.equal(spiking.MeanOverTime(4)(seq), seq.view(4, 2, 3).mean(0))


# -- models ---------------------------------------------------------------------------------------


def test_models_are_registered_with_their_options():
    assert {"snn-mlp", "snn-cnn"} <= set(models.names())
    opts = models.options("snn-mlp")
    assert opts["T"] == 25 and opts["beta"] == 0.95 and opts["threshold"] == 1.0 and opts["widths"] == (1000,)
    assert opts["surrogate"] == "arctan" and opts["encoder"] == "direct" and opts["readout"] == "count"
    assert models.options("snn-cnn")["channels"] == (12, 64)


def test_snn_mlp_layers_match_the_tutorial():
    m = models.build("snn-mlp", (1, 28, 28), 10)
    assert [n for n, _ in m.named_children()] == ["encoder", "flatten", "fc1", "lif1", "out", "out_neurons", "readout"]
    assert (m.fc1.in_features, m.fc1.out_features, m.out.out_features) == (784, 1000, 10)
    assert isinstance(m.lif1, LIF) and isinstance(m.out_neurons, LIF) and m.lif1.constant_input
    assert (m.lif1.beta, m.lif1.threshold, m.lif1.time_steps) == (0.95, 1.0, 25)
    mem = models.build("snn-mlp", (1, 28, 28), 10, readout="membrane", encoder="rate", neuron="alif", widths=[32, 16])
    assert isinstance(mem.out_neurons, LeakyIntegrator) and isinstance(mem.readout, spiking.MeanOverTime)
    assert isinstance(mem.lif1, ALIF) and not mem.lif1.constant_input and isinstance(mem.lif2, ALIF)
    assert isinstance(mem.encoder, spiking.RateEncoder)


@pytest.mark.parametrize("readout", ["count", "membrane"])
def test_snn_mlp_without_hidden_layers_feeds_the_constant_current_to_its_output_neurons(readout):
    m = models.build("snn-mlp", (4,), 3, widths=[], T=3, readout=readout, beta=1, threshold=2, alpha=3)
    assert [n for n, _ in m.named_children()] == ["encoder", "flatten", "out", "out_neurons", "readout"]
    assert m.out_neurons.constant_input and m.out_neurons.beta == 1.0
    x = torch.randn(2, 4)
    current = m.out(x)
    want = current * torch.tensor([1.0, 2.0, 3.0]).mean() if readout == "membrane" else None
    if want is not None:  # β = 1: U_t = t·I, mean over 3 steps = 2·I
        torch.testing.assert_close(m(x), want)
    else:
        assert m(x).shape == (2, 3) and m.out_neurons.threshold == 2.0 and m.out_neurons.alpha == 3.0


def test_snn_cnn_geometry():
    m = models.build("snn-cnn", (1, 28, 28), 10)
    assert (m.conv1.out_channels, m.conv1.kernel_size, m.conv2.out_channels) == (12, (5, 5), 64)
    assert m.out.in_features == 64 * 4 * 4
    assert isinstance(m.pool1, nn.MaxPool2d) and isinstance(m.lif2, LIF)
    assert models.build("snn-cnn", (3, 16, 16), 10, channels=[4, 8]).out.in_features == 8


@pytest.mark.parametrize("name, shape", [("snn-mlp", (1, 8, 8)), ("snn-mlp", (40,)), ("snn-cnn", (1, 16, 16))])
@pytest.mark.parametrize("encoder", ["direct", "rate", "latency"])
@pytest.mark.parametrize("readout", ["count", "membrane"])
def test_shapes_and_gradients(name, shape, encoder, readout):
    torch.manual_seed(0)
    m = models.build(name, shape, 7, T=3, encoder=encoder, readout=readout)
    out = m(torch.randn(5, *shape))
    assert out.shape == (5, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    if readout == "count":
        assert ((out >= 0) & (out <= 3) & (out == out.round())).all()  # spike counts over 3 steps


def test_direct_encoding_runs_the_first_layer_once_with_the_same_values_and_gradients():
    """The models' constant-input shortcut equals repeating the image T times."""
    torch.manual_seed(0)
    fast = models.build("snn-mlp", (1, 8, 8), 10, T=5, widths=(16,))
    slow = models.build("snn-mlp", (1, 8, 8), 10, T=5, widths=(16,))
    slow.load_state_dict(fast.state_dict())
    slow.encoder = spiking.DirectEncoder(5, repeat=True)
    slow.lif1.constant_input = False
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    calls = []
    fast.fc1.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    out_fast, out_slow = fast(x), slow(x)
    assert calls == [6]
    torch.testing.assert_close(out_fast, out_slow)
    F.cross_entropy(out_fast, y).backward()
    F.cross_entropy(out_slow, y).backward()
    for (n, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_bptt_of_a_tiny_snn_equals_a_hand_unrolled_network():
    """snn-mlp (direct input, one hidden LIF layer, spike-count readout) against the same network
    written out step by step with explicit tensors; the spike's surrogate enters through
    ``H(x) + σ(x) − σ(x).detach()`` (σ the arctan primitive), independent of the library's Function."""
    torch.manual_seed(3)
    T, beta, theta = 4, 0.9, 1.0
    model = models.build("snn-mlp", (3,), 2, T=T, widths=(4,), beta=beta).double()
    x = torch.randn(5, 3, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 1, 0, 1])
    F.cross_entropy(model(x), y).backward()

    def spike(v):
        prim = sg.ArcTan.primitive(v, 2.0)
        return (v > 0).double() + prim - prim.detach()

    w1, b1 = model.fc1.weight.detach().clone().requires_grad_(True), model.fc1.bias.detach().clone().requires_grad_(True)
    w2, b2 = model.out.weight.detach().clone().requires_grad_(True), model.out.bias.detach().clone().requires_grad_(True)
    u1 = s1 = u2 = s2 = None
    count = 0
    for t in range(T):
        i1 = x @ w1.T + b1
        u1 = i1 if u1 is None else beta * u1 + i1 - theta * s1
        s1 = spike(u1 - theta)
        i2 = s1 @ w2.T + b2
        u2 = i2 if u2 is None else beta * u2 + i2 - theta * s2
        s2 = spike(u2 - theta)
        count = count + s2
    F.cross_entropy(count, y).backward()
    for got, want in [(model.fc1.weight, w1), (model.fc1.bias, b1), (model.out.weight, w2), (model.out.bias, b2)]:
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-12)
    assert model.fc1.weight.grad.abs().sum() > 0


def test_same_seed_same_model_and_same_rate_coded_outputs():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        m = models.build("snn-mlp", (1, 8, 8), 10, T=4, encoder="rate", widths=(32,))
        outs.append((m.state_dict(), m(torch.rand(3, 1, 8, 8))))
    (s1, o1), (s2, o2) = outs
    assert all(torch.equal(s1[k], s2[k]) for k in s1) and torch.equal(o1, o2)


@pytest.mark.parametrize(
    "name, opts, match",
    [
        ("snn-mlp", {"T": 0}, "T must be an integer >= 1"),
        ("snn-mlp", {"beta": 0.0}, "beta must be a number > 0 and <= 1"),
        ("snn-mlp", {"beta": 1.01}, "beta"),
        ("snn-mlp", {"threshold": 0.0}, "threshold"),
        ("snn-mlp", {"surrogate": "erf"}, "surrogate must be one of 'arctan'"),
        ("snn-mlp", {"encoder": "poisson"}, "encoder must be one of 'direct', 'rate', 'latency'"),
        ("snn-mlp", {"readout": "max"}, "readout must be one of 'count', 'membrane'"),
        ("snn-mlp", {"reset": "hard"}, "reset"),
        ("snn-mlp", {"neuron": "izhikevich"}, "neuron"),
        ("snn-mlp", {"alpha": -2.0}, "alpha"),
        ("snn-mlp", {"channels": [4, 8]}, "channels"),
        ("snn-cnn", {"channels": [4, 8, 16]}, "channels"),
        ("snn-cnn", {"widths": [10]}, "widths"),
    ],
)
def test_bad_model_options(name, opts, match):
    with pytest.raises(ConfigError, match=match):
        models.build(name, (1, 28, 28), 10, **opts)


@pytest.mark.parametrize("shape, match", [((1, 8, 8), "at least 16x16"), ((784,), "channels, height, width"), ((2, 40), "channels, height, width")])
def test_snn_cnn_refuses_data_of_the_wrong_shape(shape, match):
    with pytest.raises(ConfigError, match=match):
        models.build("snn-cnn", shape, 10)


# -- rules on spiking models ----------------------------------------------------------------------


def train_digits(learner, data, epochs, lr=3e-3, batch=64):
    x, y = data[0], data[1]
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            learner.step((x[idx], y[idx]), opt)
        learner.on_epoch_end(epoch)
    return float((learner.predict(data[2]).argmax(1) == data[3]).float().mean())


def digits_tuple(ds):
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


@pytest.mark.parametrize("name", FEEDBACK_PATH)
def test_feedback_path_rules_wrap_the_spiking_layers_and_learn(name, digits):
    torch.manual_seed(0)
    model = models.build("snn-mlp", (1, 8, 8), 10, T=4, widths=(64,))
    learner = bbp.rules.get(name).attach(model)
    if name != "backprop":
        assert set(learner.trained_layers()) == {"fc1", "out"}
    acc = train_digits(learner, digits_tuple(digits), epochs=3)
    assert acc >= 0.75, f"{name} on snn-mlp: {acc:.3f}"  # chance 0.10; 0.87 (fa) to 0.94 (backprop) measured


@pytest.mark.parametrize("name", ["backprop", "fa", "kp"])
def test_feedback_path_rules_learn_on_snn_cnn(name, digits16):
    torch.manual_seed(0)
    model = models.build("snn-cnn", (1, 16, 16), 10, T=4)
    learner = bbp.rules.get(name).attach(model)
    if name != "backprop":
        assert set(learner.trained_layers()) == {"conv1", "conv2", "out"}
    acc = train_digits(learner, digits16, epochs=4)
    assert acc >= 0.7, f"{name} on snn-cnn: {acc:.3f}"  # chance 0.10; 0.88 (fa) to 0.98 (backprop) measured


def test_fa_uses_its_feedback_matrix_through_time():
    """FA's input gradient at the output layer is B, not W, at every time step: the estimate for
    fc1 differs from backprop's, while out's own gradient is backprop's (same forward pass)."""
    torch.manual_seed(0)
    model = models.build("snn-mlp", (1, 8, 8), 10, T=4, widths=(32,))
    learner = bbp.rules.get("fa").attach(model)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    rule, bp = learner.estimate((x, y)), learner.backprop_gradients((x, y))
    torch.testing.assert_close(rule["out.weight"], bp["out.weight"])
    assert not torch.allclose(rule["fc1.weight"], bp["fc1.weight"])


@pytest.mark.parametrize("name", ["il", "softhebb"])
def test_local_rules_that_attach_to_snn_mlp_train_it(name, digits):
    """Inference learning and SoftHebb treat each Linear + neurons as a block and train it; recorded."""
    torch.manual_seed(0)
    model = models.build("snn-mlp", (1, 8, 8), 10, T=4, widths=(64,))
    learner = bbp.rules.get(name).attach(model)
    acc = train_digits(learner, digits_tuple(digits), epochs=4)
    assert acc >= 0.5, f"{name} on snn-mlp: {acc:.3f}"  # il 0.93, softhebb 0.76 measured


@pytest.mark.parametrize("name", ["drtp", "ff"])
@pytest.mark.parametrize("kind", ["snn-mlp", "snn-cnn"])
def test_rules_projecting_per_sample_signals_refuse_spiking_models(name, kind):
    model = models.build(kind, (1, 16, 16), 10, T=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModuleError) as info:
        bbp.rules.get(name).attach(model)
    message = str(info.value)
    assert f"rule '{name}'" in message and "module 'lif1' of type LIF" in message
    assert "time steps" in message and "backprop" in message
    assert not bbp.rules.rule_class(name).handles_time_steps
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    bbp.rules.get("fa").attach(model).detach()  # untouched: another rule attaches


# -- spike statistics -----------------------------------------------------------------------------


def test_spike_statistics_count_by_hand():
    model = nn.Sequential()
    model.add_module("enc", spiking.DirectEncoder(3))
    model.add_module("lif", LIF(3, beta=1.0, threshold=1.0))
    # per sample: neuron 0 gets 0.6/step (spikes at step 2 only), neuron 1 gets 2 (every step),
    # neuron 2 gets 0 (never)
    x = torch.tensor([[0.6, 2.0, 0.0], [0.6, 2.0, 0.0]])
    stats = spiking.spike_statistics(model, x)
    assert stats == {"lif": {"rate": pytest.approx((2 * 1 + 2 * 3) / (3 * 2 * 3)), "silent": pytest.approx(1 / 3)}}
    assert spiking.spike_statistics(models.build("mlp", (4,), 2), torch.zeros(2, 4)) == {}


def test_spike_statistics_leave_model_and_rng_untouched():
    torch.manual_seed(0)
    model = models.build("snn-mlp", (1, 8, 8), 10, T=4, widths=(16,), encoder="rate")
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    x = torch.rand(40, 1, 8, 8)
    rng = torch.random.get_rng_state()
    loader = [(x[i : i + 16], torch.zeros(16)) for i in range(0, 40, 16)]
    stats = spiking.spike_statistics(model, loader)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert set(stats) == {"lif1", "out_neurons"}
    assert all(0 <= s["rate"] <= 1 and 0 <= s["silent"] <= 1 for s in stats.values())
    torch.manual_seed(5)
    a = spiking.spike_statistics(model, x, batch_size=16)
    torch.manual_seed(5)
    assert spiking.spike_statistics(model, x, batch_size=16) == a  # reproducible under a seed


# -- the run loop and the CLI ---------------------------------------------------------------------


def test_a_run_reports_spike_rates_for_spiking_models_only(digits):
    from beyondbp.training import RunConfig, run

    config = dict(data="digits", epochs=1, batch_size=64, lr=3e-3, n_train=256, n_test=100)
    snn = run(RunConfig(rule="fa", model="snn-mlp", model_options={"T": 4, "widths": [32]}, **config))
    assert set(snn.spikes) == {"lif1", "out_neurons"}
    assert all(0 <= s["rate"] <= 1 and 0 <= s["silent"] <= 1 for s in snn.spikes.values())
    assert snn.to_dict()["spikes"] == snn.spikes
    ann = run(RunConfig(rule="fa", model="mlp", model_options={"widths": [32]}, **config))
    assert ann.spikes == {}


def test_cli_train_snn_mlp_prints_spike_rates(capsys):
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "snn-mlp", "--rule", "fa", "--data", "digits", "--model-opt", "T=4",
              "--model-opt", "widths=[32]", "--epochs", "1", "--n-train", "256", "--n-test", "100"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "fa · snn-mlp · digits" in out
    assert "spikes on the test set" in out and "lif1 rate" in out and "out_neurons rate" in out


def test_cli_compare_prints_spike_rates_per_rule(capsys, tmp_path):
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main(["compare", "--model", "snn-mlp", "--rules", "backprop,kp", "--data", "digits", "--model-opt", "T=3",
              "--model-opt", "widths=[16]", "--epochs", "1", "--n-train", "128", "--n-test", "64",
              "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "backprop: spikes on the test set" in out and "kp: spikes on the test set" in out
    table = (tmp_path / "cmp" / "table.md").read_text()
    for rule in ("backprop", "kp"):
        assert re.search(rf"^- {rule}: spikes on the test set .*lif1 rate [0-9.]+, silent [0-9.]+%", table, re.M), table


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "snn-mlp", "--model-opt", "T=0"], "T must be an integer >= 1"),
        (["--model", "snn-mlp", "--model-opt", "beta=1.5"], "beta"),
        (["--model", "snn-mlp", "--model-opt", "beta=0"], "beta must be a number > 0 and <= 1"),
        (["--model", "snn-mlp", "--model-opt", "surrogate=erf"], "surrogate"),
        (["--model", "snn-mlp", "--model-opt", "encoder=poisson"], "encoder must be one of 'direct', 'rate', 'latency'"),
        (["--model", "snn-mlp", "--model-opt", "alpha=0"], "alpha must be a number > 0 or null"),
        (["--model", "snn-cnn", "--data", "mnist1d"], r"image inputs of shape \(channels, height, width\)"),
        (["--model", "snn-cnn"], "at least 16x16"),
        (["--model", "snn-mlp", "--rule", "drtp"], "time steps"),
        (["--model", "mlp", "--rule", "ottt"], "spiking models"),
    ],
)
def test_cli_bad_spiking_settings_exit_2_with_one_line(capsys, args, match):
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "digits", "--epochs", "1", "--n-train", "64", "--n-test", "32", *args])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert re.search(match, err) and len(err.strip().splitlines()) == 1, err

