"""SoftHebb: soft winner-take-all Hebbian layers, trained without labels or feedback.

Paper: "Hebbian Deep Learning Without Feedback" (Journé, Garcia Rodriguez, Guo, Moraitis; ICLR
2023). Official code: NeuromorphicComputing/SoftHebb (``demo.py``, ``hebbconv.py``).

The network is split in two. Every weight layer except the last one the forward pass runs is a
*Hebbian layer*; that last one is a linear *classifier*. No error signal ever reaches a Hebbian
layer.

Hebbian layer (weights ``W``, one row ``W_i`` per unit; for a convolution, one kernel per output
channel and one competition per output position):

    u = W x                                      (no bias)
    s = softmax(u / τ)  across the units          (soft winner-take-all; τ⁻¹ = ``t_invert``)
    y_i = +s_i if i is the winner (arg-max of u), −s_i otherwise   (anti-Hebbian losers)
    ΔW_i = Σ_samples,positions  y_i (x − u_i W_i)  =  Σ y_i x  −  (Σ y_i u_i) W_i

``ΔW`` is then divided by its largest absolute entry (over the whole layer), and every unit moves
with its own norm-dependent learning rate

    η_i = η₀ · |‖W_i‖₂ − 1|^p           W_i ← W_i + η_i ΔW_i / max|ΔW|

so a unit's learning slows down as its weight vector approaches the unit sphere, the fixed point
of the rule (``W_i·ΔW_i = (Σ y_i u_i)(1 − ‖W_i‖²)``). The learning rate is computed from the
weights before the update. For a convolution, ``x`` is the (padded) input patch each output
position sees, and the sums run over the batch and all output positions.

Training (as in the paper): in the *Hebbian phase* every training step updates *all* Hebbian
layers at once from the inputs of the batch (labels are not used for learning) with the rule
above, under ``torch.no_grad``. Then the Hebbian layers are frozen (normalisation layers switch to
their running statistics) and training steps train the classifier alone by cross-entropy with the
caller's optimizer (the authors: Adam, lr 1e-3). The paper trained layers greedily one after
another; its README reports that training all layers at once, as here, does as well.

A training step is either

* ``learner.step(batch, optimizer)`` (the run loop uses it): in the Hebbian phase it makes the
  Hebbian step, and also a classifier step unless the loop reports its epochs (see below);
  after it, one classifier step; or
* one forward pass of the model in training mode with autograd on, in the user's own loop
  (``loss = loss_fn(model(x), y); loss.backward(); optimizer.step()``): the forward hooks the
  rule installs make the Hebbian step during that forward pass (the same update as
  ``learner.step``, bit for bit, applied when the forward pass ends), or, in the classifier
  phase, run the normalisation layers on their running statistics. The user's optimizer, built
  from :meth:`optimizer_parameters`, trains the classifier in both phases here (in the Hebbian
  phase it follows the changing features). Forward passes in eval mode, under
  ``torch.no_grad`` or made by the learner itself (``predict``, ``estimate``, ``diagnostics``)
  are not steps.

Which loop: the paper's protocol or the plain-loop protocol.

* A loop that *reports its epochs* — it calls :meth:`on_epoch_start` before each epoch and
  :meth:`on_epoch_end` after it, as the run loop (``beyondbp train``, ``compare``, studies)
  does — gets the paper's protocol: ``learner.step`` in the Hebbian phase makes the Hebbian
  step only and leaves the classifier and the optimizer alone, and the phase lasts
  ``hebbian_epochs`` epochs (default 1; a run therefore needs more epochs than that: e.g.
  ``epochs = 1 + classifier epochs``), or ``hebbian_steps`` steps when given.
* Any other loop — the README's ``for x, y in loader: learner.step((x, y), opt)`` over epochs,
  or a user's own ``loss.backward(); opt.step()`` loop, neither of which need report epochs —
  gets the plain-loop protocol, so that it learns whatever its length: every Hebbian step
  also trains the classifier with the optimizer (``learner.step`` makes the same update, bit
  for bit, as a plain-loop step), and the phase ends after ``hebbian_steps`` Hebbian steps
  when given, otherwise after ``PLAIN_LOOP_HEBBIAN_STEPS`` = 1000 of them (about one epoch of
  MNIST or CIFAR-10 at batch size 64; the authors use one unsupervised epoch) or at the
  ``hebbian_epochs``-th :meth:`on_epoch_end`, whichever comes first. ``plain_steps_done``
  counts these steps.

Attaching to any model: the rule finds the ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers
in the order the forward pass runs them, read from a ``torch.fx`` trace of the model (no input
is needed and no layer runs); all but the last are Hebbian (per-layer options follow that
order), the last is the classifier. A model fx cannot trace (e.g. Python control flow on tensor
values) is taken in registration order. Every forward pass then checks that the layers ran once
each in exactly that order and raises a ``ConfigError`` otherwise (a layer that the trace shows
running twice is refused at attach). Bias terms of Hebbian layers are set to zero by the first
Hebbian step and stay zero (SoftHebb's ``u`` has none; attaching alone changes no parameter).
Every parameter that is not the classifier's — Hebbian weights, BatchNorm affine parameters —
gets ``requires_grad=False`` while attached (restored by ``detach``), so the label loss cannot
reach it; :meth:`optimizer_parameters` returns only the classifier's trainable parameters.
Whatever sits between layers (activations, pooling, BatchNorm) is the model's: the presets in
``beyondbp.models.softhebb`` use the paper's BN → Hebbian layer → triangle → pool blocks;
normalisation layers keep their affine parameters as they are. Other layer types with
parameters are refused by path and type, and so is any other module with a trainable parameter
(``nn.Embedding``, ``nn.PReLU``, ``passthrough`` types): nothing would train it, since no error
reaches the layers before the classifier. Freeze such a module (``requires_grad=False``) to keep
it as it is.

Layers the user froze: a Hebbian layer whose weight has ``requires_grad=False`` at attach is left
bit-identical (no Hebbian update, no bias zeroing, no rescale; it is left out of
:meth:`estimate` and :meth:`trained_layers`), and so is every other parameter with
``requires_grad=False`` (a frozen bias of a learning Hebbian layer keeps its value; frozen
classifier parameters are left out of :meth:`optimizer_parameters`). A deep copy of an attached
model is refused (its hooks belong to the learner).

Metrics of :meth:`step`: ``loss`` (in the Hebbian phase the cross-entropy of the current,
untrained classifier, reported only), ``hebbian_phase`` (1 or 0), and in the Hebbian phase
``norm_dev/<layer>`` (mean ``|‖W_i‖ − 1|`` after the step) and ``winners/<layer>`` (fraction
of units that won at least one competition in the batch). Inside ``learner.disabled()`` a step
is plain backprop through every parameter the user left trainable.

Defaults. ``t_invert`` and ``lr`` take one number for every Hebbian layer or one per layer. When
left at ``None`` they are the authors' values for the paper's architectures
(:data:`PAPER_SETTINGS`, by model class: ``SoftHebbMLP``, the MNIST MLP, τ⁻¹ = 12, η₀ = 0.045;
``SoftHebbConv``, the CIFAR-10 conv blocks, τ⁻¹ = 1, 0.65, 0.25 and η₀ = 0.08, 0.005, 0.01),
otherwise ``t_invert=0.5`` and ``lr=0.01`` (our choice for models without the paper's BatchNorm
and triangle blocks, picked on ``digits``). The models know nothing of this rule: the settings
live here.
``lr_power`` p = 0.5 as in the demo (the MLP layer defaults in the authors' ``presets.json``
list 0.2; not used here). ``anti_hebbian=False`` gives the plain soft-WTA rule (``y = s``, their
"soft" layer) that the authors' MNIST preset uses; the default is the anti-Hebbian variant of
the paper and of their CIFAR-10 preset.

Initial scale. The rule learns only while norms are away from 1, and a sharp competition needs
large pre-activations, so the authors start every unit at norm ≈ 25 (``W ~ N(0, (25/√fan_in)²)``).
``init_radius`` rescales every Hebbian unit's weight vector to that norm (direction kept) at the
first Hebbian step: ``"auto"`` takes the model's ``init_radius`` attribute (the norm its weights were drawn
at; presets: 25) or 10 for other models (PyTorch's default init puts norms near 0.58, where the soft competition is so
flat that the anti-Hebbian push silences almost every unit behind a ReLU); ``None`` keeps the
weights as they are.

What :meth:`estimate` means here: for a Hebbian weight, minus the change one Hebbian step on the
batch would make (``−η_i ΔW_i / max|ΔW|``), so ``W − estimate`` is the stepped weight (from the
second step on; the first step also applies the ``init_radius`` rescale, which ``estimate``
does not); it is not the gradient of any loss. For the classifier's parameters it is the
cross-entropy gradient on the frozen features. Both are returned whatever the phase, and
BatchNorm running statistics are left as they were.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Annotated, Any, ClassVar, Iterable, Iterator, Literal

import torch
import torch.fx
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError, UnsupportedModuleError
from ..plasticity.softhebb import (  # noqa: F401  (re-exported: the rule's equations)
    adaptive_lr,
    plasticity,
    scaled_update,
    soft_wta,
    soft_wta_with_winner,
    unit_norms,
    update_scale,
)
from .base import Batch, Learner, LossFn, Options, Rule, check_batch, opt, param_in_optimizer

#: Layer types a SoftHebb learner can train (Hebbian or classifier).
SOFTHEBB_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

#: Normalisation layers: left as they are (their affine parameters are not trained).
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)

GENERIC_T_INVERT = 0.5
GENERIC_LR = 0.01
GENERIC_INIT_RADIUS = 10.0
#: Hebbian steps of a loop that does not report its epochs (a plain ``loss.backward();
#: optimizer.step()`` loop, or ``learner.step`` without ``on_epoch_start``) after which the phase
#: switches when ``hebbian_steps`` is not given and no epoch end has ended it before.
PLAIN_LOOP_HEBBIAN_STEPS = 1000


# The rule's equations are pure functions of :mod:`beyondbp.plasticity.softhebb` (imported above).


#: A softhebb per-layer option: one positive number, one per Hebbian layer, or None.
PerLayer = Annotated[float, Field(gt=0)] | Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | None


#: The authors' per-layer settings for the paper's architectures (beyondbp's presets), by model
#: class name (the rule may know models; models do not know rules).
PAPER_SETTINGS: dict[str, dict[str, tuple[float, ...]]] = {
    "SoftHebbMLP": {"t_invert": (12.0,), "lr": (0.045,)},
    "SoftHebbConv": {"t_invert": (1.0, 0.65, 0.25), "lr": (0.08, 0.005, 0.01)},
}


def paper_settings(model: nn.Module) -> dict[str, tuple[float, ...]]:
    """The authors' ``t_invert`` / ``lr`` for ``model``'s architecture, or {} if it is not one
    of the paper's."""
    for cls in type(model).__mro__:
        if cls.__name__ in PAPER_SETTINGS:
            return PAPER_SETTINGS[cls.__name__]
    return {}


def _per_layer(value: Any, n: int, what: str, positive: bool = True) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        values = list(values)
    except TypeError:
        raise ConfigError(f"softhebb {what} must be a number or a list of numbers, got {value!r}") from None
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ConfigError(f"softhebb {what} must be a number or a list of numbers, got {value!r}")
    if any(not math.isfinite(v) or (v <= 0 if positive else v < 0) for v in values):
        raise ConfigError(f"softhebb {what} must be positive and finite, got {value!r}")
    if n >= 0 and len(values) not in (1, n):
        raise ConfigError(
            f"softhebb {what} has {len(values)} values but the model has {n} Hebbian layers; "
            "give one value or one per Hebbian layer"
        )
    if n > 0 and len(values) == 1:
        values = values * n
    return tuple(float(v) for v in values)


def _param_name(module_name: str, param: str) -> str:
    return f"{module_name}.{param}" if module_name else param


def _weight_layers_in_execution_order(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], str]:
    """The model's Linear/Conv layers in the order its forward pass runs them, and how that
    order was found: a ``torch.fx`` trace when the model can be traced (no input needed), the
    registration order otherwise (then checked against the first forward pass)."""
    registered = [(n, m) for n, m in model.named_modules() if isinstance(m, SOFTHEBB_LAYERS)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.fx.Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any model fx cannot trace falls back to registration order
        return registered, "the registration order; the model cannot be traced by torch.fx"
    modules = dict(model.named_modules())
    called = [
        str(node.target)
        for node in graph.nodes
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), SOFTHEBB_LAYERS)
    ]
    repeated = sorted({n for n in called if called.count(n) > 1})
    if repeated:
        raise ConfigError(
            f"softhebb cannot train layer '{repeated[0]}', which the forward pass runs "
            f"{called.count(repeated[0])} times; each weight layer must run once per forward pass"
        )
    return [(n, modules[n]) for n in called], "the execution order traced by torch.fx"


# ---------------------------------------------------------------------------------------------
# Learner
# ---------------------------------------------------------------------------------------------
class SoftHebbLearner(Learner):
    def __init__(self, rule: "SoftHebb", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.softhebb = rule
        layers, self._order_source = _weight_layers_in_execution_order(model)
        if len(layers) < 2:
            raise ConfigError(
                "softhebb needs at least two weight layers (Hebbian layers, then a classifier), "
                f"found {len(layers)}"
            )
        self.hebbian: dict[str, nn.Module] = dict(layers[:-1])
        self.classifier_name, self.classifier = layers[-1]
        self._layer_names = [name for name, _ in layers]
        n = len(self.hebbian)
        defaults = paper_settings(model)
        self.t_invert = (
            _per_layer(rule.t_invert, n, "t_invert")
            or _per_layer(defaults.get("t_invert"), n, "t_invert (model default)")
            or (GENERIC_T_INVERT,) * n
        )
        self.lr = (
            _per_layer(rule.lr, n, "lr")
            or _per_layer(defaults.get("lr"), n, "lr (model default)")
            or (GENERIC_LR,) * n
        )
        radius = rule.init_radius
        if radius == "auto":
            # the norm the model drew its weights at (a model fact, e.g. the presets' 25)
            radius = getattr(model, "init_radius", None) or GENERIC_INIT_RADIUS
            radius = _per_layer(radius, 1, "init_radius (the model's)")[0]
        self.init_radius: float | None = radius
        # Layers the user froze (weight.requires_grad=False) are left bit-identical.
        self.frozen = {name for name, m in self.hebbian.items() if not m.weight.requires_grad}
        self._classifier_trainable = [p for p in self.classifier.parameters() if p.requires_grad]
        self._classifier_params = {id(p) for p in self.classifier.parameters()}
        self._requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        for p in model.parameters():
            if id(p) not in self._classifier_params:
                p.requires_grad_(False)
        self._norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
        self._collect: dict[str, tuple[Tensor, Tensor]] | None = None  # name -> (ΔW, η_i / max|ΔW|)
        self._winners: dict[str, float] = {}
        self._ran: list[str] | None = None  # weight layers run by the current forward pass
        self._plain: tuple[str, list[bool]] | None = None  # the current forward is a plain-loop step
        self._own = 0  # > 0 while the learner runs the model itself
        self._order_checked = False  # a forward pass ran the layers in the order above
        self._unprepared: list[tuple[Tensor, Tensor]] = []  # parameters before the first step
        self._handles = [
            layer.register_forward_hook(self._make_hook(name)) for name, layer in self.hebbian.items()
        ]
        self._handles.append(self.classifier.register_forward_hook(self._make_hook(self.classifier_name)))
        self._handles.append(model.register_forward_pre_hook(self._before_forward))
        self._handles.append(model.register_forward_hook(self._after_forward, always_call=True))
        model.__deepcopy__ = self._refuse_copy
        self.epochs_done = 0
        self.hebbian_steps_done = 0
        self.plain_steps_done = 0  # Hebbian steps of a loop that does not report its epochs
        self.reports_epochs = False  # set by on_epoch_start: the paper's protocol (module docstring)

    # -- phase -----------------------------------------------------------------------------------
    @property
    def hebbian_phase(self) -> bool:
        """True while training updates the Hebbian layers (False: the classifier)."""
        rule = self.softhebb
        if rule.hebbian_steps is not None:
            return self.hebbian_steps_done < rule.hebbian_steps
        return self.epochs_done < rule.hebbian_epochs and self.plain_steps_done < PLAIN_LOOP_HEBBIAN_STEPS

    def on_epoch_start(self, epoch: int) -> None:
        """The loop reports its epochs: ``learner.step`` follows the paper's protocol (the
        classifier waits for the end of the Hebbian phase; see the module docstring)."""
        self.reports_epochs = True

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        was_hebbian = self.hebbian_phase
        self.epochs_done += 1
        out = {f"norm_dev/{name}": v for name, v in self.norm_deviation().items()}
        out["hebbian_phase"] = float(was_hebbian)
        return out

    def norm_deviation(self) -> dict[str, float]:
        """Mean ``|‖W_i‖ − 1|`` over the units of every Hebbian layer the rule trains."""
        return {
            n: float((unit_norms(m.weight.detach()) - 1).abs().mean())
            for n, m in self.hebbian.items()
            if n not in self.frozen
        }

    # -- hooks -----------------------------------------------------------------------------------
    def _make_hook(self, name: str):
        index = list(self.hebbian).index(name) if name in self.hebbian else -1
        learns = index >= 0 and name not in self.frozen

        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if self._ran is not None:
                self._ran.append(name)
            if self._collect is None or not learns or not args:
                return
            x, u, w = args[0].detach(), output.detach(), module.weight.detach()
            if isinstance(module, nn.Linear):  # units last: samples are all leading positions
                x, u = x.reshape(-1, x.shape[-1]), u.reshape(-1, u.shape[-1])
            if getattr(module, "bias", None) is not None:
                u = u - module.bias.detach().view(-1, *([1] * (u.dim() - 2)))
            y, winner = soft_wta_with_winner(u, self.t_invert[index], self.softhebb.anti_hebbian)
            delta = plasticity(module, x, u, y, w)
            self._collect[name] = (delta, update_scale(delta, w, self.lr[index], self.softhebb.lr_power))
            won = torch.zeros(u.shape[1], dtype=torch.bool, device=u.device)
            won[winner.flatten()] = True
            self._winners[name] = float(won.float().mean())

        return hook

    def _before_forward(self, module: nn.Module, args: tuple) -> None:
        """A forward pass of the whole model begins: record which weight layers run and, for a
        step of the user's own loop, start a Hebbian step or freeze the normalisation layers."""
        self._ran = []
        if self._own or not self._active or not module.training or not torch.is_grad_enabled():
            return
        if self.hebbian_phase:
            if self.hebbian_steps_done == 0:
                self._prepare_hebbian_layers()
            self._collect = {}
            self._plain = ("hebbian", [])
        else:
            self._plain = ("classifier", [m.training for m in self._norms])
            for m in self._norms:
                m.eval()

    def _after_forward(self, module: nn.Module, args: tuple, output: Any) -> None:
        """The forward pass ended (``output`` is None when it raised): check the layer order and
        finish a plain-loop step (apply the Hebbian update, or restore the normalisation modes)."""
        ran, self._ran = self._ran, None
        plain, self._plain = self._plain, None
        updates = None
        if plain is not None and plain[0] == "hebbian":
            updates, self._collect = self._collect, None
        elif plain is not None:
            for m, mode in zip(self._norms, plain[1]):
                m.train(mode)
        if output is None or ran is None:
            return
        if ran != self._layer_names:
            with torch.no_grad():  # leave the parameters as they were before this first step
                for t, saved in self._unprepared:
                    t.copy_(saved)
            self._unprepared = []
            repeated = next((n for n in ran if ran.count(n) > 1), None)
            if repeated is not None:  # a recurrent model: one call per time step (no list of them all)
                raise ConfigError(
                    f"softhebb cannot train layer '{repeated}', which the forward pass ran "
                    f"{ran.count(repeated)} times (a recurrent model runs it once per time step); each "
                    "weight layer must run once per forward pass"
                )
            raise ConfigError(
                f"softhebb took the weight layers to run in the order {self._layer_names} "
                f"({self._order_source}), but this forward pass ran {ran}; it trains only models that "
                "run each weight layer once, in one fixed order that a torch.fx trace or the "
                "registration order gives"
            )
        self._order_checked, self._unprepared = True, []
        if updates is not None:
            self._apply_hebbian(updates)
            self.plain_steps_done += 1

    def _hebbian_updates(self, x: Tensor, with_grad: bool = False) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
        """Run the model forward on ``x``; collect ``(ΔW, η_i / max|ΔW|)`` of every learning
        Hebbian layer (``with_grad``: the output keeps its graph, for a classifier step)."""
        self._collect = {}
        try:
            with torch.set_grad_enabled(with_grad):
                out = self.model(x)
            return self._collect, out
        finally:
            self._collect = None

    def _apply_hebbian(self, updates: dict[str, tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for name, (delta, scale) in updates.items():
                self.hebbian[name].weight.addcmul_(scale, delta)
        self.hebbian_steps_done += 1

    @contextlib.contextmanager
    def _own_forward(self) -> Iterator[None]:
        """The learner runs the model itself (not a step of the user's own loop)."""
        self._own += 1
        try:
            yield
        finally:
            self._own -= 1

    # -- the protocol ----------------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        x, y = check_batch(batch)
        with self._own_forward():
            if not self._active:
                with self._all_trainable():
                    return super().step(batch, optimizer)
            if self.hebbian_phase:
                if not self.reports_epochs:  # the plain-loop protocol: the classifier trains too
                    self.check_optimizer(optimizer)
                if self.hebbian_steps_done == 0:
                    self._prepare_hebbian_layers()
                train_classifier = not self.reports_epochs and bool(self._classifier_trainable)
                if train_classifier:
                    optimizer.zero_grad(set_to_none=True)
                updates, out = self._hebbian_updates(x, with_grad=train_classifier)
                self._apply_hebbian(updates)
                if train_classifier:
                    loss = self.loss_fn(out, y)
                    loss.backward()
                    optimizer.step()
                    self.after_step()
                else:
                    with torch.no_grad():  # the label loss of the classifier, for reporting only
                        loss = self.loss_fn(out, y)
                if not self.reports_epochs:
                    self.plain_steps_done += 1
                metrics = {"loss": float(loss.detach()), "hebbian_phase": 1.0}
                for name, dev in self.norm_deviation().items():
                    metrics[f"norm_dev/{name}"] = dev
                for name, frac in self._winners.items():
                    metrics[f"winners/{name}"] = frac
                return metrics
            self.check_optimizer(optimizer)
            if not self._classifier_trainable:  # the user froze the classifier too: nothing learns
                with self._frozen_norms(), torch.no_grad():
                    loss = self.loss_fn(self.model(x), y)
                return {"loss": float(loss), "hebbian_phase": 0.0}
            optimizer.zero_grad(set_to_none=True)
            with self._frozen_norms():
                loss = self.loss_fn(self.model(x), y)
                loss.backward()
            optimizer.step()
            self.after_step()
            return {"loss": float(loss.detach()), "hebbian_phase": 0.0}

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        missing = [
            n for n, p in self.classifier.named_parameters()
            if p.requires_grad and not param_in_optimizer(p, optimizer)
        ]
        if missing:
            raise ConfigError(
                f"softhebb trains the classifier '{self.classifier_name}' with the optimizer, but the "
                f"optimizer lacks its parameters {missing}; build it from learner.optimizer_parameters()"
            )

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return list(self._classifier_trainable)

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        """Hebbian weights: ``−(change one Hebbian step would make)``; classifier: CE gradient."""
        x, y = check_batch(batch)
        with self._own_forward():
            with self._restored_buffers():
                updates, _ = self._hebbian_updates(x)
            out = {f"{name}.weight" if name else "weight": -(d * s) for name, (d, s) in updates.items()}
            with self._restored_buffers():
                out.update(self._classifier_gradients(x, y))
        return out

    def _backprop_gradients(self, batch: Batch) -> dict[str, Tensor]:
        """Backprop gradients of the label loss for every parameter the user left trainable."""
        with self._own_forward(), self._all_trainable(), self._restored_buffers():
            return self._gradients(batch, use_rule=False)

    def trained_layers(self) -> dict[str, nn.Module]:
        learning = {n: m for n, m in self.hebbian.items() if n not in self.frozen}
        return {**learning, self.classifier_name: self.classifier}

    def rule_state(self) -> dict[str, Tensor]:
        return {
            "epochs_done": torch.tensor(self.epochs_done),
            "hebbian_steps_done": torch.tensor(self.hebbian_steps_done),
            "plain_steps_done": torch.tensor(self.plain_steps_done),
        }

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        unknown = sorted(set(state) - {"epochs_done", "hebbian_steps_done", "plain_steps_done"})
        if unknown:
            raise ConfigError(f"unknown softhebb state entries {unknown}")
        self.epochs_done = int(state.get("epochs_done", 0))
        self.hebbian_steps_done = int(state.get("hebbian_steps_done", 0))
        self.plain_steps_done = int(state.get("plain_steps_done", 0))

    def _restore(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.model.__dict__.pop("__deepcopy__", None)
        for name, p in self.model.named_parameters():
            if name in self._requires_grad:
                p.requires_grad_(self._requires_grad[name])

    # -- helpers ---------------------------------------------------------------------------------
    def _refuse_copy(self, memo: Any) -> Any:
        # The model's hooks belong to this learner: a copy would train through the original's.
        raise ConfigError(
            "a model with rule 'softhebb' attached cannot be deep-copied (its forward hooks belong to "
            "the learner); copy the model before attaching, or call learner.detach() first"
        )

    def _prepare_hebbian_layers(self) -> None:
        """Before the first Hebbian step: zero the biases (SoftHebb layers have none) and, with
        ``init_radius``, rescale every unit's weight vector to that norm (direction kept). Layers
        and biases the user froze are left as they are."""
        if not self._order_checked:  # kept until a forward pass has confirmed the layer order
            self._unprepared = [(t, t.detach().clone()) for t in self.model.parameters()]
        with torch.no_grad():
            for name, layer in self.hebbian.items():
                if name in self.frozen:
                    continue
                bias = getattr(layer, "bias", None)
                if bias is not None and self._requires_grad.get(_param_name(name, "bias"), True):
                    bias.zero_()
                if self.init_radius is not None:
                    w = layer.weight
                    norms = unit_norms(w).clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1)))
                    w.mul_(self.init_radius / norms)

    def _classifier_gradients(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        params = dict(self.classifier.named_parameters())
        saved = {n: p.grad for n, p in params.items()}
        for p in params.values():
            p.grad = None
        prefix = f"{self.classifier_name}." if self.classifier_name else ""
        if not self._classifier_trainable:
            return {}
        try:
            with self._frozen_norms(), torch.enable_grad():
                self.loss_fn(self.model(x), y).backward()
            return {prefix + n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
        finally:
            for n, p in params.items():
                p.grad = saved[n]

    @contextlib.contextmanager
    def _frozen_norms(self) -> Iterator[None]:
        """Normalisation layers use their running statistics (the Hebbian part is frozen)."""
        modes = [m.training for m in self._norms]
        for m in self._norms:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(self._norms, modes):
                m.train(mode)

    @contextlib.contextmanager
    def _restored_buffers(self) -> Iterator[None]:
        """Buffers (BatchNorm running statistics) are put back as they were on exit."""
        saved = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in self.model.named_buffers():
                    if n in saved:
                        b.copy_(saved[n])

    @contextlib.contextmanager
    def _all_trainable(self) -> Iterator[None]:
        """Every parameter the user left trainable takes gradients again (plain backprop);
        the rule's freeze is restored on exit."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._requires_grad.get(name, True))
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# Rule
# ---------------------------------------------------------------------------------------------
class SoftHebb(Rule):
    name = "softhebb"
    family: ClassVar[str] = "local"
    summary = (
        "soft winner-take-all Hebbian layers learnt without labels or feedback, then a linear "
        "classifier trained by cross-entropy"
    )
    paper = "Hebbian Deep Learning Without Feedback (Journé, Garcia Rodriguez, Guo, Moraitis 2023)"
    plain_backward = False  # owns its step (Hebbian phase, then the classifier)
    supported: ClassVar[tuple[type[nn.Module], ...]] = SOFTHEBB_LAYERS

    class Options(Options):
        t_invert: PerLayer = opt(
            None, "inverse temperature 1/τ of the soft WTA: one number or one per Hebbian layer; None: per-layer paper values for the model",
            accepts="a number > 0, a non-empty list of numbers > 0, or null (None)",
        )
        lr: PerLayer = opt(
            None, "Hebbian learning rate η₀: one number or one per Hebbian layer; None: per-layer paper values for the model",
            accepts="a number > 0, a non-empty list of numbers > 0, or null (None)",
        )
        lr_power: float = opt(0.5, "exponent p of the norm-dependent learning rate η₀·|r_i − 1|^p", ge=0)
        anti_hebbian: bool = opt(True, "anti-Hebbian updates for the non-winning units (SoftHebb); False: plain soft WTA")
        hebbian_epochs: int = opt(1, "epochs of the Hebbian phase before the classifier trains", ge=0)
        hebbian_steps: int | None = opt(None, "switch to the classifier after this many steps instead (any loop)", ge=0)
        init_radius: Literal["auto"] | Annotated[float, Field(gt=0)] | None = opt(
            "auto", "rescale Hebbian units' weight norms to this before the first step; auto: the model's value; None: keep",
            accepts="'auto', a number > 0 or null (None)",
        )

    def _configure(self) -> None:
        self.t_invert = _per_layer(self.t_invert, -1, "t_invert")
        self.lr = _per_layer(self.lr, -1, "lr")

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        """Also refuses trainable parameters that nothing would train: SoftHebb learns Linear and
        Conv layers by its rule and the classifier by the label loss, and sends no error back
        to any other layer (normalisation layers keep their values, as documented); and refuses a
        model declaring ``per_step_modules`` (wrnn, irnn), whose layers run once per time step."""
        super().check_model(model, passthrough)
        modules = dict(model.named_modules())
        per_step = [n for n in getattr(model, "per_step_modules", ()) if isinstance(modules.get(n), SOFTHEBB_LAYERS)]
        if per_step:  # a recurrent model (wrnn, irnn): refused here, not at the first forward pass
            raise UnsupportedModuleError(
                f"softhebb cannot train the {type(model).__name__}, whose forward pass runs layer "
                f"'{per_step[0]}' once per time step; it trains models that run each Linear and Conv "
                "layer once per forward pass (e.g. mlp, softhebb-mlp, softhebb-conv)"
            )
        for path, module in model.named_modules():
            if isinstance(module, SOFTHEBB_LAYERS + _NORM_LAYERS):
                continue
            trainable = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
            if trainable:
                raise UnsupportedModuleError(
                    f"softhebb cannot train module '{path or '<root>'}' of type {type(module).__name__} "
                    f"(parameters {trainable}), because its Hebbian rule learns only Linear and Conv "
                    "layers and no error reaches the layers before the classifier; freeze it "
                    "(requires_grad=False) to keep it as it is, or use another rule"
                )

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return SoftHebbLearner(self, model, loss_fn)

    @staticmethod
    def example_model(input_shape: Iterable[int], num_classes: int) -> nn.Module:
        """The SoftHebb MLP preset (one soft-WTA layer + linear classifier) for these data."""
        from ..models.softhebb import SoftHebbMLP

        return SoftHebbMLP(tuple(input_shape), num_classes)
