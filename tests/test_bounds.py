"""Unbounded work and memory (issue 21, part 4).

* counts given to ``sample``, ``continual``, ``adapt`` and ``study run`` are bounded as a run's
  counts are (``run.config.check_count``: at most 2**40) and by what the data holds;
  ``--workers`` by the cores;
* memory is counted before it is allocated: tokens to sample, a continual sequence, an adapt
  source checkpoint whose meta record claims huge sizes, a spec grid with a model too big — one
  sentence, exit 2, nothing allocated;
* where stderr is not a terminal, ``train``, ``compare``, ``study run`` and ``continual`` print
  a plain progress line every $BEYONDBP_PROGRESS_INTERVAL seconds;
* ``RunConfig.from_dict`` of a non-mapping and ``checkpoint.save`` to a directory raise
  beyondbp errors.

Work that today's code would do without bound (allocate hundreds of GiB, start a thousand
processes, train 2**40 epochs) is run in a child process with its address space limited to
what it has plus 2 GiB, under a timeout, or with the work itself replaced by a stub that fails
the test: a regression fails the test instead of taking the machine down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beyondbp import adapt, checkpoint, generate
from beyondbp.cli import main
from beyondbp.errors import BeyondBPError, CheckpointError, ConfigError
from beyondbp.study import executors, runner
from beyondbp.study.spec import load_spec
from beyondbp.training import RunConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: Runs ``beyondbp.cli.main(argv)`` (or the code in $BOUNDS_CODE) with the address space limited
#: to what the interpreter holds after importing torch plus 2 GiB.
LIMITED = r"""
import os, resource, sys
import torch
import beyondbp.cli
with open("/proc/self/status") as fh:
    size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), resource.RLIM_INFINITY))
code = os.environ.get("BOUNDS_CODE")
if code:
    exec(code)
else:
    beyondbp.cli.main(sys.argv[1:])
"""


def limited(*args: str, code: str | None = None, timeout: float = 300, cwd: Path | None = None,
            **env: str) -> subprocess.CompletedProcess:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to limit the child's memory")
    environ = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
                   **env)
    if code is not None:
        environ["BOUNDS_CODE"] = code
    return subprocess.run([sys.executable, "-c", LIMITED, *map(str, args)], env=environ, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


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


def machine_gib() -> str:
    from beyondbp.resources import physical_memory, show_bytes

    return show_bytes(physical_memory())


# -- sample -------------------------------------------------------------------------------------
def test_sampling_more_tokens_than_memory_holds_is_refused_before_the_checkpoint_is_read(capsys, tmp_path):
    code, out, err = cli(capsys, "sample", "--checkpoint", tmp_path / "none.pt", "--tokens", 10**12)
    line = one_line_error(code, err)
    assert "1,000,000,000,000 tokens" in line and "memory" in line and machine_gib() in line, line
    code, out, err = cli(capsys, "sample", "--checkpoint", tmp_path / "none.pt", "--tokens", 2**40 + 1)
    assert "at most 2**40" in one_line_error(code, err)
    with pytest.raises(ConfigError, match="memory"):
        generate.check_options(10**12, 1.0, None, 0)


def test_sample_fills_the_same_tokens_and_reports_progress():
    """The sequence is filled in place now; the tokens are those of one ``torch.cat`` per token."""
    from beyondbp import models

    torch.manual_seed(0)
    model = models.build("gpt", (8,), 11, n_layer=1, n_head=2, d_model=16)
    prompt = torch.tensor([1, 2, 3])
    seen = []
    got = generate.sample(model, prompt, 20, seed=3, progress=lambda done, total: seen.append((done, total)))
    # the former algorithm, written out
    seq, gen = prompt[None], torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(20):
            logits = model(seq[:, -8:])[:, -1, :].double()
            seq = torch.cat([seq, torch.multinomial(logits.softmax(dim=-1), 1, generator=gen)], dim=1)
    assert torch.equal(got, seq[0])
    assert seen[0] == (1, 20) and seen[-1] == (20, 20) and len(seen) == 20


# -- continual ----------------------------------------------------------------------------------
CONTINUAL = ["continual", "--model-opt", "widths=[8]", "--quiet"]


def test_a_continual_sequence_that_cannot_fit_in_memory_is_refused(tmp_path):
    proc = limited(*CONTINUAL, "--tasks", "permuted-mnist1d:1000000", "--out", tmp_path / "o")
    line = one_line_error(proc.returncode, proc.stderr)
    assert "1,000,000 tasks" in line and "memory" in line and machine_gib() in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, words", [
    (["--train-size", "1000000000"], "at most 4000"),
    (["--test-size", "1000000000"], "at most 1000"),
    (["--epochs-per-task", str(2**40 + 1)], "--epochs-per-task"),
    (["--batch-size", str(2**40 + 1)], "at most 2**40"),
    (["--tasks", f"permuted-mnist1d:{2**40 + 1}"], "at most 2**40"),
])
def test_continual_counts_are_bounded(tmp_path, args, words):
    proc = limited(*CONTINUAL, "--tasks", "permuted-mnist1d:2", *args, "--out", tmp_path / "o", timeout=240)
    assert words in one_line_error(proc.returncode, proc.stderr)
    assert not (tmp_path / "o").exists()


# -- adapt --------------------------------------------------------------------------------------
def hostile_source(tmp_path: Path) -> Path:
    """A real (tiny) source checkpoint whose meta record claims channels that would need 360 GB."""
    path = tmp_path / "source.pt"
    torch.manual_seed(0)
    adapt.save_source(path, adapt.BNCNN((2, 2, 2)))
    payload = torch.load(path, weights_only=True)
    payload["meta"]["channels"] = [2, 100_000, 100_000]
    torch.save(payload, path)
    return path


def test_an_adapt_source_whose_meta_claims_huge_sizes_is_refused_without_allocating(tmp_path):
    path = hostile_source(tmp_path)
    code = ("from beyondbp import adapt\n"
            "try:\n"
            f"    adapt.load_source({str(path)!r})\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    proc = limited(code=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CheckpointError") and "does not match its own meta record" in proc.stdout, proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--batch-size", str(2**40 + 1)], "at most 2**40"),
    (["--n-test", str(2**40 + 1)], "at most 2**40"),
    (["--n-test", "1000000000"], "at most 10000"),
])
def test_adapt_counts_are_bounded(capsys, tmp_path, args, words):
    path = tmp_path / "source.pt"
    adapt.save_source(path, adapt.BNCNN((2, 2, 2)))
    code, out, err = cli(capsys, "adapt", "run", "--checkpoint", path, "--methods", "source", "--corruptions", "contrast",
                         "--severity", "1", "--out", tmp_path / "o", "--quiet", *args)
    assert words in one_line_error(code, err)
    assert not (tmp_path / "o").exists()


# -- study --------------------------------------------------------------------------------------
def write_spec(path: Path, axes: str) -> Path:
    path.write_text('[study]\nname = "bounds"\n\n[base]\nmodel = "mlp"\ndata = "mnist1d"\nsteps = 2\n'
                    'data_options = {num_samples = 200}\n\n[axes]\n' + axes + "\n")
    return path


def test_a_spec_grid_with_a_model_too_big_for_memory_is_refused_when_checked(capsys, tmp_path):
    spec = write_spec(tmp_path / "big.toml", "model_options = [{widths = [8]}, {widths = [200000, 200000]}]")
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    message = str(info.value)
    assert message.startswith("big.toml: [axes] model_options={'widths': [200000, 200000]}: model 'mlp'"), message
    assert "149.1 GiB" in message and machine_gib() in message
    for command in ("check", "run"):
        code, out, err = cli(capsys, "study", command, spec)
        assert "149.1 GiB" in one_line_error(code, err)
    assert not (tmp_path / "big.db").exists()
    load_spec(write_spec(tmp_path / "fine.toml", "model_options = [{widths = [8]}, {widths = [16]}]"))


def test_workers_are_at_most_the_cores(capsys, tmp_path, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(runner, "_Local", no_pool)
    spec = write_spec(tmp_path / "s.toml", "seed = [0, 1]")
    cores = executors.available_cores()
    code, out, err = cli(capsys, "study", "run", spec, "--workers", cores + 1)
    assert f"at most {cores}, the CPU cores" in one_line_error(code, err)
    with pytest.raises(ConfigError, match="at most"):
        runner.run_study(load_spec(spec), workers=10**6)
    assert not (tmp_path / "s.db").exists()


# -- progress where stderr is not a terminal ------------------------------------------------------
def progress_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("progress [")]


@pytest.mark.parametrize("args, words", [
    (["train", "--model", "mlp", "--data", "digits", "--epochs", "3"], "backprop: step "),
    (["compare", "--model", "mlp", "--data", "digits", "--epochs", "2", "--rules", "backprop,fa"], ": step "),
    (["continual", "--tasks", "permuted-mnist1d:2", "--model-opt", "widths=[8]", "--epochs-per-task", "2",
      "--methods", "finetune"], "finetune/backprop task "),
])
def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, args, words):
    extra = [] if args[0] == "train" else ["--out", str(tmp_path / "o")]
    proc = limited(*args, *extra, cwd=tmp_path, BEYONDBP_PROGRESS_INTERVAL="0.02")
    lines = progress_lines(proc)
    assert lines and all(words in line for line in lines), proc.stderr
    assert " of " in lines[-1] and "%" in lines[-1]
    assert "\x1b" not in proc.stderr  # plain text, no terminal codes


def test_study_run_prints_plain_progress_lines_and_a_bad_interval_is_one_line(capsys, tmp_path, monkeypatch):
    spec = write_spec(tmp_path / "s.toml", "seed = [0, 1]")
    proc = limited("study", "run", spec, cwd=tmp_path, BEYONDBP_PROGRESS_INTERVAL="0.02")
    lines = progress_lines(proc)
    assert lines and all("runs " in line and " of 2 finished" in line for line in lines), proc.stderr
    monkeypatch.setenv("BEYONDBP_PROGRESS_INTERVAL", "soon")
    code, out, err = cli(capsys, "train", "--model", "mlp", "--data", "digits", "--steps", "1")
    assert "BEYONDBP_PROGRESS_INTERVAL 'soon'" in one_line_error(code, err)


# -- API ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[1, 2], None, "model=mlp", {1: "mlp"}])
def test_run_config_from_a_non_mapping_is_a_config_error(values):
    with pytest.raises(ConfigError, match="run"):
        RunConfig.from_dict(values)


def test_checkpoint_save_to_a_directory_is_a_checkpoint_error(tmp_path):
    folder = tmp_path / "here"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.save(folder, torch.nn.Linear(2, 2))
    (tmp_path / "file").write_text("")
    with pytest.raises(BeyondBPError, match="cannot be written"):
        checkpoint.save(tmp_path / "file" / "x.pt", torch.nn.Linear(2, 2))  # its folder is a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "here"] and not any(folder.iterdir())
