"""beyondbp's liquid side by side with peer simulators on the SAME 1000-neuron liquid.

Two steps, two environments (the peers are never package dependencies):

    # 1. in the project's environment: export the liquid, its parameters and the input drive of
    #    --images test images
    PYTHONPATH=src python bench/lsm_peers.py export --out /tmp/liquid.npz [--duration 250] [--images 10]
    # 2. time each simulator on it, one process at a time, one thread (--batch: images at once)
    PYTHONPATH=src python bench/lsm_peers.py beyondbp --npz /tmp/liquid.npz [--batch 1] [--modes fixed,nalsm,stdp]
    /work/bench-venv-brian2/bin/python bench/lsm_peers.py brian2 --npz /tmp/liquid.npz --target cython
    /work/bench-venv/bin/python bench/lsm_peers.py bindsnet --npz /tmp/liquid.npz [--batch 1]

The .npz holds the synapses (pre, post, weight, kind), the neuron parameters, the firing
probabilities ``p`` (N, n_in) of the images, the input drive rasters ``drive`` (N, T, n_in)
bool — the Bernoulli draws ``p > U(0, 1)`` that beyondbp's own run of each image alone used
(``input_seed``), so every simulator gets identical input — and beyondbp's spike counts.
beyondbp at batch 1 draws exactly these rasters; at a larger batch its draws for a batch differ
(the same probabilities, the same generator, drawn for the batch at once): the same work in
distribution, not spike for spike. A peer that is not installed is skipped with a message.

Every timing line gives wall-clock and process CPU seconds per image (``time.process_time`` of
the simulating process; with one thread the CPU time is what an idle machine's wall-clock time
would be), after one untimed warm-up presentation (tables, allocations, code generation).
Brian2 (runtime targets) runs each presentation as a 1-ms run, which sets the network up (code
objects, from the compile cache once warm), and the remaining T − 1 ms, reported apart as its
loop. Brian2's cpp_standalone builds and runs a separate program: its line gives the simulation
loop's own time as the program measures it (``device._last_run_time``) and the program's CPU
time (children's rusage, compilation included), per image.

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


def _images(n: int):
    import gzip

    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    return raw.astype(np.float32) / 255


def _model(duration: int):
    from beyondbp import models

    return models.build("lsm", (1, 28, 28), 10, duration=duration, input_seed=7)


def _line(name: str, wall: float, cpu: float, images: int, extra: str = "") -> None:
    print(f"{name}: wall {wall / images:.4f} s / image, CPU {cpu / images:.4f} s / image ({images} images){extra}",
          flush=True)


def export(args: argparse.Namespace) -> None:
    import torch

    from beyondbp.rules.nalsm import authors_trace_decay

    torch.set_num_threads(args.threads)
    model = _model(args.duration)
    liq = model.liquid
    p = torch.cat([model.encode(torch.tensor(x[None])) for x in _images(args.images)])  # each image alone
    gen = torch.Generator().manual_seed(7)  # replays the liquid's own draws (same generator, same order)
    u = torch.rand(args.duration, 1, liq.n_in, generator=gen)[:, 0]
    drive = (p[:, None, :] > u[None]).numpy()  # (N, T, n_in)
    outs = [liq.simulate(p[i:i + 1]) for i in range(len(p))]
    counts = torch.cat([o["counts"] for o in outs]).numpy()
    input_counts = torch.cat([o["input_counts"] for o in outs]).numpy()
    np.savez(
        args.out, pre=liq.pre.numpy(), post=liq.post.numpy(), weight=liq.weight.detach().numpy(),
        kind=liq.kind.numpy(), is_exc=liq.is_exc.numpy(), n_in=liq.n_in, n=liq.n, tau_v=liq.tau_v,
        tau_u=liq.tau_u, threshold=liq.threshold, refractory=liq.refractory, input_current=liq.input_current,
        w_max=liq.w_max, k_init=float(np.exp(-20.0)), trace_decay=authors_trace_decay(10), drive=drive,
        counts=counts, input_counts=input_counts, p=p.numpy(),
    )
    print(f"exported {args.out}: {liq.n} neurons, {liq.nnz} synapses, {args.duration} ms, {len(p)} images, "
          f"{int(counts.sum())} liquid / {int(input_counts.sum())} input spikes (fixed weights)")


def beyondbp_run(args: argparse.Namespace) -> None:
    import torch

    from beyondbp import rules

    torch.set_num_threads(args.threads)
    d = np.load(args.npz)
    N, T = d["drive"].shape[0], d["drive"].shape[1]
    model = _model(T)
    liq = model.liquid
    if not np.array_equal(liq.weight.detach().numpy(), d["weight"]) or not np.array_equal(liq.pre.numpy(), d["pre"]):
        raise SystemExit("the exported liquid is not the one beyondbp builds here")
    p = torch.tensor(d["p"])
    B = args.batch
    print(f"beyondbp (torch {torch.__version__}, {torch.get_num_threads()} threads), batch {B}")
    for mode in args.modes.split(","):
        learner = rules.get(mode).attach(model) if mode != "fixed" else None
        liq.simulate(p[:B])  # warm-up
        wall = cpu = 0.0
        counts = []
        for start in range(0, N - N % B if N >= B else N, B):
            w0, c0 = time.perf_counter(), time.process_time()
            out = liq.simulate(p[start:start + B])
            wall, cpu = wall + time.perf_counter() - w0, cpu + time.process_time() - c0
            counts.append(out["counts"])
        done = sum(len(c) for c in counts)
        total = torch.cat(counts)
        extra = f"; {int(total.sum())} liquid spikes"
        if mode == "fixed" and B == 1:
            extra += f", equal to the exported counts: {bool(np.array_equal(total.numpy(), d['counts'][:done]))}"
        _line(f"beyondbp {mode} batch {B}", wall, cpu, done, extra)
        if learner:
            learner.detach()


def brian2_run(args: argparse.Namespace) -> None:
    try:
        import brian2 as b2
    except ImportError as exc:
        print(f"brian2: skipped, not installed here ({exc})")
        return
    import resource

    d = np.load(args.npz)
    n_in, n = int(d["n_in"]), int(d["n"])
    T, n_tot = d["drive"].shape[1], n_in + n
    N = min(args.images, d["drive"].shape[0])
    print(f"brian2 {b2.__version__}, target {args.target}")
    for plastic in (False, True):
        totals = dict(wall=0.0, cpu=0.0, loop=0.0, loop_wall=0.0, child=0.0, spikes=0, equal=0)
        for image in [0] + list(range(N)):  # image 0 twice: the first presentation is the warm-up
            res = _brian2_image(b2, d, args, plastic, image, T, n_in, n, n_tot, resource)
            if image == 0 and totals.get("warm") is None:
                totals["warm"] = res
                continue
            for key in ("wall", "cpu", "loop", "loop_wall", "child", "spikes", "equal"):
                totals[key] += res[key]
        label = "stdp (no astrocyte)" if plastic else "fixed"
        extra = f"; {totals['spikes']} liquid spikes; warm-up presentation {totals['warm']['wall']:.2f} s wall"
        if not plastic:
            extra += f"; images with every neuron's count equal to beyondbp's: {totals['equal']}/{N}"
        if args.target != "cpp_standalone":
            extra += (f"; of which the loop of the last {T - 1} ms (after a 1-ms run that sets it up): "
                      f"wall {totals['loop_wall'] / N:.4f}, CPU {totals['loop'] / N:.4f} s / image")
        else:
            extra += (f"; simulation loop (the program's own timer) {totals['loop'] / N:.4f} s / image, program CPU "
                      f"(compilation included) {totals['child'] / N:.2f} s / image")
        _line(f"brian2 {args.target} {label}", totals["wall"], totals["cpu"], N, extra)


def _brian2_image(b2, d, args, plastic, image, T, n_in, n, n_tot, resource) -> dict:
    """One presentation of image ``image`` in a fresh Brian2 network; its run's times."""
    b2.start_scope()
    b2.prefs.core.default_float_dtype = np.float32
    if args.target == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=None, build_on_run=True)
    else:
        b2.prefs.codegen.target = args.target
    b2.defaultclock.dt = 1 * b2.ms
    current = np.zeros((T, n_tot), np.float32)
    current[:, :n_in] = d["input_current"] * d["drive"][image]
    ta = b2.TimedArray(current, dt=1 * b2.ms, name="ta_input")  # fixed names: the same code, cache hits
    k0, kdec = 1.0 / float(d["tau_u"]), float(np.exp(-1.0 / float(d["tau_u"])))
    G = b2.NeuronGroup(
        n_tot, "v : 1\nk : 1\nref : 1\ndrive : 1\nx : 1\nsp : 1", threshold=f"v >= {float(d['threshold'])} and ref <= 0",
        reset=f"v = 0\nk = {k0}\nref = {float(d['refractory']) + 1.0}\nsp = 1", method="euler", name="liquid",
    )
    G.k = float(d["k_init"])
    G.run_regularly(
        f"v = (v + (ta(t, i) + drive)) - v / {float(d['tau_v'])}\nk = k * {kdec}\nref = ref - 1\n"
        f"x = {float(d['trace_decay'])} * (x + 0.1 * sp)\nsp = 0", when="end", order=1, name="liquid_step",
    )
    model = "w : 1\nlo : 1\nhi : 1\ndrive_post = w * k_pre : 1 (summed)"
    kw = {}
    if plastic:
        model += "\neta : 1"
        kw = dict(on_pre="w = clip(w - eta * x_post, lo, hi)", on_post="w = clip(w + eta * x_pre, lo, hi)")
    S = b2.Synapses(G, G, model=model, name="synapses", **kw)
    S.connect(i=d["pre"].astype(np.int64), j=(d["post"] + n_in).astype(np.int64))
    w = d["weight"].astype(np.float32)
    S.w = w
    kind = d["kind"]
    wmax = float(d["w_max"])
    S.lo = np.where(kind == 0, 0.0, -wmax)
    S.hi = np.where(kind == 1, 0.0, wmax)
    if plastic:
        S.eta = 0.15
        S.run_regularly("eta = eta * 0.99", when="end", order=2, name="rate_decay")
    S.summed_updaters["drive_post"].when = "end"
    S.summed_updaters["drive_post"].order = 0
    spikes = b2.SpikeMonitor(G, name="spikes")
    net = b2.Network(G, S, spikes, name="net")
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0, c0 = time.perf_counter(), time.process_time()
    if args.target == "cpp_standalone":
        net.run(T * b2.ms, namespace={"ta": ta})
        w1, c1 = w0, c0
    else:  # the first ms apart: it sets the run up (code objects); the rest is the simulation loop
        net.run(1 * b2.ms, namespace={"ta": ta})
        w1, c1 = time.perf_counter(), time.process_time()
        net.run((T - 1) * b2.ms, namespace={"ta": ta})
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    loop_wall, loop_cpu = time.perf_counter() - w1, time.process_time() - c1
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    counts = np.bincount(np.asarray(spikes.i), minlength=n_tot)
    equal = bool(np.array_equal(counts[n_in:], d["counts"][image]) and np.array_equal(counts[:n_in], d["input_counts"][image]))
    loop = loop_cpu
    if args.target == "cpp_standalone":
        loop = float(b2.device._last_run_time)
        b2.device.reinit()
        b2.device.activate()
    return dict(wall=wall, cpu=cpu, loop=loop, loop_wall=loop_wall, spikes=int(counts[n_in:].sum()), equal=int(equal),
                child=(child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime))


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
    T = d["drive"].shape[1]
    N, B = min(args.images, d["drive"].shape[0]), args.batch
    pre, post, w = d["pre"], d["post"], torch.tensor(d["weight"])
    print(f"bindsnet (torch {torch.__version__}, {torch.get_num_threads()} threads), batch {B}")
    for plastic in (False, True):
        net = Network(dt=1.0, batch_size=B)
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
        drive = torch.tensor(d["drive"][:N])  # input spikes: the same Bernoulli rasters
        wall = cpu = 0.0
        done = 0
        batches = [drive[:B]] + [drive[i:i + B] for i in range(0, N - B + 1, B)]  # the first: warm-up
        for k, batch in enumerate(batches):
            spikes = batch.transpose(0, 1).contiguous()  # (T, B, n_in)
            net.reset_state_variables()
            w0, c0 = time.perf_counter(), time.process_time()
            net.run(inputs={"X": spikes}, time=T)
            if k:
                wall, cpu, done = wall + time.perf_counter() - w0, cpu + time.process_time() - c0, done + len(batch)
        _line(f"bindsnet {'PostPre' if plastic else 'fixed'} batch {B}", wall, cpu, done)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", default="/tmp/liquid.npz")
    e.add_argument("--duration", type=int, default=250)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--images", type=int, default=10)
    y = sub.add_parser("beyondbp")
    y.add_argument("--npz", default="/tmp/liquid.npz")
    y.add_argument("--threads", type=int, default=1)
    y.add_argument("--batch", type=int, default=1)
    y.add_argument("--modes", default="fixed,nalsm,stdp")
    b = sub.add_parser("brian2")
    b.add_argument("--images", type=int, default=5)
    b.add_argument("--npz", default="/tmp/liquid.npz")
    b.add_argument("--target", default="cython", choices=["numpy", "cython", "cpp_standalone"])
    c = sub.add_parser("bindsnet")
    c.add_argument("--npz", default="/tmp/liquid.npz")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--images", type=int, default=10)
    args = ap.parse_args()
    {"export": export, "beyondbp": beyondbp_run, "brian2": brian2_run, "bindsnet": bindsnet_run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
