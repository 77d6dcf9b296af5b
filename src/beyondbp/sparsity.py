"""Sparse Evolutionary Training (SET): adaptive sparse connectivity that composes with every rule.

Paper: "Scalable Training of Artificial Neural Networks with Adaptive Sparse Connectivity
inspired by Network Science" (Mocanu, Mocanu, Stone, Nguyen, Gibescu, Liotta; Nature
Communications 2018). Code defaults: ``epsilon=20``, ``zeta=0.3``.

Method. Every sparse layer with ``n_in`` inputs and ``n_out`` outputs starts as an Erdős–Rényi
random bipartite graph: each connection exists independently with probability

    p = ε (n_in + n_out) / (n_in · n_out)          (clipped at 1)

so the layer holds about ``ε (n_in + n_out)`` connections instead of ``n_in · n_out``. Weights of
absent connections are zero (the layer's own initial values are kept where a connection exists).
After every training epoch the topology evolves: among the existing connections, the fraction
``ζ`` of the positive weights closest to zero and ``ζ`` of the negative weights closest to zero are
removed (``⌊ζ·n_pos⌋`` and ``⌊ζ·n_neg⌋`` of them), and exactly as many new connections are added
at positions drawn uniformly at random among those that were empty before the removal; new
connections start at weight 0. The number of connections — the density — therefore stays
constant to the connection. ``zeta=0`` never evolves: that is the paper's static sparse baseline
("MLP-FixProb").

Choices and deviations, stated:

* Evolution is applied lazily: ``on_epoch_end`` schedules it and the next training step (or an
  explicit :meth:`SparseLearner.evolve`) carries it out, so no connection changes after the last
  epoch and evaluation at the end of an epoch sees the network that was trained — as in the
  authors' code, which evaluates before evolving and does not evolve after the last epoch.
* New connections are drawn among positions that were empty *before* the removal (a removed
  connection is not immediately re-added); only if there are too few such positions are
  removed positions reused. A layer that is fully connected (``p ≥ 1``, e.g. a small output
  layer) stays dense and is not evolved.
* New weights start at 0 (as in the authors' Keras mask implementation and the issue text; their
  2019 NumPy tutorial code draws them from N(0, 0.1²) instead).
* ``rescale=True`` (default) multiplies the kept initial weights of each sparse layer by
  ``1/sqrt(density)``, so that a unit's pre-activation has the variance the model's (dense, fan-in
  scaled) initialisation intended; without it a layer keeping 3 % of its inputs starts with
  pre-activations ~6× smaller, and deep sparse nets barely train under PyTorch's default init.
  The authors instead draw every weight from N(0, 0.1²) whatever the density (sparse and dense
  alike); ``rescale=False`` keeps the model's values unchanged (use it to reproduce their setup).
* Conv layers stay dense by default (the paper is MLP-first, and SET-CNNs sparsify their fully
  connected layers). With ``include_conv=True`` a ConvNd kernel ``(C_out, C_in, *k)`` is treated as a
  bipartite graph between ``n_in = C_in·prod(k)`` kernel inputs and ``n_out = C_out`` outputs
  (grouped convolutions stay dense).

How "absent" is enforced, for any rule and any optimizer. The wrapper keeps a boolean mask per
sparse layer and

1. registers a gradient hook on the weight, so every gradient autograd delivers to it — from
   backprop, FA/KP/PFA's custom backward, DFA's projected errors — is zero at absent positions
   (``estimate`` and the diagnostics see the sparse update direction too);
2. registers a step pre-hook on the optimizer that zeroes the gradient at absent positions (for
   rules that write ``.grad`` themselves) and a step post-hook that re-zeroes absent weights.

With a zero gradient and a zero weight, SGD momentum buffers, Adam moments and (coupled or
decoupled) weight decay all stay exactly zero at absent positions, so absent weights receive no
update. When connections are removed or added, the optimizer's per-parameter state (momentum,
Adam moments) is zeroed at those positions. A feedback matrix of the weight's shape that learns
from the weight's gradient (Kolen-Pollack's ``bbp_feedback``) receives the same masked gradient,
so it still converges to the sparse weight; other rule tensors (FA's fixed ``B``, PFA's ``B`` and
``R``, DFA's projections) stay dense — only the forward network is sparse.

FLOPs. Sparsity is **simulated with masks**: the kernels that run are dense, and
``torch.utils.flop_counter`` counts them at full size (``flops_per_step``). No sparse-kernel
path is implemented. :meth:`SparseLearner.count_flops` also reports ``effective_flops_per_step``,
what a kernel that skips absent connections would execute: for every sparse layer the products
that involve its weight — the forward product, the weight gradient (computed only at existing
connections, as the authors' sparse code does) and, when the rule sends the error back through
the weight itself (backprop), the error product — are scaled by the layer's density; everything
else (dense feedback matrices, DFA's projections, PFA's population, dense layers) is counted in full.
For a rule without a feedback matrix, every product the step attributes to the layer goes through
its weight, however many passes the rule makes (Forward-Forward's positive, negative and neutral
passes, inference learning's relaxation), with at least one forward product and one weight update
(SoftHebb computes its update outside the layer's call); a rule with a feedback matrix has one
forward product and one weight gradient per layer through the weight, its error product being dense.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .compute import extra_flop_formulas
from .errors import ConfigError
from .rules.base import Batch, Learner, is_rule_tensor
from .rules.common import check_seed, layer_generator

SPARSITY_FLAG = "_beyondbp_sparsity"
CONV_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def er_probability(epsilon: float, n_in: int, n_out: int) -> float:
    """SET's Erdős–Rényi connection probability ``ε(n_in + n_out)/(n_in·n_out)``, clipped at 1."""
    return min(1.0, epsilon * (n_in + n_out) / (n_in * n_out))


def layer_fans(module: nn.Module) -> tuple[int, int]:
    """``(n_in, n_out)`` of a Linear or ConvNd layer's bipartite graph."""
    w = module.weight
    return int(w[0].numel()), int(w.shape[0])


class SET:
    """Sparse Evolutionary Training: ``SET(epsilon=20, zeta=0.3).wrap(learner)``.

    ``epsilon`` (> 0) sets the density, ``zeta`` (in [0, 1)) the fraction rewired after every
    epoch (0: static sparse), ``seed`` the masks and the rewiring, ``include_conv`` whether ConvNd
    layers are sparsified too (default: Linear layers only), ``rescale`` whether the kept initial
    weights are scaled by ``1/sqrt(density)`` (see the module docstring).
    """

    name = "set"

    def __init__(
        self,
        *,
        epsilon: float = 20,
        zeta: float = 0.3,
        seed: int = 0,
        include_conv: bool = False,
        rescale: bool = True,
    ) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0 or not math.isfinite(epsilon):
            raise ConfigError(f"SET epsilon must be a positive number, got {epsilon!r}")
        if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0.0 <= zeta < 1.0:
            raise ConfigError(f"SET zeta must be a number in [0, 1), got {zeta!r}")
        if not isinstance(include_conv, bool):
            raise ConfigError(f"SET include_conv must be true or false, got {include_conv!r}")
        if not isinstance(rescale, bool):
            raise ConfigError(f"SET rescale must be true or false, got {rescale!r}")
        self.rescale = rescale
        self.epsilon = float(epsilon)
        self.zeta = float(zeta)
        self.seed = check_seed(seed)
        self.include_conv = include_conv

    def options(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "zeta": self.zeta,
            "seed": self.seed,
            "include_conv": self.include_conv,
            "rescale": self.rescale,
        }

    def __repr__(self) -> str:
        return "SET(" + ", ".join(f"{k}={v!r}" for k, v in self.options().items()) + ")"

    def layer_types(self) -> tuple[type[nn.Module], ...]:
        return (nn.Linear,) + (CONV_LAYERS if self.include_conv else ())

    def wrap(self, learner: Learner, optimizer: torch.optim.Optimizer | None = None) -> "SparseLearner":
        """Make ``learner``'s model sparse and return a learner that keeps it so.

        ``optimizer`` (optional) gets its hooks now; otherwise the first ``step`` installs them.
        Pass it when you drive training yourself with ``loss.backward(); optimizer.step()``.
        """
        if not isinstance(learner, Learner):
            raise ConfigError(f"SET.wrap expects a Learner (rule.attach(model)), got {type(learner).__name__}")
        return SparseLearner(learner, self, optimizer)


class _SparseLayer:
    __slots__ = ("name", "module", "mask", "fmask", "mirrors", "evolve", "handles")

    def __init__(self, name: str, module: nn.Module, mask: Tensor) -> None:
        self.name = name
        self.module = module
        self.mask = mask  # bool: which connections exist
        self.fmask = mask.to(module.weight.dtype)  # the same as numbers (multiplying by it is ~5x faster)
        self.mirrors: list[nn.Parameter] = []
        self.evolve = not bool(mask.all())
        self.handles: list[Any] = []


class SparseLearner(Learner):
    """A learner whose model's Linear (and optionally ConvNd) layers are SET-sparse.

    Delegates the rule's work to the wrapped learner (``inner``) and adds the masks. Extra API:
    :meth:`density`, :meth:`n_active_params`, :meth:`n_params`, :meth:`evolve`,
    :meth:`count_flops`, :meth:`effective_flops`, and ``history`` (one record per evolution).
    """

    def __init__(self, inner: Learner, config: SET, optimizer: torch.optim.Optimizer | None = None) -> None:
        model = inner.model
        if getattr(model, SPARSITY_FLAG, False):
            raise ConfigError("this model is already sparse; detach the sparse learner before wrapping again")
        super().__init__(inner.rule, model, inner.loss_fn)
        self.inner = inner
        self.config = config
        self.sparse_layers: dict[str, _SparseLayer] = {}
        self.history: list[dict[str, Any]] = []
        self._pending = False
        self._optimizer: torch.optim.Optimizer | None = None
        self._opt_handles: list[Any] = []
        self._hooked: list[torch.optim.Optimizer] = []
        self._post_hook_ran = False
        digest_gen = layer_generator(config.seed, 0, salt="set-evolve")
        self._generator = digest_gen
        types = config.layer_types()
        index = 0
        for name, module in model.named_modules():
            if not isinstance(module, types):
                continue
            if isinstance(module, CONV_LAYERS) and module.groups != 1:
                index += 1
                continue  # grouped kernels stay dense
            n_in, n_out = layer_fans(module)
            p = er_probability(config.epsilon, n_in, n_out)
            gen = layer_generator(config.seed, index, salt="set-mask")
            index += 1
            mask = (torch.rand(module.weight.shape, generator=gen) < p).to(module.weight.device)
            layer = _SparseLayer(name, module, mask)
            layer.mirrors = [
                p_ for n_, p_ in module.named_parameters(recurse=False)
                if is_rule_tensor(n_) and p_.shape == module.weight.shape
            ]
            for param in [module.weight, *layer.mirrors]:
                if param.requires_grad:  # rules that write weights themselves (SoftHebb) have none
                    layer.handles.append(param.register_hook(_masker(layer)))
            self.sparse_layers[name] = layer
            kept = int(mask.sum())
            if config.rescale and 0 < kept < mask.numel():
                with torch.no_grad():
                    module.weight.mul_(math.sqrt(mask.numel() / kept))
        if not self.sparse_layers:
            raise ConfigError(
                "SET found no layer to sparsify (it sparsifies nn.Linear layers, and ConvNd layers with "
                "include_conv=True)"
            )
        self._apply_weight_masks()
        object.__setattr__(model, SPARSITY_FLAG, True)
        if optimizer is not None:
            self._hook_optimizer(optimizer)

    # -- masks -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _apply_weight_masks(self) -> None:
        for layer in self.sparse_layers.values():
            w = layer.module.weight
            if layer.mask.device != w.device or layer.fmask.dtype != w.dtype:
                layer.mask = layer.mask.to(w.device)
                layer.fmask = layer.mask.to(w.dtype)
            w.mul_(layer.fmask)

    @torch.no_grad()
    def _mask_grads(self) -> None:
        for layer in self.sparse_layers.values():
            for p in [layer.module.weight, *layer.mirrors]:
                if p.grad is not None:
                    p.grad.mul_(layer.fmask.to(p.grad.dtype))

    def _hook_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        while not isinstance(optimizer, torch.optim.Optimizer) and getattr(optimizer, "_optimizer", None) is not None:
            optimizer = optimizer._optimizer  # a run's one-step wrapper (lr control, learning gate): hook the optimizer
        self._optimizer = optimizer
        if any(o is optimizer for o in self._hooked):
            return

        def pre(opt: Any, args: Any, kwargs: Any) -> None:
            self._mask_grads()

        def post(opt: Any, args: Any, kwargs: Any) -> None:
            self._apply_weight_masks()
            self._post_hook_ran = True

        self._opt_handles += [optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post)]
        self._hooked.append(optimizer)

    # -- the protocol, delegated -------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        self._hook_optimizer(optimizer)
        if self._pending:
            self.evolve()
        self._post_hook_ran = False
        metrics = self.inner.step(batch, optimizer)
        if not self._post_hook_ran:  # the rule changed weights without optimizer.step()
            self._apply_weight_masks()
        return metrics

    def predict(self, x: Tensor) -> Tensor:
        self._check_live()
        return self.inner.predict(x)

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        """The rule's update direction, zero at absent connections (rules that compute updates
        outside autograd, such as SoftHebb, are masked here rather than by the gradient hook)."""
        out = self.inner.estimate(batch)
        params = dict(self.model.named_parameters())
        for name, layer in self.sparse_layers.items():
            prefix = f"{name}." if name else ""
            for key, value in out.items():
                if key.startswith(prefix) and "." not in key[len(prefix):] and value.shape == layer.mask.shape:
                    p = params.get(key)
                    if p is layer.module.weight or any(p is m for m in layer.mirrors):
                        out[key] = value * layer.mask
        return out

    def _backprop_gradients(self, batch: Batch) -> dict[str, Tensor]:
        return self.inner.backprop_gradients(batch)

    def generators(self) -> list[torch.Generator]:
        return [self._generator, *self.inner.generators()]

    def _diagnostics(self, batch: Batch) -> dict[str, float]:
        out = self.inner.diagnostics(batch)
        for name, d in self.density().items():
            out[f"density/{name}"] = d
        return out

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.inner.check_optimizer(optimizer)

    def after_step(self) -> None:
        self.inner.after_step()
        self._apply_weight_masks()

    def on_epoch_start(self, epoch: int) -> None:
        self.inner.on_epoch_start(epoch)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        metrics = dict(self.inner.on_epoch_end(epoch))
        if self.config.zeta > 0 and any(layer.evolve for layer in self.sparse_layers.values()):
            self._pending = True
        metrics["set/density"] = self.overall_density()
        metrics["set/active_params"] = float(self.n_active_params())
        return metrics

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return self.inner.optimizer_parameters()

    def trained_layers(self) -> dict[str, nn.Module]:
        return self.inner.trained_layers()

    def feedback_matrix(self, layer_name: str) -> Tensor | None:
        return self.inner.feedback_matrix(layer_name)

    def rule_state(self) -> dict[str, Tensor]:
        state = {f"rule.{k}": v for k, v in self.inner.rule_state().items()}
        for name, layer in self.sparse_layers.items():
            state[f"set.mask.{name}"] = layer.mask.detach().clone()
        state["set.generator"] = self._generator.get_state()
        state["set.pending"] = torch.tensor(self._pending)
        return state

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        inner = {k[5:]: v for k, v in state.items() if k.startswith("rule.")}
        self.inner.load_rule_state(inner)
        for key, value in state.items():
            if key.startswith("rule."):
                continue
            if key.startswith("set.mask."):
                name = key[len("set.mask."):]
                if name not in self.sparse_layers or self.sparse_layers[name].mask.shape != value.shape:
                    raise ConfigError(f"SET state has a mask for {name!r} that does not fit this model")
                self.sparse_layers[name].mask.copy_(value.to(torch.bool))
                self.sparse_layers[name].fmask.copy_(self.sparse_layers[name].mask)
            elif key == "set.generator":
                self._generator.set_state(value)
            elif key == "set.pending":
                self._pending = bool(value)
            else:
                raise ConfigError(f"unknown SET state entry {key!r}")
        self._apply_weight_masks()

    def detach(self) -> None:
        if self._detached:
            return
        for layer in self.sparse_layers.values():
            for h in layer.handles:
                h.remove()
            layer.handles = []
        for h in self._opt_handles:
            h.remove()
        self._opt_handles = []
        self._hooked = []
        if SPARSITY_FLAG in self.model.__dict__:
            object.__delattr__(self.model, SPARSITY_FLAG)
        self.inner.detach()
        self._detached = True

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        with self.inner.disabled():
            yield

    # -- SET's own API ---------------------------------------------------------------------------
    def masks(self) -> dict[str, Tensor]:
        """The current boolean connection masks, by layer (copies)."""
        return {name: layer.mask.detach().clone() for name, layer in self.sparse_layers.items()}

    def density(self) -> dict[str, float]:
        """Fraction of existing connections per sparse layer."""
        return {name: float(layer.mask.sum()) / layer.mask.numel() for name, layer in self.sparse_layers.items()}

    def n_connections(self) -> dict[str, int]:
        return {name: int(layer.mask.sum()) for name, layer in self.sparse_layers.items()}

    def overall_density(self) -> float:
        total = sum(layer.mask.numel() for layer in self.sparse_layers.values())
        return sum(int(layer.mask.sum()) for layer in self.sparse_layers.values()) / total

    def n_params(self) -> int:
        """Model parameters when dense (rule tensors such as ``bbp_*`` excluded)."""
        return sum(p.numel() for n, p in self.model.named_parameters() if not is_rule_tensor(n))

    def n_active_params(self) -> int:
        """Model parameters that exist: absent connections of sparse layers are not counted."""
        absent = sum(layer.mask.numel() - int(layer.mask.sum()) for layer in self.sparse_layers.values())
        return self.n_params() - absent

    @torch.no_grad()
    def evolve(self) -> dict[str, int]:
        """Prune and regrow now (normally scheduled by ``on_epoch_end``); returns rewired counts."""
        self._pending = False
        zeta = self.config.zeta
        record: dict[str, Any] = {"rewired": {}, "removed": {}, "added": {}}
        for name, layer in self.sparse_layers.items():
            if not layer.evolve or zeta == 0:
                continue
            w = layer.module.weight
            mask = layer.mask
            flat_w = w.detach().reshape(-1)
            flat_m = mask.reshape(-1)
            pos = torch.nonzero(flat_m & (flat_w > 0)).squeeze(1)
            neg = torch.nonzero(flat_m & (flat_w < 0)).squeeze(1)
            k_pos, k_neg = int(zeta * pos.numel()), int(zeta * neg.numel())
            removed = []
            if k_pos:
                removed.append(pos[torch.topk(flat_w[pos], k_pos, largest=False).indices])
            if k_neg:
                removed.append(neg[torch.topk(flat_w[neg], k_neg, largest=True).indices])
            if not removed:
                continue
            gone = torch.cat(removed)
            n = gone.numel()
            empty = torch.nonzero(~flat_m).squeeze(1)
            if empty.numel() >= n:
                order = torch.randperm(empty.numel(), generator=self._generator)[:n].to(empty.device)
                added = empty[order]
            else:
                extra = torch.randperm(n, generator=self._generator)[: n - empty.numel()].to(gone.device)
                added = torch.cat([empty, gone[extra]])
            old = mask.clone()
            flat_m[gone] = False
            flat_m[added] = True
            flat_w[gone] = 0.0
            flat_w[added] = 0.0
            layer.fmask.copy_(mask)
            keep = old & mask
            self._reset_optimizer_state([w, *layer.mirrors], keep)
            record["removed"][name] = [int(i) for i in gone.tolist()] if n <= 64 else n
            record["added"][name] = [int(i) for i in added.tolist()] if n <= 64 else n
            record["rewired"][name] = n
        self.history.append(record)
        return dict(record["rewired"])

    def _reset_optimizer_state(self, params: list[Tensor], keep: Tensor) -> None:
        if self._optimizer is None:
            return
        for p in params:
            state = self._optimizer.state.get(p)
            if not state:
                continue
            for value in state.values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.mul_(keep.to(value.dtype))

    # -- FLOPs -----------------------------------------------------------------------------------
    def effective_flops(self, step_counts: Mapping[str, Mapping[Any, int]], forward_counts: Mapping[str, Mapping[Any, int]]) -> int:
        """Effective FLOPs of a step from two ``FlopCounterMode.get_flop_counts()`` breakdowns:
        one of the training step (``step_counts``) and one of a forward pass on the same batch.
        See the module docstring for what is scaled by density."""
        total = sum(step_counts.get("Global", {}).values())
        prefix = type(self.model).__name__
        saved = 0.0
        for name, layer in self.sparse_layers.items():
            key = f"{prefix}.{name}" if name else prefix
            fwd = sum(forward_counts.get(key, {}).values())
            in_step = sum(step_counts.get(key, {}).values())
            if fwd == 0:
                continue
            if self.inner.feedback_matrix(name) is None:
                # everything done by the layer goes through W (forward passes, errors sent back
                # through W, the weight gradient), and at least a forward product and an update
                through_w = max(in_step, 2 * fwd)
            else:  # forward product and weight gradient; the error goes through the dense feedback
                through_w = 2 * fwd
            saved += (1.0 - float(layer.mask.float().mean())) * through_w
        return int(round(total - saved))

    def counted_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> tuple[dict[str, float], dict[str, int]]:
        """One real training step under a FLOP counter, plus a counted forward pass on the same
        inputs (one pass of the model's own forward, eval mode, no gradients, no side effects).
        Returns the step's metrics and ``{"flops_per_step", "effective_flops_per_step",
        "forward_flops"}``: the dense-executed count as measured, what sparse kernels would
        execute, and the forward count used."""
        x, _ = batch
        fwd_counter = self._module_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with fwd_counter, torch.no_grad():
                self.model(x)
        finally:
            self.model.train(was_training)
        step_counter = self._module_counter()
        with step_counter:
            metrics = self.step(batch, optimizer)
        counts = {
            "flops_per_step": int(step_counter.get_total_flops()),
            "effective_flops_per_step": self.effective_flops(step_counter.get_flop_counts(), fwd_counter.get_flop_counts()),
            "forward_flops": int(fwd_counter.get_total_flops()),
        }
        return metrics, counts

    def _module_counter(self) -> FlopCounterMode:
        """A FLOP counter whose per-module breakdown uses :class:`_LayerTracker` (see there)."""
        counter = FlopCounterMode(display=False, custom_mapping=extra_flop_formulas())  # nn.LSTM's fused kernel too
        counter.mod_tracker = _LayerTracker(self.model)
        return counter

    def count_flops(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        """:meth:`counted_step`'s FLOP counts (**the step trains the model**)."""
        return self.counted_step(batch, optimizer)[1]

    def summary(self) -> dict[str, Any]:
        """Method, options, densities and how FLOPs are counted (for run results)."""
        return {
            "method": "set",
            **self.config.options(),
            "density": self.overall_density(),
            "layers": self.density(),
            "connections": self.n_connections(),
            "rewirings": len(self.history),
            "kernels": "dense kernels with masks (sparsity simulated); effective FLOPs scale the products of sparse weights by density",
        }


class _LayerTracker:
    """Tells ``FlopCounterMode`` which modules an operation belongs to (its ``parents``), in
    place of torch's ``ModuleTracker``.

    Forward: the modules whose call is in progress, named ``<Model>.<path>`` even when a rule
    calls a layer directly rather than through the model (FF, IL). Backward: when a module's
    call returns, the autograd nodes it created are tagged with the names of the modules in
    progress, and a backward operation belongs to the modules tagged on the node that runs it
    (``torch._C._current_autograd_node``). torch's tracker instead enters a module in the
    backward when a gradient reaches its output and leaves it when one reaches its input; that
    never happens for an input that needs no gradient (a detached layer input: FF, IL's weight
    update), so later layers' work is counted for it as well; and it registers autograd hooks on
    module inputs that make ``torch.autograd.grad`` fail on leaf tensors.
    """

    _KEY = "beyondbp_modules"

    def __init__(self, model: nn.Module) -> None:
        root = type(model).__name__
        self.names = {
            id(m): f"{root}.{path}" if path else root for path, m in model.named_modules(remove_duplicate=False)
        }
        self._stack: list[tuple[str, int]] = []
        self._handles: list[Any] = []

    @property
    def parents(self) -> set[str]:
        node = torch._C._current_autograd_node()
        if node is not None:
            return {"Global", *node.metadata.get(self._KEY, ())}
        return {"Global", *(name for name, _ in self._stack)}

    @staticmethod
    def _next_sequence_nr() -> int:
        with torch.enable_grad():
            return torch.zeros((), requires_grad=True).view(()).grad_fn._sequence_nr()

    def _pre(self, module: nn.Module, args: Any) -> None:
        name = self.names.get(id(module))
        if name is not None:  # no autograd nodes are made without grad mode (no_grad, inference_mode)
            self._stack.append((name, self._next_sequence_nr() if torch.is_grad_enabled() else None))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        name = self.names.get(id(module))
        if name is None or not self._stack or self._stack[-1][0] != name:
            return
        _, start = self._stack.pop()
        if start is None:
            return
        names = {name, *(n for n, _ in self._stack)}
        todo = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            if id(node) in seen or node._sequence_nr() < start or type(node).__name__ == "AccumulateGrad":
                continue  # created before this call (the module's inputs), or a leaf
            seen.add(id(node))
            node.metadata.setdefault(self._KEY, set()).update(names)
            todo.extend(n for n, _ in node.next_functions if n is not None)

    def __enter__(self) -> "_LayerTracker":
        self._handles = [
            nn.modules.module.register_module_forward_pre_hook(self._pre),
            nn.modules.module.register_module_forward_hook(self._post),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack = []


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _masker(layer: _SparseLayer):
    def hook(grad: Tensor) -> Tensor:
        return grad * layer.fmask.to(device=grad.device, dtype=grad.dtype)

    return hook
