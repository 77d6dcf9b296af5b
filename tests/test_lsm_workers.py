"""A liquid run's feature generation over worker processes (execution setting ``feature_workers``,
training/liquid_pool.py): the same features, bit for bit, and the same cache key whatever the
number of workers; one process where children are not allowed; no worker outlives the command
(Ctrl-C, SIGTERM, SIGKILL), and the progress it kept is consistent.
Tiny liquids on the 8×8 digits."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest
import torch

from beyondbp.study import runner
from beyondbp.training import RunConfig, liquid_pool, liquid_resume, run

sys.path.insert(0, str(Path(__file__).parent))
from test_processes import finish, kill_ours, no_process_left, ours, start, wait_for  # noqa: E402

LIQUID = {"grid": [5, 5, 4], "duration": 60, "feature_batch": 8}


def config(cache: Path, rule: str, workers: int | None, **kw) -> RunConfig:
    values = dict(rule=rule, model="lsm", data="digits", n_train=40, n_test=24, epochs=1, batch_size=16, lr=0.05,
                  feature_cache=str(cache), model_options=LIQUID, feature_workers=workers)
    if rule == "nalsm":
        values["rule_options"] = {"init_images": 4}
    values.update(kw)
    return RunConfig(**values)


def entry(result) -> dict:
    return torch.load(result.data["liquid"]["cache"], map_location="cpu", weights_only=True)


@pytest.mark.parametrize("rule", ["nalsm", "backprop"])  # plastic liquid, fixed liquid
def test_features_are_bit_identical_whatever_the_number_of_workers(tmp_path, rule):
    one = run(config(tmp_path / "one", rule, 1))
    two = run(config(tmp_path / "two", rule, 2))  # 5 train + 3 test batches over 2 processes
    assert one.data["liquid"]["feature_workers"] == 1 and two.data["liquid"]["feature_workers"] == 2
    assert one.data["liquid"]["key"] == two.data["liquid"]["key"]  # an execution setting: same entry
    assert one.run_id == two.run_id
    a, b = entry(one), entry(two)
    for name in ("counts_train", "counts_test", "weight"):
        assert torch.equal(a[name], b[name]), name
    assert a["counts_train"].sum() > 0 and a["measurements"] == b["measurements"]
    assert one.spikes == two.spikes
    assert [h["train_loss"] for h in one.history] == [h["train_loss"] for h in two.history]


def test_the_default_is_one_process_for_small_runs_and_where_children_are_not_allowed(tmp_path, monkeypatch):
    cores = liquid_pool.available_cores()
    assert liquid_pool.feature_workers(None, 280, 70_000 * 250) == min(2, cores)  # the full protocol
    assert liquid_pool.feature_workers(None, 8, 64 * 60) == 1  # small: not worth starting processes
    assert liquid_pool.feature_workers(4, 3, 10) == 3  # never more than batches
    # a study's runs get one unless its [execution] table says otherwise
    assert runner._worker_config({"feature_workers": None}, "r", 1, None, None)["feature_workers"] == 1
    assert runner._worker_config({"feature_workers": 2}, "r", 1, None, None)["feature_workers"] == 2
    # a daemonic process (a multiprocessing.Pool worker) may not have children: this one, no error
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    assert liquid_pool.feature_workers(2, 8, 10**9) == 1
    result = run(config(tmp_path, "backprop", 2))
    assert result.data["liquid"]["feature_workers"] == 1 and not result.data["liquid"]["cached"]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_feature_worker_outlives_a_stopped_command(tmp_path, signum):
    marker = uuid.uuid4().hex
    cache = tmp_path / "cache"
    args = ["train", "--rule", "nalsm", "--model", "lsm", "--data", "digits", "--n-train", "600", "--n-test", "100",
            "--model-opt", "grid=[5,5,4]", "--model-opt", "feature_batch=16", "--model-opt", "duration=250",
            "--rule-opt", "init_images=2", "--feature-cache", str(cache), "--feature-workers", "2"]
    proc = start(args, tmp_path, marker)
    try:
        wait_for(lambda: len(ours(marker)) >= 4, proc, "its feature workers ran")  # driver, forkserver, 2 workers
        wait_for(lambda: list(cache.glob("*.partial/train-*.pt")), proc, "a feature batch was kept")
        time.sleep(0.3)
        os.kill(proc.pid, signum)  # the driver alone
        code, err = finish(proc, tmp_path, marker)
        left = no_process_left(marker)
    finally:
        kill_ours(marker)
    assert not left
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}.get(signum, -signal.SIGKILL)
    assert "Traceback" not in err
    assert not list(cache.glob("*.pt"))  # nothing half-written
    if signum != signal.SIGKILL:  # it says where its progress is and how to continue
        assert "the liquid's features generated so far are kept in" in err and "continues from there" in err
    # the progress kept is consistent: every file readable and fitting, W_INI and the batches done
    (folder,) = cache.glob("*.partial")
    identity = torch.load(folder / "meta.pt", weights_only=True)["identity"]
    partial = liquid_resume.Partial(folder, {k: v for k, v in identity.items() if k != "format"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        partial.load()
    assert partial.init is not None and partial.init[0] == 2
    assert partial.usable_batches(partial.init[1])["train"]  # all from this W_INI
    if signum != signal.SIGKILL:  # (SIGKILL can leave a temporary, removed by the next write)
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
