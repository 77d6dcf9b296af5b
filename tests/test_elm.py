"""The ELM neuron (``elm``, ``branch-elm``) and its online rule ``elm-online``: the equations by hand,
the time constants, the fused recurrence against the per-module loop, determinism, learning by
BPTT and by the feedback-path rules, the refusals, the online rule's formula, its cosine to BPTT
and its memory against T, and the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from beyondbp import models, rules
from beyondbp.cli import main
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.models.elm import leaky_scan, memory_scan
from beyondbp.rules.elm_online import gradient_cosines, saved_bytes

SC, SL = 1.7159, 2.0 / 3.0


def _f(a):
    return SC * torch.tanh(SL * a)


def test_elm_two_steps_by_hand():
    torch.manual_seed(0)
    model = models.build("elm", (2, 2), 3, memory=2, hidden=3, tau_m_min=2.0, tau_m_max=8.0, lam=5.0)
    x = torch.tensor([[[1.0, -0.5], [0.25, 2.0]]])
    ks, km = math.exp(-1 / 5), torch.tensor([math.exp(-1 / 2), math.exp(-1 / 8)])
    w1 = torch.cat([model.w_in.weight, model.w_mem.weight], 1)  # the authors' single first layer
    s, m, ms = torch.zeros(2), torch.zeros(2), []
    for t in range(2):
        s = ks * s + 0.5 * x[0, t]
        dm = _f(model.w_out(torch.relu(w1 @ torch.cat([s, km * m]) + model.w_in.bias)))
        m = km * m + 5.0 * (1 - km) * dm
        ms.append(m)
    with torch.no_grad():
        got = model.memory(x)[:, 0]
        torch.testing.assert_close(got, torch.stack(ms), rtol=0, atol=1e-6)
        torch.testing.assert_close(model(x)[0], model.readout(ms[-1]), rtol=0, atol=1e-6)
        model.outputs = "all"
        assert model(x).shape == (1, 2, 3)


def test_branch_elm_two_steps_by_hand():
    torch.manual_seed(1)
    model = models.build("branch-elm", (2, 4), 2, memory=2, hidden=3, branches=2, tau_m_min=2.0, tau_m_max=8.0)
    with torch.no_grad():
        model.synapses.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]))  # ReLU: the second synapse is silent
    x = torch.tensor([[[1.0, 3.0, -0.5, 2.0], [0.5, 1.0, 1.0, -1.0]]])
    kb, km = math.exp(-1 / 5), torch.tensor([math.exp(-1 / 2), math.exp(-1 / 8)])
    kl = torch.exp(-5.0 / torch.tensor([2.0, 8.0]))
    b, m = torch.zeros(2), torch.zeros(2)
    for t in range(2):
        xt = x[0, t]
        b = kb * b + torch.stack([0.5 * xt[0] + 0 * xt[1], 2.0 * xt[2] + 0.25 * xt[3]])
        z = model.w_in.weight @ b + model.w_mem.weight @ (km * m) + model.w_in.bias
        m = km * m + (1 - kl) * _f(model.w_out(torch.relu(z)))
    with torch.no_grad():
        torch.testing.assert_close(model.memory(x)[-1, 0], m, rtol=0, atol=1e-6)


def test_time_constants_and_defaults_are_the_authors():
    model = models.build("elm", (10, 7), 3)
    tau = model.tau_m
    assert tau.shape == (100,) and float(tau[0]) == pytest.approx(1.0) and float(tau[-1]) == pytest.approx(1000.0)
    ratios = tau[1:] / tau[:-1]  # log-spaced: one ratio, 1000^(1/99)
    torch.testing.assert_close(ratios, torch.full((99,), 1000 ** (1 / 99)), rtol=1e-5, atol=0)
    assert torch.equal(model.synapses.tau, torch.full((7,), 5.0))
    assert torch.equal(model.synapses.w_s(), torch.full((7,), 0.5))
    assert model.hidden_units == 200 and model.lam == 5.0
    assert not any(n.startswith("tau") for n, _ in model.named_parameters())  # fixed, as the authors' defaults
    branch = models.build("branch-elm", (10, 7), 3, branches=3)
    assert branch.synapses.per_branch == 3 and branch.synapses.tau.shape == (3,)
    assert float(branch.synapses.valid.sum()) == 7  # every input on exactly one synapse


def test_fused_recurrence_equals_the_module_loop_and_gradchecks():
    torch.manual_seed(0)
    T, B, d, H = 4, 2, 3, 5
    args = [torch.randn(T, B, H, dtype=torch.double, requires_grad=True), torch.randn(H, d, dtype=torch.double, requires_grad=True),
            torch.randn(d, H, dtype=torch.double, requires_grad=True), torch.randn(d, dtype=torch.double, requires_grad=True),
            torch.rand(d, dtype=torch.double), torch.rand(d, dtype=torch.double)]
    assert torch.autograd.gradcheck(memory_scan, args)
    assert torch.autograd.gradcheck(leaky_scan, [torch.randn(5, 2, 3, dtype=torch.double, requires_grad=True),
                                                 torch.rand(3, dtype=torch.double)])
    for name in ("elm", "branch-elm"):
        model = models.build(name, (12, 6), 3, memory=5, **({"branches": 3} if name == "branch-elm" else {}))
        x, y = torch.randn(4, 12, 6), torch.randint(0, 3, (4,))
        grads = []
        for hooked in (False, True):
            handle = model.w_mem.register_forward_hook(lambda *a: None) if hooked else None  # forces the module loop
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            if handle:
                handle.remove()
        for n in grads[0]:
            torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


def _recall_batch(gen: torch.Generator, n: int = 64, T: int = 20, classes: int = 4):
    """Delayed recall: a one-hot symbol at step 0, noise afterwards; the label is the symbol."""
    y = torch.randint(0, classes, (n,), generator=gen)
    x = 0.1 * torch.randn(n, T, classes, generator=gen)
    x[:, 0] += F.one_hot(y, classes).float()
    return x, y


def _train(rule: str, steps: int = 60, seed: int = 0, **opts) -> float:
    torch.manual_seed(seed)
    model = models.build("elm", (20, 4), 4, memory=16, tau_m_max=100.0)
    learner = rules.get(rule, **opts).attach(model)
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        learner.step(_recall_batch(gen), opt)
    x, y = _recall_batch(torch.Generator().manual_seed(99), n=512)
    return float((learner.predict(x).argmax(1) == y).float().mean())


def test_bptt_learns_delayed_recall():
    assert _train("backprop") >= 0.9  # chance 0.25


@pytest.mark.parametrize(("rule", "steps", "least"), [("elm-online", 60, 0.9), ("usf", 60, 0.45), ("kp", 150, 0.4)])
def test_other_rules_learn_delayed_recall(rule, steps, least):
    # measured: elm-online 0.95 / usf 0.74 after 60 steps, kp 0.48 after 150 (fa stays at chance, 0.23);
    # kp over seeds 0-4: 0.48, 0.71, 0.48, 0.75, 1.00 (a rounding-level change of the forward moves
    # one seed between ~0.5 and ~0.7, so its bound is set below the seeds' spread, above chance)
    assert _train(rule, steps=steps) >= least  # chance 0.25


def test_same_seed_same_numbers():
    a, b = _train("backprop", steps=5, seed=3), _train("backprop", steps=5, seed=3)
    assert a == b
    torch.manual_seed(7)
    m1 = models.build("branch-elm", (5, 8), 2, branches=4)
    torch.manual_seed(7)
    m2 = models.build("branch-elm", (5, 8), 2, branches=4)
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


@pytest.mark.parametrize("rule", ["fa", "usf", "brsf", "frsf", "kp", "pfa"])
def test_feedback_rules_attach_and_send_the_error_through_time(rule):
    torch.manual_seed(0)
    model = models.build("elm", (6, 3), 2, memory=4)
    learner = rules.get(rule).attach(model)
    assert set(learner.trained_layers()) == {"w_in", "w_mem", "w_out", "readout"}
    x, y = torch.randn(8, 6, 3), torch.randint(0, 2, (8,))
    est, bp = learner.estimate((x, y)), learner.backprop_gradients((x, y))
    assert est["readout.weight"].equal(bp["readout.weight"])  # nothing above the readout
    assert not torch.allclose(est["w_mem.weight"], bp["w_mem.weight"])  # B_mem carries the error back in time
    assert est["synapses.weight"].abs().sum() > 0  # the synapses learn from the delivered error
    learner.detach()


@pytest.mark.parametrize("rule", ["dfa", "drtp", "ff", "il", "ottt", "softhebb"])
def test_rules_without_a_path_through_time_refuse_in_one_sentence(rule):
    model = models.build("elm", (6, 3), 2, memory=4)
    with pytest.raises(UnsupportedModuleError) as info:
        rules.get(rule).attach(model)
    message = str(info.value)
    assert rule in message and "\n" not in message and ("ELM" in message or "Synapses" in message)


def test_the_refusal_names_every_feedback_path_rule_that_trains_the_elm():
    # it named fa, usf, brsf, frsf, kp but not pfa, which attaches too
    model = models.build("elm", (6, 3), 2, memory=4)
    with pytest.raises(UnsupportedModuleError) as info:
        rules.get("dfa").attach(model)
    suggested = str(info.value).split("feedback-path rule (")[1].split(")")[0].split(", ")
    attaching = [r["name"] for r in rules.describe() if r["family"] == "feedback"]
    assert sorted(suggested) == sorted(attaching)
    for name in attaching:
        rules.get(name).attach(model).detach()


def test_elm_online_refuses_other_models():
    with pytest.raises(UnsupportedModuleError, match="trains only the ELM models"):
        rules.get("elm-online").attach(models.build("mlp", (4,), 2))


def test_bad_options_one_sentence():
    with pytest.raises(ConfigError, match="branches"):
        models.build("branch-elm", (5, 3), 2, branches=4)
    with pytest.raises(ConfigError, match="tau_m_max"):
        models.build("elm", (5, 3), 2, tau_m_min=10.0, tau_m_max=2.0)
    with pytest.raises(ConfigError, match="one-channel images"):
        models.build("elm", (3, 8, 8), 2)


def _one_unit():
    model = models.build("elm", (2, 1), 1, memory=1, hidden=1, tau_m_min=3.0, tau_m_max=3.0)
    with torch.no_grad():
        for p, v in [(model.synapses.weight, 0.8), (model.w_in.weight, 0.7), (model.w_in.bias, 0.1),
                     (model.w_mem.weight, 0.4), (model.w_out.weight, 0.9), (model.w_out.bias, -0.2),
                     (model.readout.weight, 1.3), (model.readout.bias, 0.05)]:
            p.fill_(v)
    return model


def test_online_update_is_the_hand_derived_eligibility_formula():
    model = _one_unit()
    x, target = torch.tensor([[[1.0], [0.5]]]), torch.tensor([0.3])
    est = rules.get("elm-online").attach(model).estimate((x, target))
    ks, k = math.exp(-1 / 5), math.exp(-1 / 3)
    c = 5 * (1 - k)
    w, wi, bi, wm, wo, bo, wy, by = 0.8, 0.7, 0.1, 0.4, 0.9, -0.2, 1.3, 0.05
    s1 = 1.0
    z1 = wi * w * s1 + bi
    h1 = max(z1, 0.0)
    tn1 = math.tanh(SL * (wo * h1 + bo))
    fp1 = SC * SL * (1 - tn1**2)
    m1 = c * SC * tn1
    s2 = ks * s1 + 0.5
    u2 = k * m1
    z2 = wi * w * s2 + wm * u2 + bi
    h2 = max(z2, 0.0)
    tn2 = math.tanh(SL * (wo * h2 + bo))
    fp2 = SC * SL * (1 - tn2**2)
    m2 = u2 + c * SC * tn2
    E2 = k * c * fp1 * h1 + c * fp2 * h2  # eligibility of w_out through κ_m
    e2 = k * c * fp1 + c * fp2
    S2 = k * s1 + s2  # input trace with the memory's decay
    U2 = k * 0.0 + u2
    C2 = k + 1.0
    o = wy * m2 + by
    dl = 2 * (o - 0.3)  # MSE
    g = dl * wy
    r = g * c * fp2 * wo * (1.0 if z2 > 0 else 0.0)
    expect = {
        "readout.weight": dl * m2, "readout.bias": dl, "w_out.weight": g * E2, "w_out.bias": g * e2,
        "w_in.weight": r * w * S2, "w_mem.weight": r * U2, "w_in.bias": r * C2, "synapses.weight": r * wi * S2,
    }
    for name, value in expect.items():
        assert float(est[name].sum()) == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_online_cosine_to_bptt_high_for_short_horizons():
    torch.manual_seed(0)
    cos = {}
    for T in (1, 2, 4):
        model = models.build("elm", (T, 5), 3, memory=8, tau_m_max=100.0)
        x, y = torch.randn(16, T, 5), torch.randint(0, 3, (16,))
        cos[T] = gradient_cosines(model, (x, y))["cos/all"]
    assert cos[1] == pytest.approx(1.0, abs=1e-5)  # one step: nothing dropped
    assert cos[2] > 0.95 and cos[4] > 0.9


def test_online_memory_does_not_grow_with_T_but_bptt_does():
    sizes = {}
    for T in (8, 32):
        torch.manual_seed(0)
        model = models.build("elm", (T, 5), 3, memory=8)
        learner = rules.get("elm-online").attach(model)
        x, y = torch.randn(4, T, 5), torch.randint(0, 3, (4,))
        sizes[T] = (saved_bytes(lambda: learner.estimate((x, y))), saved_bytes(lambda: learner.backprop_gradients((x, y))))
    assert sizes[8][0] == sizes[32][0] > 0
    assert sizes[32][1] >= 3 * sizes[8][1]  # BPTT keeps every step (7,160 -> 23,288 bytes here)


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def test_cli_trains_elm(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "elm", "--data", "adding", "--data-opt", "T=10", "--data-opt", "n_train=32",
            "--data-opt", "n_test=16", "--model-opt", "memory=4", "--rule", "elm-online", "--steps", "2",
            "--batch-size", "16"]
    code, err = _cli(capsys, *args, "--out", out)
    assert code == 0, err
    assert (out / "results.json").exists()
    code, err = _cli(capsys, *args, "--out", tmp_path / "bad", "--model-opt", "lam=-1")
    assert code == 2 and "lam" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
