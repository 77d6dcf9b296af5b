"""The plastic recurrent network of Miconi's "Learning to acquire novel cognitive tasks with
evolution, plasticity and meta-meta-learning" (ICML 2023), batched over a population.

A continuous-time rate network of ``N`` units (default 70) with potentials ``x`` and rates
``r``. Every time step of ``dt`` (20 ms) the potentials relax with time constant ``τ`` (100 ms)
towards the input through the innate weights ``W`` plus the plastic weights ``P`` gated by the
evolved plasticity coefficients ``α``:

    x ← x + (dt/τ) · (−x + (W + α ⊙ P) r)
    x ← x + p          p: a random kick, each unit with probability 0.1, uniform in ±0.5
    r = tanh(x)        (the two response units: sigmoid(x))

Some units are clamped instead: the two stimulus units (the trial's stimuli, ±3, during the
first 20 steps), two reward units (3 × the trial's squared error during the 10 feedback steps),
a bias unit (1), and two response-signal units (3 × the one-hot response given, during the
feedback steps). The last four units are outputs: two neuromodulatory units (incoming weights
zeroed at birth; under the external node-perturbation modulation used here they drive nothing)
and two response units.

A trial is 50 steps: stimuli during steps 0–19, the response period 25–34 (the answer is the
response unit with the larger summed rate; the squared error ``L`` to the targets 0.1/0.9 is
averaged over these steps), feedback from step 36 for 10 steps. Activity and ``P`` carry over
from trial to trial; a lifetime is many trials of one task, ``P = 0`` at birth.

Plasticity is node perturbation (:mod:`beyondbp.plasticity.node_perturbation`): each step the
eligibility ``E`` of synapse ``j → i`` accumulates ``p_i r_j`` and decays with ``τ_E`` (1000 ms);
once per trial, at the start of feedback (from trial 31 on), ``P`` changes by
``−clip(η E b (L − b), ±0.01)`` with ``η = 0.03`` and ``b`` the running mean (momentum 0.9) of the
losses of previous trials with the same stimulus pair. The kicks are switched off during the
last 19 trials of a lifetime. The kicks are shared by the whole population (as in the
authors' code); stimuli are drawn per member from its own seed.

The scores of a lifetime are measured over its last ``scored_trials`` (100): the mean squared
error (what evolution minimises) and the success rate (fraction of correct answers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from ..plasticity.node_perturbation import decayed_traces, plastic_update, update_baseline
from .tasks import stimulus_inputs, targets

__all__ = ["Lifetime", "PlasticRNNConfig", "initial_parameters", "lifetime", "trial_stimuli"]

STIM, REWARD, BIAS, SIGNAL = slice(0, 2), slice(2, 4), 4, slice(5, 7)
INPUT_UNITS = 5  # stimulus, reward and bias units: their incoming weights are kept at zero


@dataclass(frozen=True)
class PlasticRNNConfig:
    """The network's and a lifetime's constants; the defaults are the paper's."""

    units: int = 70
    tau: float = 100.0              # ms
    dt: float = 20.0                # ms
    steps: int = 50                 # per trial
    stim_steps: int = 20
    response_start: int = 25
    response_steps: int = 10
    reward_start: int = 36
    reward_steps: int = 10
    trials: int = 400               # per lifetime
    scored_trials: int = 100        # the last ones, scored
    plastic_from: int = 31          # first trial whose feedback changes P
    quiet_trials: int = 19          # last trials without kicks
    tau_trace: float = 1000.0       # ms
    kick_probability: float = 0.1
    kick_size: float = 0.5
    eta: float = 0.03
    max_change: float = 1e-2
    baseline_momentum: float = 0.9
    init_scale: float = 1.5         # W ~ N(0, init_scale² / N)
    init_alpha: float = 0.5         # the paper's, for lifetimes of 400 trials (bench: larger in shorter ones)
    stim_size: float = 3.0
    reward_size: float = 3.0
    signal_size: float = 3.0
    plastic: bool = True            # False: P stays 0 (the non-plastic control)

    def __post_init__(self) -> None:
        if self.units < 12:
            raise ConfigError(f"units must be at least 12 (7 clamped input units and 4 outputs), not {self.units}.")
        if not 0 < self.scored_trials <= self.trials:
            raise ConfigError(f"scored_trials must be between 1 and trials ({self.trials}), not {self.scored_trials}.")
        if self.reward_start + self.reward_steps >= self.steps or self.response_start + self.response_steps > self.reward_start:
            raise ConfigError("a trial's periods must come in order: stimuli, response, feedback, all within its steps.")
        if self.init_alpha < 0:
            raise ConfigError(f"init_alpha must be at least 0 (the plasticity coefficients are clipped at 0), not {self.init_alpha}.")
        if self.tau <= 0 or self.dt <= 0 or self.tau_trace <= 0:
            raise ConfigError("tau, dt and tau_trace must be positive.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Lifetime:
    """What one lifetime of each member gave: ``loss`` and ``success`` over the scored trials
    ``(B,)``, ``correct`` per trial ``(B, trials)`` (bool) and the final plastic weights."""

    loss: Tensor
    success: Tensor
    correct: Tensor
    plastic: Tensor | None


def initial_parameters(config: PlasticRNNConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Innate weights ``W ~ N(0, init_scale²/N)`` (rows of the input and neuromodulatory units
    zeroed; a row holds a unit's incoming weights) and coefficients ``α = init_alpha``."""
    n = config.units
    w = torch.randn(n, n, generator=generator) * config.init_scale / n ** 0.5
    w[:INPUT_UNITS] = 0.0
    w[n - 4: n - 2] = 0.0
    return w, torch.full((n, n), config.init_alpha)


def trial_stimuli(seeds: list[int], trials: int) -> Tensor:
    """Each member's stimuli for its lifetime, ``(B, trials, 2)`` 0/1 long, from its own seed
    (members with the same seed see the same stimuli)."""
    out = torch.empty(len(seeds), trials, 2, dtype=torch.long)
    for i, seed in enumerate(seeds):
        out[i] = torch.randint(0, 2, (trials, 2), generator=torch.Generator().manual_seed(int(seed)))
    return out


def _kicks(config: PlasticRNNConfig, generator: torch.Generator, quiet: bool) -> Tensor:
    """The shared kicks of one trial, ``(steps, N)``; none in the first two steps."""
    n, steps = config.units, config.steps
    hit = torch.rand(steps - 2, n, generator=generator) < config.kick_probability
    size = 2.0 * torch.rand(steps - 2, n, generator=generator) - 1.0
    kicks = torch.zeros(steps, n)
    if not quiet:
        kicks[2:] = config.kick_size * hit * size
    return kicks


def _clamp_plan(config: PlasticRNNConfig, members: int) -> tuple[Tensor, Tensor, Tensor]:
    """How a step's rates are read off its potentials, ``r = tanh(scale · x) · mul[t] + add[t]``:
    ``scale`` ``(N,)`` (½ for the response units: σ(x) = ½ + ½ tanh(x/2)), ``mul`` ``(steps, N)``
    (0 for a clamped unit) and the template of ``add`` ``(steps, B, N)`` (bias 1, the sigmoid's ½
    in the response period; the stimuli, the reward and the response signal are written in
    per trial)."""
    c, n = config, config.units
    resp = slice(n - 2, n)
    period = slice(c.response_start, c.response_start + c.response_steps)
    scale = torch.ones(n)
    scale[resp] = 0.5
    mul = torch.ones(c.steps, n)
    mul[:, :INPUT_UNITS + 2] = 0.0  # stimulus, reward, bias and response-signal units
    mul[:, resp] = 0.0
    mul[period, resp] = 0.5
    add = torch.zeros(c.steps, members, n)
    add[:, :, BIAS] = 1.0
    add[period, :, resp] = 0.5
    return scale, mul, add


@torch.no_grad()
def lifetime(weights: Tensor, alphas: Tensor, task_rows: Tensor, stimuli: Tensor, noise_seed: int,
             config: PlasticRNNConfig) -> Lifetime:
    """Live one lifetime per member: ``weights`` and ``alphas`` ``(B, N, N)``, ``task_rows`` ``(B,)``
    (rows of :data:`beyondbp.evolution.tasks.TASKS`), ``stimuli`` ``(B, trials, 2)``.

    A pure function of its arguments: the kicks come from ``noise_seed``.
    """
    c = config
    b, n = weights.shape[0], c.units
    w = weights.clone()
    w[:, :INPUT_UNITS] = 0.0
    plastic = c.plastic
    gen = torch.Generator().manual_seed(int(noise_seed))
    decay, leak = 1.0 - c.dt / c.tau_trace, c.dt / c.tau
    scale, mul, template = _clamp_plan(c, b)
    x = torch.full((b, n), 0.1)
    x[:, :INPUT_UNITS] = 0.0
    r = x.clone()
    r[:, BIAS] = 1.0
    p_w = torch.zeros_like(w) if plastic else None
    traces = torch.zeros_like(w) if plastic else None
    baselines = torch.zeros(b, 4)
    correct = torch.zeros(b, c.trials, dtype=torch.bool)
    losses = torch.zeros(b, c.trials)
    resp = slice(n - 2, n)
    rows = torch.arange(b)
    feedback = slice(c.reward_start, c.reward_start + c.reward_steps)
    for trial in range(c.trials):
        s1, s2 = stimuli[:, trial, 0], stimuli[:, trial, 1]
        answer = targets(task_rows, s1, s2)
        goal = torch.stack([1 - answer, answer], 1).float().clamp(0.1, 0.9)
        kicks = _kicks(c, gen, quiet=trial >= c.trials - c.quiet_trials)
        add = template.clone()
        add[: c.stim_steps, :, STIM] = stimulus_inputs(s1, s2, c.stim_steps, c.stim_size).permute(2, 0, 1)
        # transposed and contiguous: a row vector times a matrix is ~8x faster than bmm(W, r) on CPU
        effective = (w + alphas * p_w if plastic else w).transpose(1, 2).contiguous()
        pres = torch.empty(b, c.steps, n) if plastic else None
        answers = torch.empty(b, c.response_steps, 2)
        for step in range(c.steps):
            if plastic:
                pres[:, step] = r
            x = torch.lerp(x, torch.bmm(r[:, None, :], effective)[:, 0], leak)
            if step > 1:
                x += kicks[step]
            if step == c.reward_start:  # the answer, its error and the feedback to show from now on
                given = answers.sum(1).argmax(1)
                loss = ((answers - goal[:, None]) ** 2).sum((1, 2)) / c.response_steps
                correct[:, trial] = given == answer
                losses[:, trial] = loss
                add[feedback, :, REWARD] = (c.reward_size * loss[:, None]).clamp(min=0.0)
                add[feedback, :, SIGNAL] = torch.nn.functional.one_hot(given, 2).float() * c.signal_size
            r = torch.addcmul(add[step], torch.tanh(x * scale), mul[step])
            if c.response_start <= step < c.response_start + c.response_steps:
                answers[:, step - c.response_start] = r[:, resp]
            if step == c.reward_start:
                kinds = 2 * s1 + s2
                if plastic:
                    traces = decayed_traces(traces, kicks[: step + 1], pres[:, : step + 1], decay)
                    if trial >= c.plastic_from:
                        p_w = p_w + plastic_update(traces, loss, baselines[rows, kinds], c.eta, c.max_change)
                        effective = (w + alphas * p_w).transpose(1, 2).contiguous()
                baselines = update_baseline(baselines, kinds, loss, c.baseline_momentum)
        if plastic:
            traces = decayed_traces(traces, kicks[c.reward_start + 1:], pres[:, c.reward_start + 1:], decay)
    scored = slice(c.trials - c.scored_trials, c.trials)
    return Lifetime(loss=losses[:, scored].mean(1), success=correct[:, scored].float().mean(1), correct=correct, plastic=p_w)
