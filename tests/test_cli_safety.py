"""What the command line does with a user's files and with runs that go wrong (issue 9, part 3).

* ``--init-from`` never replaces the optimizer settings the user asked for, and records what
  it loaded; a checkpoint from another optimizer is loaded without its optimizer state.
* a diverged run exits 3, writes no checkpoint over a good one and is marked, with its step, in
  every output; ``compare`` finishes the other rules first.
* unwritable ``--out`` / ``--checkpoint`` are refused before the first step (exit 2, one line).
* an existing non-empty ``--out`` (also compare's default) or an existing ``--checkpoint`` is
  refused without ``--overwrite``; outputs appear all at once; temporaries of a killed writer
  are removed by the next write.
* outputs get the permissions of the user's umask.
* SET flags without ``--sparsity``, impossible model sizes, a non-path ``cache_dir`` and a
  non-finite ``--temperature`` are one-line errors with status 2.
* the language-model loop does not leak torch's lr_scheduler warning.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from beyondbp import checkpoint, files
from beyondbp.cli import EXIT_DIVERGED, main, write_outputs
from beyondbp.errors import ConfigError
from beyondbp.training import RunConfig, run

TINY = ["--model", "mlp", "--data", "mnist1d", "--n-train", "300", "--n-test", "100", "--epochs", "1",
        "--model-opt", "widths=[16,16]"]
#: plain SGD at learning rate 50 blows this MLP up within its first epoch
BLOW_UP = ["--optimizer", "sgd", "--lr", "50"]


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


def results_of(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["runs"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- 1. --init-from ---------------------------------------------------------------------------------
def test_init_from_keeps_the_users_optimizer_settings_and_records_what_it_loaded(capsys, tmp_path):
    ckpt = tmp_path / "adam.pt"
    code, _, err = cli(capsys, "train", *TINY, "--optimizer", "adam", "--lr", "0.01", "--weight-decay", "0.001",
                       "--checkpoint", ckpt)
    assert code == 0, err
    # sgd over an Adam checkpoint: used to crash with KeyError 'momentum'
    out = tmp_path / "sgd"
    code, _, err = cli(capsys, "train", *TINY, "--init-from", ckpt, "--optimizer", "sgd", "--lr", "0.05",
                       "--out", out)
    assert code == 0, err
    run_ = results_of(out)[0]
    assert run_["config"]["optimizer"] == "sgd" and run_["config"]["lr"] == 0.05
    assert run_["history"][0]["lr"] == 0.05  # the rate the optimizer really used
    record = run_["init_from"]
    assert record["path"] == str(ckpt)
    assert record["optimizer_state"].startswith("not loaded") and "different optimizer" in record["optimizer_state"]
    assert record["checkpoint_optimizer"] == {"optimizer": "adam", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.001}


def test_init_from_same_optimizer_loads_its_state_but_uses_the_new_hyperparameters(tmp_path):
    ckpt = str(tmp_path / "adam.pt")
    base = dict(rule="fa", model="mlp", data="digits", n_train=256, n_test=64, batch_size=64,
                model_options={"widths": [16]}, optimizer="adam")
    run(RunConfig(**base, epochs=1, lr=0.01, weight_decay=1e-3, checkpoint=ckpt))
    saved_steps = checkpoint.read(ckpt)["optimizer"]["state"][0]["step"]
    result = run(RunConfig(**base, steps=1, lr=0.002, weight_decay=0.0, init_from=ckpt, checkpoint=str(tmp_path / "b.pt")))
    assert result.init_from["optimizer_state"] == "loaded"
    assert result.history[0]["lr"] == 0.002 and result.config["weight_decay"] == 0.0
    groups = checkpoint.read(str(tmp_path / "b.pt"))["optimizer"]
    assert groups["param_groups"][0]["lr"] == 0.002 and groups["param_groups"][0]["weight_decay"] == 0.0
    assert groups["state"][0]["step"] == saved_steps + 1  # Adam's moments and step count carried on


# -- 2. divergence ----------------------------------------------------------------------------------
def test_a_diverged_run_exits_3_keeps_the_good_checkpoint_and_is_marked_everywhere(capsys, tmp_path):
    ckpt = tmp_path / "good.pt"
    code, _, err = cli(capsys, "train", *TINY, "--checkpoint", ckpt)
    assert code == 0, err
    good = ckpt.read_bytes()
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "train", *TINY, *BLOW_UP, "--checkpoint", ckpt, "--overwrite", "--out", out)
    assert code == EXIT_DIVERGED == 3
    assert ckpt.read_bytes() == good
    run_ = results_of(out)[0]
    assert run_["diverged"] is True and run_["status"] == "diverged" and run_["checkpoint"] is None
    step = run_["diverged_at_step"]
    assert isinstance(step, int) and step >= 1
    assert f"diverged at step {step}" in stdout and "no checkpoint was written" in stdout
    assert f"(diverged at step {step})" in (out / "table.md").read_text()
    assert "diverged" in err.strip().splitlines()[-1]


def test_compare_marks_the_diverged_rule_runs_the_rest_and_exits_3(capsys, tmp_path):
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", "--rules", "fa,backprop", *TINY, *BLOW_UP, "--out", out)
    assert code == 3, err
    runs = results_of(out)
    assert [r["rule"] for r in runs] == ["fa", "backprop"]  # the rule after the diverged one still ran
    assert runs[0]["diverged"] and runs[0]["steps"] >= 1
    table = json.loads((out / "results.json").read_text())["table"]
    assert table[0]["diverged"] is True and table[0]["diverged_at_step"] == runs[0]["diverged_at_step"]
    assert f"fa (diverged at step {runs[0]['diverged_at_step']})" in stdout  # not eaten as rich markup


def test_a_healthy_run_has_diverged_false():
    result = run(RunConfig(model="mlp", data="digits", n_train=128, n_test=64, epochs=1, model_options={"widths": [8]}))
    assert result.diverged is False and result.diverged_at_step is None and result.to_dict()["diverged"] is False


# -- 3. writability before the first step -----------------------------------------------------------
@pytest.mark.parametrize("flag", ["--out", "--checkpoint"])
def test_unwritable_outputs_are_refused_before_training(capsys, tmp_path, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for target in (blocker / "sub" / "x.pt", Path("/proc/beyondbp-cannot-write/x.pt")):
        code, stdout, err = cli(capsys, "train", *TINY, flag, target)
        line = one_line_error(code, err)
        assert "cannot be written" in line and stdout == ""  # nothing trained



@pytest.mark.parametrize("args", [["train", *TINY, "--checkpoint"], ["train", *TINY, "--checkpoint-every", "1", "--state"],
                                  ["adapt", "source", "--checkpoint"]])
def test_output_files_in_a_missing_folder_are_refused_alike(capsys, tmp_path, args):
    """--checkpoint, --state (and a study's --store) are written into existing folders only: a
    mistyped folder is refused with one sentence, nothing trained, no folder created."""
    code, stdout, err = cli(capsys, *args, tmp_path / "nodir" / "x.pt")
    line = one_line_error(code, err)
    assert "does not exist" in line and "create the folder first" in line and stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["train", *TINY, "--checkpoint"], ["train", *TINY, "--checkpoint-every", "1", "--state"],
                                  ["train", *TINY, "--init-from"], ["adapt", "source", "--checkpoint"],
                                  ["study", "run", "SPEC", "--store"], ["study", "status", "SPEC", "--store"]])
@pytest.mark.parametrize("existing", [False, True])
def test_a_file_flag_ending_with_a_separator_names_a_folder_and_is_refused(capsys, tmp_path, args, existing):
    """``--checkpoint /tmp/nope/`` used to write a file ``/tmp/nope`` (``Path`` drops the
    separator): a path ending with a separator names a folder and is refused, nothing written."""
    spec = tmp_path / "spec" / "s.toml"
    spec.parent.mkdir()
    spec.write_text('[study]\nname = "s"\n[base]\nmodel = "mlp"\ndata = "mnist1d"\nsteps = 1\n[axes]\nseed = [0]\n')
    work = tmp_path / "work"
    work.mkdir()
    if existing:
        (work / "nope").mkdir()
    args = [str(spec) if a == "SPEC" else a for a in args]
    code, stdout, err = cli(capsys, *args, str(work / "nope") + os.sep)
    line = one_line_error(code, err)
    assert f"'{work / 'nope'}{os.sep}' ends with a path separator, so it names a folder" in line, line
    assert stdout == "" and sorted(p.name for p in work.iterdir()) == (["nope"] if existing else [])
    assert sorted(p.name for p in spec.parent.iterdir()) == ["s.toml"]
    if existing:
        assert list((work / "nope").iterdir()) == []


@pytest.mark.parametrize("setting", ["checkpoint", "state"])
def test_run_config_refuses_a_file_setting_ending_with_a_separator(tmp_path, setting):
    with pytest.raises(ConfigError, match=f"invalid {setting} .* names a folder"):
        RunConfig(model="mlp", data="digits", epochs=1, **{setting: str(tmp_path) + "/"})
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_checkpoint_in_a_missing_folder_before_training(tmp_path):
    config = RunConfig(model="mlp", data="digits", n_train=64, n_test=32, epochs=1, model_options={"widths": [8]},
                       checkpoint=str(tmp_path / "nodir" / "x.pt"))
    with pytest.raises(ConfigError, match="does not exist"):
        run(config)
    assert list(tmp_path.iterdir()) == []

# -- 4. existing outputs, all-or-nothing writes, stale temporaries --------------------------------
def test_existing_outputs_are_refused_without_overwrite(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "train", *TINY, "--out", out)
    assert "--overwrite" in one_line_error(code, err)
    assert (out / "notes.txt").read_text() == "mine"
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"user's file")
    code, _, err = cli(capsys, "train", *TINY, "--checkpoint", ckpt)
    assert "--overwrite" in one_line_error(code, err) and ckpt.read_bytes() == b"user's file"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "train", *TINY, "--out", empty)
    assert code == 0, err
    assert sorted(p.name for p in empty.iterdir()) == ["curves.png", "results.json", "table.md"]
    code, _, err = cli(capsys, "train", *TINY, "--out", out, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "results.json", "table.md"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_outputs_replace_the_directory_all_at_once_and_failures_leave_it_untouched(tmp_path, monkeypatch):
    result = run(RunConfig(model="mlp", data="digits", n_train=128, n_test=64, epochs=1, model_options={"widths": [8]}))
    out = tmp_path / "out"
    write_outputs(out, [result], "first")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("beyondbp.reporting.runs.plot_curves", broken)  # fails after results.json was written
    with pytest.raises(RuntimeError):
        write_outputs(out, [result], "second", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    dead, live = dead_pid(), os.getppid()
    stale_dir = tmp_path / f".out.{dead}.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "results.json").write_text("{")
    stale_file = tmp_path / f".model.pt.{dead}.xyz.tmp"
    stale_file.write_bytes(b"half")
    in_use = tmp_path / f".out.{live}.def456.tmp"
    in_use.mkdir()
    files.atomic_write_bytes(tmp_path / "model.pt", lambda fh: fh.write(b"ok"))
    assert not stale_file.exists() and stale_dir.exists()
    tmp = files.temporary_directory(tmp_path / "out")
    assert not stale_dir.exists() and in_use.exists()  # a live process's temporary is left alone
    files.publish_directory(tmp, tmp_path / "out")
    assert (tmp_path / "out").is_dir() and (tmp_path / "model.pt").read_bytes() == b"ok"


def test_a_sigkilled_write_leaves_no_partial_result_and_the_next_write_cleans_up(tmp_path):
    script = (
        "import os, signal, sys\n"
        "from beyondbp import files\n"
        "def write(fh):\n"
        "    fh.write(b'half')\n"
        "    fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"files.atomic_write_bytes({str(tmp_path / 'model.pt')!r}, write)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model.pt.") and left[0].endswith(".tmp")
    files.atomic_write_bytes(tmp_path / "model.pt", lambda fh: fh.write(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# -- 10. permissions follow the umask -------------------------------------------------------------
@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_and_checkpoints_get_the_umask_permissions(tmp_path, mask, file_mode, dir_mode):
    result = run(RunConfig(model="mlp", data="digits", n_train=128, n_test=64, epochs=1, model_options={"widths": [8]},
                           checkpoint=str(tmp_path / "ck.pt")))
    old = os.umask(mask)
    try:
        write_outputs(tmp_path / "out", [result], "t")
        model = torch.nn.Linear(2, 2)
        checkpoint.save(tmp_path / "m.pt", model)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == dir_mode
    for name in ("results.json", "table.md", "curves.png"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == file_mode


# -- 8. one-line errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["train", *TINY, "--zeta", "0.5"], "--sparsity set"),
    (["train", *TINY, "--epsilon", "5"], "--sparsity set"),
    (["train", *TINY, "--milestones", "0.5"], "--lr-schedule step"),
    (["compare", "--rules", "backprop", *TINY, "--gamma", "0.5", "--lr-schedule", "cosine"], "--lr-schedule step"),
    (["compare", "--rules", "backprop", *TINY, "--zeta", "0.1"], "--sparsity set"),
    (["train", "--model", "mlp", "--data", "digits", "--model-opt", "widths=[100000000000]"], "GiB"),
    (["train", "--model", "mlp", "--data", "mnist1d", "--data-opt", "cache_dir=[1]"], "cache_dir"),
    (["sample", "--checkpoint", "missing.pt", "--temperature", "nan"], "temperature"),
    (["sample", "--checkpoint", "missing.pt", "--temperature", "inf"], "temperature"),
])
def test_bad_settings_are_one_line_errors(capsys, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli(capsys, *args)
    assert words in one_line_error(code, err) and stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_set_settings_without_sparsity_are_refused_by_the_library():
    with pytest.raises(ConfigError, match="sparsity"):
        RunConfig(model="mlp", data="digits", zeta=0.5)
    RunConfig(model="mlp", data="digits", sparsity="set", zeta=0.5)  # fine with SET on
    RunConfig(**RunConfig(model="mlp", data="digits").model_dump())  # a saved config reloads
    with pytest.raises(ConfigError, match="lr_schedule='step'"):
        RunConfig(model="mlp", data="digits", gamma=0.5)
    RunConfig(model="mlp", data="digits", lr_schedule="step", gamma=0.5, milestones=[0.3])


# -- 9. no lr_scheduler warning from the run loops -------------------------------------------------
def test_the_run_loops_step_the_schedule_without_torchs_order_warning():
    """Rules that own their update (SoftHebb's Hebbian phase) skip ``optimizer.step()``; the
    run loop steps the LR schedule through ``_scheduler_step``, which keeps torch's
    "lr_scheduler.step() before optimizer.step()" warning off the user's terminal."""
    import inspect

    from beyondbp.training import loop as train_mod

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_mod._scheduler_step(sched)
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:  # the check above can fail
        warnings.simplefilter("always")
        torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0).step()
    assert [w for w in caught if "lr_scheduler" in str(w.message)]
    for loop in (train_mod._run,):  # the one loop, for classification and language models
        source = inspect.getsource(loop)
        assert "_scheduler_step(scheduler)" in source and "scheduler.step()" not in source


def test_softhebb_refuses_gpt_with_one_line(capsys):
    code, _, err = cli(capsys, "train", "--rule", "softhebb", "--model", "gpt", "--data", "shakespeare-char",
                       "--steps", "2", "--n-layer", "1", "--d-model", "16", "--n-head", "2")
    assert "Embedding" in one_line_error(code, err)


# -- found by a fresh-eyes review -------------------------------------------------------------------
def test_non_regular_checkpoints_symlinked_or_current_outputs_and_empty_paths_are_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.pt").symlink_to(tmp_path / "target.pt")
    (tmp_path / "realdir").mkdir()
    (tmp_path / "linkdir").symlink_to(tmp_path / "realdir")
    (tmp_path / "keep.txt").write_text("mine")
    cases = [
        (["--checkpoint", "fifo", "--overwrite"], "not a regular file"),
        (["--checkpoint", "link.pt", "--overwrite"], "not a regular file"),
        (["--checkpoint", "/dev/null", "--overwrite"], "not a regular file"),
        (["--out", "linkdir", "--overwrite"], "symbolic link"),
        (["--out", "", "--overwrite"], "--out is empty"),
        (["--out", ".", "--overwrite"], "--out is empty"),
        (["--checkpoint", ""], "--checkpoint is empty"),
        (["--init-from", ""], "--init-from is empty"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra, words in cases:
        code, stdout, err = cli(capsys, "train", *TINY, *extra)
        assert words in one_line_error(code, err) and stdout == "", extra
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode) and (tmp_path / "link.pt").is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_counts_and_rule_seeds_have_upper_bounds(capsys):
    code, _, err = cli(capsys, "train", *TINY, "--batch-size", "99999999999999999999")
    assert "at most 2**40" in one_line_error(code, err)
    code, _, err = cli(capsys, "train", *TINY, "--rule", "fa", "--rule-opt", "seed=99999999999999999999999")
    assert "option seed must be an integer >= 0 and < 4294967296" in one_line_error(code, err)


def test_a_corrupt_checkpoint_message_does_not_advise_an_unsafe_load(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"fn": print}, bad)  # a pickled function: weights_only loading refuses it
    code, _, err = cli(capsys, "train", *TINY, "--init-from", bad)
    line = one_line_error(code, err)
    assert "weights_only" not in line and "corrupt or not a torch file" in line
