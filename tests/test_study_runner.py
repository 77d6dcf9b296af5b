"""Running studies: only unfinished runs, each once; failures and divergence recorded; dead
owners and SIGKILLed drivers recovered; two drivers on one store; the CLI; Ray = local."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beyondbp.cli import main
from beyondbp.errors import ConfigError
from beyondbp.study import executors, inspection, runner
from beyondbp.study.inspection import check_study, study_status
from beyondbp.study.runner import run_study
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Owner, Store

TINY_BASE = """
model = "mlp"
data = "mnist1d"
data_options = {{num_samples = {samples}}}
model_options = {{widths = [{width}]}}
steps = {steps}
"""


def write_spec(path: Path, axes: str, name: str = "tiny", steps: int = 10, samples: int = 400, width: int = 8,
               base: str | None = None, execution: str = "") -> Path:
    base = TINY_BASE.format(samples=samples, width=width, steps=steps) if base is None else base
    path.write_text(f'[study]\nname = "{name}"\n\n[base]\n{base}\n[axes]\n{axes}\n\n[execution]\n{execution}\n')
    return path


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def beyondbp(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "beyondbp", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_runs_each_run_once_then_only_new_ones(tmp_path):
    spec_path = write_spec(tmp_path / "s.toml", 'rule = ["backprop", "dfa"]\nseed = [0, 1]')
    events: list[tuple[str, dict]] = []
    summary = run_study(load_spec(spec_path), workers=2, progress=lambda e, i: events.append((e, i)))
    assert summary["ran"] == 4 and summary["added"] == 4 and summary["counts"]["done"] == 4
    assert summary["store"] == str(tmp_path / "s.db")
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("finished") == 4 and kinds.count("claimed") == 4

    with Store(tmp_path / "s.db") as store:
        records = store.records()
    assert [r["status"] for r in records] == ["done"] * 4 and all(r["attempts"] == 1 for r in records)
    for r in records:
        result = r["result"]
        assert result["status"] == "ok" and result["config"]["seed"] == r["seed"]
        assert r["flops_total"] == result["flops_per_step"] * result["steps"] == r["flops_per_step"] * 10
        assert r["n_params"] == result["n_params"] and r["wall_time"] > 0 and r["host"]
        assert set(r["versions"]) == {"beyondbp", "torch", "python"} and r["config"]["threads"] == 1
    assert [r["axes"] for r in records] == [{"rule": "backprop", "seed": 0}, {"rule": "backprop", "seed": 1},
                                            {"rule": "dfa", "seed": 0}, {"rule": "dfa", "seed": 1}]

    again = run_study(load_spec(spec_path), workers=2)  # idempotent: nothing left to run
    assert again["ran"] == 0 and again["added"] == 0

    write_spec(spec_path, 'rule = ["backprop", "dfa"]\nseed = [0, 1, 2]')  # a new axis value
    more = run_study(load_spec(spec_path), workers=2)
    assert more["added"] == 2 and more["ran"] == 2 and more["counts"]["done"] == 6
    with Store(tmp_path / "s.db") as store:
        after = {r["id"]: r for r in store.records()}
    assert all(after[r["id"]]["finished_at"] == r["finished_at"] for r in records)  # old runs untouched
    assert check_study(load_spec(spec_path)) == []


def test_failed_and_diverged_runs_are_recorded_and_the_study_goes_on(tmp_path, capsys):
    base = """
model = "mlp"
model_options = {widths = [8]}
n_train = 320
n_test = 80
optimizer = "sgd"
steps = 10
"""
    missing = tmp_path / "no-such-dir"
    spec_path = write_spec(tmp_path / "s.toml", 'data = ["mnist1d", "fashion-mnist"]\nlr = [0.01, 1e4]', base=base,
                           execution=f'data_dir = "{missing}"')
    summary = run_study(load_spec(spec_path), workers=1)
    assert summary["ran"] == 4
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 1, "failed": 2, "diverged": 1}
    with Store(tmp_path / "s.db") as store:
        by_axes = {(r["axes"]["data"], r["axes"]["lr"]): r for r in store.records()}
    assert by_axes["mnist1d", 0.01]["status"] == "done"
    diverged = by_axes["mnist1d", 1e4]
    assert diverged["status"] == "diverged" and diverged["diverged_at_step"] == 5
    assert diverged["result"]["status"] == "diverged"
    for lr in (0.01, 1e4):
        failed = by_axes["fashion-mnist", lr]
        assert failed["status"] == "failed" and failed["result"] is None
        assert failed["error"].startswith("DataError: The Fashion-MNIST data directory")

    status = study_status(load_spec(spec_path))
    assert len(status["failed"]) == 2 and status["failed"][0]["error"].startswith("DataError")
    assert run_study(load_spec(spec_path))["ran"] == 0  # failed runs are not retried by default
    code, out, err = cli(capsys, "study", "run", spec_path)
    assert code == 4 and "ran 0 of 4 runs" in out and err.startswith("error: 2 runs failed; see `beyondbp study status")
    retried = run_study(load_spec(spec_path), retry_failed=True)
    assert retried["ran"] == 2 and retried["counts"]["failed"] == 2 and retried["counts"]["diverged"] == 1
    with Store(tmp_path / "s.db") as store:
        attempts = {r["axes"]["data"] + str(r["axes"]["lr"]): r["attempts"] for r in store.records()}
    assert attempts == {"mnist1d0.01": 1, "mnist1d10000.0": 1, "fashion-mnist0.01": 2, "fashion-mnist10000.0": 2}
    assert check_study(load_spec(spec_path)) == []


def test_runs_of_a_dead_owner_are_run_again(tmp_path):
    spec_path = write_spec(tmp_path / "s.toml", "seed = [0, 1]")
    spec = load_spec(spec_path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with Store(tmp_path / "s.db", create=True, study="tiny") as store:
        store.add_runs(spec.runs())
        store.claim(Owner(Owner.new().host, proc.pid, "gone"), 3600)  # its process is gone
    problems = check_study(spec)
    assert len(problems) == 1 and "is marked running but its owner, process" in problems[0]
    assert study_status(spec)["stale"] == 1
    summary = run_study(spec)
    assert summary["reclaimed"] == 1 and summary["ran"] == 2
    with Store(tmp_path / "s.db") as store:
        outcomes = [(a["run_id"], a["outcome"]) for a in store.attempts()]
        records = store.records()
    first = spec.runs()[0].id
    assert sorted(o for r, o in outcomes if r == first) == ["done", "lost"]
    assert [r["attempts"] for r in records] == [2, 1] and check_study(spec) == []


def test_two_drivers_on_one_store_never_run_a_run_twice(tmp_path):
    # one thread per run: two drivers share the cores
    # (runs of ~0.3 s: long enough that both drivers, started together, take some)
    spec_path = write_spec(tmp_path / "s.toml", "seed = [0, 1, 2, 3, 4, 5, 6, 7]", steps=300, samples=2000, width=32,
                           execution="threads = 1")
    procs = [beyondbp("study", "run", str(spec_path), "--quiet") for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    spec = load_spec(spec_path)
    with Store(tmp_path / "s.db") as store:
        records = store.records()
        attempts = store.attempts()
    assert len(records) == 8 and all(r["status"] == "done" and r["attempts"] == 1 for r in records)
    assert sorted(a["run_id"] for a in attempts) == sorted(r.id for r in spec.runs())
    assert all(a["outcome"] == "done" for a in attempts)
    assert check_study(spec) == []


def test_sigkill_midway_then_run_again_finishes_every_run_exactly_once(tmp_path, capsys):
    spec_path = write_spec(tmp_path / "s.toml", "seed = [0, 1, 2, 3, 4, 5, 6, 7]", steps=400, samples=2000, width=64)
    store_path = tmp_path / "s.db"
    proc = beyondbp("study", "run", str(spec_path), "--workers", "2", "--quiet", start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the study never had a run done and one running"
            if store_path.exists():
                try:
                    with Store(store_path) as store:
                        statuses = list(store.statuses().values())
                except Exception:  # the store is being created
                    statuses = []
                if statuses.count("done") >= 1 and statuses.count("running") >= 1:
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, the forkserver and the workers
        proc.communicate()
    spec = load_spec(spec_path)
    with Store(store_path) as store:
        before = {r["id"]: r for r in store.records()}
    killed = [i for i, r in before.items() if r["status"] == "running"]
    finished = [i for i, r in before.items() if r["status"] == "done"]
    assert killed and finished

    code, out, _ = cli(capsys, "study", "check", spec_path)  # the stale leases are reported
    assert code == 5 and sum("is marked running but" in line for line in out.splitlines()) == len(killed)

    code, out, err = cli(capsys, "study", "run", spec_path, "--workers", "2")
    assert code == 0, err
    assert f"ran {8 - len(finished)} of 8 runs" in out
    with Store(store_path) as store:
        records = {r["id"]: r for r in store.records()}
        attempts = store.attempts()
    assert sorted(records) == sorted(r.id for r in spec.runs())
    assert all(r["status"] == "done" for r in records.values())
    for run_id, r in records.items():
        mine = [a for a in attempts if a["run_id"] == run_id]
        assert len(mine) == r["attempts"] and [a["outcome"] for a in mine].count("done") == 1
        assert [a["outcome"] for a in mine] == (["lost", "done"] if run_id in killed else ["done"])
        if run_id in finished:  # never re-run
            assert r["finished_at"] == before[run_id]["finished_at"] and r["result"] == before[run_id]["result"]
    code, out, _ = cli(capsys, "study", "check", spec_path)
    assert code == 0 and "is sound" in out


def test_cli_status_check_and_errors(tmp_path, capsys):
    spec_path = write_spec(tmp_path / "s.toml", "seed = [0, 1]")
    code, out, err = cli(capsys, "study", "status", spec_path)  # never run: it answers, and creates nothing
    assert code == 0 and err == "" and "not created yet" in out and "2 runs of the spec not yet in the store" in out
    code, out, _ = cli(capsys, "study", "status", spec_path, "--json")
    status = json.loads(out)
    assert status["store_exists"] is False and status["counts"]["pending"] == 2 and status["missing"] == 2
    assert status["store"] == str(tmp_path / "s.db") and status["time_left"] is None
    assert not (tmp_path / "s.db").exists()
    code, _, err = cli(capsys, "study", "check", spec_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.db").exists()

    code, out, err = cli(capsys, "study", "run", spec_path, "--workers", "2")
    assert code == 0 and "ran 2 of 2 runs (2 added to the store)" in out and err == ""  # not a TTY: no bar
    code, out, _ = cli(capsys, "study", "status", spec_path, "--workers", "2")
    assert code == 0 and "study tiny · 2 runs" in out and "time left 0.0s" in out
    assert any(line.split("│")[1:3] == [" done     ", "    2 "] for line in out.splitlines() if "done" in line)
    code, out, _ = cli(capsys, "study", "status", spec_path, "--json")
    status = json.loads(out)
    assert code == 0 and status["counts"]["done"] == 2 and status["time_spent"] > 0 and status["time_left"] == 0

    write_spec(spec_path, "seed = [0, 1, 2]")
    code, out, _ = cli(capsys, "study", "status", spec_path, "--json")
    status = json.loads(out)
    assert status["missing"] == 1 and status["counts"]["pending"] == 1 and status["time_left"] > 0
    code, out, _ = cli(capsys, "study", "check", spec_path)
    assert code == 5 and len(out.strip().splitlines()) == 1 and "missing from the store" in out

    write_spec(spec_path, "seed = [0, 1]")
    with Store(tmp_path / "s.db", create=True, study="tiny") as store:  # tamper with the store
        store._conn.execute("UPDATE runs SET config = json_set(config, '$.lr', 0.5) WHERE position = 0")
        store._conn.execute("UPDATE runs SET status = 'finished', attempts = 3 WHERE position = 1")
    code, out, _ = cli(capsys, "study", "check", spec_path)
    lines = out.strip().splitlines()
    assert code == 5
    assert any("its stored config hashes to run id" in line for line in lines)
    assert any("has status 'finished', which is not one of" in line for line in lines)
    assert any("counts 3 attempts but 1 are logged" in line for line in lines)

    other = write_spec(tmp_path / "other.toml", "seed = [0]", name="another")
    before = (tmp_path / "s.db").read_bytes()
    code, _, err = cli(capsys, "study", "run", other, "--store", tmp_path / "s.db")
    assert code == 2 and "belongs to study 'tiny', not 'another'" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "s.db").read_bytes() == before


def test_a_bad_spec_or_argument_writes_no_store(tmp_path, capsys):
    bad = write_spec(tmp_path / "bad.toml", "seed = [0]", base='model = "mlp"\ndata = "mnist1d"\nstepz = 3\n')
    code, _, err = cli(capsys, "study", "run", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1
    good = write_spec(tmp_path / "good.toml", "seed = [0]")
    for args, message in (
        (["--executor", "spark"], "unknown executor 'spark'"),
        (["--workers", "0"], "invalid number of workers 0"),
        (["--address", "ray://x:10001"], "an address applies to the ray executor only"),
    ):
        code, _, err = cli(capsys, "study", "run", good, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.db").exists() and not (tmp_path / "good.db").exists()
    (tmp_path / "junk.db").write_bytes(b"not a database at all")
    code, _, err = cli(capsys, "study", "run", good, "--store", tmp_path / "junk.db")
    assert code == 2 and "is not a beyondbp run store" in err


def test_ray_executor_is_refused_in_one_sentence_without_ray(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    spec = load_spec(write_spec(tmp_path / "s.toml", "seed = [0]"))
    with pytest.raises(ConfigError, match=r"install beyondbp\[ray\]"):
        run_study(spec, executor="ray")
    assert not (tmp_path / "s.db").exists()


def test_worker_threads_and_execution_settings(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", "seed = [0]"))
    cores = executors.available_cores()
    # one torch thread per run by default, as `beyondbp train`, whatever the cores and workers
    assert runner.worker_threads(spec, "local", 1) == 1
    assert runner.worker_threads(spec, "local", 2 * cores) == 1
    assert runner.worker_threads(spec, "ray", 4) == 1
    threaded = load_spec(write_spec(tmp_path / "t.toml", "seed = [0]", execution="threads = 2"))
    assert runner.worker_threads(threaded, "local", 1) == 2
    config = spec.runs()[0].config.model_dump()
    values = runner._worker_config(config, "abc", 3, tmp_path / "s.states", 25)
    assert values["threads"] == 3 and values["state"] == str(tmp_path / "s.states" / "abc.pt")
    assert values["checkpoint_every"] == 25
    assert runner._worker_config(config, "abc", 3, None, 25).get("state") is None
    assert runner.state_dir(tmp_path / "x" / "s.db") == tmp_path / "x" / "s.states"


def _comparable(record: dict) -> dict:
    result = record["result"]
    return {
        "final": result["final"],
        "curve": [(h["step"], h["train_loss"], h["test_loss"], h["test_accuracy"]) for h in result["history"]],
        "flops": (record["flops_per_step"], record["flops_total"], record["n_params"]),
    }


def test_ray_and_local_executors_give_identical_results(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'beyondbp[ray]')")
    axes = 'rule = ["backprop", "dfa"]\nseed = [0]'
    local_spec = load_spec(write_spec(tmp_path / "local.toml", axes))
    ray_spec = load_spec(write_spec(tmp_path / "ray.toml", axes))
    run_study(local_spec, workers=2)  # one thread per run, like a Ray task
    try:
        summary = run_study(ray_spec, executor="ray", workers=2)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert summary["ran"] == 2
    with Store(tmp_path / "local.db") as a, Store(tmp_path / "ray.db") as b:
        local, remote = a.records(), b.records()
    assert [r["id"] for r in local] == [r["id"] for r in remote]
    assert all(r["status"] == "done" for r in local + remote)
    assert [_comparable(r) for r in local] == [_comparable(r) for r in remote]  # bit for bit
    assert check_study(ray_spec) == []


def test_a_dead_worker_hands_its_runs_back_and_fails_one_after_max_attempts(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", "seed = [0, 1]"))
    ids = {r.id for r in spec.runs()}

    class Pool:
        restarted = 0

        def lost(self):
            self.restarted += 1

    with Store(tmp_path / "s.db", create=True, study="tiny") as store:
        store.add_runs(spec.runs())
        me = Owner.new()
        first, second = store.claim(me, 60), store.claim(me, 60)
        store._conn.execute("UPDATE runs SET attempts = ? WHERE id = ?", (runner.MAX_ATTEMPTS, second["id"]))
        pool, inflight = Pool(), {"other": second["id"]}
        runner._worker_died(store, me, pool, inflight, first["id"], RuntimeError("A process in the pool died"), None, ids)
        records = {r["id"]: r for r in store.records()}
        attempts = {a["run_id"]: a["outcome"] for a in store.attempts()}
    assert pool.restarted == 1 and inflight == {}
    assert records[first["id"]]["status"] == "pending" and attempts[first["id"]] == "lost"
    assert records[second["id"]]["status"] == "failed"
    assert records[second["id"]]["error"].startswith(f"the worker running it died {runner.MAX_ATTEMPTS} times")


def test_the_driver_renews_its_leases_while_runs_are_in_flight(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", "seed = [0]", steps=800, samples=2000, width=64,
                                execution="threads = 1"))
    seen: list[float] = []

    def progress(event, info):
        if event == "tick":
            with Store(tmp_path / "s.db") as store:  # a reader beside the driver
                seen.extend(r["lease_expires"] for r in store.rows() if r["status"] == "running")

    assert run_study(spec, progress=progress, lease_seconds=0.4)["ran"] == 1
    assert len(set(seen)) >= 2 and seen == sorted(seen)  # renewed, never shortened


def test_progress_bar_shows_counts_and_eta_on_a_terminal_and_nothing_when_quiet():
    import io

    from rich.console import Console

    from beyondbp.cli.study import _StudyBar

    counts = {"pending": 2, "running": 1, "done": 1, "failed": 0, "diverged": 0}
    for quiet in (False, True):
        stream = io.StringIO()
        console = Console(file=stream, force_terminal=True, width=150)
        with _StudyBar(console, workers=2, quiet=quiet) as bar:
            bar("start", {"total": 4, "counts": {**counts, "pending": 4, "done": 0, "running": 0}})
            bar("finished", {"id": "a", "status": "done", "wall_time": 10.0, "error": None, "counts": counts})
            bar("finished", {"id": "b", "status": "failed", "wall_time": 1.0, "error": "DataError: x",
                             "counts": {**counts, "failed": 1, "pending": 1}})
        text = stream.getvalue()
        if quiet:
            assert text == ""
        else:
            assert "done 1 · running 1 · failed 1" in text and "2/4" in text
            assert "ETA 5.5s" in text and "run b failed: DataError: x" in text


def test_an_interrupted_driver_hands_its_runs_back(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", "seed = [0, 1]"))

    def interrupt(event, info):
        if event == "claimed":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(spec, progress=interrupt)
    with Store(tmp_path / "s.db") as store:
        assert set(store.statuses().values()) == {"pending"}
        assert [a["outcome"] for a in store.attempts()] == ["released"]
    assert run_study(spec)["ran"] == 2 and check_study(spec) == []


def _without_timings(result: dict) -> dict:
    """A run's numbers with the wall-clock fields left out (they differ between any two runs)."""
    timing = {"elapsed", "total_time", "train_time", "time_per_step", "time_per_token", "timed_steps",
              "resumed_from_step", "environment", "config", "checkpoint"}
    out = {k: v for k, v in result.items() if k not in timing}
    out["history"] = [{k: v for k, v in h.items() if k not in timing} for h in result["history"]]
    return out


def test_a_killed_study_resumes_its_runs_from_their_state_bit_identically(tmp_path, capsys):
    """With [execution] checkpoint_every, a run killed midway resumes from its last state on the
    next `study run` and ends with the numbers of a study that was never killed."""
    results = {}
    for name in ("killed", "whole"):
        folder = tmp_path / name
        folder.mkdir()
        spec_path = write_spec(folder / "s.toml", "seed = [0, 1]", steps=300, samples=2000, width=64,
                               execution="checkpoint_every = 25")
        if name == "killed":
            states = folder / "s.states"
            proc = beyondbp("study", "run", str(spec_path), "--quiet", start_new_session=True)
            try:
                deadline = time.monotonic() + 240
                while not (states.is_dir() and any(p.suffix == ".pt" for p in states.iterdir())):
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "no run state was ever written"
                    time.sleep(0.05)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        code, _, err = cli(capsys, "study", "run", spec_path)
        assert code == 0, err
        with Store(folder / "s.db") as store:
            results[name] = {r["id"]: r["result"] for r in store.records()}
        assert not any((folder / "s.states").glob("*.pt"))  # states are deleted once runs finish
    assert results["killed"].keys() == results["whole"].keys()
    resumed = [i for i, r in results["killed"].items() if r["resumed_from_step"]]
    assert resumed, "no run resumed from its state"
    for run_id in results["whole"]:
        assert results["whole"][run_id]["resumed_from_step"] is None
        assert _without_timings(results["killed"][run_id]) == _without_timings(results["whole"][run_id])


def test_a_store_in_a_missing_folder_is_refused(tmp_path, capsys):
    spec_path = write_spec(tmp_path / "s.toml", "seed = [0]")
    code, _, err = cli(capsys, "study", "run", spec_path, "--store", tmp_path / "nodir" / "x.db")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nodir").exists()


def test_dry_run_lists_runs_estimates_time_and_creates_nothing(tmp_path, capsys):
    spec_path = write_spec(tmp_path / "s.toml", "seed = [0, 1]\nlr = [1e-3, 3e-3]", steps=40)
    code, out, err = cli(capsys, "study", "run", spec_path, "--dry-run")
    assert code == 0, err
    assert "4 of 4 runs would run (dry run)" in out and "estimated time" in out and "not created yet" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # no store, no states folder
    plan = inspection.dry_run(load_spec(spec_path))
    assert plan["to_run"] == 4 and plan["probes"] == 1  # seeds and rates share one probe
    assert all(r["steps"] == 40 and r["seconds"] > 0 for r in plan["runs"])
    assert plan["estimate"] == pytest.approx(sum(r["seconds"] for r in plan["runs"]) + plan["warmup"])

    code, _, err = cli(capsys, "study", "run", spec_path, "--quiet")  # finished runs are not run again
    assert code == 0, err
    write_spec(spec_path, "seed = [0, 1, 2]\nlr = [1e-3, 3e-3]", steps=40)
    plan = inspection.dry_run(load_spec(spec_path), workers=2)
    assert plan["store_exists"] and plan["to_run"] == 2
    assert [r["status"] for r in plan["runs"] if r["will_run"]] == ["new", "new"]
    assert plan["estimate"] == pytest.approx(sum(r["seconds"] for r in plan["runs"] if r["will_run"]) / 2 + plan["warmup"])


def test_renaming_a_rule_label_renames_its_finished_runs_everywhere(tmp_path, capsys):
    """Issue 21 §2: `fa` -> `fa-random` (same settings) kept the old runs under the old label and
    a report judged one rule as two. Run ids are identity, labels presentation."""
    spec_path = write_spec(tmp_path / "s.toml", 'rule = ["backprop", "fa"]\nseed = [0, 1]', steps=3, samples=200)
    assert run_study(load_spec(spec_path), workers=1)["counts"]["done"] == 4
    spec_path.write_text(spec_path.read_text().replace('"fa"]', '{name = "fa", label = "fa-random"}]'))
    spec = load_spec(spec_path)
    assert sorted({r.label for r in spec.runs()}) == ["backprop", "fa-random"]
    records = inspection.study_records(spec)
    assert len(records) == 4 and all(r["status"] == "done" for r in records)  # nothing to rerun
    assert sorted({r["label"] for r in records}) == ["backprop", "fa-random"]
    assert sorted({r["axes"]["rule"] for r in records}) == ["backprop", "fa-random"]
    code, out, err = cli(capsys, "study", "run", spec_path, "--quiet")
    assert code == 0, err
    assert run_study(spec, workers=1)["ran"] == 0
    report = tmp_path / "report"
    code, out, err = cli(capsys, "study", "report", spec_path, "--out", report, "--bootstrap", 5)
    assert code == 0, err
    data = json.loads((report / "report.json").read_text())
    assert sorted({r["label"] for r in data["runs"]}) == ["backprop", "fa-random"]
    assert "fa-random" in (report / "report.md").read_text()
    assert "'fa'" not in (report / "report.md").read_text() and "| fa |" not in (report / "report.md").read_text()
