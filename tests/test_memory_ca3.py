"""beyondbp.memory.ca3: the spiking CA3 content-addressable circuit's protocol checks (issue 27)."""

from __future__ import annotations

import math

import pytest
import torch

from beyondbp.errors import ConfigError
from beyondbp.memory import CA3Memory
from beyondbp.memory.ca3 import A_PLUS, W_MAX, exact_capacity, random_contents, relearn_exactness

torch.set_num_threads(1)

CUES, BITS = 6, 12


def _stored(seed: int = 1) -> tuple[CA3Memory, torch.Tensor]:
    contents = random_contents(CUES, BITS, seed=seed)
    return CA3Memory(CUES, BITS).store(torch.eye(CUES), contents), contents


def test_every_cue_recalls_its_content_and_every_content_its_cues_exactly():
    m, contents = _stored()
    assert torch.equal(m.recall_from_cue(torch.eye(CUES)), contents)
    # STDP drove exactly the stored (cue, bit) synapses to w_max in both directions, the rest to 0
    assert torch.equal(m.w_cue_cont, contents * W_MAX)
    assert torch.equal(m.w_cont_cue, contents.T * W_MAX)
    # content -> cue: every cue whose content shares an active bit with the query
    expected = ((contents @ contents.T) > 0).float()
    assert torch.equal(m.recall_from_content(contents), expected)
    # orthogonal contents: a single bit recalls exactly its one cue
    ortho = torch.zeros(4, 8)
    for i in range(4):
        ortho[i, 2 * i:2 * i + 2] = 1.0
    m2 = CA3Memory(4, 8).store(torch.eye(4), ortho)
    partial = torch.zeros(4, 8)
    partial[torch.arange(4), 2 * torch.arange(4) + 1] = 1.0
    assert torch.equal(m2.recall_from_content(partial), torch.eye(4))
    assert torch.equal(m2.recall(torch.eye(4)), ortho)


def test_relearning_a_cue_overwrites_its_content():
    m, contents = _stored()
    new = 1.0 - contents[2]
    m.store(torch.eye(CUES)[2], new)
    recalled = m.recall(torch.eye(CUES))
    assert torch.equal(recalled[2], new)
    others = [i for i in range(CUES) if i != 2]
    assert torch.equal(recalled[others], contents[others])
    assert torch.equal(m.w_cue_cont[2], new * W_MAX)  # the old bits' cue->content synapses are at 0
    # content -> cue: a single bit of the new content recalls cue 2; a single forgotten bit does not
    # (its synapse keeps A+ e^{-2/3} = 3.08 nA, under one spike's threshold, see the module docstring)
    bit_new, bit_old = int(new.nonzero()[0]), int(contents[2].nonzero()[0])
    q = torch.zeros(2, BITS)
    q[0, bit_new] = q[1, bit_old] = 1.0
    by_content = m.recall_from_content(q)
    assert by_content[0, 2] == 1.0 and by_content[1, 2] == 0.0
    assert 0 < float(m.w_cont_cue[bit_old, 2]) < 3.2


def test_relearning_leaves_the_forgotten_bits_content_to_cue_synapse_repotentiated():
    # the published circuit's limit, and its mechanism: cue 0 first holds bits {0, 1}, then {1, 2}
    m = CA3Memory(2, 4)
    m.store(torch.eye(2)[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    trains = m._simulate(torch.eye(2)[0], torch.tensor([0.0, 1.0, 1.0, 0.0]), 3, 10, learn=True)
    # the input held 3 steps makes the cue fire two waves: cue_cont at 3 and 5 ms
    assert trains["cue_cont"][:, 0].nonzero().flatten().tolist() == [3, 5]
    # the forgotten bit 0 passes the gate once and fires in cont_cont at 4 ms, between them
    assert trains["cont_cont"][:, 0].nonzero().flatten().tolist() == [4]
    assert trains["cont_cont"][:, 2].nonzero().flatten().tolist() == [3, 5]
    # so its synapse is depressed (post 3 before pre 4) then re-potentiated (pre 4 before post 5)
    assert abs(float(m.w_cont_cue[0, 0]) - A_PLUS * math.exp(-2 / 3)) < 1e-4
    assert float(m.w_cue_cont[0, 0]) == 0.0   # the cue -> content direction is overwritten
    # two forgotten bits queried together still recall the old cue
    m2 = CA3Memory(2, 6)
    m2.store(torch.eye(2)[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    m2.store(torch.eye(2)[0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0]))
    old_pair = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    assert m2.recall_from_content(old_pair)[0, 0] == 1.0


@pytest.mark.parametrize("cues", [8, 16, 32])
def test_relearning_every_cue_overwrites_both_ways_with_overwrite(cues):
    published = relearn_exactness(cues, 16, seed=0)
    fixed = relearn_exactness(cues, 16, seed=0, relearn="overwrite")
    # the published circuit: cue -> content exact, content -> cue not (forgotten bits still ~3 nA)
    assert published["cue_to_content"] == 1.0 and published["content_to_cue"] < 0.5
    assert published["stale"] == published["forgotten"] > 0
    # relearn="overwrite": exact both ways, no forgotten synapse left
    assert fixed["cue_to_content"] == 1.0 and fixed["content_to_cue"] == 1.0 and fixed["stale"] == 0


def test_overwrite_changes_nothing_but_the_forgotten_synapses():
    contents = random_contents(CUES, BITS, seed=1)
    a = CA3Memory(CUES, BITS).store(torch.eye(CUES), contents)
    b = CA3Memory(CUES, BITS, relearn="overwrite").store(torch.eye(CUES), contents)
    # first stores: same weights, same spikes, same latencies
    assert torch.equal(a.w_cue_cont, b.w_cue_cont) and torch.equal(a.w_cont_cue, b.w_cont_cue)
    assert [(op.latency, op.spikes) for op in a.reports] == [(op.latency, op.spikes) for op in b.reports]
    new = 1.0 - contents[2]
    a.store(torch.eye(CUES)[2], new)
    b.store(torch.eye(CUES)[2], new)
    assert a.reports[-1] == b.reports[-1]
    assert torch.equal(a.w_cue_cont, b.w_cue_cont)
    assert torch.equal(b.w_cont_cue[:, 2], new * W_MAX)
    others = [i for i in range(CUES) if i != 2]
    assert torch.equal(a.w_cont_cue[:, others], b.w_cont_cue[:, others])
    with pytest.raises(ConfigError, match="relearn must be one of published, overwrite"):
        CA3Memory(4, 8, relearn="forget")


def test_latencies_and_spikes_follow_from_the_delays():
    m, contents = _stored()
    stores = m.reports
    assert [op.kind for op in stores] == ["store"] * CUES
    k = contents.sum(dim=1).to(int).tolist()
    # store: content at the output 5 ms after onset (in 1 + cont_cue->merge 3 + out 1); two waves
    # (input held 3 steps, refractory step between): 2 spikes in each of 5 cue-side populations
    # (cue_cue, cue_cont, merge_cue, out_cue, cond_int) and 2 per content bit in 5 content ones
    assert [op.latency for op in stores] == [5] * CUES
    assert [op.spikes for op in stores] == [10 + 10 * n for n in k]
    assert [op.input_spikes for op in stores] == [3 * (1 + n) for n in k]
    m.reports.clear()
    m.recall(torch.eye(CUES))
    # recall from a cue: content at 6 ms (in 1 + plastic 1 + merge 3 + out 1);
    # 5 + 3 spikes per recalled bit (cont_cue, merge_cont, out_cont)
    assert [op.latency for op in m.reports] == [6] * CUES
    assert [op.spikes for op in m.reports] == [5 + 3 * n for n in k]
    m.reports.clear()
    q = torch.zeros(1, BITS)
    q[0, int(contents[0].nonzero()[0])] = 1.0
    hits = m.recall_from_content(q)
    op = m.reports[-1]
    # recall from content: cues at 6 ms (in 1 + gate 1 + cont_cont 1 + plastic 1 + merge 1 + out 1);
    # 5 spikes per query bit, 1 interneuron spike, 3 per recalled cue
    assert op.kind == "recall-content" and op.latency == 6
    assert op.spikes == 5 * 1 + 1 + 3 * int(hits.sum())
    assert op.by_population["cue_cue"] == 0


def test_deterministic_and_reset():
    a, _ = _stored(seed=3)
    b, _ = _stored(seed=3)
    assert torch.equal(a.w_cue_cont, b.w_cue_cont) and torch.equal(a.w_cont_cue, b.w_cont_cue)
    assert [op.spikes for op in a.reports] == [op.spikes for op in b.reports]
    a.reset()
    assert a.stored == 0 and not a.reports and float(a.w_cue_cont.abs().sum()) == 0.0
    cap = a.capacity()
    assert cap["theoretical"] == CUES and cap["neurons"] == 4 * CUES + 5 * BITS + 1


def test_capacity_is_the_number_of_cue_neurons():
    for cues in (3, 5):
        result = exact_capacity(cues, 8, max_items=cues + 3, seed=0)
        assert result["capacity"] == cues
        # past the cue neurons each new item overwrites the oldest one on its cue
        assert result["exact"] == list(range(1, cues + 1)) + [cues] * 3
        assert result["spikes_per_store"] > result["spikes_per_recall"] > 0


def test_bad_input_is_one_sentence():
    m = CA3Memory(4, 8)
    with pytest.raises(ConfigError, match="entries each"):
        m.store(torch.eye(4), torch.ones(4, 7))
    with pytest.raises(ConfigError, match="one-hot"):
        m.store(torch.ones(1, 4), torch.ones(1, 8))
    with pytest.raises(ConfigError, match="0 or 1"):
        m.store(torch.eye(4)[:1], torch.full((1, 8), 0.5))
    with pytest.raises(ConfigError, match="empty"):
        m.recall(torch.eye(4))
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="at least 1"):
            CA3Memory(bad, 8)
        with pytest.raises(ConfigError, match="at least 1"):
            exact_capacity(4, 8, max_items=bad)
    with pytest.raises(ConfigError, match="N >= 1"):
        m.store(torch.zeros(0, 4), torch.zeros(0, 8))
    assert m.stored == 0 and float(m.w_cue_cont.abs().sum()) == 0.0
