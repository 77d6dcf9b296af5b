"""``lsm``: a liquid state machine — a fixed 3-D spiking liquid and a linear readout.

The liquid of "Increasing Liquid State Machine Performance with Edge-of-Chaos Dynamics Organized
by Astrocyte-modulated Plasticity" (Ivanov & Michmizos, NeurIPS 2021), rebuilt from the
description of their code (combra-lab/NALSM) in ``shared/reference/families-next.md`` §1.

Structure (drawn once from the ``seed`` option with a private generator; the global RNG is
untouched):

* ``n`` liquid neurons on a 3-D grid (``size=1000``: 10×10×10, ``size=8000``: 20×20×20, or any
  ``grid``), unit spacing; ``round(0.8·n)`` excitatory and the rest inhibitory, shuffled over
  the positions.
* Recurrent synapse j→i (i ≠ j) with probability ``C·exp(−(D_ij/λ)²)``, ``λ = 3``, ``C`` by
  (pre, post) type: E→E 0.2, E→I 0.1, I→E 0.3, I→I 0.05.
* One input neuron per input feature (784 for 28×28 images). Exactly ``round(0.15·n_in·n)`` of
  the input→liquid pairs are connected (a random permutation of all pairs), each with a random
  sign.
* Every weight starts at magnitude ``w_init`` (3.0): +3 from excitatory, −3 from inhibitory
  neurons, ±3 from inputs. Plasticity rules clip E synapses to [0, w_max], I synapses to
  [−w_max, 0] and input synapses to [−w_max, w_max].

Dynamics (dt = 1 ms), for input and liquid neurons alike (input neurons are LIF neurons that
receive only the external current), one step in the authors' order:

1. spike where ``v ≥ threshold`` and the neuron is not refractory; spiking neurons reset to 0
   and stay refractory for ``refractory`` (2) steps;
2. the synaptic kernel of a presynaptic neuron ``j`` is ``k_j = exp(−Δt_j/τ_u)/τ_u`` with
   ``Δt_j`` the steps since ``j`` last spiked (0 in the step it spikes; before any spike
   ``Δt`` starts at the authors' ``t_lim`` = 20 for τ_u = 1);
3. ``v ← v − v/τ_v + Σ_j w_ij k_j + I`` with ``τ_v = 64``; the input neurons' current is
   ``I = input_current · [p > U(0, 1)]`` (100, a Bernoulli spike drive; the authors'
   ``100·ceil(p − U)``);
4. every ``Δt`` grows by one; plasticity rules (attached from :mod:`beyondbp.rules.nalsm`)
   update the weights from this step's spikes.

Input encoding: each sample is flattened, divided by its own sum, then by ``rate_max``; the
result, clipped to [0, 1], is every input neuron's firing probability per ms. The authors divide
by the maximum of that ratio over the whole data set: pass that number as ``rate_max`` for their
protocol; ``None`` (default) divides by the batch's maximum, which makes a sample's encoding
depend on its batch (a departure, needed because a model sees batches, not data sets).
Bernoulli draws use the global torch RNG (seed it, as for dropout), or, with ``input_seed``, a
generator seeded afresh at every forward pass, so that a sample's spike trains (and features) are
the same at every epoch, as the authors' cached features are.

Readout: the spike count of every liquid neuron over ``duration`` ms (250), divided by its
sample's L1 norm, then by the batch maximum (the authors' normalisation; ``features="l1"``
stops after the L1 norm, ``"counts"`` keeps raw counts), into ``readout = Linear(n, classes)``
initialised at zero, trained by the caller's optimizer.

Simulation is batched over samples. The synaptic drive ``Σ_j w_ij k_j`` of every liquid neuron
is kept as one number that decays by ``exp(−1/τ_u)`` per step and changes only where a
presynaptic neuron spiked (for a fixed liquid, :mod:`beyondbp.models.lsm_fixed`: the spiking
neurons' outgoing synapses of one sample, or a sparse CSR product of the synapse matrix with the
spike vectors of a batch) or a plasticity rule changed a weight. With plasticity the weights are per sample,
a ``(B, nnz)`` array over the fixed synapse structure, and each step touches only the synapses
of the neurons that spiked (event-driven: the spiking (sample, neuron) pairs index padded tables
of their outgoing and incoming synapses, :meth:`Liquid.event_tables`; about 15 % of the synapses
per ms at NALSM1000 rates), with the same arithmetic as the dense update of every synapse
(``kernel = "dense"``, kept as the reference: equal spikes, traces and weights, the drive within
float rounding; tests/test_lsm_kernels.py). The rule updates the rows while the step builds them
(:meth:`SimState` ``pending``: its drive changes are added after the membrane update, where the
dense update adds them). The event-driven loops live in :mod:`beyondbp.models.lsm_fixed` (no
plasticity) and :mod:`beyondbp.models.lsm_kernels` (plasticity); measured figures in
bench/README.md (bench/lsm_speed.py, bench/lsm_peers.py). This equals the authors' per-synapse sum up to float rounding,
except that the authors cap ``Δt`` at 100 (a kernel of ``e^{−100}``, below float32
resolution), where the drive here keeps decaying.

Memory is counted before anything is allocated (the connectivity draw and the synapse arrays,
and per forward pass the per-sample weights a plasticity rule needs): too large a liquid is
refused with one sentence.

In a run (``beyondbp train``, ``compare``, a study) this model goes through the two-phase
protocol of :mod:`beyondbp.training.liquid`: liquid initialisation, features generated once (with
the data-set-wide ``rate_max``, ``feature_batch`` samples at a time) and cached, and the readout
alone trained by the run's rule on them. ``w_init`` is the fixed liquid's weight scale the paper
sweeps: the authors' one scalar sets the magnitude of every synapse, E→E, E→I, I→E, I→I and
input→liquid alike. ``w_liquid`` sets the recurrent synapses' magnitude alone (the input synapses
keep ``w_init``), a variant beyond the paper's sweep; ``readout_hidden`` gives a 2-layer readout.
"""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Any, ClassVar, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from beyondbp.errors import ConfigError
from beyondbp.models.lsm_fixed import simulate_fixed
from beyondbp.models.lsm_kernels import SimState, simulate_plastic
from beyondbp.models.mlp import check_classes, check_shape
from beyondbp.options import Options, opt, parse
from beyondbp.resources import check_fits

__all__ = ["LSM", "Liquid", "PRESETS", "EXC", "INH", "INP"]

#: Grid of the size presets.
PRESETS = {1000: (10, 10, 10), 8000: (20, 20, 20)}
#: Synapse kinds (by presynaptic population).
EXC, INH, INP = 0, 1, 2


def _t_lim(tau_u: float) -> float:
    """The authors' initial ``Δt`` of every synapse: the first of 20, 25, 30, ... with
    ``exp(−t/τ_u) ≤ 0.01``."""
    t = 20.0
    for _ in range(1000):
        if math.exp(-t / tau_u) <= 0.01:
            break
        t += 5.0
    return t


class Liquid(nn.Module):
    """The spiking liquid (see the module docstring). ``forward(p)`` takes firing probabilities
    ``(B, n_in)`` and returns spike counts ``(B, n)``; :meth:`simulate` gives more."""

    #: How plasticity rules recognise a liquid (rules do not import models).
    is_spiking_liquid = True

    def __init__(
        self, n_inputs: int, grid: Sequence[int], *, exc_fraction: float = 0.8, lam: float = 3.0,
        conn: Sequence[float] = (0.2, 0.1, 0.3, 0.05), input_density: float = 0.15, w_init: float = 3.0,
        w_liquid: float | None = None, w_max: float = 3.0, tau_v: float = 64.0, tau_u: float = 1.0, threshold: float = 20.0,
        refractory: int = 2, input_current: float = 100.0, duration: int = 250, seed: int = 0,
    ) -> None:
        super().__init__()
        gx, gy, gz = (int(g) for g in grid)
        n = gx * gy * gz
        self.n_in, self.n, self.grid = int(n_inputs), n, (gx, gy, gz)
        self.tau_v, self.tau_u, self.threshold = float(tau_v), float(tau_u), float(threshold)
        self.refractory, self.input_current, self.duration = int(refractory), float(input_current), int(duration)
        self.w_max, self.seed = float(w_max), int(seed)
        self.plasticity: Any = None  # installed by a plasticity rule (beyondbp.rules.nalsm)
        self.input_seed: int | None = None  # None: input spikes from the global RNG
        #: "event": plastic steps touch only the synapses of neurons that spiked; "dense": every
        #: synapse every step (the straightforward reference, kept for tests and benchmarks)
        self.kernel: Literal["event", "dense"] = "event"
        self._tables: dict[str, Tensor] | None = None
        self._bounds: tuple[Tensor, Tensor] | None = None
        self._tab_slots: int | None = None
        n_exc = int(round(n * exc_fraction))
        n_syn_in = int(round(input_density * self.n_in * n))
        expected = n_syn_in + self.recurrent_bound(self.grid, lam, max(conn))
        self.check_memory(expected, n)
        meta = torch.empty(0).device.type == "meta"
        if meta:  # models.build counts bytes on the meta device: sizes only, nothing drawn
            nnz = n_syn_in + int(expected - n_syn_in) // 2
            pre = torch.empty(nnz, dtype=torch.long)
            post = torch.empty(nnz, dtype=torch.long)
            kind = torch.empty(nnz, dtype=torch.int8)
            w = torch.empty(nnz)
            is_exc = torch.empty(n, dtype=torch.bool)
            pos = torch.empty(n, 3)
        else:
            w_rec = w_init if w_liquid is None else float(w_liquid)
            pre, post, kind, w, is_exc, pos = self._draw(n_exc, lam, conn, n_syn_in, w_init, w_rec)
        self.nnz = int(pre.numel())
        self.register_buffer("pre", pre)  # presynaptic index: inputs 0..n_in-1, liquid n_in + i
        self.register_buffer("post", post)  # postsynaptic liquid neuron 0..n-1
        self.register_buffer("kind", kind)  # EXC / INH / INP (the presynaptic population)
        self.register_buffer("is_exc", is_exc)
        self.register_buffer("positions", pos)
        self.weight = nn.Parameter(w, requires_grad=False)  # (nnz,), trained by plasticity rules only
        if not meta:
            self._index()

    # -- structure ---------------------------------------------------------------------------
    @staticmethod
    def recurrent_bound(grid: Sequence[int], lam: float, c_max: float) -> float:
        """An upper bound on the expected number of recurrent synapses (for the memory count):
        ``c_max · n · Σ_offsets exp(−(d/λ)²)`` over the offsets the grid allows (in closed form
        per axis, so it costs nothing for any size)."""
        n = math.prod(grid)
        per = 1.0
        for g in grid:
            r = min(int(g) - 1, math.ceil(6 * lam))
            per *= sum(math.exp(-(d * d) / lam**2) for d in range(-r, r + 1))
        return c_max * n * min(per, n)

    def check_memory(self, expected_synapses: float, n: int) -> None:
        need = expected_synapses * (8 + 8 + 1 + 4 + 8 * 2) + self.n_in * n * 8 + 4 * n * min(n, 2048)
        check_fits(need, f"a liquid of {n} neurons with {self.n_in} inputs", "choose a smaller grid or size.")

    def _draw(self, n_exc: int, lam: float, conn: Sequence[float], n_syn_in: int, w_init: float, w_rec: float):
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        n, n_in = self.n, self.n_in
        gx, gy, gz = self.grid
        cpu = dict(device="cpu")
        coords = torch.stack(torch.meshgrid(
            torch.arange(gx, **cpu), torch.arange(gy, **cpu), torch.arange(gz, **cpu), indexing="ij"
        ), dim=-1).reshape(n, 3).float()
        order = torch.randperm(n, generator=g, **cpu)
        is_exc = torch.zeros(n, dtype=torch.bool, **cpu)
        is_exc[order[:n_exc]] = True
        c = torch.tensor(conn, dtype=torch.float32, **cpu).view(2, 2)  # [pre E/I][post E/I]
        pre_type = (~is_exc).long()
        pres, posts = [], []
        chunk = max(1, 2**22 // max(n, 1))
        for start in range(0, n, chunk):  # rows = postsynaptic neurons
            rows = torch.arange(start, min(n, start + chunk), **cpu)
            d2 = ((coords[rows, None, :] - coords[None, :, :]) ** 2).sum(-1)
            prob = c[pre_type[None, :], pre_type[rows][:, None]] * torch.exp(-d2 / lam**2)
            prob[torch.arange(len(rows), **cpu), rows] = 0.0  # no self-connections
            hit = torch.rand(prob.shape, generator=g, **cpu) < prob
            i, j = hit.nonzero(as_tuple=True)
            posts.append(rows[i])
            pres.append(j + n_in)
        rec_pre, rec_post = torch.cat(pres), torch.cat(posts)
        pairs = torch.randperm(n_in * n, generator=g, **cpu)[:n_syn_in]
        in_pre, in_post = pairs // n, pairs % n
        sign = torch.where(torch.rand(n_syn_in, generator=g, **cpu) < 0.5, -1.0, 1.0)
        pre = torch.cat([in_pre, rec_pre])
        post = torch.cat([in_post, rec_post])
        rec_exc = is_exc[rec_pre - n_in]
        kind = torch.cat([
            torch.full((n_syn_in,), INP, dtype=torch.int8, **cpu),
            torch.where(rec_exc, EXC, INH).to(torch.int8),
        ])
        w = torch.cat([sign * w_init, torch.where(rec_exc, w_rec, -w_rec)])
        srt = torch.argsort(pre * n + post)  # synapses sorted by presynaptic neuron
        return pre[srt], post[srt], kind[srt], w[srt].float(), is_exc, coords

    def _index(self) -> None:
        """CSR indices: outgoing synapses by presynaptic neuron (synapses are stored sorted by
        ``pre``) and incoming synapses by postsynaptic neuron."""
        n_tot = self.n_in + self.n
        self.out_ptr = torch.zeros(n_tot + 1, dtype=torch.long, device=self.pre.device)
        self.out_ptr[1:] = torch.cumsum(torch.bincount(self.pre, minlength=n_tot), 0)
        self.in_order = torch.argsort(self.post, stable=True)
        self.in_ptr = torch.zeros(self.n + 1, dtype=torch.long, device=self.pre.device)
        self.in_ptr[1:] = torch.cumsum(torch.bincount(self.post, minlength=self.n), 0)
        self._tables, self._bounds, self._tab_slots = None, None, None

    def event_tables(self) -> dict[str, Tensor]:
        """Padded synapse tables of the event-driven kernels, built once (cached).

        ``out_in`` / ``out_liq``: per input / liquid neuron, the indices of its outgoing synapses
        (ascending) padded with the dummy index ``nnz``; ``out_in_x`` / ``out_liq_x``: their
        postsynaptic neuron as a column of the neuron arrays (``n_in + post``; dummy
        ``n_in + n``). ``inc_in`` / ``inc_liq``: per liquid neuron, its incoming synapses from
        inputs / from liquid neurons (ascending), with ``_x`` (presynaptic column) and, for the
        liquid ones, ``_inh`` (inhibitory presynaptic neuron), ``_lo`` / ``_hi`` (clip bounds;
        the dummy's are 0)."""
        if self._tables is None:
            n_in, n, nnz, dev = self.n_in, self.n, self.nnz, self.pre.device
            n_tot = n_in + n

            def padded(starts: Tensor, deg: Tensor, order: Tensor | None) -> Tensor:
                width = int(deg.max()) if deg.numel() else 0
                slot = torch.arange(width, device=dev)
                valid = slot[None, :] < deg[:, None]
                idx = torch.where(valid, starts[:, None] + slot[None, :], 0)
                if order is not None and order.numel():
                    idx = order[idx]
                return torch.where(valid, idx, nnz)

            def ext(values: Tensor, dummy: float | int | bool) -> Tensor:
                return torch.cat([values, torch.full((1,), dummy, dtype=values.dtype, device=dev)])

            out_deg = self.out_ptr[1:] - self.out_ptr[:-1]
            out_in = padded(self.out_ptr[:n_in], out_deg[:n_in], None)
            out_liq = padded(self.out_ptr[n_in:-1], out_deg[n_in:], None)
            post_x, pre_x = ext(self.post + n_in, n_tot), ext(self.pre, n_tot)
            lo, hi = self.clip_bounds()
            # incoming synapses, sorted by post and then by pre: the inputs' first, then the liquid's
            deg_inc_in = torch.bincount(self.post[self.kind == INP], minlength=n)
            deg_inc = self.in_ptr[1:] - self.in_ptr[:-1]
            inc_in = padded(self.in_ptr[:-1], deg_inc_in, self.in_order)
            inc_liq = padded(self.in_ptr[:-1] + deg_inc_in, deg_inc - deg_inc_in, self.in_order)
            self._tables = {
                "out_in": out_in, "out_liq": out_liq, "out_in_x": post_x[out_in], "out_liq_x": post_x[out_liq],
                "inc_in": inc_in, "inc_in_x": pre_x[inc_in], "inc_liq": inc_liq, "inc_liq_x": pre_x[inc_liq],
                "inc_liq_inh": ext(self.kind == INH, False)[inc_liq], "inc_liq_lo": ext(lo, 0.0)[inc_liq],
                "inc_liq_hi": ext(hi, 0.0)[inc_liq],
            }
        return self._tables

    def _apply(self, fn, recurse=True):  # keep the CSR indices on the buffers' device
        out = super()._apply(fn, recurse)
        if self.pre.device.type != "meta":
            self._index()
        return out

    def counts_by_kind(self) -> dict[str, int]:
        """Synapse counts by (pre, post) population: ``EE``, ``EI``, ``IE``, ``II``, ``input``."""
        out = {"input": int((self.kind == INP).sum())}
        rec = self.kind != INP
        pre_e = self.kind[rec] == EXC
        post_e = self.is_exc[self.post[rec]]
        for name, a, b in (("EE", True, True), ("EI", True, False), ("IE", False, True), ("II", False, False)):
            out[name] = int(((pre_e == a) & (post_e == b)).sum())
        return out

    def clip_bounds(self) -> tuple[Tensor, Tensor]:
        """Per-synapse lower and upper weight bounds (E [0, w_max], I [−w_max, 0], input ±w_max);
        built once (cached with the event tables: read them, do not modify them)."""
        if self._bounds is None:
            m, kind = self.w_max, self.kind.long()
            self._bounds = (torch.tensor([0.0, -m, -m], device=self.weight.device).index_select(0, kind),
                            torch.tensor([m, 0.0, m], device=self.weight.device).index_select(0, kind))
        return self._bounds

    # -- simulation --------------------------------------------------------------------------
    def simulate(
        self, p: Tensor, *, duration: int | None = None, record: bool = False, plasticity: Any = "attached",
        write_back: bool = True,
    ) -> dict[str, Tensor]:
        """Run the liquid on firing probabilities ``p`` (B, n_in) for ``duration`` ms.

        Returns ``counts`` (B, n) liquid spike counts, ``input_counts`` (B, n_in) and, with
        ``record``, ``raster`` (B, T, n) bool liquid spikes. ``plasticity``: the attached rule's
        plasticity (default), ``None`` for a fixed liquid, or a plasticity object. A plasticity
        that keeps its changes (``persistent``) runs the samples one after another and writes
        the weights back when ``write_back`` (the model in training mode)."""
        plast = self.plasticity if plasticity == "attached" else plasticity
        T = self.duration if duration is None else int(duration)
        if p.dim() != 2 or p.shape[1] != self.n_in:
            raise ConfigError(
                f"the liquid takes firing probabilities of shape (batch, {self.n_in}), got {tuple(p.shape)}."
            )
        if plast is not None and getattr(plast, "persistent", False) and p.shape[0] > 1:
            outs = [self.simulate(p[i:i + 1], duration=T, record=record, plasticity=plast, write_back=write_back)
                    for i in range(p.shape[0])]
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        with torch.no_grad():
            return self._run(p, T, record, plast, write_back)

    def _run(self, p: Tensor, T: int, record: bool, plast: Any, write_back: bool) -> dict[str, Tensor]:
        B, dev = p.shape[0], self.weight.device
        p = p.to(device=dev, dtype=torch.float32)
        gen = None
        if self.input_seed is not None:
            gen = torch.Generator(device=dev).manual_seed(self.input_seed)
        k_init = math.exp(-_t_lim(self.tau_u) / self.tau_u) / self.tau_u
        if plast is None and self.kernel == "event":
            return simulate_fixed(self, p, T, record, gen, k_init)
        if plast is not None:
            check_fits(self.plastic_bytes(B), f"plasticity on a batch of {B} (per-sample weights)", "use smaller batches.")
        if plast is not None and self.kernel == "event":
            state, out = simulate_plastic(self, p, T, record, plast, gen, k_init)
        else:
            state, out = self._run_dense(p, T, record, plast, gen, k_init)
        if plast is not None:
            plast.end(state)
            if getattr(plast, "persistent", False) and write_back:
                self.weight.data.copy_(state.w[0])
        return out

    def _run_dense(self, p: Tensor, T: int, record: bool, plast: Any, gen: torch.Generator | None,
                   k_init: float) -> tuple[SimState, dict[str, Tensor]]:
        """The reference simulation (``kernel = "dense"``): every synapse every step (a CSR
        product without plasticity)."""
        B, n_in, n = p.shape[0], self.n_in, self.n
        n_tot, dev = n_in + n, p.device
        w = self.weight.detach().clone() if plast is None else self.weight.detach().expand(B, -1).clone()
        decay = math.exp(-1.0 / self.tau_u)
        k = torch.full((B, n_tot), k_init, device=dev)
        drive = self._full_drive(w, k)
        v = torch.zeros(B, n_tot, device=dev)
        ref = torch.zeros(B, n_tot, device=dev)
        counts = torch.zeros(B, n_tot, device=dev)
        raster = torch.zeros(B, T, n, dtype=torch.bool, device=dev) if record else None
        state = SimState(self, w, k, drive)
        if plast is not None:
            plast.begin(state)
        k0 = 1.0 / self.tau_u
        if w.dim() == 1:
            csr = self._csr(w)
        for t in range(T):
            s = (v >= self.threshold) & (ref <= 0)
            v = v.masked_fill(s, 0.0)
            counts += s
            if raster is not None:
                raster[:, t] = s[:, n_in:]
            state.step = t
            if bool(s.any()):
                delta = torch.where(s, k0 - k, 0.0)
                if w.dim() == 1:
                    drive += torch.sparse.mm(csr, delta.t()).t()
                else:
                    drive.index_add_(1, self.post, w * delta[:, self.pre])
                k.masked_fill_(s, k0)
            current = torch.cat([
                self.input_current * (p > torch.rand(B, n_in, device=dev, generator=gen)).float(), drive
            ], dim=1)
            v = v + current - v / self.tau_v
            k.mul_(decay)
            drive.mul_(decay)
            ref = torch.where(s, float(self.refractory), ref - 1.0)
            if plast is not None:
                plast.update(state, s)
        out = {"counts": counts[:, n_in:], "input_counts": counts[:, :n_in]}
        if raster is not None:
            out["raster"] = raster
        return state, out

    def plastic_bytes(self, batch: int) -> int:
        """Bytes a plastic simulation of ``batch`` samples allocates beyond the liquid itself:
        per-sample weights (and their clipped copy) plus, at worst (every neuron spiking in one
        step), the padded synapse rows of the event-driven kernels (~40 bytes a slot per sample,
        and the tables themselves once)."""
        tab_slots = 0
        if self.kernel == "event":
            if self._tab_slots is None:
                ptr = self.out_ptr
                deg_in, deg_liq = ptr[1:self.n_in + 1] - ptr[:self.n_in], ptr[self.n_in + 1:] - ptr[self.n_in:-1]
                deg_inc = self.in_ptr[1:] - self.in_ptr[:-1]
                self._tab_slots = sum(int(d.numel()) * int(d.max()) for d in (deg_in, deg_liq, deg_inc) if d.numel())
            tab_slots = self._tab_slots
        return batch * ((self.nnz + 1) * 4 * 3 + tab_slots * 40) + tab_slots * 24

    def _csr(self, w: Tensor) -> Tensor:
        """The weights as a sparse CSR matrix (n, n_in + n), rows = postsynaptic neurons."""
        order = self.in_order
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(
                self.in_ptr, self.pre[order], w[order], (self.n, self.n_in + self.n), device=w.device
            )

    def _full_drive(self, w: Tensor, k: Tensor) -> Tensor:
        """``Σ_j w_ij k_j`` for every liquid neuron from scratch (once per simulation)."""
        B = k.shape[0]
        contrib = (w if w.dim() == 2 else w.unsqueeze(0)) * k.index_select(1, self.pre)
        drive = torch.zeros(B, self.n, device=k.device)
        drive.index_add_(1, self.post, contrib.expand(B, -1) if contrib.shape[0] != B else contrib)
        return drive

    def forward(self, p: Tensor) -> Tensor:
        return self.simulate(p, write_back=self.training)["counts"]


class LSM(nn.Module):
    """Liquid + linear readout (see the module docstring)."""

    class Options(Options):
        #: Runs of this model simulate a liquid before training (beyondbp.training.liquid).
        liquid: ClassVar[bool] = True

        size: Literal[1000, 8000] = opt(1000, "liquid size preset: 1000 (10x10x10) or 8000 (20x20x20)")
        grid: list[Annotated[int, Field(ge=1)]] | None = opt(
            None, "liquid grid (x, y, z), overriding size", accepts="a list of three integers >= 1, or null (None)",
            min_length=3, max_length=3,
        )
        duration: int = opt(250, "presentation time per sample in ms (dt = 1 ms)", ge=1)
        tau_v: float = opt(64.0, "membrane time constant τ_v in ms", gt=0)
        tau_u: float = opt(1.0, "synaptic kernel time constant τ_u in ms", gt=0)
        threshold: float = opt(20.0, "firing threshold", gt=0)
        refractory: int = opt(2, "refractory period in ms", ge=0)
        input_current: float = opt(100.0, "current of an input spike", gt=0)
        w_init: float = opt(
            3.0, "initial weight magnitude of every synapse, input ones included (the fixed liquid's weight scale "
            "the paper sweeps)", ge=0,
        )
        w_liquid: float | None = opt(
            None, "initial magnitude of the recurrent (liquid→liquid) synapses only, the input ones keeping w_init "
            "(a variant: the paper's fixed-liquid sweep is w_init); None: w_init",
            ge=0,
        )
        w_max: float = opt(3.0, "largest weight magnitude plasticity may reach", gt=0)
        exc_fraction: float = opt(0.8, "fraction of excitatory liquid neurons", ge=0, le=1)
        lam: float = opt(3.0, "connection length λ of C·exp(−(D/λ)²)", gt=0)
        conn: list[Annotated[float, Field(ge=0, le=1)]] = opt(
            (0.2, 0.1, 0.3, 0.05), "connection factor C for E→E, E→I, I→E, I→I",
            accepts="a list of four numbers in [0, 1]", min_length=4, max_length=4,
        )
        input_density: float = opt(0.15, "fraction of input→liquid pairs connected", ge=0, le=1)
        rate_max: float | None = opt(
            None, "divisor of the sum-normalised input (authors: its maximum over the data set); None: batch maximum",
            gt=0,
        )
        features: Literal["authors", "l1", "counts"] = opt(
            "authors", "readout features: counts ÷ L1 ÷ batch max (authors), counts ÷ L1, or raw counts"
        )
        seed: int = opt(0, "seed of the liquid's structure (positions, E/I, synapses, signs)", ge=0)
        input_seed: int | None = opt(
            None, "seed of the input spikes, redrawn identically at every forward pass; None: the global RNG", ge=0
        )
        readout_hidden: int = opt(0, "hidden units of a 2-layer readout (Linear-ReLU-Linear); 0: one Linear", ge=0)
        feature_batch: int = opt(
            250, "samples simulated together when a run generates the liquid's features (input spikes are drawn per batch)",
            ge=1,
        )

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, size: int = 1000, grid: Sequence[int] | None = None,
        duration: int = 250, tau_v: float = 64.0, tau_u: float = 1.0, threshold: float = 20.0, refractory: int = 2,
        input_current: float = 100.0, w_init: float = 3.0, w_max: float = 3.0, exc_fraction: float = 0.8,
        lam: float = 3.0, conn: Sequence[float] = (0.2, 0.1, 0.3, 0.05), input_density: float = 0.15,
        rate_max: float | None = None, features: str = "authors", seed: int = 0, input_seed: int | None = None,
        w_liquid: float | None = None, readout_hidden: int = 0, feature_batch: int = 250,
    ) -> None:
        opts = dict(
            size=size, grid=grid, duration=duration, tau_v=tau_v, tau_u=tau_u, threshold=threshold,
            refractory=refractory, input_current=input_current, w_init=w_init, w_max=w_max,
            exc_fraction=exc_fraction, lam=lam, conn=conn, input_density=input_density, rate_max=rate_max,
            features=features, seed=seed, input_seed=input_seed, w_liquid=w_liquid, readout_hidden=readout_hidden,
            feature_batch=feature_batch,
        )
        parsed = parse(self.Options, opts, "model 'lsm'")
        input_shape = check_shape(input_shape, "lsm")
        num_classes = check_classes(num_classes, "lsm")
        super().__init__()
        self.input_shape, self.num_classes = input_shape, num_classes
        self.opts = parsed
        grid = tuple(parsed.grid) if parsed.grid is not None else PRESETS[parsed.size]
        self.liquid = Liquid(
            math.prod(input_shape), grid, exc_fraction=parsed.exc_fraction, lam=parsed.lam, conn=parsed.conn,
            input_density=parsed.input_density, w_init=parsed.w_init, w_liquid=parsed.w_liquid, w_max=parsed.w_max,
            tau_v=parsed.tau_v,
            tau_u=parsed.tau_u, threshold=parsed.threshold, refractory=parsed.refractory,
            input_current=parsed.input_current, duration=parsed.duration, seed=parsed.seed,
        )
        self.liquid.input_seed = parsed.input_seed
        if parsed.readout_hidden:
            # a 2-layer readout (beyond the paper: for rules that need a hidden layer, e.g. feedback
            # alignment); default initialisation, since zero weights would leave the hidden layer dead
            h = parsed.readout_hidden
            self.readout: nn.Module = nn.Sequential(nn.Linear(self.liquid.n, h), nn.ReLU(), nn.Linear(h, num_classes))
        else:
            self.readout = nn.Linear(self.liquid.n, num_classes)
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    def encode(self, x: Tensor) -> Tensor:
        """Per-ms firing probability of every input neuron, (B, n_in)."""
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ConfigError(
                f"model 'lsm' was built for samples of shape {tuple(self.input_shape)}, got a batch of shape "
                f"{tuple(x.shape)}; give (batch, {', '.join(map(str, self.input_shape))})."
            )
        x = x.reshape(len(x), -1).float().clamp_min(0)
        total = x.sum(1, keepdim=True)
        r = torch.where(total > 0, x / total.clamp_min(1e-12), torch.zeros_like(x))
        scale = self.opts.rate_max if self.opts.rate_max is not None else float(r.max().clamp_min(1e-12))
        return (r / scale).clamp(0, 1)

    def features(self, counts: Tensor) -> Tensor:
        if self.opts.features == "counts":
            return counts
        f = counts / counts.sum(1, keepdim=True).clamp_min(1e-12)
        if self.opts.features == "authors":
            f = f / f.max().clamp_min(1e-12)
        return f

    def forward(self, x: Tensor) -> Tensor:
        counts = self.liquid(self.encode(x))
        return self.readout(self.features(counts))
