"""Time of every representation measure's all-pairs distance matrix (beyondbp.analysis.representations).

Synthetic responses stand in for trained networks: ``--networks`` networks of ``--layers``
ReLU layers each (widths drawn from 64-256, seeded), all driven by the same ``--stimuli``
random 100-dimensional probe inputs; layer ``l`` of network ``k`` is
``relu(layer_{l-1} W_kl / sqrt(width) + b_kl)``. Stochastic measures get ``--repeats`` noisy
repeats of every response (Gaussian noise of 0.3 x the unit's std added before each ReLU, as
a stand-in for dropout or a stochastic rule). For every measure of ``MEASURES`` and every
layer, ``distance_matrix(name, reps)`` is timed once with its default options (the stated
defaults of the catalogue: a stimulus subset for Kendall's tau_a, PCA dimensions / stimulus
subset / iteration cap for the stochastic metric); the table gives seconds per measure (summed
over layers), the total, and the goal (< 120 s). ``--growth`` then times one pair
(``distance_matrix`` on 2 networks, default options) per measure at 500 / 1000 / 2000 stimuli
(width 128) and at widths 64 / 128 / 256 (1000 stimuli), with the ratio to the smallest size,
which shows how each measure's cost grows.

    python bench/representations.py                 # 20 networks x 3 layers, 2000 stimuli
    python bench/representations.py --growth        # also the growth tables
    python bench/representations.py --measures cka,procrustes --networks 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np
import torch

from beyondbp.analysis.representations import MEASURES, distance_matrix


def make_networks(networks, layers, stimuli, repeats, seed=0, widths=None):
    """Per layer, a list of (repeats, stimuli, width) arrays (one per network)."""
    rng = np.random.default_rng(seed)
    probe = rng.standard_normal((stimuli, 100))
    noise_rng = np.random.default_rng(seed + 1)
    out = [[] for _ in range(layers)]
    for _ in range(networks):
        h_clean = probe
        h_noisy = np.repeat(probe[None], repeats, axis=0)
        for layer in range(layers):
            width = int(widths[layer] if widths is not None else rng.integers(64, 257))
            w = rng.standard_normal((h_clean.shape[1], width)) / np.sqrt(h_clean.shape[1])
            b = 0.1 * rng.standard_normal(width)
            pre = h_clean @ w + b
            scale = 0.3 * pre.std(axis=0)
            pre_noisy = h_noisy @ w + b + scale * noise_rng.standard_normal((repeats, stimuli, width))
            h_clean = np.maximum(pre, 0.0)
            h_noisy = np.maximum(pre_noisy, 0.0)
            out[layer].append(h_noisy)
    return out


def time_measure(name, reps):
    start = time.perf_counter()
    cpu = time.process_time()
    distance_matrix(name, reps)
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--stimuli", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--measures", default=",".join(MEASURES))
    parser.add_argument("--threads", type=int, default=1, help="numpy/torch threads (set before numpy starts)")
    parser.add_argument("--growth", action="store_true", help="also time one pair at growing stimuli / widths")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [m for m in args.measures.split(",") if m]

    print(f"# representation measures: bench/representations.py {' '.join(argv or [])}".rstrip())
    print(f"# numpy {np.__version__}, threads {args.threads} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
          f"{os.cpu_count()} CPUs, {platform.machine()}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# {args.networks} networks x {args.layers} layers, {args.stimuli} stimuli, {args.repeats} repeats")
    t0 = time.perf_counter()
    data = make_networks(args.networks, args.layers, args.stimuli, args.repeats)
    print(f"# made the responses in {time.perf_counter() - t0:.1f} s (not counted)")
    print()
    print("| measure | defaults | seconds (all layers) | CPU seconds | per pair (ms) |")
    print("|---|---|---|---|---|")
    total = total_cpu = 0.0
    pairs = args.networks * (args.networks - 1) // 2 * args.layers
    for name in names:
        m = MEASURES[name]
        reps_by_layer = data if m.stochastic else [[r.mean(axis=0) for r in layer] for layer in data]
        wall = cpu = 0.0
        for reps in reps_by_layer:
            w, c = time_measure(name, reps)
            wall += w
            cpu += c
        total += wall
        total_cpu += cpu
        per = wall / (pairs if m.symmetric else 2 * pairs) * 1e3
        defaults = ", ".join(f"{k}={v}" for k, v in m.defaults.items()) or "-"
        print(f"| {name} | {defaults} | {wall:.1f} | {cpu:.1f} | {per:.1f} |", flush=True)
    print(f"| **total** | | **{total:.1f}** | **{total_cpu:.1f}** | |")
    print(f"\ngoal: total < 120 s -> wall {'met' if total < 120 else 'NOT met'}, "
          f"CPU {'met' if total_cpu < 120 else 'NOT met'} (wall > CPU: other processes had the cores)")

    if args.growth:
        for label, sizes, key in (("stimuli (width 128)", (500, 1000, 2000), "stimuli"),
                                  ("width (1000 stimuli)", (64, 128, 256), "width")):
            print(f"\none pair, growth with {label}: seconds (ratio to the first)\n")
            print("| measure | " + " | ".join(str(s) for s in sizes) + " |")
            print("|---|" + "---|" * len(sizes))
            sets = {}
            for s in sizes:
                stimuli, width = (s, 128) if key == "stimuli" else (1000, s)
                sets[s] = make_networks(2, 1, stimuli, args.repeats, seed=5, widths=[width])[0]
            for name in names:
                m = MEASURES[name]
                times = []
                for s in sizes:
                    reps = sets[s] if m.stochastic else [r.mean(axis=0) for r in sets[s]]
                    times.append(time_measure(name, reps)[0])
                cells = " | ".join(f"{t:.3f} ({t / times[0]:.1f}x)" for t in times)
                print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
