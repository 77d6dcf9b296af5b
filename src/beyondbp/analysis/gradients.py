"""Gradient signal-to-noise ratio per layer: how consistent a rule's update is across minibatches.

For one model state (no step is taken) and minibatches ``b = 1 … n`` of equal size, let ``g_b`` be
a layer's weight update on minibatch ``b`` (flattened, float64) and ``ḡ = (1/n) Σ_b g_b`` their
mean. The layer's gradient signal-to-noise ratio is

    SNR = ‖ḡ‖² / ((1/n) Σ_b ‖g_b − ḡ‖²),

the squared length of the mean update over the mean squared deviation from it (the total
variance, the trace of the covariance of ``g``, with the 1/n population normalisation). A large
SNR means each minibatch points the same way; SNR near 0 means the minibatch-to-minibatch noise
dominates the common direction. With n minibatches ``E‖ḡ‖²`` exceeds ``‖E g‖²`` by ``tr Σ / n``
while the noise term has expectation ``(n − 1)/n · tr Σ``, so a direction that is pure noise
(``E g = 0``) gives an SNR of about ``1/(n − 1)``, not 0: compare rules on the same number of
minibatches. Gradient noise shrinks like 1/batch size, so every minibatch must have the same size.

:func:`gradient_snr` computes it for the rule's update direction (:meth:`Learner.estimate`:
what the rule would hand its optimizer) and for backprop's gradient of the same loss
(:meth:`Learner.backprop_gradients`) on the same minibatches and the same model state, and the
ratio rule / backprop. It is the quantity behind the "gradient noise scale" of McCandlish,
Kaplan, Amodei and the OpenAI Dota team, "An Empirical Model of Large-Batch Training" (2018):
their simple noise scale ``B_simple = tr Σ₁ / ‖G‖²`` (Σ₁ the per-example covariance, G the true
gradient) relates to this per-minibatch SNR as ``SNR ≈ batch size / B_simple``. Here it is
computed per layer and for every beyondbp rule's update next to backprop's.

Randomness. Consecutive minibatches draw from the random number streams as consecutive training
steps would: each minibatch gets its own dropout masks (global torch RNG) and, for rules that
redraw something per minibatch (brSF's feedback magnitudes), its own draw from the rule's
generators, so the rule's own randomness counts as update noise. Backprop's gradient on
minibatch ``b`` is computed from the same global RNG state as the rule's update on ``b`` (the
same dropout masks where the forward passes are the same) and does not advance any stream.
Every minibatch is measured on the same model state: buffers (BatchNorm running statistics,
rule tensors), ``.grad`` and module modes are put back after each minibatch's computation.
Afterwards the weights, buffers, ``.grad`` of every parameter, module modes, the global torch
RNG (CPU and the model's CUDA devices), the global NumPy and Python ``random`` states and the
rule's generators are exactly as before (measured as :meth:`Learner.measuring` does; the
per-minibatch work calls the learner's ``_estimate`` / ``_backprop_gradients`` so that the
streams can advance between minibatches inside one outer restore).

Edge cases (documented behaviour, all tested):

* fewer than 2 minibatches, a minibatch that is not an (inputs, targets) pair of tensors with
  at least one example, or minibatches of different sizes: :class:`ConfigError`;
* zero noise (every minibatch gives exactly the same update, e.g. the same minibatch repeated):
  SNR = ``math.inf`` when the mean update is non-zero and ``math.nan`` when every update is
  exactly zero; the ratio follows float division, with ``inf/inf``, ``0/0`` and anything with a
  nan giving ``nan``, ``x/0`` giving ``inf`` for ``x > 0``. These are Python floats;
  :func:`beyondbp.jsonable.plain` writes them as ``null`` (JSON holds only finite numbers), and
  :func:`snr_table` prints them as ``inf`` / ``nan``;
* the layers measured by default are the weights (``"<path>.weight"``, the keys of
  :meth:`Learner.estimate`) of :meth:`Learner.trained_layers`, or, for a learner that names no
  trained layers (backprop), of every Linear/Conv layer of the model. A default layer that the
  rule's update or backprop's gradient lacks on some minibatch is left out and listed under
  ``"skipped"`` with the reason; a layer asked for by name in ``layers`` that is missing, or
  unknown, is a :class:`ConfigError`;
* every registered rule computes an update estimate; a learner whose ``_estimate`` raises
  ``NotImplementedError`` gives a :class:`ConfigError` naming the rule.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..rules.base import WEIGHT_LAYERS, Learner

__all__ = ["gradient_snr", "snr", "snr_ratio", "snr_table"]


def snr(updates: Sequence[Tensor]) -> float:
    """``‖ḡ‖² / ((1/n) Σ_b ‖g_b − ḡ‖²)`` of the updates ``g_b`` (any equal shapes; computed in
    float64), with ``inf`` for zero noise and a non-zero mean and ``nan`` when all are zero."""
    if len(updates) < 2:
        raise ConfigError(f"the gradient signal-to-noise ratio needs at least 2 updates, got {len(updates)}")
    shape = tuple(updates[0].shape)
    if any(tuple(g.shape) != shape for g in updates):
        raise ConfigError("the gradient signal-to-noise ratio needs updates of one shape")
    stats = _Moments()
    for g in updates:
        stats.add(g)
    return stats.snr()


def snr_ratio(rule: float, backprop: float) -> float:
    """``rule / backprop`` as float division, with ``nan`` for ``inf/inf``, ``0/0`` or a nan and
    ``inf`` for ``x/0`` with ``x > 0``."""
    if math.isnan(rule) or math.isnan(backprop) or (math.isinf(rule) and math.isinf(backprop)):
        return math.nan
    if backprop == 0.0:
        return math.inf if rule > 0 else math.nan
    return rule / backprop


class _Moments:
    """Running mean and summed squared deviations (Welford), elementwise in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, g: Tensor) -> None:
        g = g.detach().to(device="cpu", dtype=torch.float64).flatten()
        self.n += 1
        if self.mean is None:
            self.mean = g.clone()
            self.m2 = torch.zeros_like(g)
            return
        delta = g - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (g - self.mean)

    def snr(self) -> float:
        assert self.mean is not None and self.m2 is not None
        signal = float(self.mean.dot(self.mean))
        noise = float(self.m2.sum()) / self.n
        if noise == 0.0:
            return math.inf if signal > 0 else math.nan
        return signal / noise


def _check_batches(batches: Any) -> int:
    """The common minibatch size, or a ConfigError."""
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence):
        raise ConfigError(
            f"batches must be a list of (inputs, targets) minibatches, got {type(batches).__name__}"
        )
    if len(batches) < 2:
        raise ConfigError(
            f"the gradient signal-to-noise ratio needs at least 2 minibatches, got {len(batches)}"
        )
    sizes = []
    for i, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, Tensor) for t in batch)):
            raise ConfigError(f"minibatch {i} is not a pair (inputs, targets) of tensors")
        x, y = batch
        if x.dim() == 0 or x.shape[0] < 1 or y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise ConfigError(
                f"minibatch {i} must hold at least one example with as many targets as inputs "
                f"(got inputs of shape {tuple(x.shape)} and targets of shape {tuple(y.shape)})"
            )
        sizes.append(int(x.shape[0]))
    if len(set(sizes)) > 1:
        raise ConfigError(
            f"every minibatch must have the same size (gradient noise scales with it), got sizes "
            f"{sorted(set(sizes))}; drop the partial last minibatch"
        )
    return sizes[0]


def _weight_key(path: str) -> str:
    return f"{path}.weight" if path else "weight"


def _default_layers(learner: Learner) -> list[str]:
    trained = learner.trained_layers()
    if trained:
        return [_weight_key(path) for path in trained]
    return [_weight_key(path) for path, m in learner.model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def _devices(model: nn.Module) -> list[int]:
    tensors = list(model.parameters()) + list(model.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})


def _rng_state(devices: list[int]) -> tuple[Tensor, list[Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple[Tensor, list[Tensor]], devices: list[int]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for d, s in zip(devices, cuda):
        torch.cuda.set_rng_state(s, d)


@contextlib.contextmanager
def _model_kept(model: nn.Module) -> Iterator[None]:
    """Restore ``.grad``, buffers (in place) and module modes on exit; the RNG streams are left
    to run on (the outer :meth:`Learner.measuring` restores them)."""
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def _host_rng_kept() -> Iterator[None]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def gradient_snr(learner: Learner, batches: Sequence[Any], layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-layer gradient signal-to-noise ratio of the rule's update and of backprop's gradient.

    ``learner``: an attached :class:`Learner` in its current state (no step is taken; its
    model's train/eval mode is used as is). ``batches``: at least 2 minibatches ``(inputs,
    targets)`` of one size, on the model's device. ``layers``: weight names as
    :meth:`Learner.estimate` keys them (``"net.0.weight"``; any parameter name of the model,
    e.g. a bias, may be asked for); default: every trained layer's weight (see the module
    docstring, also for inf/nan and skipped layers).

    Returns ``{"layers": {name: {"rule": snr, "backprop": snr, "ratio": rule / backprop}},
    "batches": n, "batch_size": b, "skipped": {name: reason}}``, layers in model order (or as
    listed in ``layers``).
    """
    if not isinstance(learner, Learner):
        raise ConfigError(f"gradient_snr expects an attached beyondbp Learner, got {type(learner).__name__}")
    learner._check_live()
    batch_size = _check_batches(batches)
    wanted = _default_layers(learner)
    explicit = layers is not None
    if explicit:
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise ConfigError("layers must be a non-empty list of weight names such as 'net.0.weight'")
        known = set(wanted) | {n for n, _ in learner.model.named_parameters()}
        unknown = [n for n in layers if n not in known]
        if unknown:
            raise ConfigError(
                f"unknown layer weight(s) {unknown}; this learner's trained layer weights are {wanted}"
            )
        wanted = list(dict.fromkeys(layers))

    rule_moments = {name: _Moments() for name in wanted}
    bp_moments = {name: _Moments() for name in wanted}
    missing: dict[str, str] = {}
    model = learner.model
    devices = _devices(model)
    gens = learner.generators()
    with _host_rng_kept(), learner.measuring():
        for i, batch in enumerate(batches):
            batch = (batch[0], batch[1])
            start = _rng_state(devices)
            with _model_kept(model):
                try:
                    rule_g = learner._estimate(batch)
                except NotImplementedError:
                    raise ConfigError(
                        f"rule '{learner.rule.name}' gives no update estimate, so its gradient "
                        "signal-to-noise ratio cannot be measured"
                    ) from None
            after = _rng_state(devices)
            after_gens = [g.get_state() for g in gens]
            _set_rng_state(start, devices)
            with _model_kept(model):
                bp_g = learner._backprop_gradients(batch)
            _set_rng_state(after, devices)
            for g, state in zip(gens, after_gens):
                g.set_state(state)
            for name in wanted:
                if name in missing:
                    continue
                if name not in rule_g:
                    missing[name] = f"the rule's update has no entry for it on minibatch {i}"
                elif name not in bp_g:
                    missing[name] = f"backprop's gradient has no entry for it on minibatch {i}"
                else:
                    rule_moments[name].add(rule_g[name])
                    bp_moments[name].add(bp_g[name])
    if explicit and missing:
        name = next(iter(missing))
        raise ConfigError(f"layer weight '{name}' cannot be measured: {missing[name]}")
    out: dict[str, dict[str, float]] = {}
    for name in wanted:
        if name in missing:
            continue
        r, b = rule_moments[name].snr(), bp_moments[name].snr()
        out[name] = {"rule": r, "backprop": b, "ratio": snr_ratio(r, b)}
    return {"layers": out, "batches": len(batches), "batch_size": batch_size, "skipped": missing}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def snr_table(rows: Any, title: str | None = None) -> str:
    """A Markdown table of :func:`gradient_snr` results: columns layer, rule SNR, backprop SNR
    and ratio (3 significant digits; ``inf``/``nan`` as such, ``–`` for a missing number, e.g.
    ``None`` read back from JSON).

    ``rows``: one :func:`gradient_snr` result, or a mapping ``{label: result}`` (e.g. network id
    or rule name), which adds a first column with the label."""
    if not isinstance(rows, dict):
        raise ConfigError("snr_table expects a gradient_snr result or a mapping {label: gradient_snr result}")
    labelled = "layers" not in rows
    results = rows if labelled else {"": rows}
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    head = ["layer", "rule SNR", "backprop SNR", "ratio"]
    if labelled:
        head = ["network"] + head
    lines.append("| " + " | ".join(head) + " |")
    lines.append("| " + " | ".join(["---"] * (len(head) - 3) + ["---:"] * 3) + " |")
    for label, result in results.items():
        if not isinstance(result, dict) or not isinstance(result.get("layers"), dict):
            raise ConfigError(f"snr_table: entry {label!r} is not a gradient_snr result (no 'layers' mapping)")
        for layer, v in result["layers"].items():
            cells = [str(layer), _fmt(v.get("rule")), _fmt(v.get("backprop")), _fmt(v.get("ratio"))]
            if labelled:
                cells = [str(label)] + cells
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
