"""A spiking CA3 content-addressable memory, rebuilt from the circuit of "Bio-inspired
computational memory model of the Hippocampus: an approach to a neuromorphic spike-based
Content-Addressable Memory" (Casanueva-Morato, Ayuso-Martinez, Dominguez-Morales,
Jimenez-Fernandez, Jimenez-Moreno; Neural Networks 2024) and its code, sPyMem's
``CA3_content_addressable`` (a hand-wired SpiNNaker network).

The circuit, in short. A memory is a pair (cue, content): the cue is one-hot over ``C`` cue
neurons (an address), the content ``K`` bits. Two CA3 sub-populations hold each half, each split
in two: ``cue_cue`` / ``cont_cue`` are driven by the input (the cue and the content presented),
``cue_cont`` / ``cont_cont`` are the neurons a recall *from the other half* fires. Two plastic
(STDP) all-to-all projections are the memory: ``cue_cue → cont_cue`` (cue to content) and
``cont_cont → cue_cont`` (content to cue). A gate ``cont_cond`` (one neuron per content bit)
passes content activity into ``cont_cont`` only when it did not come from a cue: every cue
neuron inhibits every gate, arriving exactly when the content recalled by a cue would; a single
interneuron ``cond_int`` listening to all content neurons excites all gates a little, so during
learning (content input and cue together) the *previously* stored bits of the cue still pass and
their content→cue synapses are depressed. Lateral inhibition in ``cue_cont`` and from ``cue_cue``
to the other ``cue_cont`` neurons keeps one cue's activity from leaking into others.
``merge_cue`` / ``merge_cont`` merge the two halves of each side and drive an output layer.

Operations (the protocol of sPyMem's documentation), 1 ms steps:

* **store (learning)**: cue and content held at the input 3 steps (0, 1, 2), then 7 quiet steps.
  The cue-to-content synapses of the active (cue, bit) pairs are potentiated to ``w_max`` and
  those of the cue's old bits depressed to 0 — re-learning a cue overwrites its content from the
  cue. The content-to-cue direction is *not* overwritten by the published circuit (next item).
* **what re-learning cannot undo (the published circuit's limit)**: holding the input 3 steps
  with a one-step refractory period makes the cue fire two waves (``cue_cue`` at 1 and 3,
  ``cue_cont`` at 3 and 5). An old bit of the cue fires once in ``cont_cue`` (at 2, recalled by
  the cue), passes the gate once thanks to the interneuron (``cont_cond`` at 3) and fires once in
  ``cont_cont`` (at 4) — between the cue's two ``cue_cont`` spikes. Its content→cue synapse is
  depressed by the first (post before pre) and re-potentiated by the second (pre before post, 1 ms
  later), and nothing comes after that second pairing. Under this package's STDP reading it ends
  at ``A+ e^{−2/3}`` ≈ 3.08 nA (one forgotten bit stays under the 3.36 nA a ``cue_cont`` spike
  needs; two or more forgotten bits queried together recall the old cue); under sPyNNaker's own
  rule (``A±`` pre-multiplied by ``w_max``: 36 nA steps) it ends back at ``w_max``. None of the
  STDP readings tried removes it (a new bit's potentiation needs the same second wave), and the
  code's own test queries one bit at a time after re-learning (a bit another cue still holds).
  ``relearn="overwrite"`` (not in the paper) adds what is missing: at
  the end of a store, the stored cue's content→cue synapses from bits outside the stored content
  are depressed to ``w_min`` — a heterosynaptic depression onto the cue neuron that fired; spikes,
  latencies and every other weight are unchanged.
* **recall from cue**: the cue for one step, then 6 quiet steps. The output shows the cue
  at step 5 (``in → cue_cue`` 1 + ``cue_cue → merge_cue`` 3 + ``merge → out`` 1) and the content at
  step 6 (in 1 + the plastic synapse 1 + ``cont_cue → merge_cont`` 3 + out 1).
* **recall from content**: a (possibly partial) content for one step, then 6 quiet steps; every
  cue whose stored content shares at least one active bit with it fires at the output at step 6
  (in 1 + gate 1 + ``cont_cont`` 1 + plastic 1 + merge 1 + out 1), the content echoes at step 5.

What is from their code: the populations and their sizes, every projection's connectivity,
weight (nA), delay (ms) and sign, the neuron constants (``cm``, ``tau_m``, ``tau_syn`` 0.3 ms,
``tau_refrac`` 1 ms, threshold 3 mV above rest, 2.5 mV for the output layer of their test) and the
STDP constants (pair rule, ``τ± = 3`` ms, ``A± = 6``, additive, ``w ∈ [0, 6]``, initial weight 0).

What is my reading (no SpiNNaker here):

* Neurons are beyondbp's :class:`~beyondbp.spiking.neurons.LIF` (zero reset, ``β = exp(−dt/τ_m)``,
  threshold in mV above rest), with a one-step refractory period (a neuron that spiked at
  ``t − 1`` ignores its input at ``t``). A presynaptic spike at ``t`` with delay ``d`` is one
  step of current at ``t + d``, and the neuron can spike in that step. The exponential synaptic
  current (τ_syn = 0.3 ms ≪ dt) is folded into a per-population gain: a weight ``w`` moves the
  membrane by ``w · (τ_syn/dt)(1 − e^{−dt/τ_syn}) · (τ_m/c_m)(1 − e^{−dt/τ_m})`` mV in one step
  (sPyNNaker's exact step for a current held one step); what the current carries over to the next
  step (``e^{−1/0.3}`` ≈ 4 %) is dropped.
* STDP, pair-based on exponential traces, with the whole delay dendritic as in sPyNNaker: a
  postsynaptic spike at ``t_post`` is seen by the synapse at ``t_post + d``. At each step first
  every seen postsynaptic spike potentiates by ``A+ · Σ exp(−Δ/τ+)`` over earlier presynaptic
  spikes (Δ > 0), then every presynaptic spike depresses by ``A− · Σ exp(−Δ/τ−)`` over seen
  postsynaptic spikes at or before it (Δ ≥ 0: a tie depresses); the weight is clipped to
  ``[w_min, w_max]`` after each. A presynaptic spike is transmitted with the weight after its own
  update.
* Each operation starts from rest (membranes and traces zero): the protocol's quiet steps leave
  traces at ``e^{−7/3}`` and I drop them. Only the weights persist between operations.

Recall is read from the output layer (a bit or cue is recalled if its output neuron spikes in the
operation's window); :attr:`CA3Memory.reports` keeps per operation the latency (ms from onset to
the first output spike of the recalled half, ``None`` if none) and the spikes fired (all circuit
populations, output included; the input spikes apart) — the energy proxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from beyondbp.errors import ConfigError
from beyondbp.spiking.neurons import LIF, LIFState

from .base import Memory, as_matrix, check_binary, check_count

__all__ = ["CA3Memory", "Operation", "exact_capacity", "relearn_exactness", "LEARN_STEPS", "RECALL_STEPS", "RELEARN"]

#: what a store does to the stored cue's content→cue synapses from bits outside its new content:
#: "published" (the circuit's STDP only, see the module docstring) or "overwrite" (depressed to w_min)
RELEARN = ("published", "overwrite")

#: steps of a learning operation (input held 3 steps, then 7 quiet) and of a recall (1 + 6)
LEARN_STEPS = 10
RECALL_STEPS = 7
_HOLD = 3
_TAU_SYN = 0.3
_DT = 1.0

#: population -> (c_m nF, tau_m ms, threshold mV above rest), sPyMem's config
_NEURONS = {
    "cue_cue": (0.27, 3.0, 3.0), "cue_cont": (0.14, 0.5, 3.0),
    "cont_cue": (0.27, 3.0, 3.0), "cont_cont": (0.27, 3.0, 3.0),
    "cont_cond": (0.14, 0.5, 3.0), "cond_int": (0.14, 0.5, 3.0),
    "merge_cue": (0.27, 3.0, 3.0), "merge_cont": (0.27, 3.0, 3.0),
    "out_cue": (0.27, 3.0, 2.5), "out_cont": (0.27, 3.0, 2.5),
}
#: STDP constants of both plastic projections
TAU_PLUS = TAU_MINUS = 3.0
A_PLUS = A_MINUS = 6.0
W_MIN, W_MAX = 0.0, 6.0


@dataclass
class Operation:
    """One operation's record: ``kind`` (store, recall-cue, recall-content), ``latency`` (ms from
    onset to the first output spike of the recalled half; None when nothing was recalled),
    ``spikes`` (circuit spikes, output included), ``input_spikes`` and ``by_population``."""

    kind: str
    latency: int | None
    spikes: int
    input_spikes: int
    by_population: dict[str, int] = field(default_factory=dict)


def _gain(cm: float, tau_m: float) -> float:
    """mV per nA of weight for one presynaptic spike, one step (see the module docstring)."""
    syn = (_TAU_SYN / _DT) * (1.0 - math.exp(-_DT / _TAU_SYN))
    return syn * (tau_m / cm) * (1.0 - math.exp(-_DT / tau_m))


class CA3Memory(Memory):
    """The CA3 content-addressable memory: ``cues`` one-hot cue neurons, ``content`` bits.

    Memory API: ``store(keys, values)`` with ``keys`` one-hot ``(N, cues)`` and ``values`` 0/1
    ``(N, content)`` runs one learning operation per row, in order; ``recall(queries)`` (one-hot
    cues) returns the recalled contents; :meth:`recall_from_content` returns, per 0/1 content query,
    the cues whose stored content shares an active bit. :attr:`reports` lists every operation
    since the last reset (:class:`Operation`). Deterministic (no random draw).

    ``relearn``: ``"published"`` (default, the paper's circuit: re-learning a cue overwrites cue →
    content but leaves the old bits' content→cue synapses re-potentiated, see the module
    docstring) or ``"overwrite"`` (not in the paper: a store also depresses the stored cue's
    content→cue synapses from bits outside its new content to ``w_min``, so re-learning overwrites
    both directions).
    """

    name = "ca3"

    def __init__(self, cues: int, content: int, *, seed: int = 0, max_stored: int | None = None,
                 relearn: str = "published") -> None:
        super().__init__(check_count(cues, "cues"), check_count(content, "content"), seed=seed, max_stored=max_stored)
        if relearn not in RELEARN:
            raise ConfigError(f"relearn must be one of {', '.join(RELEARN)}, got {relearn!r}")
        self.relearn = relearn
        self.cues, self.content = self.key_dim, self.value_dim
        self.neurons_by_pop = {p: LIF(1, beta=math.exp(-_DT / tau), threshold=th, reset="zero")
                               for p, (_, tau, th) in _NEURONS.items()}
        self.gain = {p: _gain(cm, tau) for p, (cm, tau, _) in _NEURONS.items()}
        self.sizes = {"in_cue": self.cues, "in_cont": self.content, "cue_cue": self.cues, "cue_cont": self.cues,
                      "cont_cue": self.content, "cont_cont": self.content, "cont_cond": self.content,
                      "cond_int": 1, "merge_cue": self.cues, "merge_cont": self.content,
                      "out_cue": self.cues, "out_cont": self.content}
        self.projections = self._wire()
        self.reports: list[Operation] = []
        self._reset()

    # -- the circuit -------------------------------------------------------------------------------
    def _wire(self) -> list[tuple[str, str, torch.Tensor | None, int]]:
        """(source, target, signed weight matrix [source, target] or None for plastic, delay)."""
        c, k = self.cues, self.content

        def one(n: int, w: float) -> torch.Tensor:
            return torch.eye(n) * w

        def every(n: int, m: int, w: float, self_too: bool = True) -> torch.Tensor:
            full = torch.full((n, m), w)
            return full if self_too else full * (1 - torch.eye(n))

        return [
            ("in_cue", "cue_cue", one(c, 6.0), 1),
            ("in_cont", "cont_cue", one(k, 6.0), 1),
            ("cue_cue", "cue_cont", one(c, 6.0), 2),
            ("cue_cue", "cue_cont", every(c, c, -6.0 * k, self_too=False), 3),
            ("cue_cue", "cont_cond", every(c, k, -6.0), 2),
            ("cont_cue", "cont_cond", one(k, 9.0), 1),
            ("cont_cue", "cond_int", every(k, 1, 6.0), 1),
            ("cond_int", "cont_cond", every(1, k, 2.0), 1),
            ("cont_cond", "cont_cont", one(k, 6.0), 1),
            ("cue_cue", "cont_cue", None, 1),      # plastic: cue -> content
            ("cont_cont", "cue_cont", None, 1),    # plastic: content -> cue
            ("cue_cont", "cue_cont", every(c, c, -6.0 * k, self_too=False), 2),
            ("cue_cue", "merge_cue", one(c, 6.0), 3),
            ("cue_cont", "merge_cue", one(c, 6.0), 1),
            ("cont_cue", "merge_cont", one(k, 6.0), 3),
            ("cont_cont", "merge_cont", one(k, 6.0), 1),
            ("merge_cue", "out_cue", one(c, 6.0), 1),
            ("merge_cont", "out_cont", one(k, 6.0), 1),
        ]

    @property
    def plastic(self) -> dict[str, torch.Tensor]:
        """The two plastic weight matrices: ``cue_to_content`` ``(cues, content)`` and
        ``content_to_cue`` ``(content, cues)``, in nA, within ``[0, 6]``."""
        return {"cue_to_content": self.w_cue_cont, "content_to_cue": self.w_cont_cue}

    def _simulate(self, cue: torch.Tensor, content: torch.Tensor, hold: int, steps: int, learn: bool
                  ) -> dict[str, torch.Tensor]:
        """Run one operation from rest; returns each population's spikes ``[steps, n]``."""
        inputs = {"in_cue": cue, "in_cont": content}
        spikes: dict[str, list[torch.Tensor]] = {p: [] for p in self.sizes}
        states: dict[str, LIFState | None] = {p: None for p in _NEURONS}
        plastic = {("cue_cue", "cont_cue"): self.w_cue_cont, ("cont_cont", "cue_cont"): self.w_cont_cue}
        # traces: presynaptic (spikes < t) and seen-postsynaptic (post spikes at <= t - d)
        pre_trace = {key: torch.zeros(self.sizes[key[0]]) for key in plastic}
        post_trace = {key: torch.zeros(self.sizes[key[1]]) for key in plastic}
        decay_plus, decay_minus = math.exp(-1.0 / TAU_PLUS), math.exp(-1.0 / TAU_MINUS)

        def past(pop: str, t: int) -> torch.Tensor:
            return spikes[pop][t] if t >= 0 else torch.zeros(self.sizes[pop])

        for t in range(steps):
            for p, x in inputs.items():
                spikes[p].append(x.clone() if t < hold else torch.zeros_like(x))
            currents = {p: torch.zeros(self.sizes[p]) for p in _NEURONS}
            for src, dst, weights, delay in self.projections:
                s = past(src, t - delay)
                if not bool(s.any()):
                    continue
                w = plastic[(src, dst)] if weights is None else weights
                currents[dst] += s @ w
            # potentiation at step t, after the step's transmission (see the module docstring)
            if learn:
                for (src, dst), w in plastic.items():
                    seen_post = past(dst, t - 1)           # delay 1: post at t-1 is seen at t
                    post_trace[(src, dst)] = post_trace[(src, dst)] * decay_minus + seen_post
                    pre_trace[(src, dst)] = pre_trace[(src, dst)] * decay_plus   # pre spikes < t, aged to t
                    w.add_(A_PLUS * torch.outer(pre_trace[(src, dst)], seen_post)).clamp_(W_MIN, W_MAX)
            for p in _NEURONS:                             # fixed order: populations do not interact within a step
                lif = self.neurons_by_pop[p]
                state = states[p]
                refractory = 1.0 - state.spikes if state is not None else 1.0
                s, states[p] = lif.step(currents[p] * self.gain[p] * refractory, state)
                spikes[p].append(s)
            if learn:
                for (src, dst), w in plastic.items():
                    pre_now = spikes[src][t]
                    # depression at each presynaptic spike of step t, against posts seen at <= t;
                    # it must precede the transmission of that spike, which happens at t + 1
                    w.sub_(A_MINUS * torch.outer(pre_now, post_trace[(src, dst)])).clamp_(W_MIN, W_MAX)
                    pre_trace[(src, dst)] = pre_trace[(src, dst)] + pre_now
        return {p: torch.stack(v) for p, v in spikes.items()}

    def _operation(self, kind: str, cue: torch.Tensor, content: torch.Tensor) -> tuple[dict[str, torch.Tensor], Operation]:
        learn = kind == "store"
        trains = self._simulate(cue, content, _HOLD if learn else 1, LEARN_STEPS if learn else RECALL_STEPS, learn)
        watch = "out_cue" if kind == "recall-content" else "out_cont"
        fired = trains[watch].any(dim=1).nonzero()
        latency = int(fired[0, 0]) if fired.numel() else None
        counts = {p: int(v.sum()) for p, v in trains.items()}
        inputs = counts["in_cue"] + counts["in_cont"]
        op = Operation(kind, latency, sum(counts.values()) - inputs, inputs,
                       {p: n for p, n in counts.items() if not p.startswith("in_")})
        self.reports.append(op)
        return trains, op

    # -- the Memory contract ---------------------------------------------------------------------------
    def _check_items(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        _check_cues(keys)
        check_binary(values, "values", (0.0, 1.0))

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        for cue, content in zip(keys, values):
            self._operation("store", cue, content)
            i = int(cue.argmax())
            if self.relearn == "overwrite":
                # heterosynaptic depression onto the cue neuron that fired (not in the paper)
                self.w_cont_cue[:, i] = torch.where(content > 0, self.w_cont_cue[:, i], torch.full_like(content, W_MIN))
            self.known[i] = True

    def _recall(self, queries: torch.Tensor) -> torch.Tensor:
        _check_cues(queries, "queries")
        out = []
        for cue in queries:
            trains, _ = self._operation("recall-cue", cue, torch.zeros(self.content))
            out.append(trains["out_cont"].any(dim=0).to(torch.float32))
        return torch.stack(out)

    def recall_from_content(self, contents: torch.Tensor) -> torch.Tensor:
        """``(M, content)`` 0/1 content queries (whole or partial) to ``(M, cues)`` 0/1: the cues
        whose output neuron fired, i.e. whose stored content shares an active bit with the query."""
        q = as_matrix(contents, "content queries", self.content, "contents")
        check_binary(q, "content queries", (0.0, 1.0))
        if self.stored == 0:
            raise ConfigError(f"the {self.name} memory is empty: store items before recalling")
        out = []
        with torch.no_grad():
            for content in q:
                trains, _ = self._operation("recall-content", torch.zeros(self.cues), content)
                out.append(trains["out_cue"].any(dim=0).to(torch.float32))
        return torch.stack(out)

    def recall_from_cue(self, cues: torch.Tensor) -> torch.Tensor:
        """``recall`` under the paper's name: one-hot cues to recalled contents."""
        return self.recall(cues)

    def _reset(self) -> None:
        self.w_cue_cont = torch.zeros(self.cues, self.content)
        self.w_cont_cue = torch.zeros(self.content, self.cues)
        self.known = torch.zeros(self.cues, dtype=torch.bool)
        self.reports = []

    @property
    def neurons(self) -> int:
        return sum(n for p, n in self.sizes.items() if not p.startswith("in_"))

    @property
    def synapses(self) -> int:
        return sum(int((w != 0).sum()) if w is not None else self.sizes[s] * self.sizes[d]
                   for s, d, w, _ in self.projections)

    def theoretical_capacity(self) -> float:
        """One memory per cue neuron (one-hot cues): ``cues``."""
        return float(self.cues)


def _check_cues(x: torch.Tensor, name: str = "keys") -> None:
    check_binary(x, name, (0.0, 1.0))
    if not bool((x.sum(dim=1) == 1).all()):
        raise ConfigError(f"{name} must be one-hot cues (exactly one 1 per row), the circuit addresses one cue neuron per memory")


def random_contents(n: int, content: int, seed: int = 0, p: float = 0.5) -> torch.Tensor:
    """``n`` random 0/1 contents of ``content`` bits, each bit 1 with probability ``p`` and at
    least one bit set per row. Deterministic given ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, content, generator=g) < p).to(torch.float32)
    empty = x.sum(dim=1) == 0
    x[empty, torch.randint(0, content, (int(empty.sum()),), generator=g)] = 1.0
    return x


def exact_capacity(cues: int, content: int, max_items: int, seed: int = 0) -> dict[str, Any]:
    """Store items ``0, 1, …`` one at a time, item ``i`` on cue ``i mod cues`` with a random
    content, and after each store recall every item stored so far from its cue. Returns
    ``capacity`` (the largest number of items all recalled exactly), ``exact`` (per count n, the
    items of the first n recalled exactly) and the mean ``spikes`` per store and per recall."""
    check_count(max_items, "max_items")
    mem = CA3Memory(cues, content, seed=seed)
    contents = random_contents(max_items, content, seed=seed)
    eye = torch.eye(cues)
    exact, capacity = [], 0
    for n in range(1, max_items + 1):
        mem.store(eye[(n - 1) % cues], contents[n - 1])
        keys = eye[torch.arange(n) % cues]
        good = int((mem.recall(keys) == contents[:n]).all(dim=1).sum())
        exact.append(good)
        if good == n and capacity == n - 1:
            capacity = n
    stores = [op.spikes for op in mem.reports if op.kind == "store"]
    recalls = [op.spikes for op in mem.reports if op.kind == "recall-cue"]
    return {"cues": cues, "content": content, "capacity": capacity, "exact": exact,
            "spikes_per_store": sum(stores) / len(stores), "spikes_per_recall": sum(recalls) / len(recalls)}


def relearn_exactness(cues: int, content: int, seed: int = 0, relearn: str = "published", p: float = 0.3) -> dict[str, Any]:
    """Store a random content (bits 1 with probability ``p``) on every cue, then re-learn every cue
    with a second random content, and recall every new content both ways. Returns ``cue_to_content``
    (fraction of cues recalling exactly their new content), ``content_to_cue`` (fraction of new
    contents recalling exactly the cues whose new content shares an active bit) and ``stale``
    (the content→cue synapses from a cue's forgotten bits still at or above 1 nA)."""
    mem = CA3Memory(cues, content, seed=seed, relearn=relearn)
    eye = torch.eye(cues)
    first = random_contents(cues, content, seed=seed, p=p)
    second = random_contents(cues, content, seed=seed + 1000, p=p)
    mem.store(eye, first).store(eye, second)
    by_cue = float((mem.recall(eye) == second).all(dim=1).float().mean())
    expected = ((second @ second.T) > 0).float()
    by_content = float((mem.recall_from_content(second) == expected).all(dim=1).float().mean())
    forgotten = (first > 0) & (second == 0)
    stale = int((mem.w_cont_cue.T[forgotten] >= 1.0).sum())
    return {"cues": cues, "content": content, "relearn": relearn, "cue_to_content": by_cue,
            "content_to_cue": by_content, "stale": stale, "forgotten": int(forgotten.sum())}
