"""DFA under ``torch.compile``: a compiled model trains with exactly the eager DFA updates.

Dynamo does not guard its cached graphs on newly added module hooks, so a graph traced before DFA's hooks
were registered (any earlier call of a compiled model of the same class, in the same process)
kept running as plain backprop after ``attach``. DFA now drops the compiled graphs when it
attaches and detaches; these tests compile and call the model *before* attaching, the case
that trained as backprop (the detach test passed before too; it guards the other direction).
With ``fullgraph=True`` one eager pass first draws the matrices.

``aot_eager`` needs no compiler; the default backend (inductor) builds C++ kernels on CPU and
is skipped, with the reason, only where no C++ compiler is installed.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import beyondbp as bbp

CXX = os.environ.get("CXX") or "g++"
BACKENDS = [
    "aot_eager",
    pytest.param(
        "inductor",
        marks=pytest.mark.skipif(
            shutil.which(CXX) is None,
            reason=f"torch.compile's default backend (inductor) needs a C++ compiler on CPU; {CXX!r} was not found",
        ),
    ),
]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def batches(n: int = 2):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(5, 6, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(n)]


def train(model: nn.Module, forward, data) -> list[torch.Tensor]:
    """Plain user loop (``loss.backward(); opt.step()``) through ``forward``; the final weights."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def run_once(model: nn.Module, forward, x: torch.Tensor) -> None:
    """One forward and backward pass (gradients discarded), so that the graph is compiled."""
    forward(x).sum().backward()
    for p in model.parameters():
        p.grad = None


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(u, v, rtol=1e-5, atol=1e-6) for u, v in zip(a, b))


def reference():
    data = batches()
    bp_model = make_model()
    bp = train(bp_model, bp_model, data)
    dfa_model = make_model()
    bbp.rules.get("dfa").attach(dfa_model)
    dfa = train(dfa_model, dfa_model, data)
    assert not same(bp, dfa)  # the comparison below can tell the two apart
    return data, bp, dfa


@pytest.mark.parametrize("backend", BACKENDS)
def test_dfa_compiled_after_an_earlier_compiled_call_trains_as_eager_dfa(backend):
    data, bp, dfa = reference()
    model = make_model()
    compiled = torch.compile(model, backend=backend)
    run_once(model, compiled, data[0][0])  # traced and cached before the rule's hooks exist
    _learner = bbp.rules.get("dfa").attach(model)  # kept alive while the compiled model trains
    got = train(model, compiled, data)
    assert same(got, dfa)
    assert not same(got, bp)

    torch.compiler.reset()


def test_dfa_detach_restores_backprop_in_an_already_compiled_model():
    data, bp, _ = reference()
    model = make_model()
    compiled = torch.compile(model, backend="aot_eager")
    learner = bbp.rules.get("dfa").attach(model)
    run_once(model, compiled, data[0][0])  # traced with the hooks
    learner.detach()
    assert same(train(model, compiled, data), bp)
    torch.compiler.reset()


def test_dfa_attached_to_a_compiled_wrapper_steps_as_eager_dfa():
    data, _, _ = reference()
    eager_model = make_model()
    eager = bbp.rules.get("dfa").attach(eager_model)
    opt_e = torch.optim.SGD(eager_model.parameters(), lr=0.5)
    model = make_model()
    compiled = torch.compile(model, backend="aot_eager")
    run_once(model, compiled, data[0][0])
    learner = bbp.rules.get("dfa").attach(compiled)
    opt = torch.optim.SGD(learner.optimizer_parameters(), lr=0.5)
    for batch in data:
        eager.step(batch, opt_e)
        learner.step(batch, opt)
    assert same(list(model.parameters()), list(eager_model.parameters()))
    torch.compiler.reset()


def test_dfa_fullgraph_compiles_once_the_matrices_exist():
    data, _, dfa = reference()
    model = make_model()
    bbp.rules.get("dfa").attach(model)
    x, y = data[0]
    F.cross_entropy(model(x), y).backward()  # one eager pass draws the feedback matrices
    for p in model.parameters():
        p.grad = None
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert same(train(model, compiled, data), dfa)
    torch.compiler.reset()
