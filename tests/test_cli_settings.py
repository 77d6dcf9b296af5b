"""The run settings' flags are generated from their declarations (issue 22 item 2): one place
declares a setting's help and default, and ``train``/``compare`` show exactly that."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from beyondbp.cli.settings import RUN_FLAGS, check_switched, config_values, flag
from beyondbp.errors import ConfigError
from beyondbp.settings import RunSettings


def _help(command: str) -> str:
    out = subprocess.run([sys.executable, "-m", "beyondbp", command, "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "400"}).stdout
    return " ".join(out.split())


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_shared_run_setting_is_a_flag_with_its_declared_help(command):
    text = _help(command)
    for name in RUN_FLAGS:
        field = RunSettings.model_fields[name]
        assert flag(name) in text, name
        if name != "threads":  # threads adds what 0 means on the command line
            words = " ".join(str(field.description).split())
            assert words[0].upper() + words[1:] in text, name
    assert "Learning rate (default 0.001)" in text and "Training batch size (default 64)" in text
    assert "--checkpoint-every" in text if command == "train" else "--checkpoint-every" not in text


def test_flag_values_become_run_config_values():
    given = {name: None for name in RUN_FLAGS} | {"threads": 1, "diagnostics": False}
    assert config_values(given) == {"threads": 1}  # nothing else given: the declarations' defaults apply
    given |= {"threads": 0, "milestones": "0.25,0.5", "tokens": 2e6, "lr": 0.01, "diagnostics": True}
    assert config_values(given) == {"threads": None, "milestones": [0.25, 0.5], "tokens": 2_000_000, "lr": 0.01,
                                    "diagnostics": True}
    with pytest.raises(ConfigError, match="malformed --milestones 'a,b'"):
        config_values({"milestones": "a,b"})
    with pytest.raises(ConfigError, match=r"invalid --tokens 2\.5"):
        config_values({"tokens": 2.5})
    with pytest.raises(ConfigError, match="invalid --threads -1"):
        config_values({"threads": -1})


def test_switched_flags_need_their_switch():
    check_switched({"sparsity": "set", "epsilon": 5.0, "lr_schedule": "step", "gamma": 0.5})
    with pytest.raises(ConfigError, match="--epsilon and --zeta configure SET sparsity; add --sparsity set"):
        check_switched({"sparsity": None, "epsilon": 5.0, "zeta": 0.1})
    with pytest.raises(ConfigError, match="--gamma configure the step schedule; add --lr-schedule step"):
        check_switched({"lr_schedule": "cosine", "gamma": 0.5})
