"""The main job over several seeds: ``compare --seeds``, mean ± sd per rule, the architecture in
the title, and test loss beside training loss in the curves."""

from __future__ import annotations

import json
import math

import pytest

from beyondbp.cli import main
from beyondbp.reporting import runs as report
from beyondbp.study.compare import compare
from beyondbp.training import RunConfig

TINY = dict(model="mlp", data="mnist1d", model_options={"widths": [16]}, data_options={"num_samples": 400},
            steps=6, batch_size=32)


def fake(rule, seed, acc, loss, test_loss, epochs=3):
    return {
        "rule": rule, "status": "ok", "config": {"seed": seed, "model": "mlp"},
        "final": {"test_accuracy": acc, "train_loss": loss, "test_loss": test_loss},
        "flops_per_step": 1000, "time_per_step": 0.01,
        "history": [{"epoch": e, "train_loss": loss * (epochs + 1 - e), "test_loss": test_loss + 0.1 * e,
                     "test_accuracy": acc * e / epochs} for e in range(1, epochs + 1)],
    }


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_rows_over_seeds_are_means_with_sample_sd():
    runs = [fake("backprop", 0, 0.60, 0.40, 1.0), fake("backprop", 1, 0.64, 0.50, 1.2),
            fake("fa", 0, 0.50, 0.80, 1.5), fake("fa", 1, 0.54, 0.60, 1.3)]
    rows = report.comparison_table(runs)
    assert [r["rule"] for r in rows] == ["backprop", "fa"]
    bp, fa = rows
    assert bp["test_accuracy"] == pytest.approx(0.62) and bp["test_accuracy_sd"] == pytest.approx(math.sqrt(0.0008))
    assert fa["test_loss"] == pytest.approx(1.4) and fa["n_runs"] == 2 and fa["seeds"] == [0, 1]
    assert fa["accuracy_ratio"] == pytest.approx(0.52 / 0.62)  # ratios of the means
    assert bp["flops_per_step_sd"] == 0
    titles, cells = report.table_cells(rows)
    assert cells[0][titles.index("test acc")] == "62.0 ± 2.8%"
    assert cells[1][titles.index("test loss")] == "1.4000 ± 0.1414"
    assert cells[0][titles.index("FLOPs/step")] == "1.00 kFLOP"  # no spread shown where there is none
    one = report.comparison_table(runs[:1] + runs[2:3])  # one run per rule: the table as before
    assert "test_accuracy_sd" not in one[0] and report.table_cells(one)[1][0][1] == "60.0%"


def test_curves_show_test_loss_beside_training_loss():
    runs = [fake("backprop", 0, 0.60, 0.40, 1.0), fake("backprop", 1, 0.64, 0.50, 1.2)]
    fig = report.curves_figure(runs, title="t")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert len(fig.axes) == 3 and labels[2].startswith("test loss") and labels[1].startswith("training loss")
    line = fig.axes[2].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([1.2, 1.3, 1.4])  # the mean of the two seeds per epoch
    assert fig.axes[2].collections, "several seeds: a band of ± one standard deviation"


def test_architecture_names_the_layer_widths():
    result = {"config": {"model": "mlp", "model_options": {}}, "n_params": 78090,
              "data": {"input_shape": [40], "num_classes": 10}}
    assert report.architecture(result) == "mlp 40-256-256-10 (78,090 parameters)"
    result["config"]["model_options"] = {"widths": [32], "dropout": 0.1}
    assert report.architecture(result) == "mlp 40-32-10 dropout=0.1 (78,090 parameters)"


def test_compare_over_seeds_runs_every_rule_with_each_seed_as_alone():
    config = RunConfig(**TINY)
    results = compare(config, ["backprop", "dfa"], seeds=[3, 1])
    assert [(r.rule, r.config["seed"]) for r in results] == [("backprop", 3), ("backprop", 1), ("dfa", 3), ("dfa", 1)]
    alone = compare(config.replace(seed=1), ["dfa"])[0]
    assert results[3].final["train_loss"] == alone.final["train_loss"] and results[3].run_id == alone.run_id
    assert results[0].final["train_loss"] != results[1].final["train_loss"]  # the seeds differ


def test_cli_compare_seeds_writes_mean_and_sd_and_the_architecture(tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", "--rules", "backprop,fa", "--model", "mlp", "--data", "mnist1d",
                            "--model-opt", "widths=[16]", "--data-opt", "num_samples=400", "--steps", "6",
                            "--seeds", "0,1", "--out", out)
    assert code == 0, err
    table = (out / "table.md").read_text()
    assert table.startswith("# mlp 40-16-10 (")  # the architecture in the title
    assert "mean ± sd over seeds 0,1" in table.splitlines()[0]
    assert table.count(" ± ") >= 6 and "mlp 40-16-10" in stdout
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


@pytest.mark.parametrize("args, words", [(["--seeds", "0,1", "--seed", "2"], "either --seed or --seeds"),
                                         (["--seeds", "0,x"], "invalid --seeds"),
                                         (["--seeds", "1,1"], "seed 1 is listed more than once")])
def test_cli_compare_bad_seeds_are_one_line_with_status_2(tmp_path, capsys, args, words):
    code, out, err = cli(capsys, "compare", "--rules", "backprop", "--model", "mlp", "--data", "mnist1d", "--steps", "2",
                         "--out", tmp_path / "o", *args)
    assert code == 2 and words in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
