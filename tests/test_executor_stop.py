"""An interrupted local pool ends its process even when a worker dies halfway through sending a
result (the flaky hang of `study run` stopped by Ctrl-C).

A worker ended while writing its result to the pool's results pipe leaves a partial message there;
concurrent.futures' manager thread then waits for the rest, and the interpreter joins that thread
at exit. The task below makes that state certain instead of a race: it writes a message header
announcing bytes that never come, then sleeps. ``_Local.close(cancel=True)`` must still let the
process exit.

The task reaches the results pipe through its caller's frame (concurrent.futures'
``_process_worker`` and its ``result_queue`` argument): a CPython detail, so the test skips with a
message where that frame has no such name.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

HALF_SENDER = '''
import os, struct, sys, time
from pathlib import Path


def send_half(flag):
    """Write a header announcing 1,000 bytes to the pool's results pipe, send none, sleep."""
    queue = sys._getframe(1).f_locals.get("result_queue")
    if queue is None:
        Path(flag).write_text("no result_queue")
        return None
    with queue._wlock:
        os.write(queue._writer.fileno(), struct.pack("!i", 1000))
        Path(flag).write_text("sent")
        time.sleep(600)
'''

DRIVER = '''
import sys, time
from pathlib import Path
sys.path.insert(0, {folder!r})
import half_sender
from beyondbp.study.executors import _Local

flag = Path({folder!r}) / "flag"
pool = _Local(2, 1)
pool.pool.submit(half_sender.send_half, str(flag))
deadline = time.monotonic() + 120
while not flag.exists():
    assert time.monotonic() < deadline, "the worker never started the task"
    time.sleep(0.05)
time.sleep(0.5)  # the manager thread is now reading the partial message
print(flag.read_text(), flush=True)
pool.close(cancel=True)
print("closed", flush=True)
'''


def test_a_pool_stopped_while_a_worker_is_halfway_through_a_result_lets_the_process_exit(tmp_path):
    (tmp_path / "half_sender.py").write_text(HALF_SENDER)
    script = textwrap.dedent(DRIVER.format(folder=str(tmp_path)))  # run with -c: workers do not re-run it
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the process had not exited 150 s after starting (output: {out!r}); it hangs at exit")
    if out.startswith("no result_queue"):
        pytest.skip("this Python's concurrent.futures worker has no `result_queue` frame variable to write to")
    assert proc.returncode == 0, err
    assert out.split() == ["sent", "closed"], (out, err)
