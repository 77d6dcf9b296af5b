"""Forward-Forward (FF): every layer learns from its own objective; no backward pass between layers.

Papers: "The Forward-Forward Algorithm: Some Preliminary Investigations" (Geoffrey Hinton, 2022)
and "Emergent representations in networks trained with the Forward-Forward algorithm" (Tosato,
Basile, Ballarin, de Alteriis, Cazzaniga, Ansuini, 2023).

The model. FF trains ``nn.Sequential`` chains of ``nn.Linear`` layers (the ``mlp`` model):
``Flatten`` and other parameter-free modules may come before the first Linear, and each Linear
may be followed by parameter-free modules (activation, dropout). Every Linear followed by an
activation is an *FF layer*. A final Linear with no activation after it (the ``mlp`` model's
``out``) is a *linear readout*. Anything else that owns parameters (Conv2d, BatchNorm, ...) is
refused by module path and type. Each Linear must appear once: the same layer object at two
positions of the chain (or a weight tied between two layers) would be trained by two layers'
objectives at once, which FF does not define, so such a model is refused by path; a
parameter-free module (one ``ReLU`` object) may be reused and runs at every position.

Equations. Let ``x̂ = x / rms(x)`` (``normalize="rms"``: ``rms(x) = sqrt(mean_j x_j²)``, as in
loeweX's PyTorch reproduction) or ``x / ‖x‖₂`` (``normalize="l2"``, as in Tosato et al.'s code).
FF layer ``k`` sees the *length-normalised, detached* output of the layer below,
``z_k = f(W_k ĥ_{k-1} + b_k)`` with ``h_0`` the (label-embedded) input, so the length of
``h_{k-1}`` — which is what layer ``k-1``'s goodness measures — cannot leak upward. Its goodness is

    G_k = Σ_j z_kj²      (goodness="sumsq", Hinton)      or      G_k = ‖z_k‖₂   (goodness="norm", Tosato)

with ``P(positive) = σ(G_k − θ_k)``. Its loss on a batch of positive and negative inputs is

    L_k = mean_pos softplus(θ_k − G_k) + mean_neg softplus(G_k − θ_k)

(binary cross-entropy of that probability, written as Tosato et al. write it). Because layer
``k``'s input is detached, ``∂L_k/∂W_j = 0`` for every ``j ≠ k``: the gradient of the summed
loss ``Σ_k L_k`` that the learner hands the optimizer is, per layer, the gradient of that layer's
own objective only. The linear readout ``R`` (if the model has one) is trained by the attach
``loss_fn`` (cross-entropy) on the detached normalised activity of the last FF layer computed with
the *neutral* label, ``logits = R ĥ_L`` — as the reproductions do (loeweX feeds the concatenated
layers 2–3; here the readout is the model's own last Linear, so it sees the last FF layer only).

Supervised data. The label is written into the first ``C`` (number of classes, 10 here) input
features after flattening: those features are set to 0 and feature ``y`` to ``v``, where
``v`` is the largest of the sample's remaining features (``label_value="max"``, Tosato et al.;
for raw [0, 1] MNIST this is Hinton's one-hot) or a fixed number. Positives carry the true
label; negatives carry one wrong label per sample, drawn uniformly from the ``C − 1`` wrong
labels by a ``torch.Generator`` seeded with ``seed``. The neutral label sets all ``C``
features to ``v / C`` (loeweX's uniform label). The input must have at least ``C`` features.

Prediction. ``predict="goodness"`` (default, Hinton): the input is run once per candidate label
``c`` and the score is ``s_c = Σ_k (G_k(x, c) − θ_k)``; the argmax is the label with the largest
summed goodness. These scores are not calibrated logits, so a cross-entropy "test loss" computed
from them means little; accuracy does. ``predict="readout"``: the linear readout's logits on the
neutral-label pass. The model's own ``forward`` (no label, no normalisation) is not what FF
trains: use ``learner.predict``. ``step`` reports ``loss`` = ``Σ_k L_k`` + readout loss, and
each part as ``layer<k>_loss`` / ``readout_loss``.

Schedules. ``train="simultaneous"`` (default, loeweX): every FF layer and the readout take a
step on every batch. ``train="greedy"`` (Tosato et al.): only FF layer
``k = min(epochs_done // epochs_per_layer, L − 1)`` is trained, where ``epochs_done`` counts the
calls of ``on_epoch_end`` (the run loop calls it after every epoch); the readout trains
throughout. The other layers get no gradient (``.grad`` is ``None``), so the optimizer leaves
them alone.

Defaults (loeweX's configuration where it applies): ``goodness="sumsq"``, ``normalize="rms"``,
threshold ``θ_k = width_k`` (number of units) for ``sumsq`` and ``sqrt(width_k)`` for ``norm``
(our scale-matched choice; Tosato et al. use ``norm`` with ``normalize="l2"`` and ``θ = 3``:
pass ``threshold=3.0``). Not implemented: loeweX's peer-normalisation loss and its
gradient-passing ReLU, and Hinton's unsupervised (hybrid-image) negatives. The optimizer is
the caller's (loeweX: SGD 1e-3, momentum 0.9; Tosato et al.: Adam).

Estimate. ``estimate(batch)`` returns the gradient of ``Σ_k L_k`` (and of the readout loss) for
every trained parameter, drawing the negatives from a copy of the generator so the training
stream is not disturbed. It is the gradient of FF's own objectives, not of the classifier loss.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Batch, Learner, LossFn, Options, Rule, check_batch, opt, param_in_optimizer
from .common import run_modules, split_sequential

__all__ = ["FF", "FFLearner"]


# ------------------------------------------------------------------------------------------------
# The learner
# ------------------------------------------------------------------------------------------------
class FFLearner(Learner):
    def __init__(self, rule: "FF", model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__(rule, model, loss_fn)
        self.ff: FF = rule
        self.prefix, blocks = split_sequential(model, rule.name, (nn.Linear,))
        if len(blocks) >= 2 and not blocks[-1].has_activation:
            self.layers, self.readout = blocks[:-1], blocks[-1]
        elif len(blocks) == 1 and not blocks[0].has_activation:
            raise ConfigError(
                "rule 'ff' needs at least one hidden Linear layer followed by an activation; this model "
                f"has only the Linear '{blocks[0].name}' without one"
            )
        else:
            self.layers, self.readout = blocks, None
        if rule.predict == "readout" and self.readout is None:
            raise ConfigError(
                "FF predict='readout' needs a final Linear layer without activation (the linear readout); "
                "this model ends with an FF layer — use predict='goodness'"
            )
        self.num_classes = self._find_classes(model)
        shape = getattr(model, "input_shape", None)
        if shape is not None:
            self._check_features(math.prod(shape))
        self.thresholds = [self._threshold(b.layer.out_features) for b in self.layers]
        self.generator = torch.Generator().manual_seed(rule.seed)
        self.epochs_done = 0

    # -- set-up helpers ------------------------------------------------------------------------
    def _find_classes(self, model: nn.Module) -> int:
        if self.ff.num_classes is not None:
            n = self.ff.num_classes
        elif isinstance(getattr(model, "num_classes", None), int):
            n = model.num_classes
        elif self.readout is not None:
            n = self.readout.layer.out_features
        else:
            raise ConfigError(
                "FF cannot tell the number of classes: the model has no num_classes attribute and no "
                "linear readout; pass num_classes= to the rule"
            )
        if self.readout is not None and self.readout.layer.out_features != n:
            raise ConfigError(
                f"FF: the readout '{self.readout.name}' has {self.readout.layer.out_features} outputs but "
                f"there are {n} classes"
            )
        return int(n)

    def _check_features(self, n_features: int) -> None:
        if n_features < self.num_classes:
            raise ConfigError(
                f"FF writes the label into the first {self.num_classes} input features, but the input has "
                f"only {n_features}; it needs at least as many features as classes"
            )

    def _threshold(self, width: int) -> float:
        if self.ff.threshold is not None:
            return self.ff.threshold
        return float(width) if self.ff.goodness == "sumsq" else math.sqrt(width)

    # -- the FF computation --------------------------------------------------------------------
    def embed(self, x: Tensor, labels: Tensor | int | None) -> Tensor:
        """``x`` with ``labels`` written into its first ``C`` features (``None``: the neutral label)."""
        n = x.shape[0]
        flat = x.reshape(n, -1)
        self._check_features(flat.shape[1])
        C = self.num_classes
        if self.ff.label_value == "max":
            rest = flat[:, C:]
            value = rest.max(dim=1).values if rest.shape[1] else torch.ones(n, dtype=flat.dtype, device=flat.device)
        else:
            value = torch.full((n,), float(self.ff.label_value), dtype=flat.dtype, device=flat.device)
        slots = torch.zeros(n, C, dtype=flat.dtype, device=flat.device)
        if labels is None:
            slots += (value / C)[:, None]
        else:
            if isinstance(labels, int):
                labels = torch.full((n,), labels, dtype=torch.long, device=flat.device)
            slots.scatter_(1, labels.reshape(n, 1).to(flat.device), value[:, None])
        return torch.cat([slots, flat[:, C:]], dim=1).reshape(x.shape)

    def normalize(self, h: Tensor) -> Tensor:
        h = h.flatten(1)
        if self.ff.normalize == "rms":
            return h / (h.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-8)
        return h / (h.norm(dim=1, keepdim=True) + 1e-8)

    def goodness_of(self, z: Tensor) -> Tensor:
        z = z.flatten(1)
        if self.ff.goodness == "sumsq":
            return z.pow(2).sum(dim=1)
        return z.norm(dim=1)

    def layer_outputs(self, x_embedded: Tensor, upto: int | None = None) -> list[Tensor]:
        """Outputs ``z_k`` of the FF layers, each computed from the detached normalised output below."""
        h = run_modules(self.prefix, x_embedded)
        outs = []
        for k, block in enumerate(self.layers):
            if upto is not None and k > upto:
                break
            z = block(self.normalize(h).detach())
            outs.append(z)
            h = z
        return outs

    def negative_labels(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One wrong label per sample, uniform over the ``C − 1`` wrong labels."""
        gen = self.generator if generator is None else generator
        shift = torch.randint(1, self.num_classes, (y.shape[0],), generator=gen)
        return (y.cpu() + shift).remainder(self.num_classes).to(y.device)

    def active_layers(self) -> list[int]:
        if self.ff.train == "simultaneous":
            return list(range(len(self.layers)))
        return [min(self.epochs_done // self.ff.epochs_per_layer, len(self.layers) - 1)]

    def local_losses(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Each trained layer's own loss (``"layer<k>"``) and the readout loss (``"readout"``),
        as tensors carrying their (layer-local) autograd graphs."""
        x, y = check_batch(batch)
        y_neg = self.negative_labels(y, generator)
        active = self.active_layers()
        top = max(active)
        pos = self.layer_outputs(self.embed(x, y), upto=top)
        neg = self.layer_outputs(self.embed(x, y_neg), upto=top)
        out: dict[str, Tensor] = {}
        for k in active:
            theta = self.thresholds[k]
            g_pos, g_neg = self.goodness_of(pos[k]), self.goodness_of(neg[k])
            out[f"layer{k}"] = F.softplus(theta - g_pos).mean() + F.softplus(g_neg - theta).mean()
        if self.readout is not None:
            with torch.no_grad():
                top_neutral = self.layer_outputs(self.embed(x, None))[-1]
            out["readout"] = self.loss_fn(self.readout(self.normalize(top_neutral)), y)
        return out

    # -- the protocol --------------------------------------------------------------------------
    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        self._check_live()
        if not self._active:
            return super().step(batch, optimizer)
        self.check_optimizer(optimizer)
        optimizer.zero_grad(set_to_none=True)
        losses = self.local_losses(batch)
        total = sum(losses.values())
        total.backward()
        optimizer.step()
        self.after_step()
        metrics = {"loss": float(total.detach())}
        metrics.update({f"{k}_loss": float(v.detach()) for k, v in losses.items()})
        return metrics

    def hidden_responses(self, x: Tensor) -> list[Tensor] | None:
        """The FF layers' outputs ``z_k`` for ``x`` with the neutral label (what the readout and
        goodness see), each computed from the normalised output below; ``None`` once detached."""
        if not self._active:
            return None
        return self.layer_outputs(self.embed(x, None))

    def predict(self, x: Tensor) -> Tensor:
        """Class scores ``(N, C)``: summed ``G_k − θ_k`` per candidate label, or readout logits."""
        self._check_live()
        if not self._active:
            return super().predict(x)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self.ff.predict == "readout":
                    top = self.layer_outputs(self.embed(x, None))[-1]
                    return self.readout(self.normalize(top))
                return self.goodness(x, None).sum(dim=2)
        finally:
            self.model.train(was_training)

    def goodness(self, x: Tensor, labels: Tensor | int | None) -> Tensor:
        """Per-layer ``G_k − θ_k`` in eval mode. With ``labels`` (a tensor or one int): shape
        ``(N, L)``; with ``labels=None``: every candidate label, shape ``(N, C, L)``."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                theta = torch.tensor(self.thresholds, dtype=x.dtype, device=x.device)
                if labels is not None:
                    outs = self.layer_outputs(self.embed(x, labels))
                    return torch.stack([self.goodness_of(z) for z in outs], dim=1) - theta
                per_label = []
                for c in range(self.num_classes):
                    outs = self.layer_outputs(self.embed(x, c))
                    per_label.append(torch.stack([self.goodness_of(z) for z in outs], dim=1) - theta)
                return torch.stack(per_label, dim=1)
        finally:
            self.model.train(was_training)

    def activities(self, x: Tensor, labels: Tensor | int | None = None) -> list[Tensor]:
        """Each FF layer's output ``z_k`` (before normalisation), eval mode, for ``x`` with
        ``labels`` embedded (``None``: neutral label) — what the sparsity measurements read."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return [z.flatten(1) for z in self.layer_outputs(self.embed(x, labels))]
        finally:
            self.model.train(was_training)

    def generators(self) -> list[torch.Generator]:
        return [self.generator]

    def _estimate(self, batch: Batch) -> dict[str, Tensor]:
        if not self._active:
            return super()._estimate(batch)
        gen = torch.Generator().manual_seed(0)
        gen.set_state(self.generator.get_state())
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        with torch.enable_grad():
            losses = self.local_losses(batch, generator=gen)
            total = sum(losses.values())
            names = list(params)
            grads = torch.autograd.grad(total, [params[n] for n in names], allow_unused=True)
        return {n: g.detach().clone() for n, g in zip(names, grads) if g is not None}

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        for name, p in self._trained_named_parameters():
            if not param_in_optimizer(p, optimizer):
                raise ConfigError(
                    f"the optimizer does not hold parameter '{name}' that FF trains; build it from "
                    "learner.optimizer_parameters()"
                )

    def _trained_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        keep = {id(p) for b in self.trained_layers().values() for p in b.parameters()}
        return [(n, p) for n, p in self.model.named_parameters() if id(p) in keep and p.requires_grad]

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self._trained_named_parameters()]

    def trained_layers(self) -> dict[str, nn.Module]:
        out = {b.name: b.layer for b in self.layers}
        if self.readout is not None:
            out[self.readout.name] = self.readout.layer
        return out

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        self.epochs_done += 1
        if self.ff.train == "greedy":
            return {"ff_active_layer": float(self.active_layers()[0])}
        return {}

    def rule_state(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state(), "epochs_done": torch.tensor(self.epochs_done)}

    def load_rule_state(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            if key == "generator":
                self.generator.set_state(value.clone())
            elif key == "epochs_done":
                self.epochs_done = int(value)
            else:
                raise ConfigError(f"unknown FF state entry {key!r}; expected 'generator' and 'epochs_done'")


# ------------------------------------------------------------------------------------------------
# The rule
# ------------------------------------------------------------------------------------------------
class FF(Rule):
    name = "ff"
    family: ClassVar[str] = "local"
    summary = "Forward-Forward: each layer separates positive from negative data by its own goodness"
    paper = "The Forward-Forward Algorithm: Some Preliminary Investigations (Hinton 2022)"
    plain_backward = False  # owns its step (layer-local goodness losses)
    supported: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear,)

    class Options(Options):
        seed: int = opt(0, "seed of the generator drawing the wrong labels of the negative data", ge=0, lt=2**32)
        goodness: Literal["sumsq", "norm"] = opt("sumsq", "goodness of a layer: sum of squares (Hinton) or L2 norm (Tosato et al.)")
        threshold: Annotated[float, Field(gt=0)] | None = opt(
            None, "goodness threshold θ; None: width (sumsq) or sqrt(width) (norm)", accepts="a number > 0 or null (None)"
        )
        normalize: Literal["rms", "l2"] = opt("rms", "how a layer's input is normalised before the next layer")
        label_value: Literal["max"] | Annotated[float, Field(gt=0)] = opt(
            "max", "value written into the label features: the sample's largest feature or a number",
            accepts="'max' or a number > 0",
        )
        train: Literal["simultaneous", "greedy"] = opt("simultaneous", "all layers every batch, or one layer at a time (greedy)")
        epochs_per_layer: int = opt(1, "greedy schedule: epochs spent on each layer", ge=1)
        predict: Literal["goodness", "readout"] = opt("goodness", "predict by summed goodness per candidate label, or by the linear readout")
        num_classes: int | None = opt(None, "number of labels embedded in the input; None: the model's output width", ge=2)

    handles_time_steps: ClassVar[bool] = False  # goodness and labels are per row, one row per sample

    def check_model(self, model: nn.Module, passthrough: tuple[type[nn.Module], ...] = ()) -> None:
        self.check_time_steps(model)
        split_sequential(model, self.name, self.supported)

    @staticmethod
    def example_model(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """A model FF trains (for the contract suite, which also tries LeNet: FF refuses Conv2d):
        the library's ``mlp`` with widths (128, 128), weights from the global RNG."""
        from ..models import build

        return build("mlp", tuple(input_shape), num_classes, widths=(128, 128))

    def _make_learner(self, model: nn.Module, loss_fn: LossFn) -> Learner:
        return FFLearner(self, model, loss_fn)
