"""bench/critical_periods_authors.py (the driver of the authors' script): its config and its checks
of the path it is given. The authors' code is not needed: nothing here runs it."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "critical_periods_authors.py"


@pytest.fixture(scope="module")
def drv():
    spec = importlib.util.spec_from_file_location("bench_critical_periods_authors", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_is_the_issue_setting_with_one_deficit(drv):
    # every line is "key: <JSON scalar or list>" (valid YAML for their yaml.safe_load)
    text = drv.config_text(3, 40000, 2, "/tmp/out dir")
    cfg = {k: json.loads(v) for k, v in (line.split(": ", 1) for line in text.splitlines())}
    assert cfg["T_critical_list"] == [40000] and cfg["depth"] == 3 and cfg["seed"] == 2
    assert (cfg["ntrain_samples"], cfg["ntrain_samples2"], cfg["epoch_continue"]) == (1000, 1500, 30000)
    assert (cfg["sgd_lr"], cfg["init_scale"], cfg["initialization"], cfg["rank1"]) == (0.2, 0.001, "gaussian", 5)
    assert cfg["output_dir"] == "/tmp/out dir"


def test_script_folder_accepts_the_checkout_or_its_folder(drv, tmp_path):
    folder = tmp_path / "matrixcompletion"
    folder.mkdir()
    with pytest.raises(ValueError, match="holds no matrixcompletion/main-num-examples.py"):
        drv.script_folder(tmp_path)
    for name in ("main-num-examples.py", "model_utils.py"):
        (folder / name).write_text("")
    assert drv.script_folder(tmp_path) == folder
    assert drv.script_folder(folder) == folder


def test_a_wrong_path_exits_2_before_running_anything(drv, tmp_path, capsys):
    results = tmp_path / "theirs.jsonl"
    with pytest.raises(SystemExit) as exc:
        drv.main([str(tmp_path / "nowhere"), "--results", str(results)])
    assert exc.value.code == 2
    assert "holds no matrixcompletion/main-num-examples.py" in capsys.readouterr().err
    assert not results.exists()
