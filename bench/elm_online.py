"""``elm-online`` against BPTT on the ELM: the cosine of its update to BPTT's gradient, and the
bytes each keeps for a backward pass, against the sequence length T.

    python bench/elm_online.py [--Ts 1,2,4,8,16,32,64,128,256 --batch 8 --inputs 196 --memory 100 --seeds 3]

Inputs: sparse 0/1 rasters (each channel spikes with probability 0.05 per step, as Fashion-MNIST
Poisson rasters), 19 classes, the authors' default ELM (d_m 100, hidden 200, τ_m 1…1000) at its
initialisation, one batch per seed; cosines are means over seeds (overall and per layer), bytes
are the peak saved for backward (``beyondbp.rules.elm_online.saved_bytes``). Figures in
``bench/README.md``.
"""

from __future__ import annotations

import argparse

import torch

from beyondbp import models, rules
from beyondbp.rules.elm_online import gradient_cosines, saved_bytes


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--Ts", default="1,2,4,8,16,32,64,128,256")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=196)
    p.add_argument("--memory", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    layers = ("all", "w_out.weight", "w_in.weight", "w_mem.weight", "synapses.weight")
    print("| T | " + " | ".join(f"cos {n}" for n in layers) + " | saved MiB online | saved MiB BPTT |")
    print("|---" * (len(layers) + 3) + "|")
    for T in (int(t) for t in a.Ts.split(",")):
        sums = dict.fromkeys(layers, 0.0)
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            model = models.build("elm", (T, a.inputs), 19, memory=a.memory)
            gen = torch.Generator().manual_seed(1000 + seed)
            x = (torch.rand(a.batch, T, a.inputs, generator=gen) < 0.05).float()
            y = torch.randint(0, 19, (a.batch,), generator=gen)
            cos = gradient_cosines(model, (x, y))
            for n in layers:
                sums[n] += cos[f"cos/{n}"] / a.seeds
        learner = rules.get("elm-online").attach(model)
        online = saved_bytes(lambda: learner.estimate((x, y))) / 2**20
        bptt = saved_bytes(lambda: learner.backprop_gradients((x, y))) / 2**20
        learner.detach()
        print(f"| {T} | " + " | ".join(f"{sums[n]:.3f}" for n in layers) + f" | {online:.2f} | {bptt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
