"""Plasticity of a spiking liquid: pair-based STDP (``stdp``) and astrocyte-modulated STDP
(``nalsm``), for the liquid of :mod:`beyondbp.models.lsm`.

Paper: "Increasing Liquid State Machine Performance with Edge-of-Chaos Dynamics Organized by
Astrocyte-modulated Plasticity" (Ivanov & Michmizos, NeurIPS 2021); official code
combra-lab/NALSM (``NALSM_STDP.py``, ``NALSM_ASTRO.py``, the phases in
``NALSM_CONSTRUCTOR_MNIST.py``).

Every synapse j→i of the liquid (from an input, excitatory or inhibitory neuron) learns online,
every ms, from spikes ``s`` (1 in the step a neuron spikes) and one trace per neuron:

    Δw_ij = λ⁺(j) · x_j · s_i  +  λ⁻(j) · s_j · x_i          (traces from before this step)
    x ← m · (x + a · s)                                          (a = 0.1, m ≈ e^{−1/10})

then ``w`` is clipped by synapse type (E [0, w_max], I [−w_max, 0], input ±w_max). ``λ⁺``
(post after pre) and ``λ⁻`` (pre after post) depend on the presynaptic population: from an
excitatory or input neuron ``λ⁺ = +η``, ``λ⁻ = −A``; from an inhibitory neuron ``λ⁺ = −A``,
``λ⁻ = +η`` (η = 0.15). The trace decay ``m`` is the authors' approximation of ``e^{−1/τ}``
(τ = 10): the value on a grid of 1000 steps in [0.01, 0.9999] whose τ-th power is nearest to
``e^{−1}``.

* ``stdp``: ``A = η`` (potentiation and depression equally strong), the paper's "LSM + STDP"
  baseline.
* ``nalsm``: ``A`` is the state of one astrocyte per sample, integrating the liquid's spikes
  against its input's every ms:

      A ← A + (w_A · (Σ liquid spikes − Σ input spikes) + b_A − A) / τ_A

  with ``A₀ = b_A = η``, ``τ_A = 100`` ms, ``w_A = 0.015`` (NALSM1000; 0.0075 for 8000). When
  the liquid fires more than its input, depression grows: the liquid settles near a branching
  factor of 1.

Two modes, as the authors' two phases:

* ``mode="transient"`` (default; their feature generation): every sample starts from the
  liquid's stored weights (``W_INI``), its changes last only for its own presentation, and ``η``,
  ``A``, ``w_A`` and ``b_A`` are multiplied by ``decay`` (0.99) every ms. Samples run batched.
* ``mode="persistent"`` (their liquid initialisation, 20 ms per image): samples run one after
  another, each starting from the weights the previous one left; the weights are written back
  to the liquid in training-mode forward passes; ``decay`` defaults to 1 (none); traces,
  astrocyte and rates restart with each sample.

The readout (``readout``, a Linear) is trained by the caller's optimizer on the cross-entropy of
its output, as the run loop does for any rule; the liquid gets no error signal. The plasticity
runs inside the model's forward pass, so ``predict`` and evaluation see the same liquid as
training (as in the authors' feature generation); ``learner.predict`` draws the input spikes
from a fixed seed (``predict_seed``) so predictions are repeatable.

In a run (``beyondbp train`` / ``compare`` / a study, :mod:`beyondbp.training.liquid`) these
rules drive the authors' two phases: ``init_images`` (50,000) images of ``init_duration`` (20) ms
in persistent mode give ``W_INI``, then every image's features come from ``W_INI`` with this
rule's transient plasticity; the readout is trained on the cached features by ``readout_rule``
(``backprop``; e.g. ``fa`` with the model's ``readout_hidden``) with ``readout_options``.

``estimate`` reports, for ``liquid.weight``, minus the mean over the batch of the change one
presentation makes (gradient sign convention), and for the readout its cross-entropy gradient
on the liquid's features. These rules attach only to a model holding a liquid (``lsm``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar, Iterator, Literal

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModuleError
from .base import Batch, Learner, LossFn, Options, Rule, check_batch, opt

__all__ = ["NALSM", "STDP", "authors_trace_decay"]


def authors_trace_decay(tau: int) -> float:
    """The per-ms trace multiplier the authors use for time constant ``tau`` (ms): the value on
    ``linspace(0.01, 0.9999, 1000)`` whose ``tau``-th power is nearest to ``e^{−1}``."""
    grid = torch.linspace(0.01, 0.9999, 1000, dtype=torch.float64)
    return float(grid[torch.argmin((grid ** int(tau) - math.exp(-1.0)).abs())])


def _clamp(x: Tensor, lo: Tensor | None, hi: Tensor | None, wmax: float) -> Tensor:
    """``x.clamp_(lo, hi)`` in place, ``lo``/``hi`` None: ±``wmax``. Tensor bounds go through
    ``maximum`` then ``minimum`` (clamp's definition, the same numbers), which on the CPU is
    several times faster than ``clamp_`` with tensor bounds."""
    if lo is None or hi is None:
        return x.clamp_(-wmax, wmax)
    return torch.minimum(torch.maximum(x, lo, out=x), hi, out=x)


class Plasticity:
    """The per-ms update a rule installs on a liquid (``liquid.plasticity``)."""

    def __init__(self, rule: "STDP", liquid: nn.Module) -> None:
        self.rule = rule
        self.liquid = liquid
        self.persistent = rule.mode == "persistent"
        self.decay = rule.decay if rule.decay is not None else (1.0 if self.persistent else 0.99)
        self.m = rule.trace_decay if rule.trace_decay is not None else authors_trace_decay(rule.trace_tau)
        self.astro = isinstance(rule, NALSM)
        self.record: list[Tensor] | None = None  # per-presentation weight changes (estimate)

    def begin(self, state: Any) -> None:
        B, dev = state.batch, state.k.device
        liq = self.liquid
        self.inh = (liq.kind == 1).unsqueeze(0)  # (1, nnz) inhibitory presynaptic neuron
        n_tot = liq.n_in + liq.n
        self.x_full = torch.zeros(B, n_tot + 1, device=dev)  # + the dummy neuron of padded rows
        self.x = self.x_full[:, :n_tot]
        self._x_tmp = torch.empty_like(self.x_full)
        lo, hi = liq.clip_bounds()
        w = liq.weight.detach()
        # event-driven updates leave untouched synapses as they are: a dense step first when the
        # stored weights lie outside their bounds (the dense update clips every synapse)
        self.dense_steps = 0 if bool(((w >= lo) & (w <= hi)).all()) else 1
        # the per-sample rates in one array, updated together: η, A, w_A, b_A (columns as views)
        rates = torch.empty(B, 4, device=dev)
        self.eta, self.A, self.w_a, self.b_a = (rates[:, c:c + 1] for c in range(4))
        self._rates, self._neg_a = rates, torch.empty(B, 1, device=dev)
        self._sign = None
        # numbers of the per-ms updates as 0-d float32 tensors (the same results as Python numbers in
        # the CPU kernels, without a conversion in every call)
        self._c = {k: torch.tensor(float(v), device=dev) for k, v in dict(
            m=self.m, tau_astro=getattr(self.rule, "tau_astro", 1.0), decay=self.decay, one=1.0).items()}
        self.eta.fill_(self.rule.eta)
        if self.astro:
            a0 = self.rule.eta if self.rule.astro_init is None else self.rule.astro_init
            bias = self.rule.eta if self.rule.astro_bias is None else self.rule.astro_bias
            self.A.fill_(float(a0))
            self.w_a.fill_(self.rule.w_astro)
            self.b_a.fill_(float(bias))
        else:
            rates[:, 1:].zero_()  # A, w_A, b_A: unused
        self.w0 = state.w.clone() if self.record is not None else None

    def wants_events(self, state: Any) -> bool:
        """Whether this step's update runs on the spike rows (:meth:`events`) rather than densely."""
        return self.dense_steps == 0

    def update(self, state: Any, s: Tensor) -> None:
        """End of a step: the dense update if the step needs it, then traces, astrocyte and rates.
        With the event-driven kernels (``state.spikes``: this step's spikes as floats, with the
        dummy column) the same arithmetic runs on whole arrays in fewer calls: ``x + a·s`` as one
        ``add`` with ``alpha`` (``a·s`` is ``a`` or 0, exact, so a fused multiply-add rounds the
        same), the astrocyte's drive as a product with ±1 (a sum of integers, exact in any
        order), the four rates decayed together."""
        n_in = self.liquid.n_in
        A = self.A if self.astro else self.eta
        events = getattr(state, "full", None) is not None and getattr(state, "spikes", None) is not None
        if self.dense_steps > 0 or not events:
            self._dense(state, s.float(), A)
        # else: the liquid ran :meth:`events` on this step's spike rows (no spike: no weight changes,
        # the weights lie within their bounds)
        self.dense_steps = max(0, self.dense_steps - 1)
        if events:
            sf_full = state.spikes
            torch.add(self.x_full, sf_full, alpha=self.rule.trace_increment, out=self._x_tmp)
            torch.mul(self._x_tmp, self._c["m"], out=self.x_full)
        else:
            sf = s.float()
            self.x.copy_(self.m * (self.x + self.rule.trace_increment * sf))
        if self.astro:
            if events:
                if self._sign is None:
                    sign = torch.zeros(sf_full.shape[1], device=sf_full.device)
                    sign[:n_in], sign[n_in:-1] = -1.0, 1.0
                    self._sign = sign
                drive = torch.mv(sf_full, self._sign).unsqueeze(1)  # Σ liquid − Σ input spikes
            else:
                drive = sf[:, n_in:].sum(1, keepdim=True) - sf[:, :n_in].sum(1, keepdim=True)
            self.A.add_((self.w_a * drive + self.b_a - self.A) / self._c["tau_astro"])
        if self.decay != 1.0:
            self._rates.mul_(self._c["decay"])
            self.eta.clamp_(0.0, 1e4)

    def _dense(self, state: Any, sf: Tensor, A: Tensor) -> None:
        """Every synapse every step (the reference the event-driven update must equal)."""
        liq = self.liquid
        lr_post = torch.where(self.inh, -A, self.eta)  # λ⁺: post spike × pre trace
        lr_pre = torch.where(self.inh, self.eta, -A)  # λ⁻: pre spike × post trace
        post = liq.post + liq.n_in
        dw = lr_post * self.x[:, liq.pre] * sf[:, post] + lr_pre * sf[:, liq.pre] * self.x[:, post]
        state.apply_dw(dw)

    def events(self, state: Any, rows: Any) -> None:
        """This step's update of the synapses whose pre- or postsynaptic neuron spiked (the others'
        change is exactly 0), for the samples of ``rows`` (called by the liquid during the step,
        before the membrane update; the traces and rates are this step's, as in :meth:`update`):
        the outgoing rows of spiking neurons get both terms of the dense update, the incoming rows
        of spiking liquid neurons the potentiation term, except where the presynaptic neuron
        spiked too (already done in its outgoing row). Same arithmetic as :meth:`_dense`, element
        by element; the drive changes go to ``state.pending`` with the kernel after the step
        (``state.k_next``), the incoming rows' per neuron as two sums (synapses from inputs, then
        from liquid neurons)."""
        tab, c, wmax = rows.tables, self._c, self.liquid.w_max
        wv, xv, sv, dv = state.full[0].view(-1), self.x_full.view(-1), state.spikes.view(-1), state.pending.view(-1)
        xcol, kv = self.x_full.view(-1, 1), state.k_next.view(-1)
        kcol = kv.view(-1, 1)
        eta, neg_a = self.eta, torch.neg(self.A if self.astro else self.eta, out=self._neg_a)
        one = self.x_full.shape[0] == 1  # one sample: (1, 1) rates broadcast over the rows
        lr_cols = None
        for b, jx, wf, xf, w_old, flat, liquid in rows.out:
            xf1 = xf.view(-1)
            if liquid:  # λ⁺, λ⁻ and the bounds by the presynaptic neuron's type
                if lr_cols is None:
                    inh = tab["col_inh"]
                    lr_cols = (torch.where(inh, neg_a, eta).view(-1, 1), torch.where(inh, eta, neg_a).view(-1, 1))
                lr_post, lr_pre = lr_cols[0].index_select(0, flat), lr_cols[1].index_select(0, flat)
                lo, hi = tab["col_lo"].index_select(0, jx), tab["col_hi"].index_select(0, jx)
            else:  # input presynaptic neurons: excitatory rule, bounds ±w_max
                lr_post, lr_pre = (eta, neg_a) if one else (eta.index_select(0, b), neg_a.index_select(0, b))
                lo = hi = None
            # the dense update's two terms, (λ⁺ x_j) s_i + (λ⁻ s_j) x_i with s_j = 1, in place on the
            # gathered rows (products and sums are commutative in floating point: the same numbers)
            new = sv.index_select(0, xf1).view(xf.shape).mul_(lr_post * xcol.index_select(0, flat))
            new.add_(xv.index_select(0, xf1).view(xf.shape).mul_(lr_pre)).add_(w_old)
            _clamp(new, lo, hi, wmax)
            wv.scatter_(0, wf.view(-1), new.view(-1))
            dv.scatter_add_(0, xf1, new.sub_(w_old).mul_(kcol.index_select(0, flat)).view(-1))
        if rows.inc:
            x_quiet = torch.sub(c["one"], state.spikes).mul_(self.x_full).view(-1)  # 0 where the presynaptic neuron spiked
            split = tab["inc_split"]
            for b, i, wf, xf, target in rows.inc:
                xf1 = xf.view(-1)
                w_old = wv.index_select(0, wf.view(-1)).view(wf.shape)
                eta_b, neg_b = (eta, neg_a) if one else (eta.index_select(0, b), neg_a.index_select(0, b))
                new = x_quiet.index_select(0, xf1).view(xf.shape)
                from_in, from_liq = new[:, :split], new[:, split:]
                from_in.mul_(eta_b)  # from inputs: λ⁺ = η, bounds ±w_max
                from_liq.mul_(torch.where(tab["inc_liq_inh"].index_select(0, i), neg_b, eta_b))
                new.add_(w_old)
                _clamp(from_in, None, None, wmax)  # the padding's bounds do not matter: its weight and trace are 0
                _clamp(from_liq, tab["inc_liq_lo"].index_select(0, i), tab["inc_liq_hi"].index_select(0, i), wmax)
                wv.scatter_(0, wf.view(-1), new.view(-1))
                change = new.sub_(w_old).mul_(kv.index_select(0, xf1).view(xf.shape))
                dv.scatter_add_(0, target, change[:, :split].sum(1))
                dv.scatter_add_(0, target, change[:, split:].sum(1))

    def end(self, state: Any) -> None:
        if self.record is not None:
            self.record.append(state.w - self.w0)


class STDPLearner(Learner):
    def __init__(self, rule: "STDP", model: nn.Module, loss_fn: LossFn, liquid_path: str) -> None:
        super().__init__(rule, model, loss_fn)
        self.liquid_path = liquid_path
        self.liquid = model.get_submodule(liquid_path)
        self.readout_path = "readout"
        self.plasticity = Plasticity(rule, self.liquid)
        self.liquid.plasticity = self.plasticity

    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        if not self._active:
            with self._no_plasticity():
                return super().step(batch, optimizer)
        return super().step(batch, optimizer)

    def predict(self, x: Tensor) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.rule.predict_seed)
            return super().predict(x)

    @contextlib.contextmanager
    def _no_plasticity(self) -> Iterator[None]:
        self.liquid.plasticity = None
        try:
            yield
        finally:
            self.liquid.plasticity = self.plasticity

    @contextlib.contextmanager
    def _kept_weights(self) -> Iterator[None]:
        saved = self.liquid.weight.detach().clone()
        try:
            yield
        finally:
            with torch.no_grad():
                self.liquid.weight.copy_(saved)

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        x, y = check_batch(batch)
        with self._kept_weights():
            self.plasticity.record = []
            try:
                self.liquid.simulate(self.model.encode(x), write_back=False)
                changes = torch.cat(self.plasticity.record)
            finally:
                self.plasticity.record = None
            out = {f"{self.liquid_path}.weight": -changes.mean(0)}
            out.update({k: v for k, v in self._gradients(batch, use_rule=True).items() if not k.startswith(self.liquid_path)})
        return out

    def _backprop_gradients(self, batch: Batch) -> dict[str, Tensor]:
        with self._kept_weights(), self._no_plasticity():
            return self._gradients(batch, use_rule=False)

    def _gradients(self, batch: Batch, use_rule: bool) -> dict[str, Tensor]:
        with self._kept_weights():
            return super()._gradients(batch, use_rule)

    def _diagnostics(self, batch: Batch) -> dict[str, float]:
        return {}

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.get_submodule(self.readout_path).parameters() if p.requires_grad]

    def trained_layers(self) -> dict[str, nn.Module]:
        return {self.liquid_path: self.liquid, self.readout_path: self.model.get_submodule(self.readout_path)}

    def _restore(self) -> None:
        self.liquid.plasticity = None


def _is_liquid(module: nn.Module) -> bool:
    """A spiking liquid (``beyondbp.models.lsm.Liquid`` declares ``is_spiking_liquid``)."""
    return bool(getattr(type(module), "is_spiking_liquid", False))


class STDP(Rule):
    name = "stdp"
    family: ClassVar[str] = "local"
    summary = "pair-based STDP with traces on a spiking liquid's synapses; linear readout trained on the label loss"
    paper = (
        "Increasing Liquid State Machine Performance with Edge-of-Chaos Dynamics Organized by "
        "Astrocyte-modulated Plasticity (Ivanov & Michmizos, NeurIPS 2021): the LSM + STDP baseline"
    )
    plain_backward = False  # the plasticity changes the forward pass
    supported: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear,)
    #: A run with this rule generates the liquid's features with its plasticity and trains the
    #: readout with ``readout_rule`` (:mod:`beyondbp.training.liquid`).
    trains_liquid: ClassVar[bool] = True

    class Options(Options):
        eta: float = opt(0.15, "learning rate η (potentiation; also depression for stdp)", ge=0)
        trace_tau: int = opt(10, "trace time constant τ in ms", ge=1)
        trace_increment: float = opt(0.1, "trace increment a per spike", ge=0)
        trace_decay: float | None = opt(
            None, "per-ms trace multiplier m; None: the authors' approximation of e^(-1/τ)", gt=0, le=1
        )
        mode: Literal["transient", "persistent"] = opt(
            "transient", "transient: per-sample changes from the stored weights (features); persistent: kept (initialisation)"
        )
        decay: float | None = opt(
            None, "per-ms multiplier of the plasticity rates; None: 0.99 transient, 1 persistent", gt=0, le=1
        )
        predict_seed: int = opt(0, "seed of the input spikes drawn by learner.predict", ge=0)
        init_images: int = opt(
            50000, "runs: training images of the plastic liquid initialisation (phase 1; 0: none)", ge=0
        )
        init_duration: int = opt(20, "runs: presentation time per image of the liquid initialisation in ms", ge=1)
        readout_rule: str = opt("backprop", "runs: the rule that trains the readout on the liquid's features")
        readout_options: dict[str, Any] = opt({}, "runs: options of readout_rule")

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        found = [p for p, m in model.named_modules() if _is_liquid(m)]
        for path, module in model.named_modules():
            if _is_liquid(module) or isinstance(module, nn.Linear) or any(path.startswith(f + ".") for f in found):
                continue
            own = [n for n, _ in module.named_parameters(recurse=False)]
            if own:
                raise UnsupportedModuleError(
                    f"rule '{self.name}' cannot train module '{path or '<root>'}' of type {type(module).__name__} "
                    f"(it owns parameters {own}); it trains a spiking liquid's synapses and a linear readout only."
                )
        if len(found) != 1 or not isinstance(getattr(model, "readout", None), nn.Module):
            raise UnsupportedModuleError(
                f"rule '{self.name}' trains the synapses of a spiking liquid (model 'lsm') and this "
                f"{type(model).__name__} has {'no' if not found else len(found)} liquid and a 'readout' module "
                f"{'present' if isinstance(getattr(model, 'readout', None), nn.Module) else 'missing'}; "
                "use model lsm or another rule."
            )

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        path = next(p for p, m in model.named_modules() if _is_liquid(m))
        return STDPLearner(self, model, loss_fn, path)

    @classmethod
    def example_model(cls, input_shape: tuple[int, ...], num_classes: int) -> nn.Module | None:
        """A small liquid (5×5×4, 50 ms, input spikes from a fixed seed) for the contract checks."""
        from ..models.lsm import LSM

        return LSM(tuple(input_shape), num_classes, grid=[5, 5, 4], duration=50, w_init=1.0, input_seed=0)


class NALSM(STDP):
    name = "nalsm"
    summary = (
        "astrocyte-modulated STDP on a spiking liquid (depression set by a global astrocyte integrating "
        "liquid and input activity); linear readout trained on the label loss"
    )
    paper = (
        "Increasing Liquid State Machine Performance with Edge-of-Chaos Dynamics Organized by "
        "Astrocyte-modulated Plasticity (Ivanov & Michmizos, NeurIPS 2021)"
    )

    class Options(STDP.Options):
        w_astro: float = opt(0.015, "astrocyte weight w_A of (liquid − input) spikes (0.0075 for 8000 neurons)", ge=0)
        tau_astro: float = opt(100.0, "astrocyte time constant τ_A in ms", gt=0)
        astro_init: float | None = opt(None, "initial astrocyte state A₀; None: η", ge=0)
        astro_bias: float | None = opt(None, "astrocyte bias b_A; None: η", ge=0)
