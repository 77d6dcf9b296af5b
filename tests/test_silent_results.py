"""Issue 21, "Silent wrong results": what used to give a wrong answer without a word.

* ``train --rule fa --init-from kp.pt`` loaded KP's learned feedback as FA's fixed one: a
  checkpoint that another rule trained now gives its weights only, and says so.
* A checkpoint holding NaN or infinity is refused in one sentence (exit 2) by every command
  that loads one (``train --init-from``, ``sample``, ``adapt``, ``analyze``), through
  ``checkpoint.read``.
* ``continual`` whose training diverges exits 3, as ``train`` does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import beyondbp as bbp
from beyondbp import adapt, checkpoint
from beyondbp import continual as C
from beyondbp.cli import EXIT_DIVERGED, main
from beyondbp.errors import CheckpointError

RunConfig, run = bbp.RunConfig, bbp.run  # the top-level entry points (stable across the package layout)

torch.set_num_threads(1)

TINY = ["--model", "mlp", "--data", "digits", "--n-train", "256", "--n-test", "64", "--epochs", "1",
        "--model-opt", "widths=[16,16]"]
BASE = dict(model="mlp", data="digits", n_train=256, n_test=64, batch_size=64, model_options={"widths": [16, 16]})


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def poisoned(src: Path, dst: Path, value: float = math.nan, where: str = "model") -> Path:
    """A copy of checkpoint ``src`` with one entry of its first floating-point tensor in
    ``where`` set to ``value``."""
    payload = torch.load(src, map_location="cpu", weights_only=True)
    tensors = payload[where]
    key = next(k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = value
    torch.save(payload, dst)
    return dst


def feedback(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in checkpoint.read(path)["model"].items() if "bbp_" in k}


# -- train --init-from a checkpoint of another rule --------------------------------------------------
def test_init_from_another_rules_checkpoint_loads_its_weights_only_and_says_so(capsys, tmp_path):
    kp = tmp_path / "kp.pt"
    run(RunConfig(rule="kp", **BASE, epochs=2, lr=1e-2, checkpoint=str(kp)))
    fresh_fa = tmp_path / "fa0.pt"
    run(RunConfig(rule="fa", **BASE, steps=1, lr=1e-12, checkpoint=str(fresh_fa)))
    kp_feedback, fa_feedback = feedback(kp), feedback(fresh_fa)
    assert kp_feedback.keys() == fa_feedback.keys() and kp_feedback  # same keys, same shapes: it used to load
    assert not any(torch.equal(kp_feedback[k], fa_feedback[k]) for k in kp_feedback)  # KP's feedback learned

    out, fa = tmp_path / "o", tmp_path / "fa.pt"
    code, stdout, err = cli(capsys, "train", *TINY, "--rule", "fa", "--init-from", kp, "--lr", "1e-12",
                            "--checkpoint", fa, "--out", out)
    assert code == 0, err
    assert "weights only" in stdout and "'kp'" in stdout and "'fa'" in stdout
    record = json.loads((out / "results.json").read_text())["runs"][0]["init_from"]
    assert record["loaded"] == "weights only" and record["checkpoint_rule"] == "kp"
    assert record["rule_state"].startswith("not loaded") and record["optimizer_state"].startswith("not loaded")
    saved = checkpoint.read(fa)["model"]
    for key, value in feedback(fa).items():  # FA's own fixed feedback, not KP's learned one
        assert torch.equal(value, fa_feedback[key]), key
    for key, value in checkpoint.read(kp)["model"].items():
        if "bbp_" not in key:  # KP's weights (lr 1e-12: four steps leave them as loaded)
            assert torch.allclose(saved[key], value, atol=1e-9), key


def test_init_from_a_backprop_checkpoint_starts_a_feedback_rule_from_its_weights(tmp_path):
    """Backprop's checkpoint has no feedback tensors: fine-tuning it with FA used to be refused
    ("no entry for model key 'net.0.bbp_feedback'")."""
    bp = tmp_path / "bp.pt"
    run(RunConfig(rule="backprop", **BASE, epochs=1, checkpoint=str(bp)))
    result = run(RunConfig(rule="fa", **BASE, epochs=1, init_from=str(bp)))
    assert result.init_from["loaded"] == "weights only" and result.init_from["checkpoint_rule"] == "backprop"
    same = run(RunConfig(rule="backprop", **BASE, epochs=1, init_from=str(bp)))
    assert same.init_from["loaded"] == "weights and rule state" and same.init_from["optimizer_state"] == "loaded"


# -- non-finite checkpoints are refused everywhere ---------------------------------------------------
def test_checkpoint_read_refuses_nan_or_inf_in_weights_rule_state_or_optimizer(tmp_path):
    good = tmp_path / "good.pt"
    run(RunConfig(rule="dfa", **BASE, epochs=1, checkpoint=str(good)))
    checkpoint.read(good)  # finite: read
    cases = [("model", math.nan, "model tensor"), ("model", math.inf, "model tensor"),
             ("rule_state", math.nan, "rule state entry")]
    for where, value, says in cases:
        bad = poisoned(good, tmp_path / f"bad-{where}-{value}.pt", value, where)
        with pytest.raises(CheckpointError, match=f"NaN or infinite values in {says}"):
            checkpoint.read(bad)
    payload = torch.load(good, weights_only=True)
    payload["optimizer"]["state"][0]["exp_avg"].view(-1)[0] = math.nan
    torch.save(payload, tmp_path / "bad-opt.pt")
    with pytest.raises(CheckpointError, match="optimizer state of parameter 0"):
        checkpoint.read(tmp_path / "bad-opt.pt")


def test_train_init_from_a_nan_checkpoint_is_refused_with_nothing_written(capsys, tmp_path):
    good = tmp_path / "good.pt"
    run(RunConfig(rule="fa", **BASE, epochs=1, checkpoint=str(good)))
    bad = poisoned(good, tmp_path / "nan.pt")
    out = tmp_path / "o"
    for rule in ("fa", "backprop"):  # same rule, and another rule (weights only): both refused
        code, _, err = cli(capsys, "train", *TINY, "--rule", rule, "--init-from", bad, "--out", out)
        assert "NaN or infinite values" in one_line_error(code, err) and "nan.pt" in err
        assert not out.exists()


def test_sample_from_a_nan_checkpoint_is_refused(capsys, tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    good = tmp_path / "g.pt"
    code, _, err = cli(capsys, "train", "--model", "gpt", "--data", "shakespeare-char", "--data-dir", corpus,
                       "--tokens", "512", "--n-layer", "1", "--n-head", "2", "--d-model", "16", "--context", "16",
                       "--batch-size", "8", "--eval-windows", "4", "--rule", "backprop", "--checkpoint", good)
    assert code == 0, err
    code, _, err = cli(capsys, "sample", "--checkpoint", good, "--tokens", "5")
    assert code == 0, err
    bad = poisoned(good, tmp_path / "nan.pt")
    code, out, err = cli(capsys, "sample", "--checkpoint", bad, "--tokens", "5")
    assert "NaN or infinite values" in one_line_error(code, err) and out == ""  # used to end with exit 1


def test_adapt_from_a_nan_source_checkpoint_is_refused_with_nothing_written(capsys, tmp_path):
    torch.manual_seed(0)
    good = tmp_path / "source.pt"
    adapt.save_source(good, adapt.BNCNN((4, 6, 5)))
    bad = poisoned(good, tmp_path / "nan.pt")
    out = tmp_path / "tta"
    code, _, err = cli(capsys, "adapt", "run", "--checkpoint", bad, "--methods", "source,norm", "--corruptions",
                       "contrast", "--severity", "5", "--n-test", "64", "--out", out, "--quiet")
    assert "NaN or infinite values" in one_line_error(code, err)  # used to adapt and write results
    assert not out.exists()


def test_analyze_refuses_a_nan_checkpoint(capsys, tmp_path):
    paths = []
    for seed in (0, 1):
        for rule in ("backprop", "fa"):
            path = tmp_path / f"{rule}-{seed}.pt"
            run(RunConfig(rule=rule, **BASE, epochs=1, seed=seed, checkpoint=str(path)))
            paths.append(path)
    paths[-1] = poisoned(paths[-1], tmp_path / "fa-1-nan.pt")
    out = tmp_path / "reps"
    code, _, err = cli(capsys, "analyze", *paths, "--out", out, "--stimuli", "32", "--quiet")
    assert "NaN or infinite values" in one_line_error(code, err) and "fa-1-nan.pt" in err
    assert not out.exists()


# -- continual: divergence is exit 3 -----------------------------------------------------------------
@pytest.fixture(scope="module")
def seq():
    return C.build_sequence("permuted-mnist1d:2", train_size=200, test_size=100, seed=0)


def test_a_diverging_continual_run_is_marked_and_stops(seq):
    res = C.run_method(seq, "finetune", model_options={"widths": [32]}, lr=1e6)
    assert res["diverged"] is True and res["diverged_at_task"] == 0 and res["diverged_at_step"] == 4
    assert all(math.isnan(v) for row in res["matrix"] for v in row)  # nothing measured after it
    joint = C.run_method(seq, "multitask", model_options={"widths": [32]}, lr=1e6)
    assert joint["diverged"] is True and joint["diverged_at_task"] is None
    ok = C.run_method(seq, "finetune", model_options={"widths": [32]}, lr=0.05)
    assert ok["diverged"] is False and "diverged_at_step" not in ok and ok["acc"] > 10


def test_continual_cli_exits_3_when_a_method_diverges(capsys, tmp_path):
    out = tmp_path / "cl"
    code, stdout, err = cli(capsys, "continual", "--tasks", "permuted-mnist1d:2", "--methods", "finetune,multitask",
                            "--train-size", "200", "--test-size", "100", "--lr", "1e6", "--model-opt", "widths=[32]",
                            "--out", out, "--quiet")
    assert code == EXIT_DIVERGED, err  # used to exit 0 with chance-level accuracies
    assert "diverged at task 0" in stdout and "diverged: finetune/backprop, multitask/backprop" in err
    data = json.loads((out / "results.json").read_text())
    assert [r["diverged"] for r in data] == [True, True]
    assert "diverged at task 0" in (out / "table.md").read_text() and (out / "matrix.png").exists()
