"""Why does beyondbp's ``snn-mlp`` with ``detach_reset=True`` end lower than snnTorch on 5 of 5
seeds in ``snn_anchors.py``, when the two compute the same forward pass and the same gradient at
step 1? Two experiments (benchmark-only environment of ``snn_anchors.py``, one thread):

``--check``  train beyondbp (``detach_reset=True``, Adam 5e-4, batch 128, the batch order of
             ``snn_anchors.py`` for ``--seed``) and, at the ``--at`` steps, copy its weights into
             snnTorch's network and into a from-scratch step-by-step reference (plain torch
             autograd, one op per step: ``U_t = β U_{t−1} + I_t − θ·sg(S_{t−1})``, ``S_t = H(U_t − θ)``
             with the arctan (α = 2) surrogate, ``sg`` = stop-gradient, count readout,
             mean cross-entropy). On the next training batch it compares the losses, output counts
             and every parameter gradient (max |a − b| / max |b|): beyondbp vs snnTorch in float32,
             and beyondbp vs the reference in float64 (snnTorch's spike function returns float32
             and cannot run in float64). Also: hidden firing rate and silent hidden neurons.
``--chaos``  train for one epoch (all 60,000 images): beyondbp ``detach_reset=True``, the same
             from weights multiplied by ``1 + 1e-7·N(0, 1)`` (``--eps``), and snnTorch from the
             same initial weights; prints each run's loss (mean over 25 steps) and hidden firing
             rate along the way, the test accuracy of each and the share of test images with no
             output spike (``--replicates N``: N perturbed beyondbp runs; ``--anchor-replicates``
             and ``--ref-replicates``: perturbed snnTorch and reference runs, perturbation r drawn
             from generator seed 12345 + r, r from ``--first-replicate``; r = 0 for the reference
             means unperturbed; ``--no-base`` / ``--no-anchor`` skip the unperturbed runs).
``--lockstep`` beyondbp and snnTorch, and beyondbp and its perturbed twin, trained side by side:
             how their parameters drift apart step by step (max relative difference).

    OMP_NUM_THREADS=1 /work/snnbench-venv/bin/python bench/snn_detach_divergence.py --check --seed 4 --at 0,50,150,300
    OMP_NUM_THREADS=1 /work/snnbench-venv/bin/python bench/snn_detach_divergence.py --chaos --seed 4
    OMP_NUM_THREADS=1 /work/snnbench-venv/bin/python bench/snn_detach_divergence.py --lockstep --seed 4
    OMP_NUM_THREADS=1 /work/snnbench-venv/bin/python bench/snn_detach_divergence.py --chaos --seed 4 --replicates 4 --no-anchor
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd import Function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import snn_anchors as sa  # noqa: E402

from beyondbp import data as bbp_data  # noqa: E402

T, BETA, THETA, ALPHA, LR, BATCH = 25, 0.95, 1.0, 2.0, 5e-4, 128


class _ArcTanSpike(Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (ALPHA / 2) / (1 + (math.pi / 2 * ALPHA * x) ** 2)


def reference_forward(params: dict[str, torch.Tensor], x: torch.Tensor, detach: bool):
    """Step-by-step reference of snn-mlp (direct input): counts [B, 10] and hidden spikes [T, B, 1000]."""
    cur1 = F.linear(x.flatten(1), params["fc1.weight"], params["fc1.bias"])
    u1 = u2 = s1 = s2 = None
    counts, hidden = 0, []
    for t in range(T):
        if t == 0:
            u1 = cur1
        else:
            u1 = BETA * u1 + cur1 - THETA * (s1.detach() if detach else s1)
        s1 = _ArcTanSpike.apply(u1 - THETA)
        cur2 = F.linear(s1, params["out.weight"], params["out.bias"])
        if t == 0:
            u2 = cur2
        else:
            u2 = BETA * u2 + cur2 - THETA * (s2.detach() if detach else s2)
        s2 = _ArcTanSpike.apply(u2 - THETA)
        counts = counts + s2
        hidden.append(s1)
    return counts, torch.stack(hidden)


class ReferenceMLP(torch.nn.Module):
    """:func:`reference_forward` (reset detached) as a trainable module, parameters named as beyondbp's."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 1000)
        self.out = torch.nn.Linear(1000, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_forward(dict(self.named_parameters()), x, True)[0]


def grads_of(net, lib, x, y):
    net.zero_grad(set_to_none=True)
    out = net(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    names = sa.PARAM_MAP["snn-mlp"]
    g = {f"{k}.{p}": getattr(getattr(net, k if lib == "beyondbp" else m), p).grad.clone()
         for k, m in names.items() for p in ("weight", "bias")}
    return float(loss.detach()), out.detach(), g


def reference_grads(model, x, y, detach, dtype):
    params = {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in model.named_parameters()}
    counts, hidden = reference_forward(params, x.to(dtype), detach)
    loss = F.cross_entropy(counts, y)
    loss.backward()
    return float(loss.detach()), counts.detach(), {k: p.grad for k, p in params.items()}, hidden.detach()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300))


def batches(ds, seed):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds.x_train), generator=g)
    for i in range(0, len(perm), BATCH):
        idx = perm[i:i + BATCH]
        yield ds.x_train[idx], ds.y_train[idx]


def check(ds, seed: int, at: list[int], detach: bool) -> None:
    nets = sa.build("snn-mlp", ["beyondbp"], T, BETA, seed, detach_reset=detach)
    model = nets["beyondbp"]
    tr = sa.Trainer("beyondbp", model, LR)
    print(f"\n## seed {seed}, beyondbp detach_reset={detach}: trained states vs snnTorch (float32) and "
          f"the step-by-step reference (float32, float64); the next training batch")
    it = iter(batches(ds, seed))
    step = 0
    for target in sorted(at):
        while step < target:
            x, y = next(it)
            tr.step(x, y)
            step += 1
        x, y = next(it)  # the batch step `target` would train on (not trained here)
        it_state = (x, y)
        lb, cb, gb = grads_of(model, "beyondbp", x, y)
        lines = [f"  step {target}: beyondbp loss {lb:.6f}"]
        if detach and sa.snn is not None:
            st = sa.SnnTorchMLP(T, BETA)
            sa.copy_parameters("snn-mlp", model, st)
            ls, cs, gs = grads_of(st, "snntorch", x, y)
            lines.append(f"    snnTorch f32:  loss diff {ls - lb:+.2e}, counts {sa.compare(cs, cb)}; grads rel. max diff "
                         + ", ".join(f"{k} {rel(gb[k], gs[k]):.1e}" for k in gb))
        lr32, cr32, gr32, _ = reference_grads(model, x, y, detach, torch.float32)
        lines.append(f"    reference f32: loss diff {lr32 - lb:+.2e}, counts {sa.compare(cr32, cb)}; grads "
                     + ", ".join(f"{k} {rel(gb[k], gr32[k]):.1e}" for k in gb))
        model64 = sa.build("snn-mlp", ["beyondbp"], T, BETA, seed, detach_reset=detach)["beyondbp"].double()
        with torch.no_grad():
            for p64, p in zip(model64.parameters(), model.parameters()):
                p64.copy_(p.double())
        l64, c64, g64 = grads_of(model64, "beyondbp", x.double(), y)
        lr64, cr64, gr64, hidden = reference_grads(model, x, y, detach, torch.float64)
        lines.append(f"    float64, beyondbp vs reference: loss diff {l64 - lr64:+.2e}, counts {sa.compare(c64, cr64)}; grads "
                     + ", ".join(f"{k} {rel(g64[k], gr64[k]):.1e}" for k in gb))
        lines.append(f"    float32 beyondbp vs float64 beyondbp (rounding, incl. spikes flipped by it): counts "
                     f"{sa.compare(cb.double(), c64)}; grads " + ", ".join(f"{k} {rel(gb[k], g64[k]):.1e}" for k in gb))
        rate = hidden.mean(dim=(0, 1))
        lines.append(f"    hidden firing rate {float(hidden.mean()):.3f} spikes/step, silent hidden neurons on this batch "
                     f"{int((rate == 0).sum())}/1000, always-firing {int((rate == 1).sum())}/1000; mean output count "
                     f"{float(cb.mean()):.2f}, samples with all-zero counts {int((cb.sum(1) == 0).sum())}/{len(y)}")
        print("\n".join(lines), flush=True)
        del it_state


def hidden_rate(model, x) -> float:
    with torch.no_grad():
        s = model.lif1(model.fc1(x.flatten(1)))
    return float(s.mean())


@torch.no_grad()
def silent_outputs(net, ds) -> str:
    """How many test images get no output spike at all (all-zero counts: a tie the argmax breaks
    to class 0) or a tie at the top count, and the accuracy on the others."""
    counts = torch.cat([net(ds.x_test[i:i + 1000]) for i in range(0, len(ds.x_test), 1000)])
    top = counts.max(1).values
    zero = top == 0
    tie = (counts == top[:, None]).sum(1) > 1
    ok = ~tie
    acc_ok = float((counts[ok].argmax(1) == ds.y_test[ok]).float().mean())
    return (f"test images with no output spike {100 * float(zero.float().mean()):.1f} %, with a tie at the top "
            f"{100 * float(tie.float().mean()):.1f} %; accuracy on the untied {100 * acc_ok:.2f} %")


def chaos(ds, seed: int, eps: float, detach: bool, replicates: int, anchor: bool, anchor_replicates: int = 0,
          first: int = 1, base_run: bool = True, ref_replicates: int = 0) -> None:
    runs = {}
    base = sa.build("snn-mlp", ["beyondbp", "snntorch"] if sa.snn is not None else ["beyondbp"], T, BETA, seed,
                    detach_reset=detach)
    if base_run:
        runs[f"beyondbp detach={detach}"] = ("beyondbp", base["beyondbp"])
    for r in range(first, first + replicates):
        pert = sa.build("snn-mlp", ["beyondbp"], T, BETA, seed, detach_reset=detach)["beyondbp"]
        g = torch.Generator().manual_seed(12345 + r)
        with torch.no_grad():
            for p in pert.parameters():
                p.mul_(1 + eps * torch.randn(p.shape, generator=g))
        runs[f"beyondbp detach={detach}, weights x (1 + {eps:g} N(0,1)), perturbation {r}"] = ("beyondbp", pert)
    if anchor and "snntorch" in base:
        runs["snnTorch"] = ("snntorch", base["snntorch"])
    for r in range(first, first + anchor_replicates):
        st = sa.build("snn-mlp", ["beyondbp", "snntorch"], T, BETA, seed)["snntorch"]
        g = torch.Generator().manual_seed(12345 + r)
        with torch.no_grad():
            for k, m in sa.PARAM_MAP["snn-mlp"].items():
                for p in ("weight", "bias"):  # the same factors as beyondbp's perturbation r
                    w = getattr(getattr(st, m), p)
                    w.mul_(1 + eps * torch.randn(w.shape, generator=g))
        runs[f"snnTorch, weights x (1 + {eps:g} N(0,1)), perturbation {r}"] = ("snntorch", st)
    for r in range(first, first + ref_replicates):
        ref = ReferenceMLP()
        src = sa.build("snn-mlp", ["beyondbp"], T, BETA, seed)["beyondbp"]
        g = torch.Generator().manual_seed(12345 + r)
        with torch.no_grad():
            for (name, w), (_, v) in zip(ref.named_parameters(), src.named_parameters()):
                w.copy_(v.mul(1 + eps * torch.randn(v.shape, generator=g)) if r > 0 else v)
        runs[f"step-by-step reference, weights x (1 + {eps:g} N(0,1)), perturbation {r}"] = ("reference", ref)
    xprobe = ds.x_test[:500]
    print(f"\n## seed {seed}: one epoch; loss = mean over 25 steps; rate = hidden firing rate on 500 test images")
    for name, (lib, net) in runs.items():
        tr = sa.Trainer(lib, net, LR)
        losses, curve = [], []
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(batches(ds, seed)):
            if lib == "beyondbp":
                out = tr.learner.step((x, y), tr.opt)
                losses.append(out["loss"])
            else:
                tr.opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                tr.opt.step()
                losses.append(float(loss.detach()))
            if (step + 1) % 25 == 0:
                rate = f"/{hidden_rate(net, xprobe):.3f}" if lib == "beyondbp" else ""
                curve.append(f"{step + 1}:{sum(losses[-25:]) / 25:.3f}{rate}")
        acc = tr.accuracy(ds.x_test, ds.y_test)
        print(f"  {name}: test acc {100 * acc:.2f} % ({time.perf_counter() - t0:.0f} s); {silent_outputs(net, ds)}"
              "\n    step:loss[/rate] "
              + " ".join(curve), flush=True)


def lockstep(ds, seed: int, every: int, eps: float) -> None:
    """beyondbp (detach_reset=True) and snnTorch, and beyondbp and a copy of itself perturbed by
    ``eps`` (relative), trained side by side on the same batches: the largest relative parameter
    difference ``max |w_a − w_b| / max |w_a|`` over all tensors along the epoch."""
    nets = sa.build("snn-mlp", ["beyondbp", "snntorch"], T, BETA, seed, detach_reset=True)
    twin = sa.build("snn-mlp", ["beyondbp"], T, BETA, seed, detach_reset=True)["beyondbp"]
    g = torch.Generator().manual_seed(12346)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1 + eps * torch.randn(p.shape, generator=g))
    trs = {"bbp": sa.Trainer("beyondbp", nets["beyondbp"], LR), "snn": sa.Trainer("snntorch", nets["snntorch"], LR),
           "twin": sa.Trainer("beyondbp", twin, LR)}
    names = sa.PARAM_MAP["snn-mlp"]

    def pdiff(a, b, other_lib):
        worst = 0.0
        for k, m in names.items():
            for p in ("weight", "bias"):
                wa = getattr(getattr(a, k), p).detach()
                wb = getattr(getattr(b, m if other_lib == "snntorch" else k), p).detach()
                worst = max(worst, rel(wb, wa))
        return worst

    print(f"\n## seed {seed}: side by side on the same batches; rel. parameter difference max|a - b| / max|a|; "
          f"mean losses over the last {every} steps")
    print(f"  {'step':>5} {'bbp vs snnTorch':>16} {'bbp vs bbp(1+{:g}N)'.format(eps):>22} {'loss bbp':>9} {'snnTorch':>9} {'bbp twin':>9}")
    losses = {k: [] for k in trs}
    for step, (x, y) in enumerate(batches(ds, seed)):
        for k, tr in trs.items():
            tr.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(tr.net(x), y)
            loss.backward()
            tr.opt.step()
            losses[k].append(float(loss.detach()))
        if (step + 1) % every == 0 or step + 1 in (1, 2, 5, 10):
            m = lambda v: sum(v[-every:]) / len(v[-every:])  # noqa: E731
            print(f"  {step + 1:5d} {pdiff(nets['beyondbp'], nets['snntorch'], 'snntorch'):16.2e} "
                  f"{pdiff(nets['beyondbp'], twin, 'beyondbp'):22.2e} {m(losses['bbp']):9.3f} {m(losses['snn']):9.3f} "
                  f"{m(losses['twin']):9.3f}", flush=True)
    for k, tr in trs.items():
        print(f"  test accuracy {k}: {100 * tr.accuracy(ds.x_test, ds.y_test):.2f} %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true")
    p.add_argument("--chaos", action="store_true")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--at", default="0,50,150,300")
    p.add_argument("--eps", type=float, default=1e-7)
    p.add_argument("--lockstep", action="store_true")
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--replicates", type=int, default=1, help="--chaos: perturbed beyondbp runs (default 1)")
    p.add_argument("--anchor-replicates", type=int, default=0, help="--chaos: perturbed snnTorch runs (default 0)")
    p.add_argument("--first-replicate", type=int, default=1, help="--chaos: number of the first perturbation (default 1)")
    p.add_argument("--no-base", action="store_true", help="--chaos: skip the unperturbed beyondbp run")
    p.add_argument("--ref-replicates", type=int, default=0,
                   help="--chaos: perturbed runs of the step-by-step reference network (perturbation 0: none)")
    p.add_argument("--no-anchor", action="store_true", help="--chaos: skip the snnTorch run")
    p.add_argument("--no-detach", action="store_true", help="beyondbp with detach_reset=False (reference likewise)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"# {' '.join(sys.argv)}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    ds = bbp_data.load("fashion-mnist")
    if args.check:
        check(ds, args.seed, [int(v) for v in args.at.split(",")], not args.no_detach)
    if args.lockstep:
        lockstep(ds, args.seed, args.every, args.eps)
    if args.chaos:
        chaos(ds, args.seed, args.eps, not args.no_detach, args.replicates, not args.no_anchor,
              args.anchor_replicates, args.first_replicate, not args.no_base, args.ref_replicates)


if __name__ == "__main__":
    main()
