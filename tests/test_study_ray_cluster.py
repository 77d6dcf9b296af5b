"""The ray executor against a real ``ray start --head`` cluster (not the in-process instance
``ray.init()`` makes): a study through the CLI gives the local executor's results, the
cluster's authentication token is picked up, and a refused token is said in one sentence.

Loopback only: the head starts with ``--node-ip-address 127.0.0.1`` and, head and driver alike,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` — without it Ray replaces 127.0.0.1 by the machine's
network address (``services.resolve_ip_for_localhost``), for the head and for the driver's own
node. No dashboard, no usage stats. The cluster gets its own ``HOME`` (its token in
``~/.ray/auth_token``, so that ``ray start`` turns token authentication on, as it does on a
machine where any ``ray.init()`` has run) and its own temporary directory; it runs in its own
process group and is stopped by signalling that group, not by ``ray stop``, which would stop
every Ray on the machine. One cluster for the module: Ray starts slowly on small machines."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'beyondbp[ray]')")

from test_study_runner import _comparable, write_spec  # noqa: E402

from beyondbp.study import executors  # noqa: E402
from beyondbp.study.inspection import check_study  # noqa: E402
from beyondbp.study.runner import run_study  # noqa: E402
from beyondbp.study.spec import load_spec  # noqa: E402
from beyondbp.study.store import Store  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _stop(process: subprocess.Popen) -> None:
    """Stop the cluster: SIGTERM to ``ray start --block`` (it drains and ends its processes),
    then SIGKILL to whatever is left of its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(request):
    """A one-node cluster from ``ray start --head`` on 127.0.0.1 with token authentication."""
    root = Path(tempfile.mkdtemp(prefix="bbp-ray-"))  # short: Ray's socket paths live under it
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    port = _free_port()
    log = root / "ray-start.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", str(port), "--include-dashboard=false", "--disable-usage-stats", "--num-cpus", "2",
             "--dashboard-agent-listen-port", str(_free_port()), "--temp-dir", str(root / "ray"), "--block"],
            env=_loopback_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(lambda: _stop(process))
    deadline = time.monotonic() + 240
    while "will now block forever" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ray start did not start a cluster:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    text = log.read_text()
    assert "Local node IP: 127.0.0.1" in text and "Token authentication is enabled" in text, text[-3000:]
    return {"address": f"127.0.0.1:{port}", "home": home, "token": token, "root": root}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beyondbp", *args], check=False, env=env, capture_output=True, text=True, timeout=400)


def test_a_study_on_a_ray_start_cluster_equals_the_local_executor(cluster, tmp_path):
    axes = 'rule = ["backprop", "dfa"]\nseed = [0]'
    local_spec = load_spec(write_spec(tmp_path / "local.toml", axes))
    ray_path = write_spec(tmp_path / "ray.toml", axes)
    run_study(local_spec, workers=2)  # one thread per run, like a Ray task
    # The driver has RAY_AUTH_MODE unset, as in a plain shell: it must find the token itself.
    done = _cli(_loopback_env(cluster["home"]), "study", "run", str(ray_path), "--executor", "ray",
                "--address", cluster["address"], "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    with Store(tmp_path / "local.db") as a, Store(tmp_path / "ray.db") as b:
        local, remote = a.records(), b.records()
    assert len(remote) == 2 and [r["id"] for r in local] == [r["id"] for r in remote]
    assert all(r["status"] == "done" for r in local + remote)
    assert [_comparable(r) for r in local] == [_comparable(r) for r in remote]  # bit for bit
    assert check_study(load_spec(ray_path)) == []
    # The runs were tasks of that cluster: its workers' logs are in its session directory.
    logs = list((cluster["root"] / "ray").glob("session_*/logs/worker-*"))
    assert logs, "the cluster ran no worker"


@pytest.mark.parametrize("case", ["no token", "wrong token", "token mode without a token"])
def test_a_refused_token_is_said_in_one_sentence(cluster, tmp_path, case):
    spec = write_spec(tmp_path / "s.toml", "seed = [0]")
    empty = tmp_path / "home"
    empty.mkdir()
    extra = {"RAY_gcs_server_port_wait_time_s": "2"}  # two connection attempts, not Ray's 20
    if case == "no token":
        env = _loopback_env(empty, **extra)
        expected = "requires an authentication token, which this process did not send: run with RAY_AUTH_MODE=token"
    elif case == "wrong token":
        env = _loopback_env(cluster["home"], RAY_AUTH_TOKEN=secrets.token_hex(32), **extra)
        expected = "rejected the authentication token from RAY_AUTH_TOKEN: use the cluster's token"
    else:
        env = _loopback_env(empty, RAY_AUTH_MODE="token", **extra)
        expected = "requires an authentication token and RAY_AUTH_MODE=token found none"
    failed = _cli(env, "study", "run", str(spec), "--executor", "ray", "--address", cluster["address"], "--quiet")
    assert failed.returncode == 2, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert f"the Ray cluster at '{cluster['address']}'" in last and expected in last, failed.stderr[-3000:]
    assert "`ray get-auth-token` on its head node" in last


def test_the_token_is_sent_unasked_only_to_this_machine():
    for address in ("127.0.0.1:6379", "localhost:6379", "127.0.0.2:1", "[::1]:6379", "ray://127.0.0.1:10001"):
        assert executors._is_loopback(address), address
    for address in ("10.0.0.5:6379", "head.example.org:6379", "ray://192.0.2.7:10001", "auto", "[::ffff:10.0.0.1]:1"):
        assert not executors._is_loopback(address), address
