"""The README as a new user reads it: setup before the commands, links that exist in a clone,
and the two commands CI copies out of it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _ci_command(key: str) -> str:
    """The command .ci/run takes: the first line of the first bash block after the line
    starting with ``key`` (the awk of .ci/run's readme_command, run on the README)."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    program = re.search(r"awk -v key=\"\$1\" '(.*?)' \"\$REPO/README.md\"", script, re.S)
    assert program, ".ci/run no longer extracts the commands with awk; update this test"
    out = subprocess.run(["awk", "-v", f"key={key}", program.group(1), str(ROOT / "README.md")],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_readme_sets_beyondbp_before_the_two_commands():
    export = README.find("export BEYONDBP=")
    clone = README.find("git clone")
    main, tests = README.find("\nRun the main job"), README.find("\nRun the tests")
    assert 0 <= clone < export < main < tests, "git clone and export BEYONDBP must come before the two commands"
    # both sit in a bash block, so they can be copied like the commands
    block = README[README.find("```bash", clone - 200):main]
    assert "git clone" in block and "export BEYONDBP=" in block


@pytest.mark.parametrize("key, expected", [("Run the main job", "beyondbp compare"), ("Run the tests", "python -m pytest")])
def test_ci_extracts_the_two_commands_and_they_stop_on_an_unset_beyondbp(key, expected):
    command = _ci_command(key)
    assert command.startswith("pip install torch==2.13.0 -e ") and expected in command
    # an unset BEYONDBP stops the command with a sentence, not pip's "not a valid editable requirement"
    first = command.split(" && ")[0].replace("pip install", "echo pip install", 1)
    done = subprocess.run(["bash", "-c", first], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "set BEYONDBP to the path of your clone" in done.stderr


def test_readme_links_exist_in_a_clone():
    assert "../shared" not in README
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert "docs/design.md" in targets
    missing = [t for t in targets if not re.match(r"[a-z]+://", t) and not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to files that are not in the repository: {missing}"
