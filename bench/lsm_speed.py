"""Simulation time per image of the NALSM1000 liquid (models/lsm.py), plasticity off / stdp /
nalsm, on Fashion-MNIST test images, 250 ms at dt = 1 ms, batched; with plasticity the
event-driven kernel (default, ``Liquid.kernel = "event"``) and the dense reference that updates
every synapse every ms, side by side in one process, with their ratio.

    PYTHONPATH=src python bench/lsm_speed.py [--batches 8,32,64] [--threads 1,2] [--duration 250]
        [--rules nalsm] [--no-dense] [--against REV] [--measure]

``--against REV`` also times the event-driven kernel of git revision REV (its ``models/lsm.py``
and ``rules/nalsm.py``, loaded from ``git show`` into this process, on the same liquid object,
images and seeds) and prints new / old, so that a change of the kernels is measured side by side.

Every timing follows an untimed 5-ms presentation of one image with the same kernel (the
liquid's tables and caches built). Prints wall-clock and process CPU seconds per image (CPU time is the steadier figure on a shared
machine: with one thread it equals the wall-clock time of an idle one), and checks that both
kernels gave the same spike counts. ``--measure`` adds the branching factor / rates of each
setting (run on the same images afterwards, not timed).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import torch

from beyondbp import models, rules
from beyondbp.analysis.criticality import liquid_measurements


def timed(model, x, kernel, old=None):
    """Per-image wall and CPU seconds and the counts; ``old``: the modules of another revision."""
    liq = model.liquid
    liq.kernel = kernel
    plast, cls = "attached", type(liq)
    if old is not None:
        liq.__class__ = old["lsm"].Liquid
        if liq.plasticity is not None:
            plast = old["nalsm"].Plasticity(liq.plasticity.rule, liq)
            plast.astro = liq.plasticity.astro
    stored = liq.weight.detach().clone()  # a persistent rule writes its changes back: undone below
    try:
        liq.simulate(model.encode(x[:1]), plasticity=plast, duration=5)  # untimed: tables, caches
        liq.weight.data.copy_(stored)
        torch.manual_seed(0)
        w0, c0 = time.perf_counter(), time.process_time()
        out = liq.simulate(model.encode(x), plasticity=plast)
        return (time.perf_counter() - w0) / len(x), (time.process_time() - c0) / len(x), out["counts"]
    finally:
        liq.__class__ = cls
        liq.weight.data.copy_(stored)


def revision(rev):
    """``models/lsm.py`` and ``rules/nalsm.py`` as of git revision ``rev``, as fresh modules (with
    the revision's ``models/lsm_fixed.py`` and ``models/lsm_kernels.py``, where it has them, in
    place of today's in the old ``lsm`` module's names)."""
    root = Path(__file__).resolve().parents[1]
    mods = {}
    for key, package in (("lsm_fixed", "beyondbp.models"), ("lsm_kernels", "beyondbp.models"),
                         ("lsm", "beyondbp.models"), ("nalsm", "beyondbp.rules")):
        rel = f"src/{package.replace('.', '/')}/{key}.py"
        got = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{rel}"], capture_output=True, text=True)
        if got.returncode != 0 and key.startswith("lsm_"):
            continue  # the revision predates this module
        got.check_returncode()
        mod = types.ModuleType(f"{package}.{key}_at_{rev}")
        mod.__package__ = package
        exec(compile(got.stdout, f"{rev}:{rel}", "exec"), mod.__dict__)
        if key == "lsm":
            for helper in ("lsm_fixed", "lsm_kernels"):  # the revision's kernels, not today's
                for name, value in vars(mods.get(helper, types.ModuleType("none"))).items():
                    if name in mod.__dict__ and not name.startswith("__") and callable(value):
                        mod.__dict__[name] = value
        mods[key] = mod
    return mods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--duration", type=int, default=250)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--rules", default="nalsm", help="comma list of fixed, stdp, nalsm, nalsm-init (persistent mode, "
                    "decay 1: the liquid initialisation, one image after another)")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    ap.add_argument("--against", default=None, help="git revision whose event-driven kernel to time as well")
    ap.add_argument("--measure", action="store_true")
    args = ap.parse_args()
    old = revision(args.against) if args.against else None
    batches = [int(b) for b in args.batches.split(",")]
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[: max(batches)]
    images = torch.tensor(raw.astype(np.float32) / 255)
    t0 = time.perf_counter()
    model = models.build("lsm", (1, 28, 28), 10, size=args.size, duration=args.duration)
    print(f"build: {time.perf_counter() - t0:.2f} s, {model.liquid.nnz} synapses, {args.duration} ms per image")
    head = "rule        B  threads | event s/img (wall, cpu) |"
    if old:
        head += f" {args.against} event (wall, cpu) | old/new (cpu) | same |"
    print(head + " dense s/img (wall, cpu) | dense/event (cpu) | same counts")
    for rule in args.rules.split(","):
        learner = None
        if rule == "nalsm-init":
            learner = rules.get("nalsm", mode="persistent", decay=1.0).attach(model)
        elif rule != "fixed":
            learner = rules.get(rule).attach(model)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for B in batches:
                x = images[:B]
                ew, ec, counts = timed(model, x, "event")
                line = f"{rule:10s} {B:3d} {threads:3d}      | {ew:7.3f} {ec:7.3f}         |"
                if old:
                    ow, oc, ocounts = timed(model, x, "event", old)
                    line += f" {ow:7.3f} {oc:7.3f}         | {oc / ec:6.2f}x | {torch.equal(counts, ocounts)} |"
                if rule != "fixed" and not args.no_dense:
                    dw, dc, dcounts = timed(model, x, "dense")
                    line += f" {dw:7.3f} {dc:7.3f}         | {dc / ec:6.1f}x           | {torch.equal(counts, dcounts)}"
                print(line, flush=True)
        if args.measure:
            meas = liquid_measurements(model, images[: batches[0]])
            print(f"{rule}: BF {meas['branching_factor']:.3f}  E {meas['rate_exc_hz']:.1f} Hz  "
                  f"I {meas['rate_inh_hz']:.1f} Hz  silent {meas['silent_fraction']:.3f}")
        if learner:
            learner.detach()


if __name__ == "__main__":
    main()
