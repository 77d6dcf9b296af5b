"""The run store: insert, claim, finish, records; leases and dead owners; refusing foreign files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from beyondbp.errors import ConfigError
from beyondbp.study import store_file
from beyondbp.study.spec import PlannedRun
from beyondbp.study.store import STATUSES, Owner, Store
from beyondbp.training import RunConfig

RECORD_KEYS = {
    "id", "status", "label", "axes", "config", "result", "error", "attempts", "host", "versions", "wall_time",
    "n_params", "flops_per_step", "flops_total", "eval_flops", "seed", "diverged_at_step", "started_at", "finished_at",
}


def planned(seed: int, lr: float = 1e-3) -> PlannedRun:
    config = RunConfig(model="mlp", data="mnist1d", steps=5, seed=seed, lr=lr, model_options={"widths": [8]})
    return PlannedRun(config.run_id, config, {"seed": seed}, "backprop")


def fake_result(status: str = "ok", steps: int = 5) -> dict:
    return {"status": status, "final": {"test_loss": 1.5, "test_accuracy": 0.4}, "n_params": 418,
            "flops_per_step": 1000, "steps": steps, "eval_flops": 77,
            "diverged_at_step": steps if status == "diverged" else None}


def outcome(result=None, error=None) -> dict:
    return {"result": result, "error": error, "wall_time": 0.5, "host": "h",
            "versions": {"beyondbp": "0.1.0", "torch": "2", "python": "3"}}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.db", create=True, study="demo") as s:
        yield s


def test_insert_claim_finish_records(store):
    runs = [planned(0), planned(1), planned(2)]
    assert store.add_runs(runs) == [r.id for r in runs]
    assert store.add_runs(runs) == []  # already there: nothing added
    me = Owner.new()
    first = store.claim(me, 60)
    assert first["id"] == runs[0].id and first["attempt"] == 1 and first["config"]["seed"] == 0
    assert store.finish(me, first["id"], outcome(fake_result())) == "done"
    second = store.claim(me, 60)
    assert store.finish(me, second["id"], outcome(error="RuntimeError: boom")) == "failed"
    third = store.claim(me, 60)
    assert store.finish(me, third["id"], outcome(fake_result("diverged", steps=3))) == "diverged"
    assert store.claim(me, 60) is None

    records = store.records()
    assert [r["id"] for r in records] == [r.id for r in runs]
    assert all(set(r) == RECORD_KEYS for r in records)
    done, failed, diverged = records
    assert done["status"] == "done" and done["result"]["final"]["test_loss"] == 1.5
    assert done["flops_total"] == 5000 and done["eval_flops"] == 77 and done["n_params"] == 418
    assert done["config"] == runs[0].config.model_dump() and done["axes"] == {"seed": 0}
    assert done["versions"]["torch"] == "2" and done["attempts"] == 1 and done["seed"] == 0
    assert done["finished_at"] >= done["started_at"] and done["wall_time"] == 0.5
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom" and failed["result"] is None
    assert diverged["status"] == "diverged" and diverged["diverged_at_step"] == 3
    assert [r["id"] for r in store.records("failed")] == [runs[1].id]
    with pytest.raises(ConfigError, match="unknown run status"):
        store.records("finished")
    assert sorted(a["outcome"] for a in store.attempts()) == ["diverged", "done", "failed"]
    assert store.reset_failed() == [runs[1].id] and store.statuses()[runs[1].id] == "pending"


def test_claim_respects_ids_and_order(store):
    runs = [planned(s) for s in range(3)]
    store.add_runs(runs)
    me = Owner.new()
    assert store.claim(me, 60, ids=[runs[2].id])["id"] == runs[2].id
    assert store.claim(me, 60, ids=[runs[2].id]) is None
    assert store.claim(me, 60)["id"] == runs[0].id


def test_readonly_store_refuses_writes_and_reads_records(tmp_path, store):
    store.add_runs([planned(0)])
    with Store(tmp_path / "s.db") as ro:
        assert [r["status"] for r in ro.records()] == ["pending"]
        with pytest.raises(ConfigError, match="read-only"):
            ro.add_runs([planned(1)])


def test_finish_is_refused_to_a_process_that_lost_its_lease(store):
    store.add_runs([planned(0)])
    a, b = Owner.new(), Owner("elsewhere", 1, "tok")
    store.claim(a, -1.0)  # a lease that has already expired
    store._conn.execute("UPDATE runs SET lease_host = 'elsewhere', lease_token = ?", (a.token,))
    assert store.reclaim_dead(b) == [planned(0).id]
    assert store.claim(b, 60)["attempt"] == 2
    assert store.finish(a, planned(0).id, outcome(fake_result())) is None  # a's result is discarded
    assert store.finish(b, planned(0).id, outcome(fake_result())) == "done"
    attempts = store.attempts()
    assert [(x["attempt"], x["outcome"]) for x in attempts] == [(1, "lost"), (2, "done")]


def test_dead_owner_on_this_host_is_detected_at_once(store):
    store.add_runs([planned(0), planned(1)])
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free
    dead = Owner(Owner.new().host, proc.pid, "dead")
    store.claim(dead, 3600)  # a long lease: only the process check can tell it is dead
    me = Owner.new()
    store.claim(me, 3600)
    assert store.reclaim_dead(me) == [planned(0).id]  # the live owner's (our) run stays
    assert store.statuses() == {planned(0).id: "pending", planned(1).id: "running"}


def test_live_owner_elsewhere_keeps_its_run_until_its_lease_expires(store):
    store.add_runs([planned(0)])
    other = Owner("another-host", 12345, "x")
    store.claim(other, 3600)
    assert store.reclaim_dead(Owner.new()) == []
    store._conn.execute("UPDATE runs SET lease_expires = 0")
    assert store.reclaim_dead(Owner.new()) == [planned(0).id]


def test_heartbeat_renews_only_the_owners_leases(store):
    store.add_runs([planned(0), planned(1)])
    a, b = Owner.new(), Owner("h2", 2, "b")
    store.claim(a, 10)
    store.claim(b, 10)
    assert store.heartbeat(a, 1000) == 1
    leases = {r["lease_token"]: r["lease_expires"] - r["heartbeat"] for r in store.rows()}
    assert leases[a.token] == pytest.approx(1000) and leases["b"] == pytest.approx(10, abs=1)


def test_concurrent_claims_never_take_the_same_run(tmp_path):
    path = tmp_path / "s.db"
    with Store(path, create=True, study="demo") as s:
        s.add_runs([planned(i) for i in range(40)])
    taken: list[str] = []
    lock = threading.Lock()

    def worker():
        with Store(path, create=True, study="demo") as s:
            me = Owner.new()
            while (row := s.claim(me, 60)) is not None:
                with lock:
                    taken.append(row["id"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(planned(i).id for i in range(40))


def test_store_of_another_study_is_refused(tmp_path, store):
    with pytest.raises(ConfigError, match="belongs to study 'demo', not 'other'") as info:
        Store(tmp_path / "s.db", create=True, study="other")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x01 random bytes " * 50, b"SQLite format 3\x00" + b"\xff" * 100])
def test_a_file_that_is_not_a_store_is_refused(tmp_path, content, monkeypatch):
    monkeypatch.setattr(store_file, "EMPTY_STORE_GRACE", 0.3)  # an empty file stays empty: refused after the grace
    path = tmp_path / "x.db"
    path.write_bytes(content)
    for create in (False, True):
        with pytest.raises(ConfigError) as info:
            Store(path, create=create, study="demo")
        assert "\n" not in str(info.value)
    assert path.read_bytes() == content  # untouched


def test_a_store_another_driver_is_creating_is_opened_not_refused(tmp_path):
    """SQLite creates the file empty on connect and writes it when the tables are created: a
    second driver that sees the empty file in between waits for it instead of refusing it."""
    path = tmp_path / "s.db"
    path.write_bytes(b"")  # the first driver has connected, not yet created its tables
    errors: list[BaseException] = []

    def second_driver() -> None:
        try:
            with Store(path, create=True, study="demo") as other:
                assert other.meta["study"] == "demo"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=second_driver)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # still waiting on the empty file
    path.unlink()
    with Store(path, create=True, study="demo"):  # the first driver creates its store
        thread.join(timeout=30)
    assert not thread.is_alive() and errors == []


def test_another_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for create in (False, True):
        with pytest.raises(ConfigError, match="not a beyondbp run store .*another SQLite database"):
            Store(path, create=create, study="demo")
    assert path.read_bytes() == before  # not even switched to WAL


def test_missing_store_is_not_created_when_reading(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Store(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_statuses_are_the_documented_ones():
    assert STATUSES == ("pending", "running", "done", "failed", "diverged")


def test_an_expired_lease_on_this_host_is_dead_even_if_its_pid_is_taken(store):
    store.add_runs([planned(0)])
    import os

    reused = Owner(Owner.new().host, os.getppid(), "old")  # a live process, but not the owner
    store.claim(reused, 3600)
    assert store.reclaim_dead(Owner.new()) == []
    store._conn.execute("UPDATE runs SET lease_expires = 0")
    assert store.reclaim_dead(Owner.new()) == [planned(0).id]
