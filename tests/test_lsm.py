"""The liquid state machine (models/lsm.py), its plasticity rules (rules/nalsm.py) and its
measurements (analysis/criticality.py), on tiny networks."""

from __future__ import annotations

import math

import pytest
import torch

from beyondbp import models, rules
from beyondbp.analysis.criticality import branching_factor, liquid_measurements
from beyondbp.errors import ConfigError, UnsupportedModuleError
from beyondbp.models.lsm import EXC, INH, INP, LSM, SimState
from beyondbp.rules.nalsm import Plasticity, authors_trace_decay


def tiny(**kw):
    """1 input, 2 excitatory liquid neurons, every pair connected: in→0, in→1, 0→1, 1→0."""
    opts = dict(grid=[2, 1, 1], conn=[1.0, 1.0, 1.0, 1.0], lam=1e6, input_density=1.0, exc_fraction=1.0,
                w_init=1.0, duration=10)
    opts.update(kw)
    return LSM((1,), 2, **opts)


def syn(liq, pre, post):
    """Index of the synapse pre → post (pre: 'in' or liquid index)."""
    p = 0 if pre == "in" else liq.n_in + pre
    return int(((liq.pre == p) & (liq.post == post)).nonzero())


def w0(liq, pre, post):
    return liq.weight[syn(liq, pre, post)].item()


def run_plasticity(rule, model, spikes):
    liq = model.liquid
    plast = Plasticity(rule, liq)
    w = liq.weight.detach().unsqueeze(0).clone()
    k = torch.zeros(1, liq.n_in + liq.n)
    state = SimState(liq, w, k, torch.zeros(1, liq.n))
    plast.begin(state)
    for s in spikes:
        plast.update(state, torch.tensor([s], dtype=torch.bool))
    return w[0], plast


def test_stdp_matches_hand_computed_traces():
    model = tiny()
    liq = model.liquid
    # neurons: [input, liquid 0, liquid 1]; input spikes at t0, neuron 0 at t1, neuron 1 at t2
    w, _ = run_plasticity(rules.get("stdp"), model, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    m, a = authors_trace_decay(10), 0.1
    eta1, eta2 = 0.15 * 0.99, 0.15 * 0.99**2
    assert abs(m - 0.9048) < 1e-3
    expected = {
        ("in", 0): w0(liq, "in", 0) + eta1 * a * m,      # post 0 after pre input (x_in = a·m)
        ("in", 1): w0(liq, "in", 1) + eta2 * a * m * m,  # post 1 two steps after the input (sign ±)
        (0, 1): 1 + eta2 * a * m,             # post 1 after pre 0
        (1, 0): 1 - eta2 * a * m,             # pre 1 after post 0: depression A = η for stdp
    }
    for (pre, post), value in expected.items():
        assert w[syn(liq, pre, post)].item() == pytest.approx(value, abs=1e-6), (pre, post)


def test_astrocyte_state_and_depression_match_hand_computation():
    model = tiny()
    liq = model.liquid
    rule = rules.get("nalsm")
    spikes = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    w, plast = run_plasticity(rule, model, spikes)
    m, a, d = authors_trace_decay(10), 0.1, 0.99
    A, wa, ba = 0.15, 0.015, 0.15
    As = []
    for s in spikes:  # A ← A + (w_A·(Σ liquid − Σ input) + b_A − A)/τ_A, then everything × 0.99
        As.append(A)
        A = A + (wa * (s[1] + s[2] - s[0]) + ba - A) / 100.0
        A, wa, ba = A * d, wa * d, ba * d
    assert plast.A.item() == pytest.approx(A, rel=1e-6)
    eta2 = 0.15 * d**2
    assert w[syn(liq, 1, 0)].item() == pytest.approx(1 - As[2] * a * m, abs=1e-6)  # LTD scaled by A(t2)
    assert w[syn(liq, 0, 1)].item() == pytest.approx(1 + eta2 * a * m, abs=1e-6)


def test_inhibitory_synapses_swap_the_signs_and_clip():
    model = tiny(exc_fraction=0.0, w_init=0.0)  # both liquid neurons inhibitory, weights at 0
    liq = model.liquid
    w, _ = run_plasticity(rules.get("stdp", decay=1.0), model, [[0, 1, 0], [0, 0, 1], [0, 1, 0]])
    m, a, eta = authors_trace_decay(10), 0.1, 0.15
    # 0→1 (inhibitory pre): t1 post 1 after pre 0 gives λ⁺·x_0 = −η·a·m, then t2 pre 0 after
    # post 1 gives λ⁻·x_1 = +η·a·m: back to 0
    assert w[syn(liq, 0, 1)].item() == pytest.approx(0.0, abs=1e-7)
    # 1→0: pre 1 after post 0 gives λ⁻ = +η → clipped at 0; then post 0 after pre 1 gives −η·x_1
    assert w[syn(liq, 1, 0)].item() == pytest.approx(-eta * a * m, abs=1e-6)
    assert liq.kind[syn(liq, 0, 1)].item() == INH and liq.kind[syn(liq, "in", 0)].item() == INP


def test_connectivity_counts_match_the_expected_numbers():
    model = LSM((10,), 2, grid=[6, 6, 6], seed=3)
    liq = model.liquid
    counts = liq.counts_by_kind()
    assert counts["input"] == round(0.15 * 10 * 216)  # exactly 15 % of the input pairs
    pos, exc = liq.positions, liq.is_exc
    assert int(exc.sum()) == round(0.8 * 216)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    prob = torch.exp(-d2 / 9.0)
    prob.fill_diagonal_(0)
    c = {"EE": 0.2, "EI": 0.1, "IE": 0.3, "II": 0.05}
    for name, cval in c.items():
        pre_mask = exc if name[0] == "E" else ~exc
        post_mask = exc if name[1] == "E" else ~exc
        p = cval * prob[post_mask][:, pre_mask]
        mean, sd = float(p.sum()), math.sqrt(float((p * (1 - p)).sum()))
        assert abs(counts[name] - mean) < 5 * sd + 1, (name, counts[name], mean, sd)
    # signs: E positive, I negative, input ±, all at magnitude 3
    w, kind = liq.weight, liq.kind
    assert (w[kind == EXC] == 3).all() and (w[kind == INH] == -3).all() and (w[kind == INP].abs() == 3).all()
    assert 0.3 < float((w[kind == INP] > 0).float().mean()) < 0.7


def test_branching_factor_on_known_networks():
    # chain 0 → 1: 0 fires at 30, 1 at 32 → ratios 1 (neuron 0) and 0/1 (neuron 1): 0.5
    r = torch.zeros(100, 3, dtype=torch.bool)
    r[30, 0] = r[32, 1] = True
    assert branching_factor(r, torch.tensor([0]), torch.tensor([1])) == pytest.approx(0.5)
    # fan-out 0 → {1, 2}, both fire 2 ms later: neuron 0 branches to 2, the targets to 0
    r = torch.zeros(100, 3, dtype=torch.bool)
    r[40, 0] = r[42, 1] = r[42, 2] = True
    assert branching_factor(r, torch.tensor([0, 0]), torch.tensor([1, 2])) == pytest.approx(2 / 3)
    # spikes within the 25 ms edges are not counted; a spike 5 ms later is outside the window
    r = torch.zeros(100, 3, dtype=torch.bool)
    r[10, 0] = r[12, 1] = True
    r[50, 0] = r[55, 1] = True
    assert branching_factor(r, torch.tensor([0]), torch.tensor([1])) == pytest.approx(0.0)
    # two presynaptic spikes in the window divide
    r = torch.zeros(100, 3, dtype=torch.bool)
    r[60, 0] = r[61, 1] = r[62, 2] = r[63, 0] = True  # 0,1 → 2 and 2 → 0
    pre, post = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    # spike 0@60: post 2 in [61,65) → 1, pre (2) in [56,60) → 0 → 1; 0@63: post none → 0, pre 2@62 → 0/1
    # 1@61: 2@62 → 1; 2@62: post 0@63 → 1 / pre 0@60,1@61 → 2 → 0.5; per neuron 0.5, 1, 0.5
    assert branching_factor(r, pre, post) == pytest.approx((0.5 + 1 + 0.5) / 3)


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * (torch.rand(n, 1, 8, 8, generator=g) > 0.5)


def small(**kw):
    opts = dict(grid=[4, 4, 3], duration=40, w_init=1.5)
    opts.update(kw)
    return models.build("lsm", (1, 8, 8), 3, **opts)


def test_same_seeds_same_liquid_and_spikes_other_seed_other_liquid():
    a, b, c = small(seed=1), small(seed=1), small(seed=2)
    assert torch.equal(a.liquid.pre, b.liquid.pre) and torch.equal(a.liquid.weight, b.liquid.weight)
    assert not (a.liquid.pre.shape == c.liquid.pre.shape and torch.equal(a.liquid.pre, c.liquid.pre))
    x = images()
    for rule in (None, "stdp", "nalsm"):
        outs = []
        for _ in range(2):
            m = small(seed=1)
            if rule:
                rules.get(rule).attach(m)
            torch.manual_seed(5)
            outs.append(m.liquid.simulate(m.encode(x))["counts"])
        assert torch.equal(outs[0], outs[1]) and outs[0].sum() > 0, rule


def test_plastic_drive_stays_consistent_with_the_weights():
    m = small()
    rules.get("nalsm").attach(m)
    liq = m.liquid
    seen = {}

    class Spy(Plasticity):
        def end(self, state):
            seen["drive"], seen["full"] = state.drive.clone(), liq._full_drive(state.w, state.k)

    liq.plasticity = Spy(rules.get("nalsm"), liq)
    torch.manual_seed(0)
    liq.simulate(m.encode(images()))
    assert torch.allclose(seen["drive"], seen["full"], atol=1e-4)


def test_persistent_mode_keeps_changes_only_in_training():
    m = small()
    learner = rules.get("nalsm", mode="persistent").attach(m)
    w0 = m.liquid.weight.clone()
    learner.predict(images())
    assert torch.equal(m.liquid.weight, w0)
    m.train()
    m(images())
    assert not torch.equal(m.liquid.weight, w0)


def test_transient_mode_never_changes_the_stored_weights_and_readout_learns():
    m = small()
    learner = rules.get("nalsm").attach(m)
    w0 = m.liquid.weight.clone()
    opt = torch.optim.Adam(learner.optimizer_parameters(), lr=0.05)
    x, y = images(8), torch.arange(8) % 3
    losses = [learner.step((x, y), opt)["loss"] for _ in range(5)]
    assert torch.equal(m.liquid.weight, w0) and losses[-1] < losses[0]


def test_measurements_are_pure():
    m = small(duration=100)
    rules.get("nalsm").attach(m)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.random.get_rng_state()
    out = liquid_measurements(m, images())
    assert torch.equal(torch.random.get_rng_state(), rng)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(out) == {"branching_factor", "rate_exc_hz", "rate_inh_hz", "rate_input_hz", "silent_fraction"}
    assert 0 <= out["silent_fraction"] <= 1 and out["rate_input_hz"] > 0
    assert math.isfinite(out["branching_factor"]) and out == liquid_measurements(m, images())


@pytest.mark.parametrize("opts", [dict(tau_v=0.0), dict(tau_v=-64.0), dict(tau_u=0.0), dict(threshold=-1.0)])
def test_bad_time_constants_are_refused(opts):
    with pytest.raises(ConfigError) as exc:
        small(**opts)
    assert str(exc.value).count(".") <= 3 and "\n" not in str(exc.value)


def test_wrong_data_shape_and_too_big_liquid_are_refused():
    m = small()
    with pytest.raises(ConfigError, match="built for samples of shape"):
        m(torch.rand(2, 1, 28, 28))
    with pytest.raises(ConfigError, match="memory"):
        models.build("lsm", (1, 28, 28), 10, grid=[2000, 2000, 2000])


def test_plasticity_rules_refuse_other_models_in_one_sentence():
    mlp = models.build("mlp", (1, 8, 8), 3, widths=(8,))
    for name in ("stdp", "nalsm"):
        with pytest.raises(UnsupportedModuleError) as exc:
            rules.get(name).attach(mlp)
        assert "liquid" in str(exc.value) and "\n" not in str(exc.value)


def test_the_rule_contract_where_it_applies():
    from beyondbp.testing import check_rule

    only = [
        "attaches[mlp]", "attach_keeps_the_global_rng", "attaching_twice_is_refused_until_detached",
        "refuses_an_unsupported_layer", "estimate_changes_nothing[mlp]", "estimate_is_not_backprop",
        "predict_keeps_the_training_mode", "detach_restores_the_model[mlp]", "deep_copy_is_refused_or_independent",
    ]
    results = check_rule(rules.rule_class("nalsm"), only=only)
    assert all(v == "passed" for v in results.values()), results
