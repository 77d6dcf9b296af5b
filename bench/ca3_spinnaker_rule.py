"""The CA3 circuit's re-learning under sPyNNaker's own STDP arithmetic (a check, not a model).

``beyondbp.memory.CA3Memory`` uses a clipped pair rule with ``A± = 6`` nA. sPyNNaker, which ran
the paper's circuit, pre-multiplies ``A±`` by ``w_max`` (steps of 36 nA), defers every update to
the next presynaptic spike (the pending postsynaptic spikes potentiate, then the latest one seen
depresses), sums them and clips once. This script re-runs the circuit's learning operations with
that arithmetic (``--modern``: the depression's Δt from the back-propagated post time, skipped at
0, as in current sPyNNaker; default: from the raw post time, as in older releases) and prints, after
cue 0 re-learns {1, 2} over {0, 1}, the content→cue synapse of the forgotten bit 0 and whether
re-learning every cue overwrites both ways. Plasticity is on in learning operations only.

    PYTHONPATH=src python bench/ca3_spinnaker_rule.py
"""

from __future__ import annotations

import argparse
import math

import torch

from beyondbp.memory.ca3 import _NEURONS, W_MAX, W_MIN, CA3Memory, random_contents

TAU = 3.0


class SpinnakerRule(CA3Memory):
    """CA3Memory whose learning operations apply sPyNNaker's deferred pair-STDP arithmetic."""

    amplitude = 36.0
    modern = False

    def _simulate(self, cue, content, hold, steps, learn):
        inputs = {"in_cue": cue, "in_cont": content}
        spikes: dict[str, list[torch.Tensor]] = {p: [] for p in self.sizes}
        states: dict = {p: None for p in _NEURONS}
        plastic = {("cue_cue", "cont_cue"): self.w_cue_cont, ("cont_cont", "cue_cont"): self.w_cont_cue}
        pre = {k: [[] for _ in range(self.sizes[k[0]])] for k in plastic}
        post = {k: [[] for _ in range(self.sizes[k[1]])] for k in plastic}
        done = {k: torch.zeros(self.sizes[k[0]], self.sizes[k[1]], dtype=torch.long) for k in plastic}

        def last_and_trace(times, upto):
            seen = [x for x in times if x <= upto]
            if not seen:
                return None, 0.0
            return seen[-1], sum(math.exp(-(seen[-1] - x) / TAU) for x in seen)

        def update(key, w, i, j, t, flush=False):
            last_pre, pre_trace = last_and_trace(pre[key][i], t - 1)
            posts, start = post[key][j], int(done[key][i, j])
            new = [x for x in posts[start:] if flush or x <= t - 1]
            done[key][i, j] = start + len(new)
            pot = sum(pre_trace * math.exp(-(x + 1 - last_pre) / TAU) for x in new
                      if last_pre is not None and x + 1 > last_pre)
            dep = 0.0
            last_post, post_trace = last_and_trace(posts, t - 1)
            if not flush and last_post is not None:
                dt = t - (last_post + 1) if self.modern else t - last_post
                dep = post_trace * math.exp(-dt / TAU) if dt > 0 else 0.0
            w[i, j] = min(max(float(w[i, j]) + self.amplitude * (pot - dep), W_MIN), W_MAX)

        for t in range(steps):
            for p, x in inputs.items():
                spikes[p].append(x.clone() if t < hold else torch.zeros_like(x))
            currents = {p: torch.zeros(self.sizes[p]) for p in _NEURONS}
            for src, dst, weights, delay in self.projections:
                if t - delay >= 0 and bool(spikes[src][t - delay].any()):
                    currents[dst] += spikes[src][t - delay] @ (plastic[(src, dst)] if weights is None else weights)
            for p in _NEURONS:
                refractory = 1.0 - states[p].spikes if states[p] is not None else 1.0
                s, states[p] = self.neurons_by_pop[p].step(currents[p] * self.gain[p] * refractory, states[p])
                spikes[p].append(s)
            if learn:
                for key, w in plastic.items():
                    for j in spikes[key[1]][t].nonzero().flatten().tolist():
                        post[key][j].append(t)
                    for i in spikes[key[0]][t].nonzero().flatten().tolist():
                        for j in range(w.shape[1]):
                            update(key, w, i, j, t)
                        pre[key][i].append(t)
        if learn:   # the pending post spikes, applied at the next presynaptic spike
            for key, w in plastic.items():
                for i in range(w.shape[0]):
                    if pre[key][i]:
                        for j in range(w.shape[1]):
                            update(key, w, i, j, steps, flush=True)
        return {p: torch.stack(v) for p, v in spikes.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modern", action="store_true")
    p.add_argument("--cues", default="8,16")
    a = p.parse_args()
    torch.set_num_threads(1)
    rule = type("Rule", (SpinnakerRule,), {"modern": a.modern})
    m = rule(2, 4)
    m.store(torch.eye(2)[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    m.store(torch.eye(2)[0], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    print(f"forgotten bit: cue->content {float(m.w_cue_cont[0, 0]):.2f} nA, content->cue {float(m.w_cont_cue[0, 0]):.2f} nA")
    for c in [int(x) for x in a.cues.split(",")]:
        mem, eye = rule(c, 16), torch.eye(c)
        first, second = random_contents(c, 16, seed=0, p=0.3), random_contents(c, 16, seed=1000, p=0.3)
        mem.store(eye, first).store(eye, second)
        by_cue = float((mem.recall(eye) == second).all(dim=1).float().mean())
        expected = ((second @ second.T) > 0).float()
        by_content = float((mem.recall_from_content(second) == expected).all(dim=1).float().mean())
        print(f"C={c}: after re-learning every cue, cue->content {by_cue:.2f}, content->cue {by_content:.2f}")


if __name__ == "__main__":
    main()
