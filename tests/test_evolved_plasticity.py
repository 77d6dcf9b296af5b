"""Evolved plasticity (issue 27, Miconi ICML 2023): the tasks, the node-perturbation update,
the ES gradient estimate, antithetic sampling, determinism and bad input."""

from __future__ import annotations

import pytest
import torch

from beyondbp.errors import BeyondBPError, ConfigError
from beyondbp.evolution.es import ESConfig, antithetic_noise, es_gradient, evaluate, evolve, sample_tasks, schedule_tasks
from beyondbp.evolution.plastic_rnn import PlasticRNNConfig, initial_parameters, lifetime
from beyondbp.evolution.tasks import TASKS, TRAINING_TASKS, WITHHELD, stimulus_inputs, targets, task_index
from beyondbp.plasticity.node_perturbation import decayed_traces, plastic_update, trace_step

TINY = PlasticRNNConfig(units=12, trials=6, scored_trials=2, plastic_from=2, quiet_trials=1)


# --- tasks -----------------------------------------------------------------------------------

LOGIC = {
    "and": lambda a, b: a and b, "nand": lambda a, b: not (a and b), "or": lambda a, b: a or b,
    "nor": lambda a, b: not (a or b), "01": lambda a, b: (not a) and b, "anti01": lambda a, b: not ((not a) and b),
    "10": lambda a, b: a and not b, "anti10": lambda a, b: not (a and not b), "watchstim1": lambda a, b: a,
    "watchstim2": lambda a, b: b, "antiwatchstim1": lambda a, b: not a, "antiwatchstim2": lambda a, b: not b,
    "dms": lambda a, b: a == b, "dnms": lambda a, b: a != b,
}


def test_the_task_family_is_every_non_constant_function_of_two_bits():
    assert set(TASKS) == set(LOGIC) and len(TASKS) == 14
    assert len(set(TASKS.values())) == 14 and (0, 0, 0, 0) not in TASKS.values() and (1, 1, 1, 1) not in TASKS.values()
    s1 = torch.tensor([0, 0, 1, 1])
    s2 = torch.tensor([0, 1, 0, 1])
    for name, fn in LOGIC.items():
        got = targets(task_index([name] * 4), s1, s2).tolist()
        assert got == [int(bool(fn(a, b))) for a, b in zip(s1.tolist(), s2.tolist())], name
    assert WITHHELD == ("dms", "dnms") and set(TRAINING_TASKS) == set(TASKS) - set(WITHHELD)
    # why the DMS success alone does not show learning: four training tasks agree with DMS on 3 of 4 pairs
    agree = {t for t in TRAINING_TASKS if sum(x == y for x, y in zip(TASKS[t], TASKS["dms"])) == 3}
    assert agree == {"and", "nor", "anti01", "anti10"}


def test_stimulus_inputs_show_s1_then_s2_on_opposite_units():
    x = stimulus_inputs(torch.tensor([1, 0]), torch.tensor([0, 0]), steps=20, size=3.0)
    assert x.shape == (2, 2, 20)
    assert x[0, 0, :8].eq(3.0).all() and x[0, 0, 8:10].eq(0).all() and x[0, 0, 10:18].eq(-3.0).all()
    assert x[0, 0, 18:].eq(0).all() and x[1, 0, :8].eq(-3.0).all()
    assert torch.equal(x[:, 1], -x[:, 0])


def test_withheld_tasks_are_never_sampled_for_training():
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        seen |= set(sample_tasks(8, TRAINING_TASKS, gen))
    assert seen == set(TRAINING_TASKS) and not seen & set(WITHHELD)
    with pytest.raises(ConfigError, match="withheld"):
        ESConfig(population=4, train_tasks=("and", "dms"))


# --- plasticity --------------------------------------------------------------------------------

def test_the_authors_schedule_alternates_halves_of_the_task_list_every_two_generations():
    even = {"and", "01", "10", "watchstim1", "antiwatchstim1", "nor"}
    odd = {"nand", "anti01", "anti10", "watchstim2", "antiwatchstim2", "or"}
    for g, half in [(0, even), (1, even), (2, odd), (3, odd), (4, even), (7, odd)]:
        assert set(schedule_tasks(TRAINING_TASKS, g)) == half, g
        assert set(schedule_tasks(TRAINING_TASKS, g, "uniform")) == set(TRAINING_TASKS)
    assert schedule_tasks(("and", "or"), 2) == ("or",) and schedule_tasks(("and",), 2) == ("and",)  # no odd one: all
    assert ESConfig(population=4).task_schedule == "halves"
    gen = torch.Generator().manual_seed(0)
    assert set(sample_tasks(50, schedule_tasks(TRAINING_TASKS, 2), gen)) == odd
    # the schedule reaches the evolution: the same seed under the two schedules evolves differently
    halves = evolve(ESConfig(population=4, generations=3, test_every=0, seed=1), TINY)
    uniform = evolve(ESConfig(population=4, generations=3, test_every=0, seed=1, task_schedule="uniform"), TINY)
    assert not torch.equal(halves.weights, uniform.weights)
    with pytest.raises(ConfigError, match="task_schedule must be one of halves, uniform"):
        ESConfig(population=4, task_schedule="blocks")
    with pytest.raises(ConfigError, match="init_alpha must be at least 0"):
        PlasticRNNConfig(init_alpha=-0.5)


def test_plastic_update_and_traces_are_the_formulas():
    gen = torch.Generator().manual_seed(1)
    e = torch.randn(2, 3, 3, generator=gen)
    loss, base = torch.tensor([0.5, 0.2]), torch.tensor([0.3, 0.4])
    want = -(0.03 * e * (base * (loss - base))[:, None, None])
    assert torch.allclose(plastic_update(e, loss, base, 0.03, 1.0), want)
    assert plastic_update(e, loss, base, 100.0, 1e-2).abs().max() <= 1e-2 + 1e-9
    kicks, pres = torch.randn(5, 3, generator=gen), torch.randn(2, 5, 3, generator=gen)
    step_by_step = e
    for k in range(5):
        step_by_step = trace_step(step_by_step, kicks[k], pres[:, k], 0.98)
    assert torch.allclose(decayed_traces(e, kicks, pres, 0.98), step_by_step, atol=1e-6)


def _naive_lifetime(w, alpha, s1, s2, task, c, noise_seed):
    """The network written out step by step for one member, outer products every step."""
    n = c.units
    gen = torch.Generator().manual_seed(noise_seed)
    x = torch.full((n,), 0.1)
    x[:5] = 0
    r = x.clone()
    r[4] = 1.0
    p = torch.zeros(n, n)
    e = torch.zeros(n, n)
    base = torch.zeros(4)
    d = 1 - c.dt / c.tau_trace
    for t in range(c.trials):
        hit = torch.rand(c.steps - 2, n, generator=gen) < c.kick_probability
        size = 2 * torch.rand(c.steps - 2, n, generator=gen) - 1
        quiet = t >= c.trials - c.quiet_trials
        ans = TASKS[task][2 * s1[t] + s2[t]]
        goal = torch.tensor([1.0 - ans, float(ans)]).clamp(0.1, 0.9)
        total, loss, signal = torch.zeros(2), 0.0, torch.zeros(2)
        for k in range(c.steps):
            prev = r.clone()
            x = x + c.dt / c.tau * (-x + (w + alpha * p) @ r)
            kick = torch.zeros(n) if (k < 2 or quiet) else c.kick_size * hit[k - 2] * size[k - 2]
            x = x + kick
            e = d * (e + torch.outer(kick, prev))
            r = torch.tanh(x)
            r[-2:] = torch.sigmoid(x[-2:])
            if k < c.stim_steps:
                half = c.stim_steps // 2
                v = 0.0 if (half - 2 <= k < half or k >= c.stim_steps - 2) else 3.0 * (2 * (s1[t] if k < half else s2[t]) - 1)
                r[0], r[1] = v, -v
            else:
                r[0] = r[1] = 0.0
            r[4] = 1.0
            if c.response_start <= k < c.response_start + c.response_steps:
                total += r[-2:]
                loss += float(((r[-2:] - goal) ** 2).sum()) / c.response_steps
            else:
                r[-2:] = 0.0
            if k == c.reward_start:
                kind = 2 * s1[t] + s2[t]
                if t >= c.plastic_from:
                    b = base[kind]
                    p = p - (c.eta * e * b * (loss - b)).clamp(-c.max_change, c.max_change)
                base[kind] = c.baseline_momentum * base[kind] + (1 - c.baseline_momentum) * loss
                signal = torch.nn.functional.one_hot(total.argmax(), 2).float()
            if c.reward_start <= k < c.reward_start + c.reward_steps:
                r[2] = r[3] = max(3.0 * loss, 0.0)
                r[5:7] = 3.0 * signal
            else:
                r[2] = r[3] = 0.0
                r[5:7] = 0.0
    return p


def test_the_plastic_weights_after_a_lifetime_equal_the_hand_written_updates():
    c = PlasticRNNConfig(units=12, trials=3, scored_trials=1, plastic_from=1, quiet_trials=0, eta=3.0, max_change=0.05)
    w, a = initial_parameters(c, torch.Generator().manual_seed(3))
    w = w + 0.3 * torch.randn(12, 12, generator=torch.Generator().manual_seed(4))
    s1, s2 = [1, 1, 1], [0, 0, 0]  # one trial type: the baseline is non-zero from the second trial
    stim = torch.tensor([[s1, s2]]).transpose(1, 2)
    got = lifetime(w[None], a[None], task_index(["and"]), stim, 7, c).plastic[0]
    want = _naive_lifetime(w, a, s1, s2, "and", c, 7)
    assert want.abs().max() > 1e-3  # the update happened
    assert torch.allclose(got, want, atol=1e-5)


# --- evolution strategies ----------------------------------------------------------------------

def test_es_gradient_is_unbiased_on_a_quadratic():
    gen = torch.Generator().manual_seed(0)
    dim, sigma = 6, 0.1
    m = torch.randn(dim, dim, generator=gen)
    a, b, theta = m @ m.T / dim + torch.eye(dim), torch.randn(dim, generator=gen), torch.randn(dim, generator=gen)
    true = a @ theta + b
    estimates = []
    for seed in range(300):
        noise = antithetic_noise((dim,), 100, torch.Generator().manual_seed(seed))
        pts = theta + sigma * noise
        losses = 0.5 * ((pts @ a) * pts).sum(1) + pts @ b
        estimates.append(es_gradient(losses, noise, sigma))
    mean = torch.stack(estimates).mean(0)
    assert (mean - true).norm() < 0.05 * true.norm()
    assert (estimates[0] - true).norm() > (mean - true).norm()  # averaging is what made it close


def test_antithetic_noise_comes_in_opposite_pairs_and_pairs_share_tasks():
    noise = antithetic_noise((3, 4), 10, torch.Generator().manual_seed(0))
    assert torch.equal(noise[5:], -noise[:5]) and noise[:5].abs().sum() > 0
    tasks = sample_tasks(5, TRAINING_TASKS, torch.Generator().manual_seed(0))
    assert tasks[:5] == tasks[5:]


def test_evaluate_is_pure_and_chunks_give_the_same_result():
    w, a = initial_parameters(TINY, torch.Generator().manual_seed(0))
    ws = w + 0.1 * torch.randn(4, 12, 12, generator=torch.Generator().manual_seed(1))
    aa = a.expand(4, -1, -1)
    tasks, seeds = ["and", "or", "and", "or"], [1, 2, 1, 2]
    whole = evaluate(ws, aa, tasks, seeds, 5, TINY)
    halves = [evaluate(ws[i:i + 2], aa[i:i + 2], tasks[i:i + 2], seeds[i:i + 2], 5, TINY) for i in (0, 2)]
    assert torch.allclose(whole["loss"], torch.cat([h["loss"] for h in halves]), atol=1e-6)
    again = evaluate(ws, aa, tasks, seeds, 5, TINY)
    assert set(whole) == {"loss", "success", "early_success"} and whole["early_success"].le(1).all()
    assert torch.equal(whole["loss"], again["loss"])


def test_evolution_is_deterministic_and_the_control_keeps_alpha_zero():
    es = ESConfig(population=4, generations=2, test_every=1, test_lifetimes=2, seed=3)
    one, two = evolve(es, TINY), evolve(es, TINY)
    assert torch.equal(one.weights, two.weights) and torch.equal(one.alphas, two.alphas) and one.tests == two.tests
    w0, _ = initial_parameters(TINY, torch.Generator().manual_seed(3))
    assert not torch.equal(one.weights, w0)  # it moved
    other = evolve(ESConfig(population=4, generations=2, test_every=0, seed=4), TINY)
    assert not torch.equal(one.weights, other.weights)
    control = evolve(es, PlasticRNNConfig(**{**TINY.to_dict(), "plastic": False}))
    assert control.alphas.abs().sum() == 0 and len(control.loss) == len(one.loss) == 2


def test_the_authors_lr_cut_divides_adams_rate_from_its_generation_on():
    base = {"population": 4, "generations": 2, "test_every": 0, "seed": 6}
    cut_at_0 = evolve(ESConfig(**base, lr_cut_generation=0, lr_cut_factor=4.0), TINY)
    quarter = evolve(ESConfig(**{**base, "lr": 0.01 / 4}), TINY)
    assert torch.equal(cut_at_0.weights, quarter.weights) and torch.equal(cut_at_0.alphas, quarter.alphas)
    never = evolve(ESConfig(**base), TINY)
    after_the_end = evolve(ESConfig(**base, lr_cut_generation=2), TINY)
    assert torch.equal(never.weights, after_the_end.weights) and ESConfig().lr_cut_generation is None
    cut_at_1 = evolve(ESConfig(**base, lr_cut_generation=1), TINY)
    assert cut_at_1.loss[0] == never.loss[0] and not torch.equal(cut_at_1.weights, never.weights)
    one_step = evolve(ESConfig(**{**base, "generations": 1}), TINY)  # the parameters the cut generation starts from
    w0, _ = initial_parameters(TINY, torch.Generator().manual_seed(6))
    assert cut_at_1.loss[1] == never.loss[1]  # the cut acts on the step, not on the evaluation
    step_cut, step_never = (cut_at_1.weights - one_step.weights).abs(), (never.weights - one_step.weights).abs()
    assert float(step_cut.sum()) < 0.5 * float(step_never.sum()) and not torch.equal(one_step.weights, w0)


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"population": 1}, "population must be an even number of at least 2"),
    ({"population": 5}, "population must be an even number"),
    ({"sigma": 0.0}, "sigma must be positive"),
    ({"sigma": -0.1}, "sigma must be positive"),
    ({"train_tasks": ("and", "xor")}, "unknown task 'xor'"),
    ({"test_task": "dmx"}, "unknown task 'dmx'"),
    ({"train_tasks": ()}, "train_tasks is empty"),
    ({"lr_cut_generation": -1}, "lr_cut_generation must be at least 0"),
    ({"lr_cut_factor": 0.5}, "lr_cut_factor must be at least 1"),
    ({"lr_cut_factor": float("inf")}, "lr_cut_factor must be a finite number"),
])
def test_bad_settings_are_refused_in_one_sentence(kwargs, words):
    with pytest.raises(BeyondBPError) as info:
        ESConfig(**{"population": 4, **kwargs})
    message = str(info.value)
    assert words in message and message.endswith(".") and message.count(". ") == 0 and "\n" not in message


def test_bad_gradient_inputs_are_refused():
    with pytest.raises(ConfigError, match="sigma must be positive"):
        es_gradient(torch.ones(4), torch.ones(4, 2), 0.0)
    with pytest.raises(ConfigError, match="population must be at least 2"):
        es_gradient(torch.ones(1), torch.ones(1, 2), 0.1)
    with pytest.raises(ConfigError, match="units must be at least 12"):
        PlasticRNNConfig(units=4)


# --- spread over the study executors --------------------------------------------------------

def _same_evolution(a, b) -> None:
    assert torch.equal(a.weights, b.weights) and torch.equal(a.alphas, b.alphas)
    assert (a.loss, a.success, a.tests, a.final_test, a.final_early) == (b.loss, b.success, b.tests, b.final_test, b.final_early)


def test_one_or_two_local_workers_give_the_same_evolution_bit_for_bit():
    es = ESConfig(population=6, generations=2, test_every=1, test_lifetimes=2, seed=5)
    alone = evolve(es, TINY)
    spread = evolve(es, TINY, workers=2)  # the study's local executor: 3 + 3 members per generation
    _same_evolution(alone, spread)
    assert spread.cpu_seconds > 0


def test_the_study_pool_maps_any_picklable_function_in_order():
    from beyondbp.study.executors import worker_pool

    with worker_pool("local", 2, preload=["beyondbp.study.executors"]) as pool:
        assert pool.map(pow, [2, 3, 4], [3, 2, 1]) == [8, 9, 4]
        with pytest.raises(ZeroDivisionError):
            pool.map(divmod, [1, 1], [1, 0])
        assert pool.map(abs, [-1]) == [1]  # still usable after a failed call


@pytest.mark.parametrize("executor, workers, words", [
    ("dask", 1, "unknown executor 'dask'"),
    ("local", 0, "it must be a whole number of at least 1"),
    ("local", 10 ** 6, "the CPU cores this process may use"),
])
def test_bad_pools_are_refused_in_one_sentence(executor, workers, words):
    es = ESConfig(population=4, generations=1, test_every=0)
    with pytest.raises(ConfigError, match=words):
        evolve(es, TINY, workers=workers, executor=executor)


@pytest.mark.slow  # starting Ray: 13-45 s on the shared 2-core machine, the evolution itself < 1 s
def test_the_ray_executor_gives_the_same_evolution():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'beyondbp[ray]')")
    es = ESConfig(population=4, generations=1, test_every=0, test_lifetimes=1, seed=2)
    try:
        _same_evolution(evolve(es, TINY), evolve(es, TINY, executor="ray", workers=2))
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_the_ray_executor_without_ray_is_refused_in_one_sentence(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"^the ray executor needs Ray, which is not installed; install beyondbp\[ray\]"):
        evolve(ESConfig(population=4, generations=1, test_every=0), TINY, executor="ray")
