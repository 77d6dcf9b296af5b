"""GPU-ready execution: which worker trains on which GPU, Ray's GPU requests, and timing that
synchronises the device. The logic is tested on the CPU with fakes; the tests marked
``needs_cuda`` train on a GPU and skip (with the reason) where torch sees none.
bench/gpu_check.sh runs this file on a GPU machine."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

from beyondbp.compute import StepTimer
from beyondbp.errors import ConfigError
from beyondbp.study import executors
from beyondbp.study.executors import _Local, _Ray, ray_options, worker_devices
from beyondbp.study.runner import run_study
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Store
from beyondbp.training import RunConfig, run
from beyondbp.training.loop import _StepMeter

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here); "
                                "bench/gpu_check.sh runs these on a GPU machine")

TINY = """[study]
name = "gpu-tiny"

[base]
model = "mlp"
data = "mnist1d"
data_options = {{num_samples = 400}}
model_options = {{widths = [16]}}
steps = 8

[axes]
rule = ["backprop", "dfa"]

[execution]
{execution}
"""


def write_spec(path: Path, execution: str) -> Path:
    path.write_text(TINY.format(execution=execution))
    return path


# -- which worker trains where -----------------------------------------------------------------
def test_worker_devices_spread_the_workers_over_the_visible_gpus():
    assert worker_devices("cuda", 1, visible=1) == ["cuda:0"]
    assert worker_devices("cuda", 2, visible=4) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda", 4, visible=2, per_gpu=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_devices("cuda", 3, visible=1, per_gpu=3) == ["cuda:0"] * 3
    assert worker_devices("cuda:1", 2, visible=2, per_gpu=2) == ["cuda:1", "cuda:1"]  # an index pins them
    assert worker_devices("cpu", 2, visible=0) is None  # the spec's device as it is
    assert worker_devices("mps", 1, visible=0) is None


@pytest.mark.parametrize("device, workers, visible, per_gpu, most", [
    ("cuda", 2, 1, 1, 1), ("cuda", 5, 2, 2, 4), ("cuda:0", 2, 4, 1, 1), ("cuda", 1, 0, 1, 0)])
def test_more_workers_than_the_gpus_take_are_refused_in_one_sentence(device, workers, visible, per_gpu, most):
    with pytest.raises(ConfigError) as info:
        worker_devices(device, workers, visible=visible, per_gpu=per_gpu)
    message = str(info.value)
    assert message.startswith(f"invalid number of workers {workers}: with [execution] device = {device!r} it must be at most {most} ")
    assert "workers_per_gpu" in message and "\n" not in message


def test_run_study_refuses_too_many_gpu_workers_before_the_store_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, as far as the driver knows
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    spec = load_spec(write_spec(tmp_path / "s.toml", 'device = "cuda"'))
    with pytest.raises(ConfigError, match=r"at most 1 \(1 visible GPU × workers_per_gpu 1\)"):
        run_study(spec, workers=2)
    assert not (tmp_path / "s.db").exists()


def test_workers_per_gpu_and_the_device_leave_the_run_ids_alone(tmp_path):
    cpu = load_spec(write_spec(tmp_path / "cpu.toml", ""))
    gpu = load_spec(write_spec(tmp_path / "gpu.toml", 'device = "cuda"\nworkers_per_gpu = 2'))
    assert gpu.execution["workers_per_gpu"] == 2 and cpu.execution["workers_per_gpu"] == 1
    assert [r.id for r in gpu.runs()] == [r.id for r in cpu.runs()]
    assert all(r.config.device == "cuda" for r in gpu.runs())


@pytest.mark.parametrize("value", ["0", "65", "1.5", "true", '"2"'])
def test_workers_per_gpu_out_of_range_is_refused(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_spec(write_spec(tmp_path / "s.toml", f"workers_per_gpu = {value}"))
    assert str(info.value).startswith("s.toml: [execution] workers_per_gpu: must be a whole number from 1 to 64")


def test_a_worker_takes_its_own_device_and_trains_its_runs_there(monkeypatch):
    monkeypatch.setattr(executors, "_DEVICE", None)
    threads = torch.get_num_threads()
    counter = multiprocessing.Value("i", 0)
    try:
        executors._worker_init(threads, None, ["cuda:0", "cuda:1"], counter)
        assert executors._DEVICE == "cuda:0"
        executors._worker_init(threads, None, ["cuda:0", "cuda:1"], counter)  # the pool's second worker
        assert executors._DEVICE == "cuda:1"
    finally:
        torch.set_num_threads(threads)
    seen = []

    class Result:
        def to_dict(self):
            return {}

    monkeypatch.setattr("beyondbp.training.run", lambda config, watch=None: seen.append(config["device"]) or Result())
    executors.execute({"device": "cuda", "rule": "backprop"})
    executors.execute({"device": "cpu", "rule": "backprop"})  # not a GPU run: left as it is
    assert seen == ["cuda:1", "cpu"]


_ASK = "(__import__('time').sleep(0.5), __import__('beyondbp.study.executors', fromlist=['_DEVICE'])._DEVICE)[1]"


def test_the_local_pool_gives_each_worker_process_its_device():
    pool = _Local(2, 1, ["cuda:0", "cuda:1"])
    try:
        futures = [pool.pool.submit(eval, _ASK) for _ in range(2)]  # both workers busy at once
        assert sorted(f.result(timeout=120) for f in futures) == ["cuda:0", "cuda:1"]
    finally:
        pool.close()
    pool = _Local(1, 1)
    try:
        assert pool.pool.submit(eval, _ASK).result(timeout=120) is None  # a CPU study: no device
    finally:
        pool.close()


# -- Ray -----------------------------------------------------------------------------------------
def test_ray_asks_for_a_gpu_share_per_run_only_on_cuda():
    assert ray_options(1, "cpu") == {"num_cpus": 1, "max_retries": 0}
    assert ray_options(2, "cuda") == {"num_cpus": 2, "max_retries": 0, "num_gpus": 1.0}
    assert ray_options(1, "cuda", per_gpu=4) == {"num_cpus": 1, "max_retries": 0, "num_gpus": 0.25}


class FakeRay:
    def __init__(self):
        self.options = []

    def is_initialized(self):
        return True

    def remote(self, **options):
        self.options.append(options)
        return lambda fn: fn


def test_the_ray_executor_requests_num_gpus_for_a_cuda_study():
    fake = FakeRay()
    _Ray(fake, threads=1, address=None, workers=2, device="cuda", per_gpu=2)
    _Ray(fake, threads=1, address=None, workers=2)
    assert fake.options == [{"num_cpus": 1, "max_retries": 0, "num_gpus": 0.5}, {"num_cpus": 1, "max_retries": 0}]


def test_run_study_passes_the_device_to_ray(tmp_path, monkeypatch):
    from beyondbp.study import runner

    fake = FakeRay()

    class Stop(Exception):
        pass

    def ray_class(ray, threads, address, workers, device="cpu", per_gpu=1):
        fake.remote(device=device, per_gpu=per_gpu)
        raise Stop

    monkeypatch.setattr(runner, "_import_ray", lambda: fake)
    monkeypatch.setattr(runner, "_Ray", ray_class)
    spec = load_spec(write_spec(tmp_path / "s.toml", 'device = "cuda"\nworkers_per_gpu = 3'))
    with pytest.raises(Stop):
        run_study(spec, executor="ray", address="10.0.0.1:6379")  # a cluster: its nodes have the GPUs
    assert fake.options == [{"device": "cuda", "per_gpu": 3}]


def test_a_gpu_index_with_ray_is_refused(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", 'device = "cuda:1"'))
    with pytest.raises(ConfigError, match=r"device 'cuda:1': with the ray executor use 'cuda'"):
        run_study(spec, executor="ray", address="10.0.0.1:6379")
    assert not (tmp_path / "s.db").exists()


# -- timing synchronises the device ----------------------------------------------------------------
def test_the_step_timer_synchronises_a_cuda_device_around_the_clock(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", str(device))))
    timer = StepTimer("cuda")
    with timer:
        calls.append(("step", None))
    assert calls == [("sync", "cuda"), ("step", None), ("sync", "cuda")] and len(timer.times) == 1
    calls.clear()
    with StepTimer("cpu"):
        pass
    assert calls == []


class FakeLearner:
    def __init__(self, calls):
        self.calls = calls

    def step(self, batch, optimizer):
        self.calls.append("step")
        return {"loss": 1.0}


@pytest.mark.parametrize("device, synced", [("cuda:1", True), ("cpu", False)])
def test_every_step_the_run_loop_times_is_synchronised_on_cuda(monkeypatch, device, synced):
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"sync {device}"))
    meter = _StepMeter(torch.device(device), total_steps=3)
    for step in range(3):  # warm-up, FLOP-counted, timed: each clock reading after a synchronisation
        meter.step(step, FakeLearner(calls), (torch.zeros(1), torch.zeros(1)), None)
    per_step = ["sync cuda:1", "step", "sync cuda:1"] if synced else ["step"]
    assert calls == per_step * 3
    assert len(meter.untimed) == 2 and len(meter.timer.times) == 1


# -- on a GPU ------------------------------------------------------------------------------------------
def _config(device: str) -> RunConfig:
    return RunConfig(rule="dfa", model="mlp", data="mnist1d", data_options={"num_samples": 400},
                     model_options={"widths": [16]}, steps=6, device=device)


@needs_cuda
def test_flops_and_time_are_measured_alike_on_cuda():
    on_cpu, on_gpu = run(_config("cpu")), run(_config("cuda"))
    assert on_gpu.environment["device"].startswith("cuda")
    assert on_gpu.flops_per_step == on_cpu.flops_per_step > 0  # the same kernels are counted
    assert on_gpu.time_per_step is not None and on_gpu.time_per_step > 0


@needs_cuda
@pytest.mark.parametrize("workers_per_gpu", [1, 2])
def test_a_tiny_study_runs_on_cuda(tmp_path, workers_per_gpu):
    spec = load_spec(write_spec(tmp_path / "s.toml", f'device = "cuda"\nworkers_per_gpu = {workers_per_gpu}'))
    workers = min(workers_per_gpu * torch.cuda.device_count(), executors.available_cores(), 2)
    summary = run_study(spec, workers=workers)
    assert summary["counts"]["done"] == 2, summary
    with Store(tmp_path / "s.db") as store:
        records = store.records()
    assert {r["result"]["environment"]["device"] for r in records} <= {f"cuda:{i}" for i in range(torch.cuda.device_count())}
    assert all(r["flops_per_step"] > 0 for r in records)


def test_the_cli_refuses_too_many_gpu_workers_with_exit_2(tmp_path, monkeypatch, capsys):
    from beyondbp.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    spec = write_spec(tmp_path / "s.toml", 'device = "cuda"')
    with pytest.raises(SystemExit) as info:
        main(["study", "run", str(spec), "--workers", "2"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "invalid number of workers 2: with [execution] device = 'cuda' it must be at most 1" in " ".join(err.split())
    assert not (tmp_path / "s.db").exists()
