"""A script that starts beyondbp's local workers from its unguarded top level: every worker runs
the main script again as it starts (forkserver, spawn), so the library refuses it in one
sentence before anything is written, instead of the workers dying with multiprocessing's
bootstrapping traceback after the store was made (see ``interrupts.check_main_guarded``)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from beyondbp.errors import ConfigError
from beyondbp.interrupts import check_main_guarded

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

SPEC = """\
[study]
name = "guard"

[base]
model = "mlp"
data = "digits"
steps = 2
model_options = {widths = [8]}

[axes]
seed = [0, 1]
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_unguarded_study_script_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "tiny.toml").write_text(SPEC)
    proc = _run(tmp_path, """\
        print("script started", flush=True)
        from beyondbp.study.runner import run_study
        from beyondbp.study.spec import load_spec

        run_study(load_spec("tiny.toml"), "tiny.db", workers=1)
        """)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("beyondbp.errors.ConfigError: ")
    assert 'if __name__ == "__main__":' in last and f"line 5 of {tmp_path / 'user_script.py'}" in last
    assert "bootstrapping phase" not in proc.stderr and "BrokenProcessPool" not in proc.stderr
    assert proc.stdout.count("script started") == 1  # no worker ran the script again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml", "user_script.py"]  # nothing written


def test_guarded_call_passes(tmp_path):
    proc = _run(tmp_path, """\
        from beyondbp.interrupts import check_main_guarded

        def main():
            check_main_guarded()

        if __name__ == "__main__":
            main()
            check_main_guarded()
            print("ok")
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_worker_running_the_script_again_is_refused(monkeypatch):
    # what a worker meets when the driver could not read its script: the script running again
    # while the worker bootstraps
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(ConfigError, match=r'must sit under `if __name__ == "__main__":`, which the top level of '):
        check_main_guarded()


def test_unguarded_dry_run_starts_no_worker_and_is_not_refused(tmp_path):
    # `study run --dry-run` from a script: probes run in this process, no worker starts
    (tmp_path / "tiny.toml").write_text(SPEC)
    proc = _run(tmp_path, """\
        from beyondbp.study.inspection import dry_run
        from beyondbp.study.spec import load_spec

        plan = dry_run(load_spec("tiny.toml"), "tiny.db", workers=1, probe=False)
        print("to run", plan["to_run"])
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "to run 2"


def test_a_guard_joined_with_and_is_a_guard(tmp_path):
    proc = _run(tmp_path, """\
        import sys
        from beyondbp.interrupts import check_main_guarded

        if __name__ == "__main__" and len(sys.argv) >= 1:
            check_main_guarded()
            print("ok")
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_a_package_run_with_python_m_is_not_run_again_by_the_workers_so_not_refused(tmp_path):
    # multiprocessing never runs a package's __main__ again in a worker (`python -m pkg`)
    (tmp_path / "tiny.toml").write_text(SPEC)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "__init__.py").write_text("")
    (tmp_path / "exp" / "__main__.py").write_text(textwrap.dedent("""\
        print("script started", flush=True)
        from beyondbp.study.runner import run_study
        from beyondbp.study.spec import load_spec

        summary = run_study(load_spec("tiny.toml"), "tiny.db", workers=1)
        print("done", summary["counts"]["done"])
        """))
    proc = subprocess.run([sys.executable, "-m", "exp"], cwd=tmp_path, env={**ENV, "PYTHONPATH": f"{SRC}:{tmp_path}"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["script started", "done 2"]
