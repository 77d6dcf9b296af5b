"""The event-driven plastic simulation of the liquid (models/lsm.py ``Liquid.kernel = "event"``,
rules/nalsm.py ``Plasticity._events``) against the dense reference that updates every synapse
every step: the same spikes, traces and weights, bit for bit; the drive within float rounding."""

from __future__ import annotations

import pytest
import torch

from beyondbp import models, rules
from beyondbp.errors import ConfigError


def small(**kw):
    opts = dict(grid=[4, 4, 3], duration=30, w_init=1.5)
    opts.update(kw)
    return models.build("lsm", (1, 8, 8), 3, **opts)


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * (torch.rand(n, 1, 8, 8, generator=g) > 0.5)


def run(kernel, rule, opts=None, model_opts=None, x=None):
    m = small(**(model_opts or {}))
    rules.get(rule, **(opts or {})).attach(m)
    liq = m.liquid
    liq.kernel = kernel
    seen = {}
    plast = liq.plasticity

    def end(state):
        seen.update(w=state.w.clone(), x=plast.x.clone(), drive=state.drive.clone(),
                    A=(plast.A if plast.astro else plast.eta).clone())

    plast.end = end
    torch.manual_seed(3)
    out = liq.simulate(m.encode(images() if x is None else x), record=True)
    return out, seen, liq


@pytest.mark.parametrize("rule,opts,model_opts", [
    ("stdp", {}, {}),
    ("nalsm", {}, {}),
    ("nalsm", {"decay": 1.0}, {"exc_fraction": 0.5}),  # many inhibitory synapses, no rate decay
    ("stdp", {}, {"w_init": 5.0}),  # initial weights outside the clip bounds: the first step clips all
])
def test_event_driven_plasticity_equals_the_dense_reference(rule, opts, model_opts):
    dense, d, liq = run("dense", rule, opts, model_opts)
    event, e, _ = run("event", rule, opts, model_opts)
    assert torch.equal(dense["raster"], event["raster"]) and dense["counts"].sum() > 20
    assert torch.equal(dense["input_counts"], event["input_counts"])
    assert torch.equal(d["x"], e["x"]) and torch.equal(d["A"], e["A"])
    assert torch.equal(d["w"], e["w"])
    changed = (d["w"] != liq.weight).any(0)
    assert int(changed.sum()) > 50  # the comparison covers many plastic synapses
    assert torch.allclose(d["drive"], e["drive"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["stdp", "nalsm"])
def test_event_driven_plasticity_of_one_sample_equals_the_dense_reference(rule):
    """One sample at a time (phase 1 of a run) takes the kernels' path without row offsets."""
    dense, d, liq = run("dense", rule, x=images(1, seed=5))
    event, e, _ = run("event", rule, x=images(1, seed=5))
    assert torch.equal(dense["raster"], event["raster"]) and dense["counts"].sum() > 20
    assert torch.equal(d["x"], e["x"]) and torch.equal(d["A"], e["A"]) and torch.equal(d["w"], e["w"])
    assert int((d["w"] != liq.weight).any(0).sum()) > 50
    assert torch.allclose(d["drive"], e["drive"], rtol=1e-5, atol=1e-5)


def test_event_driven_persistent_mode_writes_back_the_same_weights():
    stored = []
    for kernel in ("dense", "event"):
        m = small(duration=15)
        rules.get("nalsm", mode="persistent").attach(m)
        m.liquid.kernel = kernel
        m.train()
        torch.manual_seed(1)
        m(images(3))
        stored.append(m.liquid.weight.clone())
    assert torch.equal(stored[0], stored[1]) and not torch.equal(stored[0], small().liquid.weight)


def test_plastic_batch_too_large_is_refused_before_allocating(monkeypatch):
    import beyondbp.models.lsm as lsm
    import beyondbp.resources as resources

    m = small()
    rules.get("nalsm").attach(m)
    need = m.liquid.plastic_bytes(4)
    assert need > 4 * m.liquid.nnz * 12
    monkeypatch.setattr(resources, "physical_memory", lambda: need - 1)
    allocated = []
    real_zeros = torch.zeros
    monkeypatch.setattr(lsm.torch, "zeros", lambda *a, **k: allocated.append(a) or real_zeros(*a, **k))
    with pytest.raises(ConfigError, match="batch of 4"):
        m.liquid.simulate(m.encode(images()))
    assert allocated == []


def test_event_rows_hold_exactly_each_steps_spikes():
    """A plasticity that takes events gets, in every step with spikes, the outgoing rows of every
    spiking (sample, neuron) pair and the incoming rows of every spiking liquid neuron, once each."""
    m = small(duration=12)
    liq = m.liquid
    n_in = liq.n_in
    seen = {}

    class Recorder:
        persistent = False

        def begin(self, state):
            pass

        def wants_events(self, state):
            return True

        def events(self, state, rows):
            out = sorted((int(b), int(j)) for b_, j_, *_ in rows.out for b, j in zip(b_, j_))
            assert len(rows.inc) <= 1  # one row per spiking liquid neuron: its synapses from inputs, then liquid
            inc = sorted((int(b), int(i)) for b_, i_, *_ in rows.inc for b, i in zip(b_, i_))
            assert state.step not in seen
            seen[state.step] = (out, inc)

        def update(self, state, s):
            pass

        def end(self, state):
            pass

    torch.manual_seed(2)
    out = liq.simulate(m.encode(images(3)), record=True, plasticity=Recorder())
    raster = out["raster"]
    assert len(seen) >= 5
    for t, (rows_out, inc) in seen.items():
        liquid_spikes = sorted((int(b), int(i)) for b, i in raster[:, t].nonzero())
        assert [(b, j - n_in) for b, j in rows_out if j >= n_in] == liquid_spikes
        assert inc == liquid_spikes
    assert sum(len(inc) for _, inc in seen.values()) > 10  # liquid spikes were covered
    assert any(j < n_in for rows_out, _ in seen.values() for _, j in rows_out)  # and input spikes


@pytest.mark.parametrize("batch,input_seed,chunk,rows", [
    (1, 4, None, True), (1, 4, 1000, True), (3, None, None, False), (1, 4, None, False), (2, 4, 100, False), (1, None, 100, True),
])
def test_fixed_event_kernel_equals_the_csr_reference(monkeypatch, batch, input_seed, chunk, rows):
    """The fixed liquid's event-driven step (models/lsm_fixed.py) against the CSR product of every
    synapse (``kernel="dense"``): the same spikes of every neuron at every step, the same input
    draws (the random stream left in the same state), also when the draws come in chunks."""
    import beyondbp.models.lsm_fixed as lsm_fixed

    if chunk is not None:
        monkeypatch.setattr(lsm_fixed, "CHUNK_ELEMENTS", chunk)  # a few steps per draw
    monkeypatch.setattr(lsm_fixed, "CSR_BATCH", batch + 1 if rows else 1)  # spike rows or the CSR product
    m = small(input_seed=input_seed, duration=40, w_init=4.0)
    liq, p = m.liquid, m.encode(images(batch, seed=9))
    outs = {}
    for kernel in ("dense", "event"):
        liq.kernel = kernel
        torch.manual_seed(11)
        outs[kernel] = (liq.simulate(p, record=True), torch.rand(3))
    (d, d_next), (e, e_next) = outs["dense"], outs["event"]
    assert torch.equal(d["raster"], e["raster"]) and torch.equal(d["counts"], e["counts"])
    assert torch.equal(d["input_counts"], e["input_counts"]) and torch.equal(d_next, e_next)
    assert d["counts"].sum() > 30 * batch and (d["raster"].sum((0, 2)) > 0).sum() > 15  # active at many steps


def dense_and_event_agree(liq, p):
    """Simulate ``p`` with the dense reference and the event kernel; assert the same spikes and
    input draws; return the reference's outputs."""
    outs = {}
    for kernel in ("dense", "event"):
        liq.kernel = kernel
        outs[kernel] = liq.simulate(p, record=True)
    assert torch.equal(outs["dense"]["raster"], outs["event"]["raster"])
    assert torch.equal(outs["dense"]["input_counts"], outs["event"]["input_counts"])
    return outs["dense"]


def test_fixed_event_kernel_equals_the_csr_reference_at_nalsm1000_size():
    m = models.build("lsm", (1, 28, 28), 10, duration=120, input_seed=3)
    dense = dense_and_event_agree(m.liquid, m.encode(images(2, seed=4).repeat(1, 1, 4, 4)[:, :, :28, :28]))
    assert dense["counts"].sum() > 5000


@pytest.mark.parametrize("tau_u,k_init", [(1.0, 2.06e-9), (2.5, 1e-3)])
def test_kernel_table_holds_the_reference_kernels_bit_for_bit(tau_u, k_init):
    """The fixed kernel reads ``k0 − k`` from a table over the steps since the last spike: each entry
    equals what the reference's in-place updates (``k ← k0`` at a spike, ``k ← k · decay`` a step,
    float32, down to subnormals and 0) give, so the drive changes are the same numbers."""
    import math

    from beyondbp.models.lsm_fixed import kernel_table

    T, refr = 130, 2
    k0, decay = 1.0 / tau_u, math.exp(-1.0 / tau_u)
    table = kernel_table(k0, k_init, decay, T, T + refr)
    k = torch.full((T + 1,), k_init)  # column a ≥ 1 spikes at step a − 1; column 0 never
    for t in range(T):
        want = torch.sub(k0, k[:t + 1])  # the reference's k0 − k at step t, before this step's spikes
        got = torch.stack([table[T + refr + t]] + [table[t - (a - 1)] for a in range(1, t + 1)])
        assert torch.equal(got, want)
        k[t + 1] = k0
        k.mul_(decay)
    assert (table[T + refr:] != 0).all()
    if tau_u == 1.0:  # the kernels compared went through subnormal numbers to 0 (k: ages 1 … T now)
        assert ((k > 0) & (k < torch.finfo(torch.float32).tiny)).any() and (k == 0).sum() > 10


@pytest.mark.parametrize("model_opts", [{"refractory": 0}, {"refractory": 4, "tau_u": 2.5}])
@pytest.mark.parametrize("batch", [1, 3])
def test_fixed_kernel_equals_the_reference_at_other_refractory_periods_and_kernels(batch, model_opts):
    """The refractory count as the last spike's step, and the kernel table, at refractory periods
    and synaptic time constants other than the authors'."""
    m = small(input_seed=2, duration=40, w_init=4.0, **model_opts)
    dense = dense_and_event_agree(m.liquid, m.encode(images(batch, seed=3)))
    assert dense["counts"].sum() > 30 * batch


@pytest.mark.parametrize("rule,model_opts", [
    ("nalsm", {"refractory": 0}), ("stdp", {"refractory": 4, "tau_u": 2.5, "w_init": 3.0, "threshold": 10.0}),
])
@pytest.mark.parametrize("batch", [1, 3])
def test_event_driven_plasticity_equals_the_dense_reference_at_other_neuron_constants(rule, model_opts, batch):
    dense, d, liq = run("dense", rule, model_opts=model_opts, x=images(batch, seed=6))
    event, e, _ = run("event", rule, model_opts=model_opts, x=images(batch, seed=6))
    assert torch.equal(dense["raster"], event["raster"]) and dense["counts"].sum() > 20 * batch
    assert torch.equal(d["x"], e["x"]) and torch.equal(d["A"], e["A"]) and torch.equal(d["w"], e["w"])
    assert int((d["w"] != liq.weight).any(0).sum()) > 50
    assert torch.allclose(d["drive"], e["drive"], rtol=1e-5, atol=1e-5)


def test_clamp_by_tensor_bounds_equals_clamp():
    from beyondbp.rules.nalsm import _clamp

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 40, generator=g) * 4
    lo = torch.where(torch.rand(50, 1, generator=g) < 0.5, -3.0, 0.0)
    hi = lo + 3.0
    assert torch.equal(_clamp(x.clone(), lo, hi, 3.0), x.clamp(lo, hi))
    assert torch.equal(_clamp(x.clone()[:, :7], None, None, 3.0), x[:, :7].clamp(-3.0, 3.0))
    assert (x.clamp(lo, hi) != x).sum() > 100


def test_a_liquid_that_ran_the_plastic_kernels_still_saves():
    """Feature workers get the model pickled: the cached kernel tables must not hold one storage as
    two dtypes (torch.save refuses that)."""
    import io

    m = small(duration=10)
    rules.get("nalsm").attach(m)
    m.liquid.simulate(m.encode(images(1)))
    assert "inc" in m.liquid.event_tables()
    buf = io.BytesIO()
    torch.save(m, buf)
    assert buf.tell() > 0


# -- edge cases the comparisons above cannot reach (review of the kernels) ------------------------
# Binary firing probabilities make the input drive deterministic (p = 1 spikes whenever the input
# neuron is not refractory, p = 0 never), so a batch can be compared with its samples run alone.


def binary(n=3, seed=1, level=0.3):
    return (images(n, seed=seed).reshape(n, -1) > level).float()


def in_bounds(liq, seed=0):
    """Weights drawn inside their clip bounds, many close to one of them."""
    lo, hi = liq.clip_bounds()
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(liq.nnz, generator=g)
    u = torch.where(torch.rand(liq.nnz, generator=g) < 0.5, u * 0.1, 1 - u * 0.1)  # within 10 % of a bound
    return (lo + (hi - lo) * u).clamp(lo + 1e-3, hi - 1e-3)


def plastic_run(kernel, rule, p, model_opts=None, rule_opts=None, weights=None, seed=3):
    """``rule``'s (None: a fixed liquid) simulation of ``p``: the outputs, the final state (weights,
    traces, rates, the padded arrays) and the next number of the global random stream."""
    m = small(**(model_opts or {}))
    if weights is not None:
        m.liquid.weight.data.copy_(weights(m.liquid))
    seen = {}
    if rule is not None:
        rules.get(rule, **(rule_opts or {})).attach(m)
        plast = m.liquid.plasticity

        def end(state):
            seen.update(w=state.w.clone(), x=plast.x_full.clone(), A=(plast.A if plast.astro else plast.eta).clone(),
                        full=None if state.full is None else [t.clone() for t in state.full])

        plast.end = end
    m.liquid.kernel = kernel
    torch.manual_seed(seed)
    out = m.liquid.simulate(p, record=True)
    seen["next"] = torch.rand(3)
    return m.liquid, out, seen


def same_run(a, b, plastic=True):
    (_, oa, sa), (_, ob, sb) = a, b
    assert torch.equal(oa["raster"], ob["raster"]) and torch.equal(oa["input_counts"], ob["input_counts"])
    assert torch.equal(sa["next"], sb["next"])  # the random stream left in the same state
    if plastic:
        assert torch.equal(sa["w"], sb["w"]) and torch.equal(sa["x"], sb["x"]) and torch.equal(sa["A"], sb["A"])


@pytest.mark.parametrize("refractory", [0, 2])
@pytest.mark.parametrize("rule", ["stdp", "nalsm"])
def test_event_plasticity_equals_the_reference_at_the_refractory_edge_and_the_clip_bounds(monkeypatch, rule, refractory):
    """Liquid neurons spiking again as soon as the refractory period allows, pre- and postsynaptic
    neurons spiking in the same step (the synapse is in both rows), and the event steps pushing
    weights past every clip bound (E below 0 and above w_max, I below −w_max and above 0,
    inputs past ±w_max; the weights start inside their bounds: no dense first step)."""
    import beyondbp.rules.nalsm as nalsm

    clipped = dict.fromkeys(("E<0", "E>max", "I<-max", "I>0", "in<-max", "in>max"), 0)
    real_clamp = nalsm._clamp

    def counting(x, lo, hi, wmax):
        if lo is None:
            clipped["in<-max"] += int((x < -wmax).sum())
            clipped["in>max"] += int((x > wmax).sum())
        else:
            clipped["E<0"] += int(((x < lo) & (lo == 0)).sum())
            clipped["E>max"] += int(((x > hi) & (hi == wmax)).sum())
            clipped["I<-max"] += int(((x < lo) & (lo == -wmax)).sum())
            clipped["I>0"] += int(((x > hi) & (hi == 0)).sum())
        return real_clamp(x, lo, hi, wmax)

    monkeypatch.setattr(nalsm, "_clamp", counting)
    mo = dict(w_init=3.0, threshold=8.0, refractory=refractory)
    ro = dict(eta=1.5)
    p = binary() * 0.7  # random input spikes: input synapses are depressed too
    dense = plastic_run("dense", rule, p, mo, ro, in_bounds)
    event = plastic_run("event", rule, p, mo, ro, in_bounds)
    same_run(dense, event)
    liq, out, seen = dense
    d = refractory + 1
    assert int((out["raster"][:, d:] & out["raster"][:, :-d]).sum()) > 100  # spikes at the shortest interval
    rec = liq.pre >= liq.n_in  # synapses whose pre- and postsynaptic neurons spiked in the same step
    assert int((out["raster"][:, :, liq.pre[rec] - liq.n_in] & out["raster"][:, :, liq.post[rec]]).sum()) > 100
    assert min(clipped.values()) >= 10, clipped
    assert int((seen["w"] != liq.weight).any(0).sum()) > 100


@pytest.mark.parametrize("kernel", ["dense", "event"])
@pytest.mark.parametrize("rule", [None, "stdp", "nalsm"])
def test_a_batch_simulates_each_sample_as_if_alone(rule, kernel):
    """A batch of 3 different samples against each one run alone (deterministic input drive): the
    same spikes, weights, traces and rates per sample (no row offset, rate or padding slot shared
    between samples; batches of 1 take the kernels' offset-free paths)."""
    p = binary()
    mo = dict(w_init=3.0, threshold=10.0)
    _, batch, b = plastic_run(kernel, rule, p, mo)
    alone = [plastic_run(kernel, rule, p[i:i + 1], mo) for i in range(3)]
    assert torch.equal(batch["raster"], torch.cat([o["raster"] for _, o, _ in alone]))
    assert torch.equal(batch["input_counts"], torch.cat([o["input_counts"] for _, o, _ in alone]))
    assert (batch["counts"].sum(1) > 50).all() and not torch.equal(batch["counts"][0], batch["counts"][1])
    if rule is not None:
        for key in ("w", "x", "A"):
            assert torch.equal(b[key], torch.cat([s[key] for _, _, s in alone])), key
        assert not torch.equal(b["A"][0], b["A"][1]) or rule == "stdp"


@pytest.mark.parametrize("input_seed", [None, 4])
def test_event_plasticity_draws_its_input_in_chunks_as_the_reference_draws_it_per_step(monkeypatch, input_seed):
    """At NALSM1000 sizes (batch 250 × 784 inputs) the plastic kernel draws 10 steps at once: the
    same numbers as the reference's draw per step, whatever the chunk (here 4 steps, the last one
    partial), and the random stream left in the same state."""
    import beyondbp.models.lsm_kernels as lsm_kernels

    monkeypatch.setattr(lsm_kernels, "CHUNK_ELEMENTS", 4 * 3 * 64)
    mo = dict(input_seed=input_seed, duration=30)
    p = small().encode(images(3, seed=2))
    same_run(plastic_run("dense", "nalsm", p, mo), plastic_run("event", "nalsm", p, mo))


def test_padding_slots_point_at_the_dummy_and_stay_zero():
    """The padded tables: every real slot once, in the CSR's order, every padding slot at the dummy
    synapse / column; after a plastic batch the dummy weight, trace, kernel and spike are still 0."""
    liq, out, seen = plastic_run("event", "nalsm", binary(), dict(w_init=3.0, threshold=10.0), dict(eta=1.5), in_bounds)
    from beyondbp.models.lsm_kernels import plastic_tables

    tab = plastic_tables(liq)
    n_in, n, nnz = liq.n_in, liq.n, liq.nnz
    n_tot = n_in + n
    for rows, cols, first, count in ((tab["out_in"], tab["out_in_x"], 0, n_in), (tab["out_liq"], tab["out_liq_x"], n_in, n)):
        for j in range(count):
            real = torch.arange(int(liq.out_ptr[first + j]), int(liq.out_ptr[first + j + 1]))
            k = real.numel()
            assert torch.equal(rows[j, :k], real) and (rows[j, k:] == nnz).all()
            assert torch.equal(cols[j, :k], liq.post[real] + n_in) and (cols[j, k:] == n_tot).all()
    inc, inc_x = tab["inc"].view(torch.int64), tab["inc_x"].view(torch.int64)
    for i in range(n):
        row = inc[i]
        real = row[row != nnz]
        assert sorted(real.tolist()) == sorted((liq.post == i).nonzero().view(-1).tolist())
        assert (liq.post[real] == i).all() and torch.equal(inc_x[i][row != nnz], liq.pre[real])
        assert (inc_x[i][row == nnz] == n_tot).all()
        split = tab["inc_split"]
        assert (liq.kind[row[:split][row[:split] != nnz]] == 2).all() and (liq.kind[row[split:][row[split:] != nnz]] != 2).all()
    w_full, k_full, _ = seen["full"]
    assert (w_full[:, nnz] == 0).all() and (k_full[:, n_tot] == 0).all() and (seen["x"][:, n_tot] == 0).all()
    assert int((seen["w"] != liq.weight).any(0).sum()) > 100 and out["counts"].sum() > 150


@pytest.mark.parametrize("rule", ["stdp", "nalsm"])
def test_event_plasticity_equals_the_reference_on_a_nalsm1000_liquid(rule):
    """The authors' liquid (1000 neurons, 784 inputs), one sample (phase 1) and a batch of 2."""
    m = models.build("lsm", (1, 28, 28), 10, duration=25, input_seed=3)
    p = m.encode(images(2, seed=4).repeat(1, 1, 4, 4)[:, :, :28, :28])
    for x in (p[:1], p):
        runs = {}
        for kernel in ("dense", "event"):
            mm = models.build("lsm", (1, 28, 28), 10, duration=25, input_seed=3)
            rules.get(rule).attach(mm)
            mm.liquid.kernel = kernel
            plast, seen = mm.liquid.plasticity, {}
            plast.end = lambda state, plast=plast, seen=seen: seen.update(w=state.w.clone(), x=plast.x.clone())
            runs[kernel] = (mm.liquid.simulate(x, record=True), seen)
        (d, ds), (e, es) = runs["dense"], runs["event"]
        assert torch.equal(d["raster"], e["raster"]) and d["counts"].sum() > 300 * len(x)
        assert torch.equal(ds["w"], es["w"]) and torch.equal(ds["x"], es["x"])
        assert int((ds["w"] != mm.liquid.weight).any(0).sum()) > 1000


def test_fixed_event_kernel_of_one_sample_equals_the_reference_at_nalsm1000_size():
    """One sample takes the fixed kernel's spike rows and kernel table (a batch of 2 above takes the
    CSR product)."""
    m = models.build("lsm", (1, 28, 28), 10, duration=120, input_seed=3)
    dense = dense_and_event_agree(m.liquid, m.encode(images(1, seed=4).repeat(1, 1, 4, 4)[:, :, :28, :28]))
    assert dense["counts"].sum() > 2500
