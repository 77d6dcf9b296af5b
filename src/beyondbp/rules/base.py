"""The rule protocol shared by every credit-assignment rule.

A :class:`Rule` is a configured recipe (name, options, paper). ``rule.attach(model)`` returns a
:class:`Learner` bound to the user's own ``nn.Module``:

* ``learner.step(batch, optimizer) -> dict`` — one update; returns at least ``{"loss": float}``.
* ``learner.predict(x) -> Tensor`` — outputs (logits) in eval mode, without gradients.
* ``learner.estimate(batch) -> {name: Tensor}`` — the rule's update direction for every
  parameter it trains, in the gradient sign convention (the optimizer will *subtract* it),
  computed without changing any parameter or any ``.grad`` the caller had.
* ``learner.detach()`` — give the model its original behaviour back.

Rules that only change the backward path (feedback alignment and relatives, DFA) leave the
forward computation and the optimizer alone, so the user's optimizer and LR scheduler keep
working; the user may even call ``loss.backward(); optimizer.step()`` themselves.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, UnsupportedModuleError
from ..options import NoOptions, Options, opt
from ..options import describe as describe_options
from ..options import names as option_names
from ..options import parse as parse_options

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

#: Layer types the feedback-path rules replace the backward pass of.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Parameterised module types that keep ordinary autograd inside a rule's scheme: they learn
#: from whatever error reaches them under the rule.
PASSTHROUGH_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
    nn.RMSNorm,
)

ATTACHED_FLAG = "_beyondbp_attached_rule"

#: Rule modules declare their options with these (re-exported so rules import only this module).
__all__ = ["Learner", "Rule", "Options", "opt", "default_loss"]

#: Prefix of every tensor or attribute a rule puts on the user's modules (``<layer>.bbp_feedback``),
#: so checkpoints, parameter counts and sampling can tell the rule's tensors from the model's.
RULE_PREFIX = "bbp_"


def rule_attr(name: str) -> str:
    """The attribute name a rule uses on a module for its tensor ``name`` (``"feedback"`` ->
    ``"bbp_feedback"``)."""
    return RULE_PREFIX + name


def is_rule_tensor(name: str) -> bool:
    """Whether a parameter / state-dict / attribute name (dotted or not) is a rule's own tensor."""
    return name.rsplit(".", 1)[-1].startswith(RULE_PREFIX)


def add_rule_tensor(module: nn.Module, name: str, tensor: Tensor, trainable: bool = False) -> Tensor:
    """Register a rule's tensor on ``module`` as ``bbp_<name>``: a parameter (``trainable``,
    trained by the user's optimizer) or a buffer; return what was registered."""
    if trainable:
        param = tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor)
        module.register_parameter(rule_attr(name), param)
        return param
    module.register_buffer(rule_attr(name), tensor)
    return tensor


def rule_tensor(module: nn.Module, name: str) -> Tensor:
    """The rule tensor ``bbp_<name>`` registered on ``module`` by :func:`add_rule_tensor`."""
    return getattr(module, rule_attr(name))


def default_loss(output: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy on logits; sequence outputs ``(..., C)`` with targets ``(...)`` are flattened.

    Float targets of the output's shape are class probabilities (cross-entropy, as torch's); other
    float targets are regression targets (a set such as ``adding``), one per output ``(..., 1)``,
    and get the mean squared error."""
    if target.is_floating_point() and output.shape != target.shape:
        if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
            output = output.squeeze(-1)
        if output.shape != target.shape:
            raise ConfigError(
                f"the model's outputs have shape {tuple(output.shape)} but the regression targets have shape "
                f"{tuple(target.shape)}; build the model with one output per target"
            )
        return F.mse_loss(output, target)
    if output.dim() == 2 and target.dim() == 2 and not target.is_floating_point():
        raise ConfigError(
            f"the model returns one output per sample ({tuple(output.shape)}) but the targets hold one class per "
            f"time step ({tuple(target.shape)}); give a recurrent model outputs='all'"
        )
    if output.dim() > 2:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    return F.cross_entropy(output, target)


def check_batch(batch: Any) -> Batch:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ConfigError("a batch must be a pair (inputs, targets) of tensors")
    x, y = batch
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise ConfigError("a batch must be a pair (inputs, targets) of tensors")
    return x, y


class _Seed(Options):
    """The ``seed`` every rule accepts: rules without a declared ``seed`` option (no randomness:
    backprop, usf, il, ottt, softhebb) check it and ignore it."""

    seed: int = opt(0, "ignored: the rule draws no random numbers", ge=0, lt=2**32)


class Rule:
    """A credit-assignment rule with its options. Subclasses set the class metadata.

    ``Rule(**options)`` checks ``options`` against :attr:`Options`; every rule also accepts
    ``seed`` (an integer in [0, 2³²)), which a rule that draws no random numbers and declares no
    ``seed`` option ignores (it is not among its :meth:`options`).
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: Layer types whose weights this rule trains by its own scheme.
    supported: ClassVar[tuple[type[nn.Module], ...]] = WEIGHT_LAYERS
    #: False for rules that handle every module (backprop).
    refuses_unknown: ClassVar[bool] = True
    #: False for rules that need one row per sample at every layer (a per-sample error or label
    #: projected onto each layer), which cannot train models whose layers run ``T`` time steps
    #: flattened into the batch (``[T·B, ...]``): :meth:`check_model` then refuses any module
    #: carrying an integer ``time_steps`` attribute (beyondbp's spiking layers, encoders, readouts).
    handles_time_steps: ClassVar[bool] = True
    #: False for rules that cannot send their learning signal through a recurrence (one projected
    #: error or target per sample and layer): :meth:`check_model` then refuses a model declaring
    #: ``recurrent = True`` (the ELM), in one sentence.
    trains_recurrent: ClassVar[bool] = True
    #: The rule's options, declared once (see :mod:`beyondbp.options`): types, defaults,
    #: bounds and help. Validation, ``--rule-opt``, ``compare``'s routing and
    #: ``beyondbp rules --options NAME`` all come from it.
    Options: ClassVar[type[Options]] = NoOptions

    def __init__(self, **options: Any) -> None:
        if "seed" in options and "seed" not in self.Options.model_fields:
            # Every rule takes a seed (rules.get(name, seed=0) works for all); a rule without
            # randomness checks it like the others do and ignores it.
            parse_options(_Seed, {"seed": options["seed"]}, f"rule '{self.name}'")
            options = {k: v for k, v in options.items() if k != "seed"}
        parsed = parse_options(self.Options, options, f"rule '{self.name}'")
        for key in self.Options.model_fields:
            setattr(self, key, getattr(parsed, key))
        self._configure()

    def _configure(self) -> None:
        """Called once the options are set: derived settings and the rule's own state."""

    # -- options -------------------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> list[str]:
        return option_names(cls.Options)

    @classmethod
    def describe_options(cls) -> list[dict[str, str]]:
        """Name, what it accepts, default and help of every option (``rules --options``)."""
        return describe_options(cls.Options)

    def options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.option_names()}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    # -- attaching -----------------------------------------------------------------------------
    def attach(
        self,
        model: nn.Module,
        *,
        loss_fn: LossFn | None = None,
        passthrough: Iterable[type[nn.Module]] = (),
    ) -> "Learner":
        """Bind this rule to ``model`` and return the learner that trains it.

        ``loss_fn(output, target)`` defaults to cross-entropy on logits. ``passthrough`` names
        extra parameterised module types that should keep ordinary autograd under the rule.
        """
        if not isinstance(model, nn.Module):
            raise ConfigError(f"attach expects a torch.nn.Module, got {type(model).__name__}")
        if getattr(model, ATTACHED_FLAG, None):
            raise ConfigError(
                f"this model already has rule '{getattr(model, ATTACHED_FLAG)}' attached; "
                "call learner.detach() before attaching another rule"
            )
        self.check_model(model, tuple(passthrough))
        learner = self._make_learner(model, loss_fn or default_loss)
        object.__setattr__(model, ATTACHED_FLAG, self.name)
        return learner

    def check_time_steps(self, model: nn.Module) -> None:
        """Refuse, by module path and type, a module running time steps flattened into the batch
        (an integer ``time_steps`` attribute) when the rule does not handle them."""
        if self.handles_time_steps:
            return
        self.refuse_time_steps(model)

    def refuse_time_steps(
        self, model: nn.Module, reason: str = "the rule projects one sample's error or label onto each row of a layer"
    ) -> None:
        """Raise :class:`UnsupportedModuleError` naming a module that runs time steps flattened
        into the batch (an integer ``time_steps`` attribute), if there is one — a neuron layer
        (it has a ``step`` method) rather than an encoder or readout when there is one."""
        found = [
            (path, module) for path, module in model.named_modules()
            if path and isinstance(getattr(module, "time_steps", None), int) and not isinstance(module.time_steps, bool)
        ]
        if not found:
            return
        path, module = next(((p, m) for p, m in found if callable(getattr(m, "step", None))), found[0])
        raise UnsupportedModuleError(
            f"rule '{self.name}' cannot train module '{path}' of type {type(module).__name__}, which runs "
            f"{module.time_steps} time steps flattened into the batch ([T*B, ...]), because {reason}; train spiking "
            "models with backprop (BPTT), a feedback-path rule (fa, usf, brsf, frsf, kp, pfa), dfa or ottt"
        )

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        """Refuse, by module path and type, any parameterised layer this rule cannot train (and
        time-step modules, see :attr:`handles_time_steps`; recurrent models, see :attr:`trains_recurrent`)."""
        if not self.trains_recurrent and getattr(model, "recurrent", False) is True:
            raise UnsupportedModuleError(
                f"rule '{self.name}' cannot train the recurrent {type(model).__name__}, because it projects one "
                "error or target per sample onto each layer and has no path through time; train it with backprop "
                "(BPTT) or a feedback-path rule (fa, usf, brsf, frsf, kp, pfa)"
            )
        self.check_time_steps(model)
        if not self.refuses_unknown:
            return
        allowed = self.supported + PASSTHROUGH_LAYERS + passthrough
        for path, module in model.named_modules():
            # a module type declaring ``learns_by_autograd = True`` (elementwise parameters, such as
            # the ELM's synaptic weights) learns from the error the rule delivers, as PASSTHROUGH_LAYERS
            if isinstance(module, allowed) or getattr(type(module), "learns_by_autograd", False) is True:
                continue
            own = [n for n, _ in module.named_parameters(recurse=False)]
            if own:
                kinds = ", ".join(t.__name__ for t in self.supported)
                raise UnsupportedModuleError(
                    f"rule '{self.name}' cannot train module '{path or '<root>'}' of type "
                    f"{type(module).__name__} (it owns parameters {own}); supported layer types "
                    f"are {kinds}, with normalisation and embedding layers learning by ordinary "
                    "autograd"
                )

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> "Learner":
        raise NotImplementedError

    # -- capabilities: what the rule contract (beyondbp.testing) needs to know -----------------
    # Together with ``refuses_unknown`` and ``handles_time_steps`` above, these tell the
    # contract suite (:func:`beyondbp.testing.check_rule`) which checks apply to a rule and how
    # to set it up. Every registered rule declares ``plain_backward``; the others have defaults
    # that leave every check on.

    #: Whether a user's own loop — ``optimizer.zero_grad(); loss_fn(model(x), y).backward();
    #: optimizer.step()`` with the model attached and no ``learner.step`` — trains exactly as
    #: ``learner.step`` does (True for the rules that change only the backward pass: backprop,
    #: the feedback-path rules, dfa). The contract then checks it bit for bit, with an LR
    #: scheduler, and checks that an attached model's forward pass is the original one.
    #: ``None`` (undeclared): inferred, True when the rule's learner does not override
    #: :meth:`Learner.step`.
    plain_backward: ClassVar[bool | None] = None
    #: True only for a rule whose update *is* backprop's gradient (backprop itself): it trains
    #: every parameter by ordinary autograd (``trained_layers()`` may be empty) and its
    #: ``estimate`` equals ``backprop_gradients``. For every other rule the contract checks
    #: that it names the layers it trains and that its ``estimate`` is not backprop's gradient.
    exact_gradients: ClassVar[bool] = False

    @classmethod
    def example_model(cls, input_shape: tuple[int, ...], num_classes: int) -> nn.Module | None:
        """A model this rule can train, for rules that refuse the contract suite's MLP and LeNet
        (``None``, the default: the rule trains those). Built right after
        ``torch.manual_seed(seed)``, so it must take its initial weights from the global RNG;
        a rule module may import :mod:`beyondbp.models` inside this method only."""
        return None

    @classmethod
    def example_optimizer(cls, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer of the contract's learning and determinism checks, built from
        ``learner.optimizer_parameters()`` (default ``Adam(lr=3e-3)``)."""
        return torch.optim.Adam(list(parameters), lr=3e-3)


class Learner:
    """A rule bound to a model. The default implementation is plain backpropagation."""

    def __init__(self, rule: Rule, model: nn.Module, loss_fn: LossFn) -> None:
        self.rule = rule
        self.model = model
        self.loss_fn = loss_fn
        self._active = True
        self._detached = False

    # -- the protocol --------------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One update of the model on ``batch`` with the caller's optimizer."""
        self._check_live()
        x, y = check_batch(batch)
        self.check_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        optimizer.step()
        self.after_step()
        return {"loss": float(loss.detach())}

    def predict(self, x: Tensor) -> Tensor:
        """Model outputs for ``x`` in eval mode, without gradients (training mode is restored)."""
        self._check_live()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            self.model.train(was_training)

    def hidden_responses(self, x: Tensor) -> list[Tensor] | None:
        """The hidden layers' responses to ``x`` as the rule sees them, when that differs from the
        model's own forward pass (Forward-Forward runs its layers on length-normalised input with
        the neutral label); ``None`` (the default) means the model's forward pass is what the rule
        trains, and representation analyses read the activations of that pass. Computed in the
        model's current mode; the caller chooses the mode and ``torch.no_grad``."""
        return None

    # The three measuring methods below are final: a subclass overrides ``_estimate``,
    # ``_backprop_gradients`` or ``_diagnostics`` instead, and the public method runs it inside
    # :meth:`measuring`, so that no rule can forget to leave the model as it was.
    def estimate(self, batch: Batch) -> dict[str, Tensor]:
        """The rule's update direction per parameter (gradient convention), without stepping.

        Computed in the model's current mode (a training-mode model uses batch statistics and
        draws dropout masks, as a training step would); afterwards weights, ``.grad``, buffers
        (BatchNorm running statistics), module modes, the global RNG and the rule's own
        generators are exactly as they were (see :meth:`measuring`)."""
        self._check_live()
        with self.measuring():
            return self._estimate(batch)

    def backprop_gradients(self, batch: Batch) -> dict[str, Tensor]:
        """True backprop gradients of the same loss, for comparison with :meth:`estimate`
        (same guarantees: nothing the model, the RNG or the rule holds is changed)."""
        self._check_live()
        with self.measuring():
            return self._backprop_gradients(batch)

    def detach(self) -> None:
        """Undo :meth:`Rule.attach`: the model computes and learns exactly as before."""
        if self._detached:
            return
        self._restore()
        if ATTACHED_FLAG in model_dict(self.model):
            object.__delattr__(self.model, ATTACHED_FLAG)
        self._detached = True

    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """Per-layer measurements of how the rule relates to backprop (see ``analysis.alignment``),
        leaving model, RNG and rule state exactly as they were (see :meth:`measuring`)."""
        self._check_live()
        with self.measuring():
            return self._diagnostics(batch)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Run a measurement without side effects on what is measured.

        Saves, and restores on exit (also after an error): every parameter's ``.grad``, every
        buffer of the model (in place, so references stay valid), every module's train/eval
        flag, the global torch RNG (CPU and the model's CUDA devices) and the state of every
        generator the rule draws from (:meth:`generators`). Weights are not copied: measuring
        code must not write them, and the rule contract tests check that it does not.
        """
        grads = [(p, p.grad) for p in self.model.parameters()]
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        modes = [(m, m.training) for m in self.model.modules()]
        gens = [(g, g.get_state()) for g in self.generators()]
        devices = sorted(
            {t.device.index or 0 for t in list(self.model.parameters()) + list(self.model.buffers()) if t.is_cuda}
        )
        try:
            with torch.random.fork_rng(devices=devices):
                yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            for p, g in grads:
                p.grad = g
            for m, mode in modes:
                m.training = mode
            for g, state in gens:
                g.set_state(state)

    def generators(self) -> list[torch.Generator]:
        """Every ``torch.Generator`` the rule draws from while training (restored by
        :meth:`measuring`). Rules that own generators must list them here."""
        return []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("estimate", "backprop_gradients", "diagnostics"):
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides Learner.{name}; override _{name} instead, so that the "
                    "public method keeps the model, the RNG and the rule state as they were"
                )

    # -- what the measuring methods compute (override these) ------------------------------------
    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        return self._gradients(batch, use_rule=True)

    def _backprop_gradients(self, batch: Batch) -> dict[str, Tensor]:
        return self._gradients(batch, use_rule=False)

    def _diagnostics(self, batch: Batch) -> dict[str, float]:
        return alignment_diagnostics(self, batch)

    # -- hooks for subclasses ------------------------------------------------------------------
    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Complain early when the optimizer cannot train what the rule needs trained."""

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. to re-apply sparsity masks)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the run loop before the first step of every epoch (and when a resumed run
        continues inside one): a loop that calls it reports its epochs, and calls
        :meth:`on_epoch_end` after each."""

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Called by the run loop after every epoch; may return metrics."""
        return {}

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """What the run loop hands to the optimizer (rules that update some weights themselves
        return fewer parameters)."""
        return list(self.model.parameters())

    def trained_layers(self) -> dict[str, nn.Module]:
        """The layers whose weights the rule trains by its own scheme, by module path."""
        return {}

    def feedback_matrix(self, layer_name: str) -> Tensor | None:
        """The matrix standing in for the layer's weight in the backward pass (W's shape)."""
        return None

    def rule_state(self) -> dict[str, Tensor]:
        """Rule tensors that are not in ``model.state_dict()`` (for checkpoints)."""
        return {}

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ConfigError(f"rule '{self.rule.name}' has no state to load, got {sorted(state)}")

    def _restore(self) -> None:
        """Remove everything attach installed."""

    # -- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Within this block the model trains by plain backprop (used for diagnostics)."""
        previous = self._active
        self._active = False
        try:
            yield
        finally:
            self._active = previous

    def _check_live(self) -> None:
        if self._detached:
            raise ConfigError("this learner was detached from its model; attach the rule again")

    def _gradients(self, batch: Batch, use_rule: bool,
                   backward: Callable[[Tensor, Tensor], Any] | None = None) -> dict[str, Tensor]:
        """One backward pass from cleared ``.grad`` (run inside :meth:`measuring`, which puts the
        caller's gradients back): the loss's, or ``backward(x, y)``'s for a rule that fills
        ``.grad`` its own way."""
        x, y = check_batch(batch)
        params = dict(self.model.named_parameters())
        for p in params.values():
            p.grad = None
        ctx = contextlib.nullcontext() if use_rule else self.disabled()
        with ctx, torch.enable_grad():
            if backward is not None:
                backward(x, y)
            else:
                self.loss_fn(self.model(x), y).backward()
        return {
            n: p.grad.detach().clone()
            for n, p in params.items()
            if p.grad is not None and (use_rule or not is_rule_tensor(n))
        }


def model_dict(model: nn.Module) -> dict[str, Any]:
    return model.__dict__


def param_in_optimizer(param: Tensor, optimizer: torch.optim.Optimizer) -> bool:
    return any(param is q for group in optimizer.param_groups for q in group["params"])


# -- alignment measurements (what Learner.diagnostics reports by default; re-exported and
#    documented by beyondbp.analysis.alignment) ----------------------------------------------
def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return float(a.dot(b) / (na * nb))


def angle_degrees(a: Tensor, b: Tensor) -> float:
    c = cosine(a, b)
    if math.isnan(c):
        return float("nan")
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def gradient_alignment(learner: Learner, batch: Batch) -> dict[str, float]:
    """``{"cos/<layer>": cosine}`` per trained layer's weight, and ``"cos/all"``."""
    rule_grads = learner.estimate(batch)
    bp_grads = learner.backprop_gradients(batch)
    out: dict[str, float] = {}
    rule_all, bp_all = [], []
    for name in learner.trained_layers():
        key = f"{name}.weight" if name else "weight"
        if key in rule_grads and key in bp_grads:
            out[f"cos/{name}"] = cosine(rule_grads[key], bp_grads[key])
            rule_all.append(rule_grads[key].flatten())
            bp_all.append(bp_grads[key].flatten())
    if rule_all:
        out["cos/all"] = cosine(torch.cat(rule_all), torch.cat(bp_all))
    return out


def weight_alignment(learner: Learner) -> dict[str, float]:
    """``{"angle/<layer>": degrees, "norm_ratio/<layer>": ‖B‖/‖W‖}`` where a feedback matrix exists."""
    out: dict[str, float] = {}
    for name, module in learner.trained_layers().items():
        fb = learner.feedback_matrix(name)
        if fb is None:
            continue
        w = module.weight.detach()
        out[f"angle/{name}"] = angle_degrees(fb, w)
        wn = float(w.norm())
        out[f"norm_ratio/{name}"] = float(fb.norm()) / wn if wn > 0 else float("nan")
    return out


def alignment_diagnostics(learner: Learner, batch: Batch) -> dict[str, float]:
    """Gradient alignment on ``batch`` and, where it exists, weight alignment."""
    out = gradient_alignment(learner, batch)
    out.update(weight_alignment(learner))
    return out
