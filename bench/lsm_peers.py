"""beyondbp's liquid side by side with peer simulators on the SAME 1000-neuron liquid.

Two steps, two environments (the peers are never package dependencies):

    # 1. in the project's environment: export the liquid, its parameters and a fixed input drive,
    #    and time beyondbp on it (plasticity off and nalsm/stdp on)
    PYTHONPATH=src python bench/lsm_peers.py export --out /tmp/liquid.npz [--duration 250]
    # 2. in a benchmark-only environment with the peer installed: load and run it
    /work/bench-venv-brian2/bin/python bench/lsm_peers.py brian2 --npz /tmp/liquid.npz
    /work/bench-venv/bin/python bench/lsm_peers.py bindsnet --npz /tmp/liquid.npz

The .npz holds the synapses (pre, post, weight, kind), the neuron parameters, the input drive
raster ``drive`` (T, n_in) bool — the Bernoulli draws ``p > U(0, 1)`` that beyondbp's own run
used (``input_seed``), so every simulator gets identical input — and beyondbp's spike counts.
A peer that is not installed is skipped with a message.

Brian2 runs the same equations at dt = 1 ms, written as Brian2 code: threshold and reset in
their slots, the synaptic drive ``Σ_j w_ij k_j`` as a summed variable computed after the reset,
and the membrane / kernel / refractory update in one ``run_regularly`` at the end of the step
(the order of beyondbp's step). Plasticity "on" in Brian2 is pair STDP with the same traces and
per-ms rate decay (on_pre / on_post pathways), without the astrocyte (a global state has no
direct Brian2 form); it times the event-driven synapse updates, it is not compared spike by spike.
BindsNET has no synaptic kernel (a spike is delivered once, then gone) and a different LIF
update; it is timed on the same connectivity, weights and input spikes, not compared.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def export(args: argparse.Namespace) -> None:
    import gzip

    import torch

    from beyondbp import models, rules
    from beyondbp.rules.nalsm import authors_trace_decay

    torch.set_num_threads(args.threads)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:1]
    x = torch.tensor(raw.astype(np.float32) / 255)
    model = models.build("lsm", (1, 28, 28), 10, duration=args.duration, input_seed=7)
    liq = model.liquid
    p = model.encode(x)
    gen = torch.Generator().manual_seed(7)  # replays the liquid's own draws (same generator, same order)
    drive = np.stack([(p > torch.rand(1, liq.n_in, generator=gen))[0].numpy() for _ in range(args.duration)])
    times = {}
    for name in ("fixed", "stdp", "nalsm"):
        learner = rules.get(name).attach(model) if name != "fixed" else None
        liq.simulate(p)  # warm-up (tables, allocations)
        t0 = time.perf_counter()
        out = liq.simulate(p, record=True)
        times[name] = time.perf_counter() - t0
        if name == "fixed":
            counts, input_counts = out["counts"][0].numpy(), out["input_counts"][0].numpy()
        if learner:
            learner.detach()
    np.savez(
        args.out, pre=liq.pre.numpy(), post=liq.post.numpy(), weight=liq.weight.detach().numpy(),
        kind=liq.kind.numpy(), is_exc=liq.is_exc.numpy(), n_in=liq.n_in, n=liq.n, tau_v=liq.tau_v,
        tau_u=liq.tau_u, threshold=liq.threshold, refractory=liq.refractory, input_current=liq.input_current,
        w_max=liq.w_max, k_init=float(np.exp(-20.0)), trace_decay=authors_trace_decay(10), drive=drive, counts=counts, input_counts=input_counts,
    )
    print(f"exported {args.out}: {liq.n} neurons, {liq.nnz} synapses, {args.duration} ms, "
          f"{int(counts.sum())} liquid / {int(input_counts.sum())} input spikes (fixed weights)")
    for name, t in times.items():
        print(f"beyondbp {name:6s}: {t:.3f} s / image (batch 1, {torch.get_num_threads()} threads)")


def brian2_run(args: argparse.Namespace) -> None:
    try:
        import brian2 as b2
    except ImportError as exc:
        print(f"brian2: skipped, not installed here ({exc})")
        return
    d = np.load(args.npz)
    n_in, n = int(d["n_in"]), int(d["n"])
    T, n_tot = d["drive"].shape[0], n_in + n
    print(f"brian2 {b2.__version__}, target {args.target}")
    for plastic in (False, True):
        b2.start_scope()
        b2.prefs.core.default_float_dtype = np.float32
        if args.target == "cpp_standalone":
            b2.set_device("cpp_standalone", directory=None, build_on_run=True)
        else:
            b2.prefs.codegen.target = args.target
        b2.defaultclock.dt = 1 * b2.ms
        current = np.zeros((T, n_tot), np.float32)
        current[:, :n_in] = d["input_current"] * d["drive"]
        ta = b2.TimedArray(current, dt=1 * b2.ms)
        k0, kdec = 1.0 / float(d["tau_u"]), float(np.exp(-1.0 / float(d["tau_u"])))
        G = b2.NeuronGroup(
            n_tot, "v : 1\nk : 1\nref : 1\ndrive : 1\nx : 1\nsp : 1", threshold=f"v >= {float(d['threshold'])} and ref <= 0",
            reset=f"v = 0\nk = {k0}\nref = {float(d['refractory']) + 1.0}\nsp = 1", method="euler",
        )
        G.k = float(d["k_init"])
        G.run_regularly(
            f"v = (v + (ta(t, i) + drive)) - v / {float(d['tau_v'])}\nk = k * {kdec}\nref = ref - 1\n"
            f"x = {float(d['trace_decay'])} * (x + 0.1 * sp)\nsp = 0", when="end", order=1,
        )
        model = "w : 1\nlo : 1\nhi : 1\ndrive_post = w * k_pre : 1 (summed)"
        kw = {}
        if plastic:
            model += "\neta : 1"
            kw = dict(on_pre="w = clip(w - eta * x_post, lo, hi)", on_post="w = clip(w + eta * x_pre, lo, hi)")
        S = b2.Synapses(G, G, model=model, **kw)
        S.connect(i=d["pre"].astype(np.int64), j=(d["post"] + n_in).astype(np.int64))
        w = d["weight"].astype(np.float32)
        S.w = w
        kind = d["kind"]
        wmax = float(d["w_max"])
        S.lo = np.where(kind == 0, 0.0, -wmax)
        S.hi = np.where(kind == 1, 0.0, wmax)
        if plastic:
            S.eta = 0.15
            S.run_regularly("eta = eta * 0.99", when="end", order=2)
        S.summed_updaters["drive_post"].when = "end"
        S.summed_updaters["drive_post"].order = 0
        spikes = b2.SpikeMonitor(G)
        net = b2.Network(G, S, spikes)
        t0 = time.perf_counter()
        net.run(T * b2.ms, namespace={"ta": ta})
        dt = time.perf_counter() - t0
        counts = np.bincount(np.asarray(spikes.i), minlength=n_tot)
        label = "stdp (no astrocyte)" if plastic else "fixed"
        line = f"brian2 {args.target} {label}: {dt:.3f} s / image (run only, code generation included)"
        if not plastic:
            ref, ref_in = d["counts"], d["input_counts"]
            line += (f"; liquid spikes {int(counts[n_in:].sum())} vs beyondbp {int(ref.sum())}, neurons with "
                     f"equal counts {int((counts[n_in:] == ref).sum())}/{n}, inputs equal "
                     f"{int((counts[:n_in] == ref_in).sum())}/{n_in}")
            first = np.asarray(spikes.t / b2.ms)
            line += f", first spike at {first.min() if first.size else 'none'} ms"
        print(line, flush=True)
        if args.target == "cpp_standalone":
            b2.device.reinit()
            b2.device.activate()


def bindsnet_run(args: argparse.Namespace) -> None:
    try:
        import torch
        from bindsnet.learning import PostPre
        from bindsnet.network import Network
        from bindsnet.network.nodes import Input, LIFNodes
        from bindsnet.network.topology import Connection
    except ImportError as exc:
        print(f"bindsnet: skipped, not installed here ({exc})")
        return
    torch.set_num_threads(args.threads)
    d = np.load(args.npz)
    n_in, n = int(d["n_in"]), int(d["n"])
    T = d["drive"].shape[0]
    pre, post, w = d["pre"], d["post"], torch.tensor(d["weight"])
    print(f"bindsnet (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for plastic in (False, True):
        net = Network(dt=1.0)
        tc = float(-1.0 / np.log(1.0 - 1.0 / float(d["tau_v"])))  # same per-ms membrane decay
        inp = Input(n=n_in, traces=plastic, tc_trace=10.0)
        liq = LIFNodes(n=n, thresh=float(d["threshold"]), rest=0.0, reset=0.0, refrac=int(d["refractory"]),
                       tc_decay=tc, traces=plastic, tc_trace=10.0)
        net.add_layer(inp, name="X")
        net.add_layer(liq, name="L")
        win = torch.zeros(n_in, n)
        rec = torch.zeros(n, n)
        is_in = pre < n_in
        win[pre[is_in], post[is_in]] = w[is_in]
        rec[pre[~is_in] - n_in, post[~is_in]] = w[~is_in]
        kw = dict(update_rule=PostPre, nu=(0.015, 0.015)) if plastic else {}
        wmax = float(d["w_max"])
        net.add_connection(Connection(inp, liq, w=win, wmin=-wmax, wmax=wmax, **kw), source="X", target="L")
        net.add_connection(Connection(liq, liq, w=rec, wmin=-wmax, wmax=wmax, **kw), source="L", target="L")
        spikes = torch.tensor(d["drive"]).view(T, 1, n_in)  # input spikes: the same Bernoulli raster
        t0 = time.perf_counter()
        net.run(inputs={"X": spikes}, time=T)
        dt = time.perf_counter() - t0
        print(f"bindsnet {'PostPre' if plastic else 'fixed'}: {dt:.3f} s / image", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", default="/tmp/liquid.npz")
    e.add_argument("--duration", type=int, default=250)
    e.add_argument("--threads", type=int, default=1)
    b = sub.add_parser("brian2")
    b.add_argument("--npz", default="/tmp/liquid.npz")
    b.add_argument("--target", default="cython", choices=["numpy", "cython", "cpp_standalone"])
    c = sub.add_parser("bindsnet")
    c.add_argument("--npz", default="/tmp/liquid.npz")
    c.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    {"export": export, "brian2": brian2_run, "bindsnet": bindsnet_run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
