"""No process outlives a command, whatever stops it.

`study run` is stopped by SIGINT, SIGTERM or SIGKILL sent to the driver alone or to its whole
process group: INT and TERM give one line saying how to continue (with --store) and exit 130 /
143; in every case no process of ours (driver, forkserver, resource tracker, workers) is left
5 s later, and running the study again ends with exactly the results of a study never stopped.
The other commands print one line and exit 130 / 143 too. A driver stopped (SIGSTOP) past its
lease loses its run to another driver: its worker stops training the run, and it says so.

Our processes are found by an environment variable set only in the command's environment
(every child inherits it), read from /proc/<pid>/environ.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from beyondbp.cli import main
from beyondbp.interrupts import Stopping, Terminated, deferred
from beyondbp.study import runner
from beyondbp.study.inspection import check_study
from beyondbp.study.runner import run_study
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Owner, Store

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")

MARKER = "BEYONDBP_TEST_PROCESS_MARKER"
SRC = str(Path(__file__).resolve().parents[1] / "src")
SPEC = """[study]
name = "procs"

[base]
model = "mlp"
data = "mnist1d"
data_options = {{num_samples = 2000}}
model_options = {{widths = [64]}}
steps = {steps}

[axes]
seed = [0, 1]

[execution]
checkpoint_every = 25
"""


#: The command line run as ``python -c DUMPABLE args...`` (what ``python -m beyondbp`` runs), with
#: SIGUSR1 dumping every thread's Python stack to stderr: a command that hangs says where.
DUMPABLE = ("import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
            "from beyondbp.cli import main; main(sys.argv[1:])")


def ours(marker: str) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose environment holds ``MARKER=marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if f"{MARKER}={marker}".encode() not in env:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z":
            found.append((int(entry), cmd[:120]))
    return found


def no_process_left(marker: str, seconds: float = 5.0) -> list[tuple[int, str]]:
    """Our processes still alive ``seconds`` after now (empty as soon as none is)."""
    deadline = time.monotonic() + seconds
    while True:
        left = ours(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def start(args: list[str], folder: Path, marker: str, python: list[str] | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """A beyondbp command in its own session, with the marker in its environment and SIGINT at
    its default action (a terminal's; CI shells without job control start children with SIGINT
    ignored). Output goes to files: orphans holding a pipe would block reading it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
               **(env or {}))
    env[MARKER] = marker
    out = open(folder / f"{marker}.out", "w")
    err = open(folder / f"{marker}.err", "w")
    with out, err:
        return subprocess.Popen([sys.executable, *(python or ["-c", DUMPABLE]), *args], env=env, stdout=out, stderr=err,
                                text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc: subprocess.Popen, folder: Path, marker: str, timeout: float = 90) -> tuple[int, str]:
    """Wait for the command; one still running after ``timeout`` s fails the test with its
    threads' stacks (SIGUSR1: see :data:`DUMPABLE`) and its stderr in the message."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(2)
        pytest.fail(f"the command had not ended {timeout:g} s later; its stderr, with every thread's stack:\n"
                    + (folder / f"{marker}.err").read_text())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, (folder / f"{marker}.err").read_text()


def kill_ours(marker: str) -> None:
    for pid, _ in ours(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def statuses(store_path: Path) -> list[str]:
    try:
        with Store(store_path) as store:
            return list(store.statuses().values())
    except Exception:  # not created yet
        return []


def wait_for(predicate, proc: subprocess.Popen, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, f"the command ended before {what}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def _without_timings(result: dict) -> dict:
    timing = {"elapsed", "total_time", "train_time", "time_per_step", "time_per_token", "timed_steps",
              "resumed_from_step", "environment", "config", "checkpoint"}
    out = {k: v for k, v in result.items() if k not in timing}
    out["history"] = [{k: v for k, v in h.items() if k not in timing} for h in result["history"]]
    return out


def results(store_path: Path) -> dict[str, dict]:
    with Store(store_path) as store:
        return {r["id"]: _without_timings(r["result"]) for r in store.records()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    """The final results of the study never stopped (shared by the stop cases)."""
    folder = tmp_path_factory.mktemp("whole")
    spec_path = folder / "s.toml"
    spec_path.write_text(SPEC.format(steps=400))
    summary = run_study(load_spec(spec_path), workers=2)
    assert summary["counts"]["done"] == 2
    return results(folder / "s.db")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
@pytest.mark.parametrize("group", [False, True], ids=["driver", "group"])
def test_a_stopped_study_leaves_no_process_and_resumes_bit_identically(tmp_path, capsys, uninterrupted, signum, group):
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(SPEC.format(steps=400))
    store_path = tmp_path / "my store.db"  # --store, with a space: the hint must quote it
    marker = uuid.uuid4().hex
    proc = start(["study", "run", str(spec_path), "--store", str(store_path), "--workers", "2"], tmp_path, marker)
    try:
        states = tmp_path / "my store.states"
        wait_for(lambda: states.is_dir() and any(p.suffix == ".pt" for p in states.iterdir())
                 and statuses(store_path).count("running") >= 1, proc, "a run was midway")
        assert len(ours(marker)) >= 5  # driver, resource tracker, forkserver, 2 workers
        os.kill(proc.pid, signum)
        code, err = finish(proc, tmp_path, marker)
        left = no_process_left(marker)
    finally:
        kill_ours(marker)
    assert not left, f"processes left 5 s after the driver ended: {left}"
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + signum
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        assert [line for line in err.splitlines() if line.strip()] == [
            "interrupted: the runs in flight were handed back to the store; "
            f"`beyondbp study run {spec_path} --store '{store_path}'` continues the study"
        ]
        assert "running" not in statuses(store_path)  # handed back, not left to a lease
        assert check_study(load_spec(spec_path), store_path) == []
    assert statuses(store_path).count("done") < 2, "the study ended before it was stopped"

    with pytest.raises(SystemExit) as info:
        main(["study", "run", str(spec_path), "--store", str(store_path), "--workers", "2", "--quiet"])  # same threads
    assert info.value.code == 0, capsys.readouterr().err
    got = results(store_path)
    assert got.keys() == uninterrupted.keys()
    for run_id, result in got.items():
        differ = sorted(k for k in result.keys() | uninterrupted[run_id].keys() if result.get(k) != uninterrupted[run_id].get(k))
        assert not differ, f"run {run_id} differs from the uninterrupted study in {differ}"


@pytest.mark.parametrize("command", ["train", "compare"])
def test_other_commands_stop_in_one_line_with_130_or_143(tmp_path, command):
    marker = uuid.uuid4().hex
    state = tmp_path / "run.pt"
    common = ["--model", "mlp", "--data", "mnist1d", "--steps", "1000000", "--model-opt", "widths=[64]"]
    err_file = tmp_path / f"{marker}.err"
    if command == "train":  # SIGTERM, resumable: the line says how to continue
        args, signum = ["train", *common, "--state", str(state), "--checkpoint-every", "20"], signal.SIGTERM
        ready = state.is_file
    else:  # Ctrl-C to the group, nothing to resume; its progress bar (drawn as on a terminal) shows it trains
        args, signum = ["compare", "--rules", "backprop,dfa", *common, "--out", str(tmp_path / "out")], signal.SIGINT

        def ready() -> bool:
            return "steps" in err_file.read_text(errors="replace")
    proc = start(args, tmp_path, marker, env={"TTY_COMPATIBLE": "1"} if command == "compare" else None)
    try:
        wait_for(ready, proc, "it was training")
        time.sleep(0.5)
        (os.kill if command == "train" else os.killpg)(proc.pid, signum)
        code, err = finish(proc, tmp_path, marker)
        left = no_process_left(marker)
    finally:
        kill_ours(marker)
    assert not left
    assert code == 128 + signum, err  # its stderr says why, if it ended otherwise
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err)  # the progress bar's terminal codes
    lines = [line for line in re.split(r"[\r\n]", text) if line.startswith(("interrupted", "error", "Traceback"))]
    assert "Traceback" not in err
    if command == "train":
        assert lines == [f"interrupted: `{shlex.join(['beyondbp', *args])}` continues the run from its last saved state ({state})"]
    else:
        assert lines == ["interrupted: nothing was written (results are written only at the end); run the command again to start over"]
        assert not (tmp_path / "out").exists()


def test_stopping_turns_sigterm_into_an_interrupt_once_and_restores_the_handlers():
    # Python's own Ctrl-C handler, whatever this process inherited: a shell without job control
    # starts background jobs (pytest too) with SIGINT ignored, and Stopping keeps an ignored signal
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        with Stopping() as stopping:
            with pytest.raises(Terminated):
                signal.raise_signal(signal.SIGTERM)
                time.sleep(1)  # pragma: no cover - the handler raises before
            signal.raise_signal(signal.SIGINT)  # a second signal while cleaning up: ignored
            assert stopping.signum == signal.SIGTERM and stopping.status == 143
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
        with Stopping() as stopping, pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert stopping.status == 130
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_signal_while_a_file_is_written_interrupts_once_the_file_is_in_place(tmp_path):
    # torch.save calls the file's write() from C++: an interrupt raised inside it came out as a
    # RuntimeError ("enforce fail at inline_container.cc"), and `beyondbp train` stopped by SIGTERM
    # during a state save exited 1 as a crash instead of 143 as interrupted
    from beyondbp.files import atomic_write_bytes

    class Signalling(io.RawIOBase):  # a file whose third write receives SIGTERM
        def __init__(self, fh):
            self.fh, self.calls = fh, 0

        def writable(self):
            return True

        def write(self, data):
            self.calls += 1
            if self.calls == 3:
                signal.raise_signal(signal.SIGTERM)
            return self.fh.write(data)

        def flush(self):
            self.fh.flush()

    payload = {"a": torch.arange(1000.0), "b": torch.ones(300)}
    target = tmp_path / "state.pt"
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Stopping() as stopping, pytest.raises(Terminated):
            atomic_write_bytes(target, lambda fh: torch.save(payload, Signalling(fh)))
        assert stopping.status == 143
        loaded = torch.load(target)  # written whole before the interrupt was raised
        assert torch.equal(loaded["a"], payload["a"]) and torch.equal(loaded["b"], payload["b"])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # no temporary left
        with Stopping(), pytest.raises(Terminated):  # outside a write: at once, as before
            signal.raise_signal(signal.SIGTERM)
            time.sleep(1)  # pragma: no cover - the handler raises before
        with Stopping() as stopping, pytest.raises(ValueError):  # the block's own error wins, nothing pending after
            with deferred():
                signal.raise_signal(signal.SIGINT)
                raise ValueError("the write failed")
        assert stopping.signum == signal.SIGINT
        with deferred():
            pass  # nothing pending is raised later
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_stopping_keeps_a_signal_the_process_inherited_ignored():
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Stopping() as stopping:
            signal.raise_signal(signal.SIGINT)  # ignored, as the parent asked
            assert stopping.signum is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_an_interrupted_ray_study_cancels_its_tasks(tmp_path, monkeypatch):
    """On Ctrl-C or SIGTERM the driver hands its runs back and cancels their Ray tasks."""

    class Ray:
        def __init__(self):
            self.cancelled: list[tuple[object, bool]] = []

        def is_initialized(self):
            return True  # an existing connection: nothing started, nothing shut down

        def remote(self, **options):
            return lambda fn: type("Task", (), {"remote": staticmethod(lambda config: object())})()

        def wait(self, refs, num_returns, timeout):
            return [], list(refs)

        def cancel(self, ref, force=False):
            self.cancelled.append((ref, force))

    fake = Ray()
    monkeypatch.setattr(runner, "_import_ray", lambda: fake)
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(SPEC.format(steps=10))
    claimed = []

    def interrupt(event, info):
        if event == "claimed":
            claimed.append(info["id"])
        if event == "tick" and len(claimed) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(load_spec(spec_path), executor="ray", workers=2, progress=interrupt)
    assert len(fake.cancelled) == 2 and all(force for _, force in fake.cancelled)
    assert set(statuses(tmp_path / "s.db")) == {"pending"}


@pytest.mark.parametrize("stopped", ["driver", "group"])
def test_a_driver_stopped_past_its_lease_stops_the_run_it_lost_and_says_so(tmp_path, stopped):
    """SIGSTOP of the driver alone (its worker goes on) or of its group (Ctrl-Z), longer than
    the lease; another driver takes the run over. The worker stops training it (it reads the
    store), and the first driver, continued, says so and records nothing for it."""
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(SPEC.format(steps=1_000_000).replace("seed = [0, 1]", "seed = [0]"))
    store_path = tmp_path / "s.db"
    marker = uuid.uuid4().hex
    script = ("import sys; from beyondbp.study import runner; runner.LEASE_SECONDS = 2.0\n"
              "from beyondbp.cli import main; main(sys.argv[1:])")
    proc = start(["study", "run", str(spec_path)], tmp_path, marker, python=["-c", script])
    other = Owner.new()
    try:
        states = tmp_path / "s.states"
        wait_for(lambda: states.is_dir() and any(p.suffix == ".pt" for p in states.iterdir()), proc, "the run was training")
        workers = [pid for pid, cmd in ours(marker) if "forkserver" in cmd and _parent(pid) != proc.pid]
        assert len(workers) == 1, ours(marker)
        (os.killpg if stopped == "group" else os.kill)(proc.pid, signal.SIGSTOP)
        with Store(store_path, create=True) as store:  # another driver, once the lease has expired
            deadline = time.monotonic() + 60
            while not store.reclaim_dead(other):
                assert time.monotonic() < deadline, "the lease never expired"
                time.sleep(0.2)
            assert store.claim(other, 600.0) is not None
        if stopped == "driver":  # the worker, still running, finds the run taken and stops training
            deadline = time.monotonic() + 60
            while _cpu_ticks_in(workers[0], 2.0) > 20:  # training uses the CPU; a stopped run none
                assert time.monotonic() < deadline, "the worker kept training a run its driver lost"
        (os.killpg if stopped == "group" else os.kill)(proc.pid, signal.SIGCONT)
        code, err = finish(proc, tmp_path, marker, timeout=120)  # before the fix: trains 1e6 steps
        left = no_process_left(marker)
    finally:
        kill_ours(marker)
    assert not left
    assert code == 0, err
    assert "another `study run` took it over after this process's lease expired" in err, err
    with Store(store_path) as store:
        (row,) = store.rows()
        attempts = [a["outcome"] for a in store.attempts()]
    assert row["status"] == "running" and row["lease_token"] == other.token  # the other driver's, untouched
    assert attempts == ["lost", None]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cpu_ticks_in(pid: int, seconds: float) -> int:
    """CPU clock ticks (user + system) process ``pid`` used over ``seconds``."""
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = ticks()
    time.sleep(seconds)
    return ticks() - before


def test_ray_init_does_not_take_sigterm_away_from_the_driver():
    """`ray.init` installs its own SIGTERM handler at the C level (it logs a stack and aborts,
    exit -6, without handing the runs back); the driver puts its Python handler back."""
    script = """
import ctypes, os, signal, time
from beyondbp.interrupts import Stopping, Terminated, deferred
from beyondbp.study import executors

class Ray:
    def is_initialized(self):
        return False
    def init(self, **kwargs):  # what Ray's C++ core does: a handler Python does not know of
        ctypes.CDLL(None).signal(signal.SIGTERM, ctypes.c_void_p(0))  # SIG_DFL: the process would die
    def remote(self, **options):
        return lambda fn: fn

with Stopping():
    executors._Ray(Ray(), threads=1, address=None, workers=1)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at once
    except Terminated:
        print("handled")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "handled", (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("command", ["continual", "adapt", "analyze"])
def test_continual_adapt_and_analyze_say_in_one_line_that_nothing_was_written(tmp_path, monkeypatch, capsys, command):
    """Interrupted once their work has begun (a KeyboardInterrupt where they load or train),
    they exit 130 with one line, and their output folder is not created."""
    import beyondbp.continual
    import beyondbp.data
    import beyondbp.study.similarity

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    if command == "continual":
        monkeypatch.setattr(beyondbp.continual, "build_sequence", interrupt)
        args = ["continual", "--methods", "finetune", "--rules", "backprop", "--tasks", "permuted-mnist1d:2", "--out", out]
    elif command == "adapt":
        monkeypatch.setattr(beyondbp.data, "load", interrupt)
        args = ["adapt", "run", "--checkpoint", tmp_path / "src.pt", "--out", out]
    else:
        monkeypatch.setattr(beyondbp.study.similarity, "find_networks", interrupt)
        args = ["analyze", tmp_path / "models", "--out", out]
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    _, err = capsys.readouterr()
    assert info.value.code == 130
    assert err.strip().splitlines() == [
        "interrupted: nothing was written (results are written only at the end); run the command again to start over"]
    assert not out.exists()


def test_an_interrupted_evolution_leaves_no_process_and_writes_nothing(tmp_path):
    """`beyondbp evolve --workers 2` spreads each generation over the study's local executor:
    SIGTERM to the driver alone stops its workers and the forkserver (Ctrl-C to the group takes
    the same path in the driver; the workers ignore SIGINT, as a study's)."""
    signum = signal.SIGTERM
    marker = uuid.uuid4().hex
    out = tmp_path / "out"
    args = ["evolve", "--population", "4", "--generations", "100000", "--trials", "40", "--scored", "5",
            "--test-every", "1", "--test-lifetimes", "2", "--workers", "2", "--out", str(out)]
    proc = start(args, tmp_path, marker)
    try:
        wait_for(lambda: "generation 1:" in (tmp_path / f"{marker}.err").read_text(errors="replace"), proc,
                 "it was evolving")
        assert len(ours(marker)) >= 3  # the driver, the forkserver and at least two workers
        os.kill(proc.pid, signum)
        code, err = finish(proc, tmp_path, marker)
        left = no_process_left(marker)
    finally:
        kill_ours(marker)
    assert not left
    assert code == 128 + signum and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("interrupted: nothing was written (results are written only at the end); "
                                            "run the command again to start over")
    assert not out.exists()
