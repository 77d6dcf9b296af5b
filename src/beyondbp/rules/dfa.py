"""Direct feedback alignment (DFA).

Paper: "Direct Feedback Alignment Provides Learning in Deep Neural Networks" (Arild Nøkland,
NeurIPS 2016); at Transformer scale "Direct Feedback Alignment Scales to Modern Deep Learning
Tasks and Architectures" (Launay, Poli, Boniface, Krzakala 2020) and "Scaling Laws Beyond
Backpropagation" (Filipovich, Cappelli, Hesslow, Launay 2022).

Equations. Let ``e = dL/dy`` be the error at the network output (the logits, or the output of
the module named by ``error_at``). Every *feedback point* ``h_k`` (a hidden tensor) receives a
fixed random projection of that error instead of the backpropagated one:

    dL/dh_k  :=  B_k e            (B_k fixed, shape n_out × width_k)

and from ``h_k`` the error flows by ordinary autograd down to — not past — the previous
feedback point. With the default placement (``points="layers"``) the feedback points are the
inputs of every Linear / ConvNd layer, so for an MLP ``a_l = W_l h_{l-1}``, ``h_l = f(a_l)``:

    δ_l = (B_l e) ⊙ f'(a_l)          ΔW_l = −η δ_l h_{l-1}ᵀ         (output layer: δ_L = e)

exactly Nøkland's rule. With ``points=[module names]`` the feedback points are the outputs of
those modules (e.g. each Transformer block: Launay et al.'s "macro" placement) and everything
between two points is trained by backprop.

Models may describe their layout through the structure protocol (a ``structure()`` method, see
:func:`beyondbp.rules.common.model_structure`; beyondbp's ``gpt`` has one). A model that names
its ``blocks`` is used with ``points="auto"`` (the default) as ``points="macro"`` — one point
at each block output; ``"micro"`` adds the points the model names inside each block
(``block_inner``: for gpt, after attention + residual and after the MLP's hidden activation);
``embed=True`` adds a point at the ``embedding`` output (TinyDFA's ``--dfa_embed``).
``error="auto"`` then reads the global error at the model's ``hidden`` state (the last hidden
state before the output head, per token);
``error="logits"`` reads it at the model's ``head`` (TinyDFA's ``--dfa_after_vocab``). Modules
after the error point (the head, for a hidden error) learn by ordinary backprop from ``e``.
A model without a structure gets ``points="layers"`` and its output as the error point.
``error_at=<module name>`` overrides ``error``.

How the backward pass skips the ``Wᵀδ`` chain. In the forward pass each feedback point's tensor
is handed to the rest of the network *detached*, so no autograd edge crosses it; the points are
also collected and passed, with the output, through one identity function at the error point.
Its backward receives ``e`` and returns ``e`` for the output and ``B_k e`` for every point at
once, so the input-gradient matmuls ``Wᵀδ`` across points are never computed — the saving that
makes DFA cheaper than backprop. Only matmuls whose result would cross a point are skipped:
with block-level points (``"macro"``) every Linear inside a block still computes its input
gradient for the layers before it in the same block, so that placement costs backprop's FLOPs
plus the projection; its gain is that blocks no longer wait for each other.

torch.compile. Dynamo traces the hooks and the identity function into the compiled graph, so a
model compiled after ``attach`` (or passed to it already wrapped by ``torch.compile``) trains
with the same updates as eagerly. Dynamo's cached graphs are not checked against newly added
module hooks, though: a graph traced before ``attach`` (by any model of the same class) would
keep training by backprop. So attaching clears torch.compile's caches, and detaching too, so as
not to rely on which hook changes dynamo notices (``torch.compiler.reset()``, only when dynamo
has been imported): every compiled model of the process is traced again at its next call. The matrices are drawn outside the graph (their seed
is hashed with hashlib, which dynamo cannot trace), so ``fullgraph=True`` needs one eager step
first, after which every step is one graph.

Feedback matrices (defaults as in the 2022 paper: Gaussian; TinyDFA's normalisation;
``shared=None`` means shared for a model-suggested placement, one per point otherwise):
``init="gaussian"`` draws N(0, 1) entries, ``init="uniform"`` U(−1, 1) entries; the projection is
divided by ``sqrt(width)`` of the point it feeds (``shared=False``: one matrix per point, as in
Nøkland 2016) or of the widest point (``shared=True``: one matrix for all points, each taking
its first ``width`` columns, as in TinyDFA and the 2022 paper), then multiplied by ``scale``
(default 1). With a shared matrix the projection ``e B`` is computed once, at the widest
point's width, and each point takes its first ``width`` columns. The leading dimensions of a
point that match the error's (batch, or batch × time for sequences) are kept: the projection is per sample (per token). Matrices are created at the
first training forward pass from ``seed`` and then never change.

Spiking models (``snn-mlp``, ``snn-cnn``, or any model declaring its time-step layout through
``structure()``: ``encoder``, ``neurons``, ``readout``). Such a model runs ``T`` time steps
flattened into the batch (rows ``t·B … (t+1)·B − 1`` are step ``t``), and with ``error="auto"``
the error point is the *output layer's neurons* (the last entry of ``neurons``), so the error
of step ``t`` is the gradient of the loss with respect to the output layer's spikes at that step:

    e_t = dL/dS_t^out        (readout="count", L = CE(Σ_t S_t^out, y)):  e_t = (softmax(Σ_τ S_τ^out) − onehot(y)) / B

the same vector at every step for a spike-count readout (for ``readout="membrane"``, the output
layer's membrane ``U_t^out`` with logits its mean over time: ``e_t = (softmax − onehot) / (T·B)``).
The hidden points are the inputs of the Linear / ConvNd layers, which here are the hidden
layers' spike outputs ``S_t^l``; each gets ``dL/dS_t^l := B_l e_t`` with one fixed matrix ``B_l``
per hidden layer (``n_out × width_l``), shared by all time steps. What is detached and what still
flows: every hidden spike output reaches the next layer detached, so no error crosses from a
layer to the one before it (nor from the output layer's input current into the last hidden
layer). Inside a layer ordinary autograd runs: the projected error enters at the spike output,
passes the surrogate derivative ``σ'(U_t − θ)`` of that step, and flows back in time through the
layer's own membrane recurrence (``U_{t+1} = β U_t + I_{t+1} − θ S_t``: the leak ``β`` and, unless
the model sets ``detach_reset``, the reset term) — backprop through time within each layer,
none between layers — down to the layer's input current and so to its weights (and through
the pooling between a conv and its neurons). The output layer learns from ``e_t`` through its
own neurons' surrogate and recurrence (its true gradient given its detached input), as the
output layer of an ANN learns from ``e``. ``error_at="out"`` (the output Linear) instead reads
``e_t = dL/dI_t^out``, the error at the output layer's input current, which includes the output
neurons' surrogate and recurrence and so differs between steps. ``error="logits"`` is refused
for these models: the logits have one row per sample, the spike outputs ``T`` rows per sample.
A model running time steps without declaring the layout is refused unless ``error_at`` names a
module with ``T·B`` rows.

Recurrent models (``wrnn``, ``irnn``). With ``points="layers"`` every call of a weight layer is
a feedback point, so the recurrent layer's input at each step, ``h_{t−1}``, is one (and the
readout's input ``h_T``): each hidden state receives ``dL/dh_t := B_t e`` with its own fixed
matrix per step (``shared=False``; ``shared=True``: one matrix for all). Nothing flows through
time: ``h_{t−1}`` reaches the recurrence detached, so the error of step ``t`` reaches the
recurrent and input weights only through ``B_t e``, the ReLU derivative of that step, and the
step's own input (``ΔW = −η Σ_t (B_t e ⊙ f'(a_t)) h_{t−1}ᵀ``). The error is the output's, so the
models must read out the last state (``outputs="last"``): with one output per step the error
``(N, T, C)`` does not match the points ``(N, ...)`` and the first step is refused.

Scale and stability with plain SGD. With SGD, ``scale`` only rescales the hidden layers'
effective learning rate, so a smaller scale trades blow-ups for slower learning rather than
fixing them; on convolutional models use a smaller learning rate or Adam, which is insensitive
to the scale. Nøkland's own code draws U(−1/sqrt(width), 1/sqrt(width)) entries (our
``init="uniform"``) and trained with RMSprop. The measurements behind this are in
``bench/README.md`` ("DFA: scale and stability with plain SGD").
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.autograd import Function

from ..errors import ConfigError
from .base import WEIGHT_LAYERS, Learner, LossFn, Options, Rule, opt
from .common import SEED_HELP, layer_generator, model_structure


def resolve_placement(rule: "DFA", model: nn.Module) -> tuple[str | list[str], str | None, bool]:
    """The feedback points (``"layers"`` or module names), the error module name (``None``: the
    model output) and whether the matrix is shared, for ``rule`` on ``model``."""
    layout = model_structure(model)
    suggests = bool(layout.get("blocks"))
    points = rule.points
    from_model = False
    if points == "auto":
        points = "macro" if suggests else "layers"
    if points in ("macro", "micro"):
        if not suggests:
            raise ConfigError(
                f"DFA points={points!r} needs a model that names its blocks (a structure() method "
                "giving 'blocks', like beyondbp's gpt); pass points='layers' or a list of module names"
            )
        chosen = []
        if rule.embed:
            if not layout.get("embedding"):
                raise ConfigError("DFA embed=True needs a model whose structure() names its 'embedding' output")
            chosen.append(layout["embedding"])
        inner = layout.get("block_inner") or [[] for _ in layout["blocks"]]
        for block, parts in zip(layout["blocks"], inner):
            if points == "micro":
                chosen += list(parts)
            chosen.append(block)
        points = chosen
        from_model = True
    elif rule.embed:
        raise ConfigError("DFA embed=True needs a model that names its blocks and embedding (a structure() method, like beyondbp's gpt)")
    error_at = rule.error_at
    steps = time_step_layout(layout)
    if error_at is None and steps:
        if rule.error != "auto":
            raise ConfigError(
                f"DFA error={rule.error!r} does not apply to a model running time steps: its logits have one "
                "row per sample and its spike outputs T rows; use error='auto' (the output layer's spikes at "
                "each step) or error_at=<module name>"
            )
        error_at = layout["neurons"][-1]
    if error_at is None:
        if rule.error == "hidden" or (rule.error == "auto" and layout.get("hidden")):
            if not layout.get("hidden"):
                raise ConfigError(
                    "DFA error='hidden' needs a model that names its last hidden state (a structure() "
                    "method giving 'hidden', like beyondbp's gpt); pass error_at=<module name> instead"
                )
            error_at = layout["hidden"]
        elif rule.error == "logits" and layout.get("head"):
            error_at = layout["head"]
    shared = rule.shared if rule.shared is not None else from_model
    return points, error_at, shared


def time_step_layout(layout: dict[str, Any]) -> bool:
    """Whether a model's ``structure()`` declares a time-step layout (neurons and a readout)."""
    return bool(layout.get("neurons")) and layout.get("readout") is not None


def _forget_compiled_graphs() -> None:
    """Drop torch.compile's cached graphs, so that compiled models are traced again with (or,
    after ``detach``, without) DFA's hooks.

    Dynamo does not guard its cached graphs on newly added module hooks: a graph traced before
    the hooks were registered would keep running as plain backprop. Nothing is done when dynamo was never
    imported (then nothing was compiled)."""
    if "torch._dynamo" in sys.modules:
        torch.compiler.reset()


class _DFAOutput(Function):
    """Identity on the error tensor; its backward hands the projected error to every point."""

    @staticmethod
    def forward(ctx, learner: "DFALearner", out: Tensor, *points: Tensor) -> Tensor:
        ctx.learner = learner
        ctx.shapes = [p.shape for p in points]
        return out.view_as(out)

    @staticmethod
    def backward(ctx, err: Tensor):
        projections = ctx.learner.project(err, ctx.shapes)
        return (None, err, *projections)


class DFALearner(Learner):
    def __init__(self, rule: "DFA", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.dfa: DFA = rule
        modules = dict(model.named_modules())
        self.layers = {n: m for n, m in modules.items() if isinstance(m, WEIGHT_LAYERS)}
        self._points: list[Tensor] = []
        self._matrices: dict[int, Tensor] = {}
        self._shared: Tensor | None = None
        self._handles: list[Any] = []
        self.points, self.error_at, self.shared = resolve_placement(rule, model)
        self._error_module = model
        if self.error_at is not None:
            if self.error_at not in modules:
                raise ConfigError(f"DFA error_at names no module of the model: {self.error_at!r}")
            self._error_module = modules[self.error_at]
        self._handles.append(model.register_forward_pre_hook(self._reset))
        if self.points == "layers":
            for name, module in self.layers.items():
                if self.error_at is not None and self._after_error(name):
                    continue
                self._handles.append(module.register_forward_pre_hook(self._point_at_input))
        else:
            for name in self.points:
                if name not in modules or modules[name] is model:
                    raise ConfigError(f"DFA feedback point names no submodule of the model: {name!r}")
                self._handles.append(modules[name].register_forward_hook(self._point_at_output))
        self._handles.append(self._error_module.register_forward_hook(self._at_error))
        _forget_compiled_graphs()

    def _after_error(self, layer_name: str) -> bool:
        """Layers after the error point (an output head) are trained by plain backprop."""
        names = [n for n, _ in self.model.named_modules()]
        return names.index(layer_name) > names.index(self.error_at)

    # -- forward hooks -------------------------------------------------------------------------
    def _enabled(self) -> bool:
        return self._active and torch.is_grad_enabled()

    def _reset(self, module: nn.Module, args: Any) -> None:
        self._points = []

    def _register(self, t: Any) -> Any:
        if isinstance(t, Tensor) and t.requires_grad and self._enabled():
            self._points.append(t)
            return t.detach()
        return t

    def _point_at_input(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not self._enabled():
            return None
        return (self._register(args[0]), *args[1:])

    def _point_at_output(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self._enabled():
            return None
        if isinstance(output, tuple):
            return (self._register(output[0]), *output[1:])
        return self._register(output)

    def _at_error(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self._enabled() or not self._points:
            return None
        if not isinstance(output, Tensor):
            raise ConfigError(
                "DFA needs the error point to output a single tensor, got "
                f"{type(output).__name__}; pass error_at= naming a module that outputs one"
            )
        points, self._points = self._points, []
        return _DFAOutput.apply(self, output, *points)

    # -- projection ----------------------------------------------------------------------------
    def project(self, err: Tensor, shapes: list[torch.Size]) -> list[Tensor]:
        lead = err.shape[:-1]
        n_out = err.shape[-1]
        widths = []
        for shape in shapes:
            if tuple(shape[: len(lead)]) != tuple(lead) or len(shape) == len(lead):
                raise ConfigError(
                    f"DFA cannot project an error of shape {tuple(err.shape)} onto a feedback point "
                    f"of shape {tuple(shape)}: their leading (batch) dimensions must agree"
                )
            widths.append(math.prod(shape[len(lead):]))
        e2 = err.reshape(-1, n_out)
        out = []
        if self.shared:
            full = e2.matmul(self.matrix(0, n_out, max(widths), max(widths), err))
            return [full[:, :width].reshape(shape) for shape, width in zip(shapes, widths)]
        for k, (shape, width) in enumerate(zip(shapes, widths)):
            B = self.matrix(k, n_out, width, max(widths), err)
            out.append(e2.matmul(B).reshape(shape))
        return out

    def matrix(self, k: int, n_out: int, width: int, max_width: int, like: Tensor) -> Tensor:
        if self.shared:
            if self._shared is None:
                self._shared = self._draw(n_out, max_width, 0, like) / math.sqrt(max_width)
            B = self._shared
            if B.shape[0] != n_out or B.shape[1] < width:
                raise ConfigError(
                    f"DFA's shared feedback matrix has shape {tuple(B.shape)} but a point needs "
                    f"{n_out}×{width}; feedback points must keep their widths between steps"
                )
            return B[:, :width]
        B = self._matrices.get(k)
        if B is None:
            B = self._draw(n_out, width, k, like) / math.sqrt(width)
            self._matrices[k] = B
        if B.shape != (n_out, width):
            raise ConfigError(
                f"DFA feedback point {k} changed shape from {tuple(B.shape)} to {(n_out, width)}; "
                "feedback points must keep their widths between steps"
            )
        return B

    def _draw(self, n_out: int, width: int, k: int, like: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # hashlib (the seed's hash) cannot be traced: draw eagerly
            return torch.compiler.disable(self._draw_now)(n_out, width, k, like)
        return self._draw_now(n_out, width, k, like)

    def _draw_now(self, n_out: int, width: int, k: int, like: Tensor) -> Tensor:
        gen = layer_generator(self.dfa.seed, k, salt="dfa")
        if self.dfa.init == "gaussian":
            B = torch.randn(n_out, width, generator=gen)
        else:
            B = torch.rand(n_out, width, generator=gen) * 2 - 1
        return (B * self.dfa.scale).to(device=like.device, dtype=like.dtype)

    # -- protocol extras -----------------------------------------------------------------------
    def trained_layers(self) -> dict[str, nn.Module]:
        return dict(self.layers)

    def rule_state(self) -> dict[str, Tensor]:
        state = {f"matrix.{k}": B for k, B in self._matrices.items()}
        if self._shared is not None:
            state["shared"] = self._shared
        return state

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            if key == "shared":
                self._shared = value.clone()
            elif key.startswith("matrix."):
                self._matrices[int(key.split(".", 1)[1])] = value.clone()
            else:
                raise ConfigError(f"unknown DFA state entry {key!r}")

    def _restore(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._points = []
        _forget_compiled_graphs()


class DFA(Rule):
    name = "dfa"
    family: ClassVar[str] = "direct"
    summary = "direct feedback alignment: each hidden layer gets a fixed random projection B·e of the output error"
    paper = "Direct Feedback Alignment Provides Learning in Deep Neural Networks (Nøkland 2016)"
    plain_backward = True  # only the backward pass changes: a user's own loss.backward() loop trains as learner.step
    # time-step models (spiking) are trained when they declare their layout (see the docstring)
    handles_time_steps: ClassVar[bool] = True
    trains_recurrent: ClassVar[bool] = False  # no path through time (refused at attach)

    class Options(Options):
        seed: int = opt(0, SEED_HELP, ge=0, lt=2**32)
        init: Literal["gaussian", "uniform"] = opt("gaussian", "entries of B: N(0, 1) or U(-1, 1), before the 1/sqrt(width) scaling")
        scale: float = opt(1.0, "extra factor on every projection B·e", gt=0)
        shared: bool | None = opt(None, "one matrix for all points (True) or one per point (False); None: shared for a model-suggested placement")
        points: Literal["auto", "layers", "macro", "micro"] | Annotated[list[str], Field(min_length=1)] = opt(
            "auto",
            "where the projected error enters: a placement or a list of module names",
            accepts="'auto', 'layers', 'macro', 'micro' or a non-empty list of module names",
        )
        error: Literal["auto", "hidden", "logits"] = opt("auto", "where the global error e is read: model's suggestion, last hidden state, or logits")
        error_at: str | None = opt(None, "module whose output gradient is the global error (overrides error)")
        embed: bool = opt(False, "also feed the embedding output (a model-suggested placement only)")

        @model_validator(mode="after")
        def _consistent(self) -> "DFA.Options":
            if self.error_at is not None and self.error != "auto":
                raise ValueError("error_at names the error point itself, so it cannot be combined with error='hidden' or 'logits'")
            if self.embed and not (isinstance(self.points, str) and self.points in ("auto", "macro", "micro")):
                raise ValueError("embed=True adds a point to a model-suggested placement; use points='auto', 'macro' or 'micro'")
            return self

    def _configure(self) -> None:
        if not isinstance(self.points, str):
            self.points = list(self.points)

    def check_time_steps(self, model: nn.Module) -> None:
        """Accept a model running time steps when it declares its time-step layout (the error
        point is then its output layer's neurons) or when ``error_at`` names the error point."""
        if self.error_at is not None or time_step_layout(model_structure(model)):
            return
        self.refuse_time_steps(
            model, "the model does not declare its time-step layout (a structure() naming 'encoder', 'neurons' "
            "and 'readout', as snn-mlp and snn-cnn do), so DFA cannot tell which module's output holds the error "
            "of each step (pass error_at=<module name>)",
        )

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return DFALearner(self, model, loss_fn)
