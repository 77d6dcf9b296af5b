"""Ctrl-C while a worker pool's forkserver starts is not lost, and the forkserver and its workers
still ignore SIGINT (only the driver handles Ctrl-C).

The driver used to ignore SIGINT while it spawned the forkserver (so that the server inherited
SIG_IGN): a Ctrl-C at that moment was dropped, and the command ran on to its end. Now the server
is spawned with SIGINT blocked (a pending Ctrl-C is handled right after) and ignores SIGINT from
its first preload module on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from beyondbp import interrupts
from beyondbp.interrupts import Stopping, worker_context

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask") or sys.platform != "linux",
                                reason="needs Linux signal masks and /proc")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_ctrl_c_while_the_forkserver_starts_is_handled(monkeypatch):
    import multiprocessing.forkserver as forkserver
    import multiprocessing.resource_tracker as resource_tracker

    seen = {}

    def spawn_server():  # the moment the server is spawned: Ctrl-C reaches the process group
        seen["blocked"] = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        seen["handler"] = signal.getsignal(signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(forkserver, "ensure_running", spawn_server)
    monkeypatch.setattr(resource_tracker, "ensure_running", lambda: None)
    # pytest may run with SIGINT ignored (started in the background by a shell without job
    # control), and Stopping keeps an ignored signal ignored: give it the usual handler
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Stopping() as stopping:
            with pytest.raises(KeyboardInterrupt):
                worker_context(["beyondbp.interrupts"])
            assert stopping.signum == signal.SIGINT
            assert signal.getsignal(signal.SIGINT) == stopping._handle  # the driver still handles Ctrl-C
        assert seen["blocked"]  # the server inherits a blocked SIGINT, and ignores it once it can
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the mask is back
    finally:
        signal.signal(signal.SIGINT, inherited)


SLOW = "import time\ntime.sleep(1.0)  # the forkserver is still starting when the driver sends SIGINT\n"

DRIVER = '''
import concurrent.futures as cf, json, multiprocessing.forkserver as fs, os, signal, sys, time
from beyondbp.interrupts import worker_context


def state():
    handler = signal.getsignal(signal.SIGINT)
    return ("ignored" if handler == signal.SIG_IGN else "default" if handler is signal.default_int_handler else str(handler),
            signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))


def masks(pid):
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
    bit = 1 << (signal.SIGINT - 1)
    return bool(int(fields["SigIgn"], 16) & bit), bool(int(fields["SigBlk"], 16) & bit)


if __name__ == "__main__":
    ctx = worker_context(["slow_preload"])
    server = fs._forkserver._forkserver_pid
    os.kill(server, signal.SIGINT)  # during its start-up (it imports slow_preload for a second)
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        worker = pool.submit(state).result(timeout=120)
    print(json.dumps({"driver": state(), "server": masks(server), "worker": worker}))
'''


def test_forkserver_and_workers_ignore_sigint(tmp_path):
    (tmp_path / "slow_preload.py").write_text(SLOW)
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py")], capture_output=True, text=True, env=env,
                          timeout=180, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 0, proc.stderr
    assert "KeyboardInterrupt" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["driver"] == ["default", False]  # the driver's Ctrl-C untouched
    assert out["server"] == [True, False]  # ignored, not left blocked
    assert out["worker"] == ["ignored", False]


def test_preload_starts_with_the_module_that_ignores_sigint(monkeypatch):
    import multiprocessing.forkserver as forkserver

    monkeypatch.setattr(interrupts, "_start_forkserver_without_sigint", lambda: None)
    monkeypatch.setattr(forkserver._forkserver, "_preload_modules", [])  # put back after the test
    worker_context(["beyondbp.study.executors", interrupts._SIGINT_IGNORED])
    preload = forkserver._forkserver._preload_modules
    assert preload == ["beyondbp._sigint_ignored", "beyondbp.study.executors"]
