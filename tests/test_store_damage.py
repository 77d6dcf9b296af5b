"""The run store under damage (issue 21, section 3): a damaged page, dropped tables and columns,
rows that do not parse, a deleted row, folders in the way, hostile specs and state files. Every
case is one sentence and exit status 2 (``study check``: its own exit status 5), or a recovery;
nothing is left half-written, and read-only commands leave no files beside the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from beyondbp import RunConfig, run
from beyondbp.cli import main
from beyondbp.cli.study import EXIT_CHECK_FAILED
from beyondbp.errors import ConfigError

try:  # the run layer's package (beyondbp.run, renamed beyondbp.training)
    from beyondbp.training import state as state_mod
except ImportError:
    from beyondbp.run import state as state_mod
from beyondbp.study.inspection import check_study
from beyondbp.study.spec import load_spec
from beyondbp.study.store import Owner, Store

BASE = 'model = "mlp"\ndata = "mnist1d"\ndata_options = {num_samples = 200}\nsteps = 2\nmodel_options = {widths = [8]}\n'


def write_spec(path: Path, axes: str = "seed = [0, 1]", execution: str = "", base: str = BASE) -> Path:
    text = f'[study]\nname = "dmg"\n\n[base]\n{base}\n[axes]\n{axes}\n'
    if execution:
        text += f"\n[execution]\n{execution}\n"
    path.write_text(text)
    return path


def fake_result(loss: float) -> dict:
    return {"status": "ok", "final": {"test_loss": loss, "test_accuracy": 0.4}, "n_params": 418,
            "flops_per_step": 1000, "steps": 2, "eval_flops": 77, "diverged_at_step": None, "history": []}


def populate(spec_path: Path, store_path: Path | None = None) -> Path:
    """A store holding every run of the spec, done (with made-up results, no training)."""
    spec = load_spec(spec_path)
    store_path = store_path or spec_path.with_suffix(".db")
    with Store(store_path, create=True, study=spec.name) as store:
        store.add_runs(spec.runs())
        me = Owner.new()
        n = 0
        while (claimed := store.claim(me, 60)) is not None:
            n += 1
            store.finish(me, claimed["id"], {"result": fake_result(1.0 + 0.1 * n), "wall_time": 0.5, "host": "h",
                                             "versions": {"beyondbp": "0", "torch": "2", "python": "3"}})
    return store_path


def cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tamper(store_path: Path, *statements: str) -> None:
    conn = sqlite3.connect(store_path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def study(tmp_path):
    spec = write_spec(tmp_path / "s.toml")
    return spec, populate(spec)


# -- a damaged page ------------------------------------------------------------------------------
def test_a_damaged_page_fails_check_and_the_other_commands_refuse_the_store(study, tmp_path, capsys):
    spec, store_path = study
    code, out, _ = cli(capsys, "study", "check", spec)
    assert code == 0 and "is sound" in out
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_runs_1'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(store_path, "r+b") as fh:  # garbage over the page, past its 8-byte header
        fh.seek((page - 1) * size + 8)
        fh.write(b"\xde\xad\xbe\xef" * ((size - 8) // 4))
    before = store_path.read_bytes()

    code, out, err = cli(capsys, "study", "check", spec)
    assert code == EXIT_CHECK_FAILED == 5 and err == ""
    found = [line for line in out.splitlines() if line.startswith("SQLite's")]
    assert len(found) == 1 and "check failed" in found[0] and f"page {page}" in found[0]
    for command in (["run", "--quiet"], ["status"], ["report", "--out", tmp_path / "r", "--bootstrap", "10"]):
        code, _, err = cli(capsys, "study", *command, spec)
        line = one_error(err)
        assert code == 2 and str(store_path) in line and "is damaged" in line and "study check" in line, command
        assert "backup" in line  # how to recover
    assert store_path.read_bytes() == before and not (tmp_path / "r").exists()


def test_check_has_its_own_documented_exit_status(study, capsys):
    spec, store_path = study
    tamper(store_path, "DELETE FROM runs WHERE position = 0")
    code, out, _ = cli(capsys, "study", "check", spec)
    assert code == 5 and "missing from the store" in out
    code, out, _ = cli(capsys, "study", "check", "--help")
    assert code == 0 and "Exit 5" in " ".join(out.split())
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "5 `study check` found problems" in " ".join(readme.split())


# -- dropped tables and columns --------------------------------------------------------------------
@pytest.mark.parametrize("statement, what", [
    ("DROP TABLE attempts", "table 'attempts' is missing"),
    ("ALTER TABLE runs DROP COLUMN final", "table 'runs' lacks the column final"),
])
def test_dropped_tables_and_columns_are_refused_in_one_sentence(study, tmp_path, capsys, statement, what):
    spec, store_path = study
    tamper(store_path, statement)
    for command in (["run", "--quiet"], ["status"], ["report", "--out", tmp_path / "r", "--bootstrap", "10"]):
        code, _, err = cli(capsys, "study", *command, spec)
        line = one_error(err)
        assert code == 2 and what in line and str(store_path) in line, (command, line)
    code, out, _ = cli(capsys, "study", "check", spec)
    assert code == 5 and any(what in line for line in out.splitlines())


# -- rows that do not parse ------------------------------------------------------------------------
def test_rows_with_non_json_config_or_result_are_refused_naming_the_run(study, tmp_path, capsys):
    spec, store_path = study
    runs = load_spec(spec).runs()
    tamper(store_path, f"UPDATE runs SET result = '{{not json' WHERE id = '{runs[0].id}'")
    code, _, err = cli(capsys, "study", "report", spec, "--out", tmp_path / "r", "--bootstrap", "10")
    line = one_error(err)
    assert code == 2 and runs[0].id in line and "result" in line and "not JSON" in line
    code, out, _ = cli(capsys, "study", "check", spec)
    assert code == 5 and any(runs[0].id in x and "its result is not JSON" in x for x in out.splitlines())

    tamper(store_path, f"UPDATE runs SET status = 'pending', config = 'garbage' WHERE id = '{runs[1].id}'")
    code, _, err = cli(capsys, "study", "run", spec, "--quiet")
    line = one_error(err)
    assert code == 2 and runs[1].id in line and "config" in line


def test_unknown_statuses_and_malformed_results_are_skipped_with_a_warning(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.toml", axes="seed = [0, 1, 2, 3]")
    store_path = populate(spec)
    runs = load_spec(spec).runs()
    tamper(store_path,
           f"UPDATE runs SET status = 'finished' WHERE id = '{runs[0].id}'",
           f"UPDATE runs SET result = '[1, 2]' WHERE id = '{runs[1].id}'",
           f"UPDATE runs SET result = '{{}}' WHERE id = '{runs[2].id}'")

    code, out, err = cli(capsys, "study", "status", spec, "--json")
    assert code == 0 and "warning: 1 run of the spec skipped" in err and "unknown" in err
    import json

    status = json.loads(out)
    assert status["unknown_status"] == 1 and status["counts"]["done"] == 3 and "finished" not in status["counts"]

    code, out, err = cli(capsys, "study", "report", spec, "--out", tmp_path / "r", "--bootstrap", "10")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0, err
    assert any("unknown status 'finished'" in w for w in warnings)
    assert any("result is not a JSON object" in w for w in warnings)
    assert any("1 done run left out of the fits" in w for w in warnings)
    assert "2 done runs of 4 reported" in out and "not run yet" not in out

    code, _, err = cli(capsys, "study", "run", spec, "--quiet")
    assert code == 0 and "warning: 1 run of the spec skipped" in err


# -- a deleted row --------------------------------------------------------------------------------
def test_a_deleted_done_row_is_run_again_with_its_attempts_continuing(study, capsys):
    spec, store_path = study
    runs = load_spec(spec).runs()
    tamper(store_path, f"DELETE FROM runs WHERE id = '{runs[0].id}'")
    code, out, err = cli(capsys, "study", "run", spec)
    assert code == 0, err
    assert "ran 1 of 2 runs (1 added to the store)" in out
    with Store(store_path) as store:
        records = {r["id"]: r for r in store.records()}
        attempts = [a for a in store.attempts() if a["run_id"] == runs[0].id]
    assert records[runs[0].id]["status"] == "done" and records[runs[0].id]["attempts"] == 2
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "lost"), (2, "done")]
    assert records[runs[0].id]["result"]["steps"] == 2 and records[runs[0].id]["result"]["history"]  # really trained
    code, out, _ = cli(capsys, "study", "check", spec)
    assert code == 0 and "is sound" in out


def test_a_deleted_running_row_is_added_again_without_a_constraint_error(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", axes="seed = [0]"))
    with Store(tmp_path / "s.db", create=True, study="dmg") as store:
        store.add_runs(spec.runs())
        me = Owner.new()
        assert store.claim(me, 60)["attempt"] == 1
        store._conn.execute("DELETE FROM runs")
        assert store.add_runs(spec.runs()) == [spec.runs()[0].id]
        again = store.claim(me, 60)
        assert again["attempt"] == 2
    assert check_study(spec, tmp_path / "s.db") == []


# -- folders in the way, devices, missing folders --------------------------------------------------
@pytest.mark.parametrize("folder, execution", [("s.states", ""), ("s.models", "keep_models = true")])
def test_a_regular_file_where_a_run_folder_goes_is_refused_before_the_store_is_created(tmp_path, capsys, folder, execution):
    spec = write_spec(tmp_path / "s.toml", execution=execution)
    (tmp_path / folder).write_text("mine")
    code, _, err = cli(capsys, "study", "run", spec, "--quiet")
    line = one_error(err)
    assert code == 2 and folder in line and "not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.toml", folder])
    assert (tmp_path / folder).read_text() == "mine"


def test_a_device_this_machine_lacks_is_refused_before_the_store_is_created(tmp_path, capsys):
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    spec = write_spec(tmp_path / "s.toml", execution=f'device = "{missing}"')
    code, _, err = cli(capsys, "study", "run", spec, "--quiet")
    line = one_error(err)
    assert code == 2 and "[execution] device" in line and "not available on this machine" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    code, _, err = cli(capsys, "study", "check", spec)  # reading a study run elsewhere is allowed
    assert code == 2 and "does not exist" in err


def test_train_refuses_a_state_file_in_a_missing_folder_and_creates_nothing(tmp_path, capsys):
    state = tmp_path / "no" / "such" / "s.pt"
    code, _, err = cli(capsys, "train", "--model", "mlp", "--data", "mnist1d", "--data-opt", "num_samples=200",
                       "--steps", "2", "--state", state, "--checkpoint-every", "1")
    line = one_error(err)
    assert code == 2 and "does not exist" in line and str(state) in line
    assert not (tmp_path / "no").exists()
    spec = write_spec(tmp_path / "s.toml")  # the same rule as --store
    code, _, err = cli(capsys, "study", "run", spec, "--store", tmp_path / "none" / "s.db")
    assert code == 2 and "does not exist" in one_error(err) and not (tmp_path / "none").exists()


# -- hostile inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [40, 20_000])
def test_deeply_nested_toml_is_one_sentence(tmp_path, capsys, depth):
    spec = tmp_path / "s.toml"
    spec.write_text('[study]\nname = "x"\n[base]\nmodel_options = {widths = ' + "[" * depth + "]" * depth + "}\n")
    for command in ("run", "check"):
        code, _, err = cli(capsys, "study", command, spec)
        line = one_error(err)
        assert code == 2 and "s.toml" in line and "nest" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_state_file_with_a_header_but_missing_contents_is_refused(tmp_path, capsys):
    config = RunConfig(model="mlp", data="mnist1d", data_options={"num_samples": 200}, steps=2)
    path = tmp_path / "s.pt"
    torch.save({"format": state_mod.FORMAT, "version": state_mod.VERSION, "run_id": config.run_id}, path)
    with pytest.raises(ConfigError, match=r"is damaged \(its 'config' entry is missing\); delete it"):
        state_mod.read(path, config.run_id)
    code, _, err = cli(capsys, "train", "--model", "mlp", "--data", "mnist1d", "--data-opt", "num_samples=200",
                       "--steps", "2", "--state", path, "--checkpoint-every", "1")
    assert code == 2 and "is damaged" in one_error(err) and path.exists()  # the user's file stays


def test_a_state_file_whose_entries_lack_their_keys_is_refused(tmp_path):
    config = RunConfig(model="mlp", data="mnist1d", data_options={"num_samples": 200}, steps=4,
                       state=str(tmp_path / "s.pt"), checkpoint_every=2)
    payload = {"run_id": config.run_id, "config": {}, "model": {}, "rule_state": {}, "generators": [], "learner": {},
               "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "data": {},
               "rng": {"python": None, "numpy": None, "torch": None},
               "loop": {"step": 2}, "meter": {"flops": 0, "effective_flops": 0, "untimed": [], "times": []}}
    state_mod.write(config.state, payload)
    with pytest.raises(ConfigError, match=r"its 'loop' entry lacks 'periods'"):
        run(config)
    payload["loop"] = {k: 0 for k in state_mod.CONTENTS["loop"][1]}  # all keys, wrong contents: refused too
    state_mod.write(config.state, payload)
    with pytest.raises(ConfigError, match="is damaged and cannot be restored"):
        run(config)


def test_report_into_a_folder_that_cannot_be_made_is_one_sentence(study, capsys):
    spec, _ = study
    code, _, err = cli(capsys, "study", "report", spec, "--out", "/proc/x", "--bootstrap", "10")
    assert code == 2 and "/proc/x" in one_error(err)


def test_fit_refuses_a_csv_that_is_not_utf8(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_bytes(b"N,D,loss\n1,2,3\n1,2,\xff\n")
    code, _, err = cli(capsys, "study", "fit", csv, "--params", "N", "--tokens", "D")
    line = one_error(err)
    assert code == 2 and "line 3" in line and "0xff" in line and "UTF-8" in line


# -- read-only commands leave no files -------------------------------------------------------------
def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("legacy_wal", [False, True])
def test_read_only_commands_leave_no_files_beside_the_store(tmp_path, capsys, legacy_wal):
    spec = write_spec(tmp_path / "s.toml")
    folder = tmp_path / "store"
    folder.mkdir()
    store_path = populate(spec, folder / "s.db")
    if legacy_wal:  # a store as an older beyondbp left it: still in WAL mode, no -wal file
        tamper(store_path, "PRAGMA journal_mode = WAL")
        assert store_path.read_bytes()[18] == 2
    before = _listing(folder)
    assert before == ["s.db"]
    content = store_path.read_bytes()
    for command in (["status"], ["status", "--json"], ["check"],
                    ["report", "--out", tmp_path / "r", "--bootstrap", "10"]):
        code, _, err = cli(capsys, "study", *command, spec, "--store", store_path)
        assert code == 0, (command, err)
        assert _listing(folder) == before, command
    assert store_path.read_bytes() == content


def test_a_reader_sees_what_a_writer_has_committed_while_it_runs(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml"))
    with Store(tmp_path / "s.db", create=True, study="dmg") as writer:
        writer.add_runs(spec.runs())
        me = Owner.new()
        claimed = writer.claim(me, 60)
        writer.finish(me, claimed["id"], {"result": fake_result(1.0), "wall_time": 0.1, "host": "h", "versions": {}})
        files = _listing(tmp_path)
        with Store(tmp_path / "s.db") as reader:  # the writer's WAL is shared, not bypassed
            assert {r["id"]: r["status"] for r in reader.records()} == {
                claimed["id"]: "done", spec.runs()[1].id: "pending"}
        assert _listing(tmp_path) == files
    assert _listing(tmp_path) == ["s.db", "s.toml"]  # the writer closed last: back to rollback mode
