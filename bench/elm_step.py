"""ELM training-step time: beyondbp's ``elm`` against a straightforward PyTorch implementation of
the authors' equations (their layout: one ``nn.Sequential`` MLP on ``cat([s_t, κ_m m_{t−1}])`` per
step, autograd through the Python loop) and against the arithmetic alone (the same matmuls and
elementwise ops batched over all steps, no per-step loop: a floor no loop can beat).

    python bench/elm_step.py [--batch 8 --T 200 --inputs 196 --memory 100 --repeats 5]

One thread, one process, the three measured alternately; prints ms per training step (forward +
backward of the last-step cross-entropy) and µs per time step, and the per-step overhead of
beyondbp's loop over the arithmetic floor. Figures in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from beyondbp import models
from beyondbp.models.elm import scaled_tanh


class AuthorsLayout(nn.Module):
    """The authors' equations as they write them (expressive_leaky_memory_neuron.py), plain autograd."""

    def __init__(self, ref: nn.Module) -> None:
        super().__init__()
        n_b, d = ref.w_in.in_features, ref.memory_units
        self.mlp = nn.Sequential(nn.Linear(n_b + d, ref.hidden_units), nn.ReLU(), nn.Linear(ref.hidden_units, d))
        self.w_y = nn.Linear(d, ref.num_classes)
        self.w_s = nn.Parameter(torch.full((n_b,), 0.5))
        self.register_buffer("kappa_s", torch.exp(-1.0 / ref.synapses.tau))
        kappa_m, _ = ref.decays()
        self.register_buffer("kappa_m", kappa_m)
        self.lam = ref.lam

    def forward(self, X):
        B, T, _ = X.shape
        w_s = torch.relu(self.w_s)
        s = X.new_zeros(B, self.kappa_s.shape[0])
        m = X.new_zeros(B, self.kappa_m.shape[0])
        for t in range(T):
            s = self.kappa_s * s + w_s * X[:, t]
            delta = scaled_tanh(self.mlp(torch.cat([s, self.kappa_m * m], dim=-1)))
            m = self.kappa_m * m + self.lam * (1 - self.kappa_m) * delta
        return self.w_y(m)


def floor(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
    """The step's arithmetic without a time loop: every matmul and elementwise op of the forward
    and backward over all T·B rows at once (numerically meaningless, the same FLOPs)."""
    T, B = X.shape[1], X.shape[0]
    d = model.memory_units
    with torch.no_grad():
        xs = X.transpose(0, 1).reshape(T * B, -1)
        s = xs * 0.5
        A = F.linear(s, model.w_in.weight, model.w_in.bias)
        u = torch.zeros(T * B, d)
        h = torch.addmm(A, u, model.w_mem.weight.t()).relu_()
        a = torch.addmm(model.w_out.bias, h, model.w_out.weight.t()).mul_(2 / 3).tanh_()
        m = torch.addcmul(u, a, torch.ones(d))
        logits = model.readout(m[-B:])
        g = torch.softmax(logits, -1)
        gm = torch.ones(T * B, d)
        ga = gm * (1 - a * a)
        gz = (ga @ model.w_out.weight).mul_(h > 0)
        gu = (gz @ model.w_mem.weight).add_(gm).mul_(0.99)
        gz.t() @ u, ga.t() @ h, ga.sum(0), gz.t() @ s  # weight gradients
        del g, gu


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--T", type=int, default=200)
    p.add_argument("--inputs", type=int, default=196)
    p.add_argument("--memory", type=int, default=100)
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = models.build("elm", (a.T, a.inputs), a.classes, memory=a.memory)
    ref = AuthorsLayout(model)
    X = (torch.rand(a.batch, a.T, a.inputs) < 0.05).float()
    y = torch.randint(0, a.classes, (a.batch,))

    def ours():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()

    def authors():
        ref.zero_grad(set_to_none=True)
        F.cross_entropy(ref(X), y).backward()

    results = {}
    for _ in range(2):  # alternate, keep the best of each
        for name, fn in (("beyondbp elm", ours), ("authors' layout", authors), ("arithmetic floor", lambda: floor(model, X, y))):
            results[name] = min(results.get(name, float("inf")), timed(fn, a.repeats))
    print(f"B={a.batch} T={a.T} n_in={a.inputs} d_m={a.memory} hidden={model.hidden_units}, 1 thread, torch {torch.__version__}")
    for name, sec in results.items():
        print(f"  {name:18s} {sec * 1e3:8.2f} ms/step  {sec / a.T * 1e6:7.1f} µs per time step")
    over = (results["beyondbp elm"] - results["arithmetic floor"]) / a.T * 1e6
    ratio = results["beyondbp elm"] / results["authors' layout"]
    print(f"  beyondbp / authors' layout: {ratio:.2f}x;"
          f" overhead over the floor: {over:.1f} µs per time step")


if __name__ == "__main__":
    main()
