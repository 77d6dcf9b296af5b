"""beyondbp.continual: metrics, Oja's subspace rule, projection exactness, protection, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from beyondbp import continual as C
from beyondbp import rules
from beyondbp.continual.methods import hlop_increment
from beyondbp.continual.projection import GradientProjector, HebbianSubspace, layer_inputs
from beyondbp.errors import ConfigError
from beyondbp.reporting import continual as continual_report

torch.set_num_threads(1)


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_matrix():
    R = [[80.0, 12.0, 9.0],
         [70.0, 85.0, 14.0],
         [60.0, 75.0, 90.0]]
    b = [10.0, 11.0, 10.0]
    assert C.acc(R) == pytest.approx((60 + 75 + 90) / 3)
    assert C.bwt(R) == pytest.approx(((60 - 80) + (75 - 85)) / 2)
    assert C.fwt(R, b) == pytest.approx(((12 - 11) + (14 - 10)) / 2)
    assert C.fwt(R, None) is None
    nan = float("nan")
    assert C.bwt([[nan, nan], [50.0, 60.0]]) is None  # diagonal not measured (multitask)


def test_markdown_and_png(tmp_path):
    res = {"method": "hlop", "rule": "fa", "acc": 50.0, "bwt": -1.0, "fwt": None, "seconds": 3.0,
           "matrix": [[50.0, 10.0], [49.0, 51.0]]}
    md = continual_report.markdown_table([res], "t")
    assert "| hlop | fa | 50.00 | -1.00 | — | 3 |" in md
    continual_report.plot_matrices([res], tmp_path / "m.png", "t")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


# -- Oja's subspace rule ------------------------------------------------------------------------
def _principal_cosines(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the row spaces of A and B."""
    qa, _ = torch.linalg.qr(A.T.double())
    qb, _ = torch.linalg.qr(B.T.double())
    return torch.linalg.svdvals(qa.T @ qb)


def test_oja_subspace_rule_finds_the_top_principal_subspace():
    g = torch.Generator().manual_seed(0)
    n, k = 30, 4
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    scales = torch.tensor([3.0, 2.5, 2.0, 1.8] + [0.3] * (n - k), dtype=torch.float64)
    data = (torch.randn(6000, n, generator=g, dtype=torch.float64) * scales) @ q.T
    data = data.float()
    sub = HebbianSubspace(n, lr=0.01, iterations=5, seed=1)
    sub.add(k)
    start = _principal_cosines(sub.H, data[:1].repeat(k, 1) * 0 + q[:, :k].T.float()).min()
    for epoch in range(3):
        for i in range(0, data.shape[0], 64):
            sub.update(data[i : i + 64])
    _, _, vh = torch.linalg.svd(data.double(), full_matrices=False)  # reference: top-k by SVD
    cos = _principal_cosines(sub.H, vh[:k].float())
    assert start < 0.9  # the random start is far from the answer
    assert cos.min() > 0.995
    gram = sub.H.double() @ sub.H.double().T  # rows converge to an orthonormal set
    assert torch.allclose(gram, torch.eye(k, dtype=torch.float64), atol=0.02)


def test_frozen_neurons_stay_frozen_and_new_ones_learn_the_residual():
    g = torch.Generator().manual_seed(1)
    n = 12
    data = torch.randn(3000, n, generator=g) * torch.linspace(3, 0.2, n)
    sub = HebbianSubspace(n, lr=0.01, seed=2)
    sub.add(2)
    for i in range(0, 3000, 50):
        sub.update(data[i : i + 50])
    old = sub.H.clone()
    assert sub.add(3) == 3 and sub.frozen == 2
    for i in range(0, 3000, 50):
        sub.update(data[i : i + 50])
    assert torch.equal(sub.H[:2], old)  # exactly unchanged
    assert not torch.allclose(sub.H[2:], torch.zeros(3, n))
    # the new neurons learnt directions orthogonal to the frozen ones: the next principal axes
    cross = (sub.H[2:] @ sub.H[:2].T).abs().max()
    assert cross < 0.05
    assert sub.basis().shape == (2, n)


def test_projection_basis_is_an_exact_projector_for_unconverged_neurons():
    g = torch.Generator().manual_seed(4)
    sub = HebbianSubspace(12, lr=0.01)
    sub.add(5)
    sub.H = torch.randn(5, 12, generator=g) * 2.0  # far from orthonormal, as after a short task
    sub.freeze()
    M = sub.basis().double()
    P = M.T @ M
    torch.testing.assert_close(P @ P, P, atol=1e-6, rtol=0)
    assert torch.linalg.eigvalsh(P).min() > -1e-6  # never an ascent direction
    cos = _principal_cosines(M.float(), sub.H)
    assert M.shape == (5, 12) and cos.min() > 1 - 1e-5  # same span as the neurons
    # new neurons start orthogonal to the frozen span
    sub.add(3)
    assert (sub.H[5:].double() @ M.T).abs().max() < 1e-5


def test_subspace_never_exceeds_the_input_width():
    sub = HebbianSubspace(5, lr=0.01)
    assert sub.add(4) == 4 and sub.add(4) == 1 and sub.add(4) == 0
    assert sub.size == 5


def test_hlop_schedule_matches_the_official_script():
    assert [hlop_increment(t) for t in range(1, 10)] == [70, 70, 50, 50, 50, 30, 30, 30, 10]


# -- projection exactness -----------------------------------------------------------------------
class _ProjLinear(torch.autograd.Function):
    """Reference: forward x Wᵀ + b; backward weight gradient δᵀ x_orth with x_orth = x̃ − Hᵀ(H x̃)
    computed explicitly, input gradient δ·B (B = W for backprop, the feedback matrix for FA)."""

    @staticmethod
    def forward(ctx, x, w, b, H, B):
        ctx.save_for_backward(x, H, B)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, d):
        x, H, B = ctx.saved_tensors
        xt = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        x_orth = xt - (xt @ H.T) @ H
        gw = d.T @ x_orth
        return d @ B, gw[:, :-1], gw[:, -1], None, None


@pytest.mark.parametrize("rule_name", ["backprop", "fa"])
def test_projection_of_grad_equals_replacing_x_by_x_minus_HtHx(rule_name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(9, 7, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    g = torch.Generator().manual_seed(3)
    # H need not be orthonormal: the identity is about x − Hᵀ(Hx) for any H
    Hs = {"0": torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.4,
          "2": torch.randn(2, 7, generator=g, dtype=torch.float64) * 0.4}
    learner = rules.get(rule_name).attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    proj = GradientProjector({"0": model[0], "2": model[2]})
    for name, H in Hs.items():
        proj.set_basis(name, H)
    proj.project()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if not n.split(".")[-1].startswith("bbp_")}
    B0 = model[0].weight.detach()
    B2 = model[2].weight.detach() if rule_name == "backprop" else learner.feedback_matrix("2").detach()
    assert rule_name == "backprop" or not torch.allclose(B2, model[2].weight.detach())
    w0, b0, w2, b2 = (t.detach().clone().requires_grad_(True) for t in
                      (model[0].weight, model[0].bias, model[2].weight, model[2].bias))
    h = torch.tanh(_ProjLinear.apply(x, w0, b0, Hs["0"], B0))
    F.cross_entropy(_ProjLinear.apply(h, w2, b2, Hs["2"], B2), y).backward()
    torch.testing.assert_close(got["0.weight"], w0.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["0.bias"], b0.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["2.weight"], w2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["2.bias"], b2.grad, rtol=1e-10, atol=1e-12)
    learner.detach()


def test_conv_projection_equals_projected_patches():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    out = conv(x)
    d = torch.randn_like(out)
    out.backward(d)
    n = 2 * 9 + 1
    H = torch.randn(4, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    proj = GradientProjector({"c": conv})
    proj.set_basis("c", H)
    proj.project()
    patches = layer_inputs(conv, x)  # (B·L, n) with the constant 1
    orth = patches - (patches @ H.T) @ H
    delta = d.permute(0, 2, 3, 1).reshape(-1, 3)  # rows in the same (b, l) order
    ref = delta.T @ orth
    torch.testing.assert_close(conv.weight.grad.reshape(3, -1), ref[:, :-1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(conv.bias.grad, ref[:, -1], rtol=1e-10, atol=1e-12)


def test_gpm_basis_meets_the_energy_threshold():
    g = torch.Generator().manual_seed(0)
    R = (torch.randn(20, 200, generator=g).T * torch.linspace(5, 0.1, 20)).T
    U = C.gpm_extend(torch.zeros(20, 0), R, 0.9)
    k = U.shape[1]
    s = torch.linalg.svdvals(R.double())
    frac = (s**2).cumsum(0) / (s**2).sum()
    assert frac[k - 1] >= 0.9 and (k == 1 or frac[k - 2] < 0.9)
    torch.testing.assert_close(U.T.double() @ U.double(), torch.eye(k, dtype=torch.float64), atol=1e-6, rtol=0)
    U2 = C.gpm_extend(U, torch.randn(20, 50, generator=g), 0.99)
    assert U2.shape[1] > k and torch.equal(U2[:, :k], U)
    torch.testing.assert_close(U2.T.double() @ U2.double(), torch.eye(U2.shape[1], dtype=torch.float64), atol=1e-6, rtol=0)


# -- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seq2():
    return C.build_sequence("permuted-fashion-mnist:2", train_size=2000, test_size=500, seed=0)


def _drift(seq, method, rule="backprop", **kw):
    """Mean |Δlogit| on task-0 test inputs caused by training task 1, and the result."""
    snaps = {}
    meth = C.make_method(method, **kw)

    def inspect(t, model):
        with torch.no_grad():
            snaps[t] = model.eval()(seq.tasks[0].x_test).clone()
        model.train()

    res = C.run_method(seq, meth, rule=rule, model_options={"widths": [64, 64], "bias": False}, lr=0.05,
                       batch_size=32, inspect=inspect, seed=0)
    return float((snaps[1] - snaps[0]).abs().mean()), res


@pytest.mark.parametrize("rule_name", ["backprop", "fa", "dfa"])
def test_projection_methods_protect_task_one(seq2, rule_name):
    ft, res_ft = _drift(seq2, "finetune", rule_name)
    hl, res_hl = _drift(seq2, "hlop", rule_name)
    assert res_ft["matrix"][0][0] > 35 and res_hl["matrix"][1][1] > 35  # both learnt their tasks (chance: 10)
    assert hl < 0.35 * ft, (hl, ft)
    if rule_name == "backprop":
        gp, res_gp = _drift(seq2, "gpm", rule_name)
        assert gp < 0.35 * ft, (gp, ft)
        assert res_gp["matrix"][1][1] > 40


def test_run_is_deterministic_under_a_seed(seq2):
    a = C.run_method(seq2, "hlop", model_options={"widths": [32], "bias": True}, seed=3)
    b = C.run_method(seq2, "hlop", model_options={"widths": [32], "bias": True}, seed=3)
    assert a["matrix"] == b["matrix"] and a["random_init"] == b["random_init"]
    c = C.run_method(seq2, "hlop", model_options={"widths": [32], "bias": True}, seed=4)
    assert c["matrix"] != a["matrix"]


def test_refuses_rules_that_do_not_compose(seq2):
    for method in ("hlop", "gpm", "ewc"):
        with pytest.raises(ConfigError, match="δ·xᵀ"):
            C.run_method(seq2, method, rule="ff")
    with pytest.raises(ConfigError, match="unknown continual-learning method"):
        C.make_method("replay")
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        C.parse_tasks("permuted-fashion-mnist:1")
    with pytest.raises(ConfigError, match="unknown task family"):
        C.parse_tasks("rotated-mnist:5")


def test_split_task_incremental_masks_other_classes():
    seq = C.build_sequence("split-fashion-mnist:task", train_size=400, test_size=200)
    assert len(seq) == 5 and seq.masked and seq.tasks[2].classes == (4, 5)
    assert set(seq.tasks[2].y_train.tolist()) == {4, 5}
    res = C.run_method(seq, "finetune", model_options={"widths": [32]}, lr=0.05)
    # with the mask a task-incremental 2-way choice: far above 50 % on the first task after training it
    assert res["matrix"][0][0] > 80
    cls = C.build_sequence("split-fashion-mnist:class", train_size=400, test_size=200)
    assert not cls.masked
    res_c = C.run_method(cls, "finetune", model_options={"widths": [32]}, lr=0.05)
    # class-incremental without replay: the shared head forgets task 0 almost entirely
    assert res_c["matrix"][4][0] < res["matrix"][4][0] - 30


def test_multitask_has_only_a_last_row(seq2):
    res = C.run_method(seq2, "multitask", model_options={"widths": [32]})
    assert res["bwt"] is None and res["fwt"] is None and res["acc"] > 50
    assert all(math.isnan(v) for v in res["matrix"][0])


def test_ewc_penalty_pulls_toward_the_anchor(seq2):
    drift_ft, _ = _drift(seq2, "finetune")
    drift_ewc, res = _drift(seq2, "ewc", lam=50.0)
    assert drift_ewc < 0.8 * drift_ft and res["matrix"][1][1] > 40


def test_permutations_are_seeded_and_differ():
    a = C.build_sequence("permuted-mnist1d:3", seed=5)
    b = C.build_sequence("permuted-mnist1d:3", seed=5)
    assert torch.equal(a.tasks[1].x_train, b.tasks[1].x_train)
    assert not torch.equal(a.tasks[0].x_train, a.tasks[1].x_train)
    # same samples, features reordered
    torch.testing.assert_close(a.tasks[0].x_train.sort(1).values, a.tasks[1].x_train.sort(1).values)


# -- CLI ----------------------------------------------------------------------------------------
def _cli(capsys, *args):
    """Run ``beyondbp continual ARGS`` in this process; (exit status, stdout, stderr)."""
    from beyondbp.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["continual", *args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_cli_happy_path(tmp_path, capsys):
    out = tmp_path / "res"
    code, stdout, stderr = _cli(capsys, "--tasks", "permuted-mnist1d:2", "--methods", "finetune,hlop,multitask", "--rule", "fa",
             "--model-opt", "widths=[32]", "--train-size", "600", "--test-size", "200", "--seed", "0", "--out", str(out), "--quiet")
    assert code == 0, stderr
    assert "ACC" in stdout and "hlop" in stdout
    def strict(token):
        raise AssertionError(f"results.json holds {token}, which is not JSON")

    data = json.loads((out / "results.json").read_text(), parse_constant=strict)
    assert [r["method"] for r in data] == ["finetune", "hlop", "multitask"] and data[0]["rule"] == "fa"
    assert data[2]["matrix"][0][0] is None and data[2]["bwt"] is None  # multitask: last row only
    assert (out / "matrix.png").exists() and "BWT" in (out / "table.md").read_text()
    code, _, stderr = _cli(capsys, "--tasks", "permuted-mnist1d:2", "--out", str(out))
    assert code == 2 and "--overwrite" in stderr



def test_a_batch_larger_than_the_training_split_is_the_whole_split(tmp_path, capsys):
    """As in `train`: no refusal; one batch of the whole split per epoch, the same run as a batch
    of exactly the split's size."""
    seq = C.build_sequence("permuted-mnist1d:2", train_size=100, test_size=50, seed=0)
    runs = {}
    for batch in (100, 10**9):
        steps = []
        runs[batch] = C.run_method(seq, "finetune", model_options={"widths": [8]}, epochs_per_task=2, batch_size=batch,
                                   on_step=lambda info: steps.append((info["task"], info["step"])))
        assert steps == [(0, 1), (0, 2), (1, 1), (1, 2)], batch
    assert runs[10**9]["matrix"] == runs[100]["matrix"]
    assert (runs[10**9]["batch_size"], runs[10**9]["batch_size_requested"]) == (100, 10**9)  # what the steps used
    joint = C.run_method(seq, "multitask", model_options={"widths": [8]}, batch_size=10**9)
    assert (joint["batch_size"], joint["batch_size_requested"]) == (200, 10**9)  # both tasks' splits together
    code, _, stderr = _cli(capsys, "--tasks", "permuted-mnist1d:2", "--methods", "finetune", "--model-opt", "widths=[8]",
                           "--train-size", "100", "--test-size", "50", "--batch-size", "4001", "--out", str(tmp_path / "o"),
                           "--quiet")
    assert code == 0, stderr
    recorded = json.loads((tmp_path / "o" / "results.json").read_text())[0]
    assert (recorded["batch_size"], recorded["batch_size_requested"]) == (100, 4001)


def test_tasks_of_unequal_size_record_each_tasks_batch_and_steps():
    """It used to record the largest task's batch as the run's batch_size and the last task's steps
    as steps_per_task; each task's are recorded now, and no single figure where they differ."""
    seq = C.build_sequence("permuted-mnist1d:2", train_size=100, test_size=20, seed=0)
    small = seq.tasks[1]
    seq.tasks[1] = dataclasses.replace(small, x_train=small.x_train[:40], y_train=small.y_train[:40])
    seen = []
    result = C.run_method(seq, "finetune", model_options={"widths": [8]}, batch_size=64,
                          on_step=lambda info: seen.append((info["task"], info["steps"])))
    assert seen == [(0, 2), (0, 2), (1, 1)]  # task 0: batches of 64 and 36; task 1: one of its 40
    assert result["task_batch_sizes"] == [64, 40] and result["task_steps"] == [2, 1]
    assert result["batch_size"] is None and result["steps_per_task"] is None
    assert result["batch_size_requested"] == 64
    even = C.run_method(seq, "finetune", model_options={"widths": [8]}, batch_size=20, epochs_per_task=2)
    assert (even["batch_size"], even["task_batch_sizes"], even["task_steps"], even["steps_per_task"]) == \
        (20, [20, 20], [10, 4], None)
    joint = C.run_method(seq, "multitask", model_options={"widths": [8]}, batch_size=10**9)
    assert (joint["batch_size"], joint["task_batch_sizes"], joint["task_steps"]) == (140, None, None)

@pytest.mark.parametrize("args, needle", [
    (["--methods", "replay"], "unknown method 'replay'"),
    (["--tasks", "rotated-mnist:3"], "unknown task family"),
    (["--tasks", "permuted-mnist1d:1"], "at least 2 tasks"),
    (["--methods", "hlop", "--rule", "ff"], "δ·xᵀ"),
    (["--tasks", "permuted-mnist1d:2", "--model", "lenet"], "lenet needs image inputs"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, args, needle):
    code, _, stderr = _cli(capsys, *args, "--out", str(tmp_path / "o"))
    assert code == 2
    assert stderr.startswith("error:") and needle in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_hlop_protects_a_spiking_mlp():
    """snn-mlp: Linear layers run over all T steps flattened into the batch; every step's
    presynaptic input is a row of the Hebbian update and of the projection."""
    seq = C.build_sequence("permuted-fashion-mnist:2", train_size=1500, test_size=300, seed=1)
    snaps = {}

    def runs(method):
        def inspect(t, model):
            with torch.no_grad():
                snaps[(method, t)] = model.eval()(seq.tasks[0].x_test).clone()
            model.train()

        return C.run_method(seq, method, model="snn-mlp", model_options={"widths": [64], "T": 4, "readout": "membrane"},
                            lr=0.05, batch_size=32, inspect=inspect, seed=0)

    ft, hl = runs("finetune"), runs("hlop")
    drift = {m: float((snaps[(m, 1)] - snaps[(m, 0)]).abs().mean()) for m in ("finetune", "hlop")}
    assert ft["matrix"][0][0] > 40 and hl["matrix"][1][1] > 40
    assert drift["hlop"] < 0.35 * drift["finetune"], drift


def test_continual_is_a_leaf_only_the_cli_imports_it():
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "beyondbp"
    offenders = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src)
        if rel.parts[0] in ("continual", "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "continual" or "continual" in n.split(".") for n in names):
                offenders.append(str(rel))
    assert offenders == []


def test_hlop_sizes_follow_the_schedule_scaled_to_the_layer_width(seq2):
    meth = C.make_method("hlop")
    C.run_method(seq2, meth, model_options={"widths": [400], "bias": False}, seed=0)
    # fc1: 784 inputs (official width) -> 80 + 70; out: 400 inputs -> round(100/2) + round(70/2)
    assert meth.sizes() == {"fc1": 150, "out": 50 + 35}
    given = C.make_method("hlop", sizes=[10, 5], increment=3)
    C.run_method(seq2, given, model_options={"widths": [16], "bias": False}, seed=0)
    assert given.sizes() == {"fc1": 13, "out": 8}


def test_the_task_mask_travels_with_the_labels():
    """Task-incremental training masks through the labels (issue 22, item 6): a fixed loss, no
    mask set on it between steps, equal to the loss with the task's own mask added."""
    import dataclasses

    from beyondbp.continual.methods import MaskedCrossEntropy, class_masks

    seq = C.build_sequence("split-fashion-mnist:task", train_size=60, test_size=20)
    table = class_masks(seq)
    assert table.shape == (10, 10)
    assert torch.isinf(table[4]).sum() == 8 and table[4][4] == 0 and table[4][5] == 0
    task = seq.tasks[2]
    mask = torch.full((10,), float("-inf"))
    mask[[4, 5]] = 0.0
    out = torch.randn(len(task.y_train), 10, requires_grad=True)
    loss = MaskedCrossEntropy(table)
    assert torch.equal(loss(out, task.y_train), F.cross_entropy(out + mask, task.y_train))
    assert torch.isfinite(loss(out, task.y_train))
    cls = C.build_sequence("split-fashion-mnist:class", train_size=60, test_size=20)
    assert class_masks(cls) is None
    assert torch.equal(MaskedCrossEntropy(None)(out, task.y_train), F.cross_entropy(out, task.y_train))
    shared = dataclasses.replace(seq, tasks=[seq.tasks[0], dataclasses.replace(seq.tasks[1], classes=(1, 2))])
    with pytest.raises(ConfigError, match="must not share classes: class 1"):
        C.run_method(shared, "finetune", model_options={"widths": [8]})


def test_the_help_says_the_defaults_are_sized_for_fashion_mnist(capsys):
    """No behaviour change: the defaults (1 epoch per task) suit the Fashion-MNIST families, and
    the help says what permuted-mnist1d (63 steps per epoch) needs instead."""
    code, out, _ = _cli(capsys, "--help")
    text = " ".join(out.split())
    assert code == 0 and "there is no --data" in text and "--epochs-per-task 15" in text and "63 steps" in text
