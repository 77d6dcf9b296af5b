"""Helpers shared by several rules. A rule module imports only :mod:`.base`, this module,
:mod:`._autograd` and :mod:`beyondbp.errors`; no rule imports another rule.

* Random feedback: ``layer_generator`` (one generator per layer, unrelated to the global seed),
  ``init_like`` / ``init_bound`` / ``InitName`` (PyTorch's initialisers as feedback
  distributions), ``check_seed`` (for settings outside a rule's declared options, e.g. SET).
* The feedback-path machinery (FA and its relatives, PFA): :class:`FeedbackPathRule` and
  :class:`FeedbackPathLearner`, which wrap every Linear / ConvNd forward so that its backward
  pass uses the rule's feedback matrix, and the reusable feedback buffer ``_Scratch``.
* Sequential chains (Forward-Forward, inference learning): :func:`split_sequential` cuts an
  ``nn.Sequential`` into blocks ``[weight layer, parameter-free modules...]`` (:class:`Block`),
  refusing what such rules cannot train; :func:`run_modules`, :func:`is_activation`.
"""

from __future__ import annotations

import hashlib
import math
import typing
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, UnsupportedModuleError
from ._autograd import SCRATCH_ATTR, FeedbackConv, FeedbackLinear
from .base import WEIGHT_LAYERS, Learner, LossFn, Rule

# -- random feedback and the feedback path ----------------------------------------------------
#: The ``init`` option of the feedback rules: a PyTorch initialiser used as B's distribution.
InitName = Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
INITS: tuple[str, ...] = typing.get_args(InitName)
#: Help text of every rule's ``seed`` option.
SEED_HELP = "seed of the rule's random matrices (the run loop passes the run's seed unless set)"


def layer_generator(seed: int, index: int, salt: str = "feedback") -> torch.Generator:
    """A generator for layer ``index`` whose stream is unrelated to ``torch.manual_seed(seed)``.

    Hashing (salt, seed, index) matters: seeding with the bare seed would make a feedback matrix
    drawn with seed 0 a rescaled copy of a forward weight initialised after
    ``torch.manual_seed(0)`` — perfectly aligned feedback by accident.
    """
    digest = hashlib.sha256(f"beyondbp:{salt}:{int(seed)}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def init_like(weight: Tensor, init: str, generator: torch.Generator) -> Tensor:
    """A fresh tensor of ``weight``'s shape drawn from ``init`` (on the CPU, then moved)."""
    out = torch.empty(weight.shape, dtype=weight.dtype)
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(out, generator=generator)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(out, generator=generator)
    elif init == "kaiming_uniform":
        nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    elif init == "kaiming_normal":
        nn.init.kaiming_normal_(out, generator=generator)
    else:  # pragma: no cover - validated earlier
        raise ConfigError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    return out.to(weight.device)


def init_bound(weight: Tensor, init: str) -> float:
    """Half-width of the uniform distribution (or std of the normal one) of ``init``."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return {
        "xavier_uniform": math.sqrt(6.0 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming_uniform": 1.0 / math.sqrt(fan_in),
        "kaiming_normal": math.sqrt(2.0 / fan_in),
    }[init]


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def conv_padding(module: nn.Module, x: Tensor) -> tuple[Tensor, list[int]]:
    """Apply non-zero / asymmetric padding outside the conv; return the int padding to use."""
    n = module.weight.dim() - 2
    if module.padding_mode != "zeros":
        return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), [0] * n
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return x, [0] * n
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        left = [t // 2 for t in total]
        if all(t % 2 == 0 for t in total):
            return x, left
        pads: list[int] = []
        for t, l in zip(reversed(total), reversed(left)):
            pads += [l, t - l]
        return F.pad(x, pads), [0] * n
    return x, list(module.padding)


class _Scratch:
    """Storage reused across steps for a feedback matrix rebuilt at every forward (sign rules).

    Building a fresh W-sized tensor at every step let the allocator return that memory to the
    OS and fault it in again at the next step (page faults that dominated uSF's time over FA's;
    see ``bench/README.md``). The buffer is rewritten in place
    only when no autograd graph still needs its contents: the node that used it releases it at
    the end of its backward, and a graph dropped without backward releases it when freed; in
    every other case (two forwards before one backward, ...) a fresh tensor is used instead.
    One case is refused loudly rather than computed wrongly: ``backward(retain_graph=True)``,
    then a new forward, then a second backward through the first graph raises autograd's
    "modified by an inplace operation" error.
    """

    __slots__ = ("tensor", "holder")

    def __init__(self) -> None:
        self.tensor: Tensor | None = None
        self.holder: Any = None  # weak reference to the autograd node using ``tensor``

    def take(self, like: Tensor) -> Tensor:
        t = self.tensor
        busy = self.holder is not None and self.holder() is not None
        if busy or t is None or t.shape != like.shape or t.dtype != like.dtype or t.device != like.device:
            t = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            self.tensor = t
        self.holder = None
        return t

    def hold(self, out: Tensor) -> None:
        node = out.grad_fn
        if node is not None:
            self.holder = weakref.ref(node)
            setattr(node, SCRATCH_ATTR, self)

    def release(self, node: Any) -> None:
        if self.holder is not None and self.holder() is node:
            self.holder = None


class FeedbackPathLearner(Learner):
    """Wraps every supported layer's forward so its backward uses ``rule.feedback(...)``."""

    def __init__(self, rule: "FeedbackPathRule", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.layers: dict[str, nn.Module] = {
            name: m for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)
        }
        self._installed: list[tuple[nn.Module, list[str]]] = []
        for index, (name, module) in enumerate(self.layers.items()):
            before = set(module._parameters) | set(module._buffers)
            rule.setup_layer(module, index)
            added = [k for k in list(module._parameters) + list(module._buffers) if k not in before]
            if not module.weight.requires_grad:  # a frozen layer: its learned feedback (KP's B, PFA's R) stays too
                for key in added:
                    if key in module._parameters:
                        module._parameters[key].requires_grad_(False)
            self._installed.append((module, added))
            module.forward = self._make_forward(module)
            module.__deepcopy__ = self._refuse_copy

    def _refuse_copy(self, memo: Any) -> Any:
        # The wrapped forward is a closure over the *original* layer: a deep copy would run
        # the original's weights in its forward (silently wrong), so it is refused instead.
        raise ConfigError(
            f"a model with rule '{self.rule.name}' attached cannot be deep-copied (its layers' "
            "forward passes belong to the learner); copy the model before attaching, or call "
            "learner.detach() first"
        )

    def _make_forward(self, module: nn.Module):
        rule: FeedbackPathRule = self.rule  # type: ignore[assignment]
        cls_forward = type(module).forward
        is_linear = isinstance(module, nn.Linear)

        scratch = _Scratch() if rule.rebuilds_feedback else None

        def forward(x: Tensor) -> Tensor:
            if not (self._active and torch.is_grad_enabled()):
                return cls_forward(module, x)
            if scratch is None:
                feedback, scale = rule.feedback(module)
            else:
                feedback, scale = rule.feedback(module, out=scratch.take(module.weight))
            if is_linear:
                out = FeedbackLinear.apply(x, module.weight, module.bias, feedback, scale)
            else:
                x, padding = conv_padding(module, x)
                out = FeedbackConv.apply(
                    x, module.weight, module.bias, feedback, scale,
                    list(module.stride), padding, list(module.dilation), module.groups,
                )
            if scratch is not None:
                scratch.hold(out)
            return out

        return forward

    def trained_layers(self) -> dict[str, nn.Module]:
        return dict(self.layers)

    def generators(self) -> list[torch.Generator]:
        return self.rule.generators()  # type: ignore[attr-defined]

    def feedback_matrix(self, layer_name: str) -> Tensor | None:
        module = self.layers[layer_name]
        # measuring: a rule that redraws its feedback (brSF) must not advance its generator
        with self.measuring(), torch.no_grad():
            feedback, scale = self.rule.feedback(module)  # type: ignore[attr-defined]
            return (feedback * scale).detach().clone()

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.rule.check_optimizer(self, optimizer)  # type: ignore[attr-defined]

    def _restore(self) -> None:
        for module, added in self._installed:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("__deepcopy__", None)
            for key in added:
                module._parameters.pop(key, None)
                module._buffers.pop(key, None)


class FeedbackPathRule(Rule):
    """Base of the rules that only change the matrix carrying errors backwards."""

    family: ClassVar[str] = "feedback"
    #: True for rules that rebuild the feedback at every forward: their ``feedback(module,
    #: out=...)`` writes it into a buffer the learner reuses across steps.
    rebuilds_feedback: ClassVar[bool] = False
    #: Only the backward pass changes: a user's own ``loss.backward()`` loop trains as ``learner.step``.
    plain_backward: ClassVar[bool | None] = True

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return FeedbackPathLearner(self, model, loss_fn)

    def setup_layer(self, module: nn.Module, index: int) -> None:
        """Register the rule's tensors on ``module`` (names start with ``bbp_``)."""

    def feedback(self, module: nn.Module) -> tuple[Tensor, float]:
        """The feedback matrix (``W``'s shape) and a scalar it is multiplied by."""
        raise NotImplementedError

    def check_optimizer(self, learner: FeedbackPathLearner, optimizer: torch.optim.Optimizer) -> None:
        pass

    def generators(self) -> list[torch.Generator]:
        """Generators drawn from during training (rules that redraw feedback every step)."""
        return []


# -- the structure protocol ---------------------------------------------------------------------
#: Keys a model's ``structure()`` may return (see :func:`model_structure`).
STRUCTURE_KEYS = ("embedding", "blocks", "block_inner", "hidden", "head", "encoder", "neurons", "readout")


def model_structure(model: nn.Module) -> dict[str, Any]:
    """What a model says about its own layout, for rules that need more than module types.

    The protocol (any model may implement it; beyondbp's ``gpt`` does): a method
    ``structure() -> dict`` with any of these keys, each naming modules by their path in
    ``model.named_modules()``:

    * ``"embedding"`` — the module whose output is the embedded input;
    * ``"blocks"`` — the repeated blocks (e.g. Transformer blocks), in execution order;
    * ``"block_inner"`` — per block, a list of modules inside it whose outputs are
      intermediate results worth a learning signal (e.g. after attention + residual, after the
      MLP's hidden activation), in execution order;
    * ``"hidden"`` — the module whose output is the last hidden state before the output head;
    * ``"head"`` — the output head.

    Models that run ``T`` time steps flattened into the batch (``[T·B, ...]``, beyondbp's
    ``snn-mlp`` and ``snn-cnn``) declare their time-step layout with three more keys:

    * ``"encoder"`` — the module turning a static batch ``(B, ...)`` into the time steps: it
      returns ``[T·B, ...]``, or the batch itself when every step gets the same input;
    * ``"neurons"`` — the stateful neuron layers in execution order, the last one being the
      output layer's; each has an integer ``time_steps``, a decay ``beta`` and a method
      ``step(current, state) -> (output, state)`` advancing one time step from ``state``
      (``None``: the zero state), where ``state`` is a tuple of tensors (or ``None`` entries);
    * ``"readout"`` — the module reducing the output layer's ``[T·B, C]`` sequence to logits.

    Returns ``{}`` for a model without the method. Unknown keys, names that are not modules of
    the model, or a ``block_inner`` not matching ``blocks`` are a :class:`ConfigError`.
    """
    method = getattr(model, "structure", None)
    if not callable(method):
        return {}
    layout = dict(method())
    unknown = sorted(set(layout) - set(STRUCTURE_KEYS))
    if unknown:
        raise ConfigError(f"model structure() returned unknown keys {unknown}; allowed: {', '.join(STRUCTURE_KEYS)}")
    modules = dict(model.named_modules())
    names = [layout[k] for k in ("embedding", "hidden", "head") if layout.get(k) is not None]
    names += [layout[k] for k in ("encoder", "readout") if layout.get(k) is not None]
    names += list(layout.get("blocks") or [])
    names += list(layout.get("neurons") or [])
    inner = layout.get("block_inner")
    if inner is not None:
        if len(inner) != len(layout.get("blocks") or []):
            raise ConfigError("model structure(): 'block_inner' must hold one list per entry of 'blocks'")
        names += [n for parts in inner for n in parts]
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"model structure() names {missing[0]!r}, which is not a module of the model")
    return layout


# -- Sequential chains of weight layers (Forward-Forward, inference learning) -------------------
@dataclass
class Block:
    """A weight layer and the parameter-free modules that follow it, up to the next weight layer."""

    name: str
    layer: nn.Module
    after: list[tuple[str, nn.Module]] = field(default_factory=list)

    def __call__(self, x: Tensor) -> Tensor:
        x = self.layer(x)
        for _, module in self.after:
            x = module(x)
        return x

    @property
    def has_activation(self) -> bool:
        return any(is_activation(m) for _, m in self.after)


def is_activation(module: nn.Module) -> bool:
    """A module from ``torch.nn.modules.activation`` (ReLU, Tanh, GELU, ...)."""
    return type(module).__module__ == nn.modules.activation.__name__


def _leaves(module: nn.Module, prefix: str = "") -> Iterable[tuple[str, nn.Module]]:
    """Every position of a (nested) Sequential in execution order. Unlike ``named_children``,
    a module object that appears at several positions is yielded at each of them."""
    for name, child in module._modules.items():
        if child is None:
            continue
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, path)
        else:
            yield path, child


def split_sequential(
    model: nn.Module, rule_name: str, weight_types: tuple[type[nn.Module], ...]
) -> tuple[list[tuple[str, nn.Module]], list[Block]]:
    """Split an ``nn.Sequential`` (nested Sequentials are flattened) into parameter-free prefix
    modules and blocks ``[weight layer, parameter-free modules...]``.

    Raises :class:`UnsupportedModuleError` for a model that is not an ``nn.Sequential``, for
    any module owning parameters that is not one of ``weight_types``, naming its path and type,
    and for a weight layer (or a parameter) used at more than one position, naming the paths.
    A parameter-free module used at several positions (one ``ReLU`` object twice) is run at each.
    """
    kinds = ", ".join(t.__name__ for t in weight_types)
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModuleError(
            f"rule '{rule_name}' trains nn.Sequential chains of {kinds} layers; module '<root>' of "
            f"type {type(model).__name__} is not an nn.Sequential"
        )
    prefix: list[tuple[str, nn.Module]] = []
    blocks: list[Block] = []
    for path, module in _leaves(model):
        if isinstance(module, weight_types):
            blocks.append(Block(path, module))
            continue
        own = [n for n, _ in module.named_parameters()]
        if own:
            raise UnsupportedModuleError(
                f"rule '{rule_name}' cannot train module '{path}' of type {type(module).__name__} "
                f"(it owns parameters {own}); it trains {kinds} layers with parameter-free modules "
                "(activations, flatten, dropout) between them"
            )
        if blocks:
            blocks[-1].after.append((path, module))
        else:
            prefix.append((path, module))
    if not blocks:
        raise UnsupportedModuleError(
            f"rule '{rule_name}' found no {kinds} layer in the model; it trains nn.Sequential chains of them"
        )
    _refuse_shared(blocks, rule_name)
    return prefix, blocks


def _refuse_shared(blocks: list[Block], rule_name: str) -> None:
    """Each weight layer gets its own local update from its own position in the chain; a layer
    (or a parameter) used at two positions would need both updates merged, which these rules do
    not define, so such a model is refused."""
    seen: dict[int, str] = {}
    for block in blocks:
        first = seen.setdefault(id(block.layer), block.name)
        if first != block.name:
            raise UnsupportedModuleError(
                f"rule '{rule_name}' cannot train a model that uses the same {type(block.layer).__name__} "
                f"object at '{first}' and at '{block.name}'; each weight layer must appear once in the "
                "chain (give every position its own layer, e.g. with copy.deepcopy)"
            )
    owner: dict[int, str] = {}
    for block in blocks:
        for pname, p in block.layer.named_parameters(remove_duplicate=False):
            path = f"{block.name}.{pname}"
            first = owner.setdefault(id(p), path)
            if first != path:
                raise UnsupportedModuleError(
                    f"rule '{rule_name}' cannot train a model whose parameter '{first}' is also used as "
                    f"'{path}'; each weight layer must own its parameters (tied weights are not supported)"
                )


def run_modules(modules: Sequence[tuple[str, nn.Module]], x: Tensor) -> Tensor:
    for _, module in modules:
        x = module(x)
    return x
