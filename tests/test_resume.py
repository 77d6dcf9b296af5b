"""Resuming a killed run: the state written every ``checkpoint_every`` steps brings a run back
to exactly where it was, so it ends bit-identical to a run that was never stopped (weights,
optimizer state, history, final metrics); timings are excluded. Also: the state belongs to one
run id, is deleted when the run ends, and survives a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from beyondbp import checkpoint
from beyondbp.cli import main
from beyondbp.errors import ConfigError
from beyondbp.reporting.runs import read_json
from beyondbp.training import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]

#: 96 samples in batches of 16: 6 steps per epoch, 4 epochs = 24 steps. A state every 5 steps and
#: a kill at step 13 leave the state of step 10, in the middle of the second epoch.
EVERY, KILL_AT = 5, 13


class Killed(Exception):
    """What the progress callback raises to stop a run in its tracks (as a kill would)."""


def killer(step: int):
    def progress(event, info):
        if event == "step" and info["step"] == step:
            raise Killed(step)

    return progress


def tiny(rule: str, tmp_path: Path, **changes) -> RunConfig:
    values = dict(
        rule=rule, model="mlp", model_options={"widths": [16, 8]}, data="digits", n_train=96, n_test=50,
        epochs=4, batch_size=16, lr=3e-3, lr_schedule="cosine", checkpoint=str(tmp_path / "final.pt"),
    )
    values.update(changes)
    return RunConfig(**values)


def strip_times(history):
    return [{k: v for k, v in h.items() if k != "elapsed"} for h in history]


def same(a, b) -> bool:
    """Exact equality of nested dicts / lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def final_state(path: Path) -> dict:
    payload = checkpoint.read(path)
    return {k: payload[k] for k in ("model", "rule_state", "optimizer")}


def assert_identical(first, first_state, second, second_state):
    assert strip_times(first.history) == strip_times(second.history)
    assert first.final == second.final
    assert (first.steps, first.epochs, first.status) == (second.steps, second.epochs, second.status)
    assert first.flops_per_step == second.flops_per_step and first.eval_flops == second.eval_flops
    assert first.sparsity == second.sparsity
    assert same(first_state["model"], second_state["model"])
    assert same(first_state["rule_state"], second_state["rule_state"])
    assert same(first_state["optimizer"], second_state["optimizer"])


def uninterrupted(config: RunConfig, tmp_path: Path, digits):
    result = run(config.replace(checkpoint=str(tmp_path / "plain.pt")), dataset=digits)
    return result, final_state(tmp_path / "plain.pt")


CASES = {
    "backprop": dict(model_options={"widths": [16, 8], "dropout": 0.2}),  # dropout: the global RNG matters
    "fa": dict(model_options={"widths": [16, 8], "dropout": 0.2}),
    "dfa": {},
    "brsf": dict(optimizer="sgd", lr=0.05),  # redraws its feedback from its own generators every step
    "pfa": {},
    "softhebb": dict(model_options={"widths": [16]}, rule_options={"hebbian_epochs": 2}),  # phase switch after the kill
    "il": dict(rule_options={"iterations": 3}),
    "fa+set": dict(sparsity="set", epsilon=2.0, zeta=0.3),  # masks rewired at every epoch end, before and after the kill
}


@pytest.fixture(scope="module")
def small_digits(digits):
    return digits.subset(96, 50)


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_run_resumes_bit_identically(case, tmp_path, small_digits):
    rule = case.split("+")[0]
    config = tiny(rule, tmp_path, **CASES[case])
    plain, plain_state = uninterrupted(config, tmp_path, small_digits)

    state = tmp_path / "run.state"
    config = config.replace(state=str(state), checkpoint_every=EVERY)
    with pytest.raises(Killed):
        run(config, killer(KILL_AT), dataset=small_digits)
    assert state.is_file() and not (tmp_path / "final.pt").exists()
    resumed = run(config, dataset=small_digits)

    assert resumed.resumed_from_step == (KILL_AT // EVERY) * EVERY == 10
    assert plain.resumed_from_step is None and resumed.run_id == plain.run_id
    assert_identical(plain, plain_state, resumed, final_state(tmp_path / "final.pt"))
    assert not state.exists()  # a finished run leaves no state behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nor temporaries
    if case == "fa+set":
        assert plain.sparsity["rewirings"] == 3


def test_a_run_killed_twice_resumes_twice(tmp_path, small_digits):
    config = tiny("backprop", tmp_path, state=str(tmp_path / "s"), checkpoint_every=4)
    plain, plain_state = uninterrupted(config.replace(state=None, checkpoint_every=None), tmp_path, small_digits)
    with pytest.raises(Killed):
        run(config, killer(7), dataset=small_digits)
    with pytest.raises(Killed):
        run(config, killer(19), dataset=small_digits)  # resumed at 4, killed again at 19
    events = []
    resumed = run(config, lambda e, info: events.append((e, info)), dataset=small_digits)
    assert resumed.resumed_from_step == 16
    assert events[0][0] == "start" and events[0][1]["resumed_from_step"] == 16
    assert [info["step"] for e, info in events if e == "step"] == list(range(17, 25))
    assert_identical(plain, plain_state, resumed, final_state(tmp_path / "final.pt"))


def test_a_language_model_run_resumes_bit_identically(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    config = RunConfig(
        rule="dfa", model="gpt", model_options=dict(n_layer=1, n_head=2, d_model=16), data="shakespeare-char",
        data_dir=str(text), steps=20, context=16, batch_size=8, lr=1e-2, eval_windows=20,
        checkpoint=str(tmp_path / "final.pt"),
    )
    plain, plain_state = uninterrupted(config, tmp_path, None)
    config = config.replace(state=str(tmp_path / "lm.state"), checkpoint_every=3)
    with pytest.raises(Killed):
        run(config, killer(11))  # evaluations at steps 2, 4, ..., 20: the state of step 9 is between two
    resumed = run(config)
    assert resumed.resumed_from_step == 9 and resumed.tokens == plain.tokens
    assert_identical(plain, plain_state, resumed, final_state(tmp_path / "final.pt"))
    assert resumed.final["val_loss"] == plain.final["val_loss"]


SIGKILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from beyondbp import data
from beyondbp.training import RunConfig, run
config = RunConfig.from_dict(__import__("json").loads(sys.argv[1]))
run(config, lambda e, info: time.sleep(0.05) if e == "step" else None, dataset=data.load("digits").subset(96, 50))
"""


def test_a_sigkilled_run_resumes_bit_identically(tmp_path, small_digits):
    config = tiny("dfa", tmp_path, epochs=8)  # 48 steps, 50 ms each in the child
    plain, plain_state = uninterrupted(config, tmp_path, small_digits)
    state = tmp_path / "run.state"
    config = config.replace(state=str(state), checkpoint_every=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", SIGKILL_SCRIPT, json.dumps(config.model_dump())], env=env)
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert child.poll() is None, "the child run ended before writing its state"
            assert time.monotonic() < deadline, "no state file after two minutes"
            time.sleep(0.02)
        time.sleep(0.2)  # a few more steps (and perhaps a write in progress) before the kill
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert state.is_file()
    resumed = run(config, dataset=small_digits)
    assert resumed.resumed_from_step is not None and 0 < resumed.resumed_from_step < 48
    assert_identical(plain, plain_state, resumed, final_state(tmp_path / "final.pt"))
    assert not state.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the killed write's temporary is gone


def test_a_state_of_another_run_is_refused_with_both_ids(tmp_path, small_digits):
    state = tmp_path / "s"
    first = tiny("fa", tmp_path, state=str(state), checkpoint_every=2)
    with pytest.raises(Killed):
        run(first, killer(3), dataset=small_digits)
    other = first.replace(lr=1e-2)
    with pytest.raises(ConfigError) as info:
        run(other, dataset=small_digits)
    message = str(info.value)
    assert first.run_id in message and other.run_id in message and "\n" not in message
    assert state.is_file()  # left as it was
    # an execution setting does not make it another run
    assert run(first.replace(threads=2, eval_batch_size=7), dataset=small_digits).resumed_from_step == 2


def test_damaged_or_foreign_state_files_are_refused(tmp_path, small_digits):
    state = tmp_path / "s"
    config = tiny("backprop", tmp_path, state=str(state), checkpoint_every=2)
    state.write_bytes(b"PK\x03\x04 a zip archive cut short")
    with pytest.raises(ConfigError, match="damaged"):
        run(config, dataset=small_digits)
    state.write_bytes(b"not a state")  # not "damaged ...; delete it": it may be the user's own file
    with pytest.raises(ConfigError, match="is not a run state but a text file; give the run a state file of its own"):
        run(config, dataset=small_digits)
    torch.save({"weights": 1}, state)
    with pytest.raises(ConfigError, match="not a beyondbp run state"):
        run(config, dataset=small_digits)


def test_checkpoint_every_needs_a_state_path():
    with pytest.raises(ConfigError) as info:
        RunConfig(model="mlp", data="digits", checkpoint_every=10)
    assert "needs state" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        RunConfig(model="mlp", data="digits", state="s", checkpoint_every=0)


def test_a_diverged_run_deletes_its_state(tmp_path, small_digits):
    state = tmp_path / "s"
    result = run(tiny("backprop", tmp_path, optimizer="sgd", lr=1000.0, lr_schedule="none", state=str(state),
                      checkpoint_every=2), dataset=small_digits)
    assert result.status == "diverged" and result.steps == 6 and not state.exists()  # states were written at 2 and 4


def test_a_state_given_without_an_interval_resumes_but_writes_nothing(tmp_path, small_digits):
    state = tmp_path / "s"
    config = tiny("backprop", tmp_path, state=str(state))
    assert run(config, dataset=small_digits).resumed_from_step is None and not state.exists()


def test_cli_train_resumes_from_its_state(capsys, tmp_path, small_digits):
    state, out = tmp_path / "run.state", tmp_path / "out"
    args = ["train", "--rule", "fa", "--model", "mlp", "--data", "digits", "--n-train", "96", "--n-test", "50",
            "--epochs", "4", "--batch-size", "16", "--model-opt", "widths=[16,8]", "--seed", "3",
            "--state", state, "--checkpoint-every", "5"]
    config = RunConfig(rule="fa", model="mlp", model_options={"widths": [16, 8]}, data="digits", n_train=96,
                       n_test=50, epochs=4, batch_size=16, seed=3, state=str(state), checkpoint_every=5)
    with pytest.raises(Killed):
        run(config, killer(KILL_AT), dataset=small_digits)  # the same run, killed at step 13
    plain = run(config.replace(state=None, checkpoint_every=None), dataset=small_digits)
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in [*args, "--out", out]])
    stdout, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "resumed from step 10" in stdout
    result = read_json(out / "results.json")[0]
    assert result["resumed_from_step"] == 10 and result["run_id"] == config.run_id
    assert result["final"]["test_accuracy"] == plain.final["test_accuracy"]
    assert result["final"]["test_loss"] == plain.final["test_loss"]
    assert not state.exists()
    with pytest.raises(SystemExit) as info:  # an interval without a state file: one line, status 2
        main([str(a) for a in args[:-4] + ["--checkpoint-every", "5"]])
    _, err = capsys.readouterr()
    assert info.value.code == 2 and "needs state" in err and len(err.strip().splitlines()) == 1
