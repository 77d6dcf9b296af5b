"""The ``beyondbp`` command line: happy paths on tiny budgets, and one-line errors with status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beyondbp import checkpoint, models, rules
from beyondbp.cli import main, rules_markdown
from beyondbp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--model", "mlp", "--data", "mnist1d", "--n-train", "500", "--n-test", "200", "--epochs", "1",
        "--model-opt", "widths=[32,32]"]


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_rules_lists_every_registered_rule(capsys):
    code, out, err = cli(capsys, "rules")
    assert code == 0 and err == ""
    for row in rules.describe():
        assert re.search(rf"│ {re.escape(row['name'])}\s+│ {re.escape(row['family'])}\s+│", out), row["name"]


def test_readme_rules_table_is_generated_from_the_registry():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- rules-table:start -->", "<!-- rules-table:end -->"
    assert start in text and end in text
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == rules_markdown(), (
        "README.md's rules table is out of date: paste the output of `beyondbp rules --markdown` "
        "between the rules-table markers"
    )


def test_rules_markdown_command_prints_the_table(capsys):
    code, out, _ = cli(capsys, "rules", "--markdown")
    assert code == 0 and out.strip() == rules_markdown()
    assert len(out.strip().splitlines()) == len(rules.names()) + 2


def test_train_happy_path_writes_outputs_and_checkpoint(capsys, tmp_path):
    out_dir, ckpt = tmp_path / "out", tmp_path / "dfa.pt"
    code, out, err = cli(capsys, "train", "--rule", "dfa", *TINY, "--diagnostics", "--rule-opt", "scale=2",
                         "--out", out_dir, "--checkpoint", ckpt)
    assert code == 0, err
    assert "dfa · mlp · mnist1d" in out and "FLOPs/step" in out and "cos/all" in out
    payload = json.loads((out_dir / "results.json").read_text())
    run = payload["runs"][0]
    assert run["rule"] == "dfa" and run["rule_options"]["scale"] == 2 and run["data"]["n_train"] == 500
    assert run["config"]["model_options"] == {"widths": [32, 32]} and len(run["history"]) == 1
    assert "cos/all" in run["final"]["diagnostics"]
    assert (out_dir / "curves.png").read_bytes()[:8] == PNG
    assert "| dfa |" in (out_dir / "table.md").read_text()
    model = models.build("mlp", (40,), 10, widths=[32, 32])
    meta = checkpoint.load(ckpt, model, rules.get("dfa", scale=2).attach(model))
    assert meta["rule"] == "dfa" and meta["rule_options"]["scale"] == 2


def test_compare_happy_path(capsys, tmp_path):
    out_dir = tmp_path / "cmp"
    code, out, err = cli(capsys, "compare", "--rules", "backprop,fa,dfa", *TINY, "--diagnostics",
                         "--rule-opt", "dfa:scale=0.5", "--rule-opt", "seed=3", "--rule-opt", "fa:init=xavier_normal",
                         "--out", out_dir)
    assert code == 0, err
    payload = json.loads((out_dir / "results.json").read_text())
    runs = {r["rule"]: r for r in payload["runs"]}
    assert list(runs) == ["backprop", "fa", "dfa"]
    assert runs["dfa"]["rule_options"] == {"scale": 0.5, "seed": 3}
    assert runs["fa"]["rule_options"] == {"init": "xavier_normal", "seed": 3}
    assert runs["backprop"]["rule_options"] == {}  # seed=3 goes only to the rules that take a seed
    # identical setup except the rule
    for r in runs.values():
        c = r["config"]
        assert (c["seed"], c["epochs"], c["n_train"], c["model_options"]) == (0, 1, 500, {"widths": [32, 32]})
    table = {row["rule"]: row for row in payload["table"]}
    assert table["dfa"]["flops_ratio"] < 1.0 and table["fa"]["flops_ratio"] == 1.0
    assert sorted(p.name for p in out_dir.iterdir()) == ["curves.png", "results.json", "table.md"]
    assert (out_dir / "curves.png").read_bytes()[:8] == PNG
    for rule in ("backprop", "fa", "dfa"):
        assert re.search(rf"│ {rule}\s+│", out)
    assert "divided by backprop's" in out and "cos/all" in out


def test_compare_backprop_alone_writes_to_the_default_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "compare", "--rules", "backprop", *TINY, "--steps", "5", "--epochs", "1")
    assert code == 2 and "not both" in err  # a budget is epochs or steps
    idx = TINY.index("--epochs")
    args = TINY[:idx] + TINY[idx + 2:]
    code, out, err = cli(capsys, "compare", "--rules", "backprop", *args, "--steps", "5")
    assert code == 0, err
    payload = json.loads((tmp_path / "results" / "compare-mnist1d-mlp" / "results.json").read_text())
    assert [r["rule"] for r in payload["runs"]] == ["backprop"] and payload["runs"][0]["steps"] == 5
    # a second compare into the same directory is refused, and replaces it with --overwrite
    code, _, err = cli(capsys, "compare", "--rules", "backprop", *args, "--steps", "6")
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert json.loads((tmp_path / "results" / "compare-mnist1d-mlp" / "results.json").read_text())["runs"][0]["steps"] == 5
    code, _, err = cli(capsys, "compare", "--rules", "backprop", *args, "--steps", "6", "--overwrite")
    assert code == 0, err
    payload = json.loads((tmp_path / "results" / "compare-mnist1d-mlp" / "results.json").read_text())
    assert payload["runs"][0]["steps"] == 6
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["compare-mnist1d-mlp"]


BAD = {
    "unknown rule": ["train", "--rule", "nope", *TINY],
    "unknown model": ["train", "--model", "resnet", "--data", "mnist1d"],
    "unknown data": ["train", "--model", "mlp", "--data", "cifar"],
    "zero epochs": ["train", *TINY, "--epochs", "0"],
    "lr not a number": ["train", *TINY, "--lr", "abc"],
    "negative lr": ["train", *TINY, "--lr", "-1"],
    "zero batch": ["train", *TINY, "--batch-size", "0"],
    "bad optimizer": ["train", *TINY, "--optimizer", "rmsprop"],
    "malformed rule-opt": ["train", "--rule", "dfa", *TINY, "--rule-opt", "seed"],
    "unknown rule option": ["train", "--rule", "dfa", *TINY, "--rule-opt", "bogus=1"],
    "bad rule option value": ["train", "--rule", "dfa", *TINY, "--rule-opt", "init=cauchy"],
    "bad model option": ["train", *TINY, "--model-opt", "widths=abc"],
    "unknown data option": ["train", *TINY, "--data-opt", "colour=1"],
    "too many samples": ["train", "--model", "mlp", "--data", "mnist1d", "--n-train", "999999"],
    "unknown flag": ["train", *TINY, "--bogus"],
    "missing model": ["train", "--data", "mnist1d"],
    "unknown command": ["fly"],
    "missing data files": ["train", "--model", "mlp", "--data", "mnist", "--data-dir", "{tmp}/nowhere"],
    "missing init checkpoint": ["train", *TINY, "--init-from", "{tmp}/missing.pt"],
    "compare unknown rule": ["compare", "--rules", "backprop,nope", *TINY],
    "compare empty rule name": ["compare", "--rules", "backprop,,fa", *TINY],
    "compare duplicate rule": ["compare", "--rules", "fa,fa", *TINY],
    "compare option no rule has": ["compare", "--rules", "backprop,fa", *TINY, "--rule-opt", "bogus=1"],
    "compare option for unlisted rule": ["compare", "--rules", "backprop", *TINY, "--rule-opt", "dfa:seed=1"],
    "compare zero epochs": ["compare", "--rules", "backprop,dfa", *TINY, "--epochs", "0"],
    "compare bad later rule option": ["compare", "--rules", "backprop,fa", *TINY, "--rule-opt", "fa:init=cauchy"],
    "compare bad model option": [
        "compare", "--rules", "backprop,fa", "--model", "mlp", "--data", "mnist1d", "--n-train", "500",
        "--epochs", "1", "--model-opt", "bias=maybe",
    ],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_status_2_with_nothing_written(capsys, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in BAD[case]]
    if args[0] in ("train", "compare"):
        args += ["--out", str(tmp_path / "out")]
    code, out, err = cli(capsys, *args)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # no output directory, no results/ folder, no checkpoint


def test_out_that_is_a_file_is_refused_before_training(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    code, out, err = cli(capsys, "compare", "--rules", "backprop", *TINY, "--out", target)
    assert code == 2 and "not a directory" in err and len(err.splitlines()) == 1
    assert target.read_text() == "x"


def test_debug_shows_the_exception_instead(capsys):
    with pytest.raises(ConfigError):
        main(["train", *TINY, "--epochs", "0", "--debug"])


def test_module_entry_point_exit_status_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "beyondbp", "train", "--model", "mlp", "--data", "mnist1d", "--epochs", "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: invalid epochs 0: it must be a whole number of at least 1"]
    assert proc.stdout == ""
