"""``snn-mlp`` and ``snn-cnn`` side by side in beyondbp, snnTorch and SpikingJelly: same function,
training-step time, accuracy after one epoch of Fashion-MNIST.

Runs in the benchmark-only environment (bench/README.md, "snn_anchors.py": snnTorch and
SpikingJelly are never dependencies of the package); a library that is not installed is skipped
with one line. The networks, in every library:

``snn-mlp``  784-1000-10: Linear → LIF → Linear → LIF, spike-count readout (logits = output
             spikes summed over the T steps), cross-entropy on the counts.
``snn-cnn``  12C5-MP2-64C5-MP2-FC10: Conv → MaxPool → LIF → Conv → MaxPool → LIF → Linear → LIF,
             the same readout.

Neurons: LIF, β = 0.95, threshold 1, reset by subtraction, arctan surrogate (α = 2), direct
input (the image is the input current of every step: the first Linear / Conv, and the first
pooling, run once per sample in all three, and their output feeds the first LIF layer at every
step), T = 25, zero initial state. Training: Adam lr 5e-4, batch 128, one epoch.

* beyondbp: ``models.build('snn-mlp' | 'snn-cnn', (1, 28, 28), 10)`` trained by
  ``rules.get('backprop').attach(model).step`` (BPTT with the surrogate gradient).
* snnTorch (``snn.Leaky(beta=0.95, spike_grad=surrogate.atan(alpha=2))``, tutorials 5 / 6): a
  Python loop over the steps calling each layer per step, as the tutorials do. snnTorch always
  detaches the reset from the graph (its ``mem_reset``), beyondbp and SpikingJelly do not by
  default: same forward pass, slightly different gradients.
* SpikingJelly (activation_based, ``neuron.LIFNode(tau=20, decay_input=False, v_reset=None,
  surrogate_function=surrogate.ATan())``, multi-step mode ``step_mode='m'`` for every layer,
  ``functional.reset_net`` before each batch): its charge equation with ``decay_input=False`` is
  ``H_t = V_{t−1} − V_{t−1}/τ + X_t``, i.e. the decay ``β = 1 − 1/τ``, so ``τ = 1/(1 − β) = 20``
  gives β = 0.95 (computed as ``v − v/20`` instead of ``0.95·v``: the same real number, rounded
  differently in float32); ``v_reset=None`` is its soft (subtract) reset. On CPU, with
  gradients, SpikingJelly 2.0.0 runs its multi-step LIF as its Torch reference: a per-step loop
  of PyTorch ops recorded by autograd (the profile shows ``_SurrogateSpike`` and ``StackBackward0``
  nodes; its fused kernels are CUDA / Triton), and there is no ``backend`` argument any more.

Same initial weights: beyondbp's model is built first (``--seed``) and its parameters are copied
into the other two, so accuracy differences come from the libraries, not from initial weights;
all three see the same batches in the same order (one shared permutation per epoch).

Same function (printed first): on one batch from the same weights, each library's spike counts
are compared with beyondbp's, and with plain-torch references that switch the differences one at
a time (where the reset acts, ``>`` or ``≥`` at threshold, ``0.95·v`` or ``v − v/20``), to show
which difference accounts for a mismatch. beyondbp and snnTorch share the equations (reset one
step after the spike, on the pre-reset membrane; ``U > θ``); SpikingJelly resets within the step
and then decays the reset membrane, ``H_t = β (H_{t−1} − θ S_{t−1}) + X_t``, and fires at
``H ≥ θ`` — a different function (each spike removes ``βθ`` instead of ``θ`` from the next
membrane). The gradients of beyondbp with ``detach_reset=True`` are compared with snnTorch's.

Time: after ``--warmup`` untimed steps per library, ``--rounds`` rounds; in each round every
library does ``--steps`` timed training steps on one fixed batch, the order rotated from round to
round. Per round, each library's median step time is divided by the faster anchor's (the smaller
of snnTorch's and SpikingJelly's medians in that round); the printed ratio is the median over
rounds, with its IQR, and the same from process CPU time (``time.process_time``; with one thread,
less disturbed by other processes on a shared machine).

Accuracy: each library trains its copy for ``--epochs`` over ``--n-train`` training samples
(default all 60,000) and is tested on ``--n-test`` test samples (default all 10,000); the
prediction is the class with most output spikes (ties: the lowest index, in every library).
With ``--seeds 0,1,...`` this is repeated per seed (initial weights and batch order) and a summary
gives each library's mean ± sd over the seeds and the paired differences beyondbp − anchor
(mean ± sd, standard error, and |mean| / s.e.).

    python bench/snn_anchors.py                                  # both models, check, time, 1 epoch
    python bench/snn_anchors.py --models snn-mlp --n-train 6000 --n-test 2000
    python bench/snn_anchors.py --skip-accuracy --rounds 15      # check and time only
    python bench/snn_anchors.py --models snn-mlp --skip-check --skip-time --seeds 0,1,2,3,4   # accuracy, mean ± sd
    python bench/snn_anchors.py --profile --models snn-mlp       # torch.profiler of beyondbp's step
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from beyondbp import data as bbp_data
from beyondbp import models as bbp_models
from beyondbp import rules as bbp_rules

try:
    import snntorch as snn
    from snntorch import surrogate as snn_surrogate
except ImportError:  # pragma: no cover - depends on the environment
    snn = None
try:
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate
except ImportError:  # pragma: no cover
    sj_functional = None

LIBS = ("beyondbp", "snntorch", "spikingjelly")
ANCHORS = ("snntorch", "spikingjelly")
#: beyondbp parameter name -> the anchors' module name, per model.
PARAM_MAP = {
    "snn-mlp": {"fc1": "fc1", "out": "fc2"},
    "snn-cnn": {"conv1": "conv1", "conv2": "conv2", "out": "fc"},
}


# -- snnTorch ---------------------------------------------------------------------------------------

class SnnTorchMLP(nn.Module):
    """Tutorial 5's network, the count readout; fc1 runs once (its input is constant)."""

    def __init__(self, T: int, beta: float) -> None:
        super().__init__()
        self.T = T
        self.fc1 = nn.Linear(784, 1000)
        self.lif1 = snn.Leaky(beta=beta, spike_grad=snn_surrogate.atan(alpha=2.0))
        self.fc2 = nn.Linear(1000, 10)
        self.lif2 = snn.Leaky(beta=beta, spike_grad=snn_surrogate.atan(alpha=2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        cur1 = self.fc1(x.flatten(1))
        out = []
        for _ in range(self.T):
            spk1, mem1 = self.lif1(cur1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            out.append(spk2)
        return torch.stack(out).sum(0)


class SnnTorchCNN(nn.Module):
    """Tutorial 6's network (12C5-MP2-64C5-MP2-FC10), the count readout; conv1 + pool run once."""

    def __init__(self, T: int, beta: float) -> None:
        super().__init__()
        self.T = T
        self.conv1 = nn.Conv2d(1, 12, 5)
        self.conv2 = nn.Conv2d(12, 64, 5)
        self.fc = nn.Linear(64 * 4 * 4, 10)
        self.lif1, self.lif2, self.lif3 = (snn.Leaky(beta=beta, spike_grad=snn_surrogate.atan(alpha=2.0)) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2, mem3 = self.lif1.reset_mem(), self.lif2.reset_mem(), self.lif3.reset_mem()
        cur1 = F.max_pool2d(self.conv1(x), 2)
        out = []
        for _ in range(self.T):
            spk1, mem1 = self.lif1(cur1, mem1)
            spk2, mem2 = self.lif2(F.max_pool2d(self.conv2(spk1), 2), mem2)
            spk3, mem3 = self.lif3(self.fc(spk2.flatten(1)), mem3)
            out.append(spk3)
        return torch.stack(out).sum(0)


# -- SpikingJelly -----------------------------------------------------------------------------------

def _sj_lif(tau: float) -> nn.Module:
    return sj_neuron.LIFNode(tau=tau, decay_input=False, v_threshold=1.0, v_reset=None,
                             surrogate_function=sj_surrogate.ATan(alpha=2.0), detach_reset=False, step_mode="m")


class SpikingJellyMLP(nn.Module):
    """Multi-step (``step_mode='m'``) layers; fc1 runs once on ``[B, ...]``, its output expanded to
    ``[T, B, 1000]`` (a view) for the first LIF layer."""

    def __init__(self, T: int, beta: float) -> None:
        super().__init__()
        self.T = T
        tau = 1.0 / (1.0 - beta) if beta < 1 else None
        tau = round(tau, 9)  # 1/(1-0.95) is 19.99999999999998 in doubles; SJ wants the time constant, 20
        self.fc1 = sj_layer.Linear(784, 1000, step_mode="s")
        self.lif1 = _sj_lif(tau)
        self.fc2 = sj_layer.Linear(1000, 10, step_mode="m")
        self.lif2 = _sj_lif(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sj_functional.reset_net(self)
        cur1 = self.fc1(x.flatten(1))
        s1 = self.lif1(cur1.unsqueeze(0).expand(self.T, *cur1.shape))
        return self.lif2(self.fc2(s1)).sum(0)


class SpikingJellyCNN(nn.Module):
    def __init__(self, T: int, beta: float) -> None:
        super().__init__()
        self.T = T
        tau = round(1.0 / (1.0 - beta), 9)
        self.conv1 = sj_layer.Conv2d(1, 12, 5, step_mode="s")
        self.pool1 = sj_layer.MaxPool2d(2, step_mode="s")
        self.lif1 = _sj_lif(tau)
        self.conv2 = sj_layer.Conv2d(12, 64, 5, step_mode="m")
        self.pool2 = sj_layer.MaxPool2d(2, step_mode="m")
        self.lif2 = _sj_lif(tau)
        self.flat = sj_layer.Flatten(step_mode="m")
        self.fc = sj_layer.Linear(64 * 4 * 4, 10, step_mode="m")
        self.lif3 = _sj_lif(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sj_functional.reset_net(self)
        cur1 = self.pool1(self.conv1(x))
        s1 = self.lif1(cur1.unsqueeze(0).expand(self.T, *cur1.shape))
        s2 = self.lif2(self.pool2(self.conv2(s1)))
        return self.lif3(self.fc(self.flat(s2))).sum(0)


# -- building the three from one initial state ------------------------------------------------------

def available() -> list[str]:
    libs = ["beyondbp"]
    if snn is None:
        print("# snnTorch is not installed: skipped (pip install snntorch; see bench/README.md)")
    else:
        libs.append("snntorch")
    if sj_functional is None:
        print("# SpikingJelly is not installed: skipped (pip install spikingjelly; see bench/README.md)")
    else:
        libs.append("spikingjelly")
    return libs


def build(model: str, libs: list[str], T: int, beta: float, seed: int, **bbp_options) -> dict[str, nn.Module]:
    """{library: model}, all holding beyondbp's initial parameters."""
    torch.manual_seed(seed)
    base = bbp_models.build(model, (1, 28, 28), 10, T=T, beta=beta, **bbp_options)
    nets: dict[str, nn.Module] = {"beyondbp": base}
    cls = {"snn-mlp": (SnnTorchMLP, SpikingJellyMLP), "snn-cnn": (SnnTorchCNN, SpikingJellyCNN)}[model]
    for lib, make in zip(ANCHORS, cls):
        if lib in libs:
            net = make(T, beta)
            copy_parameters(model, base, net)
            nets[lib] = net
    return nets


def copy_parameters(model: str, src: nn.Module, dst: nn.Module) -> None:
    with torch.no_grad():
        for s, d in PARAM_MAP[model].items():
            for p in ("weight", "bias"):
                getattr(getattr(dst, d), p).copy_(getattr(getattr(src, s), p))


class Trainer:
    """One library's model with its Adam optimizer and training step (loss: cross-entropy on the
    spike counts). beyondbp's step is the library's own ``learner.step``."""

    def __init__(self, lib: str, net: nn.Module, lr: float) -> None:
        self.lib, self.net = lib, net
        if lib == "beyondbp":
            self.learner = bbp_rules.get("backprop").attach(net)
            self.opt = torch.optim.Adam(self.learner.optimizer_parameters(), lr=lr)
        else:
            self.learner = None
            self.opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.learner is not None:
            self.learner.step((x, y), self.opt)
            return
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
        self.net.eval()
        correct = 0
        for i in range(0, len(x), batch):
            correct += int((self.net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
        self.net.train()
        return correct / len(x)


# -- same function ----------------------------------------------------------------------------------

def reference_lif(x_seq: torch.Tensor, beta: float, *, reset_within: bool, ge: bool, sub_decay: bool,
                  theta: float = 1.0) -> torch.Tensor:
    """Plain-torch LIF over ``[T, B, ...]`` (no gradients), the differences switchable:
    ``reset_within`` (SpikingJelly: V_t = H_t − θ S_t, decayed next step) or not (beyondbp /
    snnTorch: U_t = β U_{t−1} + I_t − θ S_{t−1}); ``ge`` fires at H ≥ θ (SpikingJelly) instead of
    H > θ; ``sub_decay`` decays as v − v/τ (SpikingJelly) instead of β·v."""
    tau = round(1.0 / (1.0 - beta), 9)
    v = torch.zeros_like(x_seq[0])
    s_prev = torch.zeros_like(v)
    out = []
    for x in x_seq:
        h = (v - v / tau if sub_decay else beta * v) + x
        if not reset_within:
            h = h - theta * s_prev
        s = ((h >= theta) if ge else (h > theta)).to(x.dtype)
        v = h - theta * s if reset_within else h
        s_prev = s
        out.append(s)
    return torch.stack(out)


@torch.no_grad()
def reference_counts(model: str, net: nn.Module, x: torch.Tensor, T: int, beta: float, **lif) -> torch.Tensor:
    """The network (beyondbp's parameters, read from ``net``) with :func:`reference_lif` neurons."""
    neurons = lambda seq: reference_lif(seq, beta, **lif)  # noqa: E731
    if model == "snn-mlp":
        cur = F.linear(x.flatten(1), net.fc1.weight, net.fc1.bias)
        s1 = neurons(cur.unsqueeze(0).expand(T, *cur.shape))
        return neurons(F.linear(s1, net.out.weight, net.out.bias)).sum(0)
    cur = F.max_pool2d(F.conv2d(x, net.conv1.weight, net.conv1.bias), 2)
    s1 = neurons(cur.unsqueeze(0).expand(T, *cur.shape))
    c2 = F.max_pool2d(F.conv2d(s1.flatten(0, 1), net.conv2.weight, net.conv2.bias), 2)
    s2 = neurons(c2.view(T, x.shape[0], *c2.shape[1:]))
    return neurons(F.linear(s2.flatten(2), net.out.weight, net.out.bias)).sum(0)


def compare(a: torch.Tensor, b: torch.Tensor) -> str:
    diff = (a != b)
    if not diff.any():
        return "identical"
    return (f"{int(diff.sum())}/{diff.numel()} counts differ (max |diff| {float((a - b).abs().max()):g}), "
            f"{int((a.argmax(1) != b.argmax(1)).sum())}/{a.shape[0]} predictions")


def check_same_function(model: str, libs: list[str], x: torch.Tensor, y: torch.Tensor, args) -> None:
    nets = build(model, libs, args.T, args.beta, args.seed)
    with torch.no_grad():
        counts = {lib: net(x) for lib, net in nets.items()}
    bbp = counts["beyondbp"]
    print(f"\n## {model}: same function? spike counts on one batch of {x.shape[0]} test images, same weights")
    print(f"  beyondbp: mean count {float(bbp.mean()):.3f} spikes per output neuron, T={args.T}")
    for lib in libs[1:]:
        print(f"  {lib} vs beyondbp: {compare(counts[lib], bbp)}")
    refs = {
        "ref (beyondbp's equations: reset next step, U > θ, β·v)": dict(reset_within=False, ge=False, sub_decay=False),
        "ref with ≥ instead of >": dict(reset_within=False, ge=True, sub_decay=False),
        "ref with v − v/20 instead of 0.95·v": dict(reset_within=False, ge=False, sub_decay=True),
        "ref with reset within the step (V = H − θS)": dict(reset_within=True, ge=False, sub_decay=False),
        "ref (SpikingJelly's equations: all three)": dict(reset_within=True, ge=True, sub_decay=True),
    }
    for name, lif in refs.items():
        r = reference_counts(model, nets["beyondbp"], x, args.T, args.beta, **lif)
        against = [f"beyondbp: {compare(r, bbp)}"] + [f"{lib}: {compare(r, counts[lib])}" for lib in libs[1:]]
        print(f"  {name}\n      vs " + "; ".join(against))
    if "snntorch" in libs:
        # gradients: beyondbp with the reset detached (as snnTorch always does) against snnTorch
        bd = build(model, ["beyondbp", "snntorch"], args.T, args.beta, args.seed, detach_reset=True)
        grads = {}
        for lib, net in bd.items():
            net.zero_grad()
            F.cross_entropy(net(x), y).backward()
            grads[lib] = {f"{k}.{p}": getattr(getattr(net, k if lib == "beyondbp" else m), p).grad.clone()
                          for k, m in PARAM_MAP[model].items() for p in ("weight", "bias")}
        parts = []
        for name, g in grads["beyondbp"].items():
            h = grads["snntorch"][name]
            rel = float((g - h).norm() / g.norm().clamp_min(1e-30))
            parts.append(f"{name} {'identical' if torch.equal(g, h) else f'rel. diff {rel:.1e}'}")
        print("  gradients, beyondbp (detach_reset=True) vs snnTorch: " + ", ".join(parts))


# -- time -------------------------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def time_steps(model: str, libs: list[str], x: torch.Tensor, y: torch.Tensor, args) -> None:
    nets = build(model, libs, args.T, args.beta, args.seed, detach_reset=args.detach_reset)
    trainers = {lib: Trainer(lib, net, args.lr) for lib, net in nets.items()}
    for tr in trainers.values():
        for _ in range(args.warmup):
            tr.step(x, y)
    wall: dict[str, list[float]] = {lib: [] for lib in libs}
    cpu: dict[str, list[float]] = {lib: [] for lib in libs}
    for r in range(args.rounds):
        order = libs[r % len(libs):] + libs[: r % len(libs)]
        for lib in order:
            tw, tc = [], []
            for _ in range(args.steps):
                c0, t0 = time.process_time(), time.perf_counter()
                trainers[lib].step(x, y)
                tw.append(time.perf_counter() - t0)
                tc.append(time.process_time() - c0)
            wall[lib].append(statistics.median(tw))
            cpu[lib].append(statistics.median(tc))
    anchors = [a for a in ANCHORS if a in libs]
    print(f"\n## {model}: training-step time, batch {x.shape[0]}, T={args.T}, {args.rounds} rounds x {args.steps} steps")
    if not anchors:
        print(f"  beyondbp {1e3 * statistics.median(wall['beyondbp']):.1f} ms/step (no anchor installed: no ratio)")
        return
    fastest_w = [min(wall[a][r] for a in anchors) for r in range(args.rounds)]
    fastest_c = [min(cpu[a][r] for a in anchors) for r in range(args.rounds)]
    print(f"  {'library':<13} {'ms/step':>8} {'CPU ms':>8} {'/ faster anchor':>16} {'IQR':>15} {'CPU ratio':>10}")
    for lib in libs:
        ratios = [w / f for w, f in zip(wall[lib], fastest_w)]
        cratios = [c / f for c, f in zip(cpu[lib], fastest_c)]
        print(f"  {lib:<13} {1e3 * statistics.median(wall[lib]):8.1f} {1e3 * statistics.median(cpu[lib]):8.1f} "
              f"{statistics.median(ratios):15.3f}x {f'[{quantile(ratios, .25):.3f},{quantile(ratios, .75):.3f}]':>15} "
              f"{statistics.median(cratios):9.3f}x")
    if "beyondbp" in libs:
        met = statistics.median([w / f for w, f in zip(wall["beyondbp"], fastest_w)]) <= 1.0
        print(f"  goal: beyondbp <= 1.00x the faster anchor: {'met' if met else 'NOT met'}")


def profile(model: str, x: torch.Tensor, y: torch.Tensor, args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    tr = Trainer("beyondbp", build(model, ["beyondbp"], args.T, args.beta, args.seed)["beyondbp"], args.lr)
    for _ in range(args.warmup):
        tr.step(x, y)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            tr.step(x, y)
    print(f"\n## profile of beyondbp's {model} step ({args.steps} steps)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=40))


# -- accuracy ---------------------------------------------------------------------------------------

def train_and_test(model: str, libs: list[str], ds, args, seed: int) -> dict[str, float]:
    """Train each library's copy (same initial weights and batch order under ``seed``) and test it:
    {library: test accuracy}."""
    n_train = args.n_train or len(ds.x_train)
    n_test = args.n_test or len(ds.x_test)
    xtr, ytr = ds.x_train[:n_train], ds.y_train[:n_train]
    xte, yte = ds.x_test[:n_test], ds.y_test[:n_test]
    nets = build(model, libs, args.T, args.beta, seed, detach_reset=args.detach_reset)
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n_train, generator=g) for _ in range(args.epochs)]
    rows = []
    for lib, net in nets.items():
        tr = Trainer(lib, net, args.lr)
        t0 = time.perf_counter()
        steps = 0
        for perm in perms:
            for i in range(0, n_train, args.batch):
                idx = perm[i:i + args.batch]
                tr.step(xtr[idx], ytr[idx])
                steps += 1
        seconds = time.perf_counter() - t0
        rows.append((lib, tr.accuracy(xte, yte), seconds, steps))
    print(f"\n## {model}: accuracy after {args.epochs} epoch(s) of {n_train} Fashion-MNIST training samples "
          f"({rows[0][3]} steps), tested on {n_test}, seed {seed}"
          + (", beyondbp with detach_reset=True" if args.detach_reset else ""))
    print(f"  {'library':<13} {'test acc':>9} {'Δ vs beyondbp':>14} {'train s':>8} {'ms/step':>8}")
    ref = rows[0][1]
    for lib, acc, seconds, steps in rows:
        print(f"  {lib:<13} {100 * acc:8.2f}% {100 * (acc - ref):+13.2f}  {seconds:8.1f} {1e3 * seconds / steps:8.1f}")
    if len(rows) > 1:
        worst = max(abs(acc - ref) for _, acc, _, _ in rows[1:])
        print(f"  goal: within 0.5 points of every anchor: {'met' if worst <= 0.005 else 'NOT met'} "
              f"(largest gap {100 * worst:.2f} points)")
    return {lib: acc for lib, acc, _, _ in rows}


def summarise_seeds(model: str, results: dict[int, dict[str, float]]) -> None:
    """Mean ± sd over seeds of each library's accuracy and of each anchor's paired difference to
    beyondbp (same seed: same initial weights and batches), with the difference's standard error."""
    seeds = sorted(results)
    libs = list(results[seeds[0]])
    n = len(seeds)
    print(f"\n## {model}: accuracy over {n} seeds ({', '.join(map(str, seeds))}), points")
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))  # noqa: E731
    for lib in libs:
        v = [100 * results[s][lib] for s in seeds]
        print(f"  {lib:<13} mean {statistics.mean(v):6.2f}  sd {sd(v):5.2f}  (" + ", ".join(f"{x:.2f}" for x in v) + ")")
    for lib in libs[1:]:
        d = [100 * (results[s]["beyondbp"] - results[s][lib]) for s in seeds]
        se = sd(d) / math.sqrt(n)
        print(f"  beyondbp − {lib:<12} mean {statistics.mean(d):+6.2f}  sd {sd(d):5.2f}  s.e. {se:5.2f}  "
              f"|mean| / s.e. {abs(statistics.mean(d)) / se if se > 0 else float('inf'):.2f}  ("
              + ", ".join(f"{x:+.2f}" for x in d) + ")")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="snn-mlp,snn-cnn")
    p.add_argument("--libs", default=",".join(LIBS), help="comma-separated subset of " + ", ".join(LIBS))
    p.add_argument("--T", type=int, default=25)
    p.add_argument("--beta", type=float, default=0.95)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--n-train", type=int, default=None, help="training samples (default: all 60,000)")
    p.add_argument("--n-test", type=int, default=None, help="test samples (default: all 10,000)")
    p.add_argument("--rounds", type=int, default=9, help="timing rounds (default 9)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per library per round (default 5)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds for the accuracy runs (default: --seed); several: mean ± sd summary")
    p.add_argument("--detach-reset", action="store_true",
                   help="beyondbp's LIF with detach_reset=True (as snnTorch) for the timing and accuracy runs")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--skip-time", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--profile", action="store_true", help="only: torch.profiler of beyondbp's training step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    wanted = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    unknown = [lib for lib in wanted if lib not in LIBS]
    if unknown or "beyondbp" not in wanted:
        raise SystemExit(f"--libs must name beyondbp and any of {', '.join(ANCHORS)}; got {args.libs!r}")
    libs = [lib for lib in available() if lib in wanted]
    print(f"# {' '.join(sys.argv)}")
    versions = [f"torch {torch.__version__}"]
    if snn is not None:
        versions.append(f"snntorch {snn.__version__}")
    if sj_functional is not None:
        import importlib.metadata as md
        versions.append(f"spikingjelly {md.version('spikingjelly')}")
    print(f"# {', '.join(versions)}; threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.machine()}, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    ds = bbp_data.load("fashion-mnist")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds.x_train), generator=g)[: args.batch]
    x, y = ds.x_train[idx], ds.y_train[idx]
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model not in PARAM_MAP:
            raise SystemExit(f"unknown model {model!r}; choose from {', '.join(PARAM_MAP)}")
        if args.profile:
            profile(model, x, y, args)
            continue
        if not args.skip_check:
            check_same_function(model, libs, ds.x_test[: args.batch], ds.y_test[: args.batch], args)
        if not args.skip_time:
            time_steps(model, libs, x, y, args)
        if not args.skip_accuracy:
            seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
            results = {seed: train_and_test(model, libs, ds, args, seed) for seed in seeds}
            if len(seeds) > 1:
                summarise_seeds(model, results)
    print(f"# load at the end {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M %Z')}")


if __name__ == "__main__":
    main()
