"""Install paths: every distribution the package imports is declared, every submodule imports
without the optional extras, and the package data a plain install needs is shipped.

The first release imported ``click`` directly while only ``typer`` was declared; a typer release
that stopped pulling click in broke every fresh install. These tests fail on such a change.
"""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import pkgutil
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import beyondbp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "beyondbp"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0])


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _top_level_imports(path: Path) -> set[str]:
    """Absolute top-level module names imported anywhere in ``path`` (relative imports skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _distributions_of(module: str) -> set[str]:
    return {_norm(d) for d in packages_distributions().get(module, [])}


def test_every_imported_distribution_is_declared():
    project = _project()
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in project.get("optional-dependencies", {}).items()}
    declared = core.union(*extras.values())
    undeclared: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for module in _top_level_imports(path):
            if module == "beyondbp" or module in sys.stdlib_module_names or module == "__future__":
                continue
            dists = _distributions_of(module)
            where = str(path.relative_to(ROOT))
            if not dists:
                unknown.setdefault(module, []).append(where)
            elif not dists & declared:
                undeclared.setdefault(f"{module} ({', '.join(sorted(dists))})", []).append(where)
    assert not unknown, f"imports that no installed distribution provides: {unknown}"
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_checker_catches_an_undeclared_import(tmp_path):
    """The check above is not vacuous: a file importing pytest (dev-only) is flagged."""
    probe = tmp_path / "probe.py"
    probe.write_text("import pytest\nfrom click import echo\nimport json\nfrom . import sibling\n")
    assert _top_level_imports(probe) == {"pytest", "click", "json"}
    assert "pytest" in _distributions_of("pytest")
    core = {_requirement_name(r) for r in _project()["dependencies"]}
    assert "pytest" not in core and "click" in core


def test_click_and_typer_are_declared_as_core_dependencies():
    core = {_requirement_name(r) for r in _project()["dependencies"]}
    assert {"typer", "click", "rich", "torch"} <= core


def _extra_modules() -> set[str]:
    """Top-level modules provided by the optional extras' distributions (e.g. ``ray``)."""
    project = _project()
    extra_dists = {
        _requirement_name(r)
        for name, reqs in project.get("optional-dependencies", {}).items()
        if name != "dev"
        for r in reqs
    }
    modules = {m for m, dists in packages_distributions().items() if {_norm(d) for d in dists} & extra_dists}
    return modules | extra_dists  # the distribution name doubles as the module name when not installed


def test_every_submodule_imports_without_the_optional_extras():
    blocked = sorted(_extra_modules() | {"pytest"})
    names = [m.name for m in pkgutil.walk_packages(beyondbp.__path__, "beyondbp.")]
    assert "beyondbp.cli" in names and "beyondbp.data.text" in names
    script = f"""
import importlib, importlib.abc, sys
BLOCKED = set({blocked!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{{name}} is blocked (optional extra)')
        return None
sys.meta_path.insert(0, Block())
for name in {names!r}:
    importlib.import_module(name)
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_the_import_blocker_really_blocks():
    script = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'json':
            raise ImportError('blocked')
sys.modules.pop('json', None)
sys.meta_path.insert(0, Block())
try:
    import json
except ImportError:
    print('blocked')
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "blocked"


def test_packaged_corpus_is_declared_as_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    patterns = data["beyondbp.data"]
    shipped = list((SRC / "data" / "corpora").glob("*.xz"))
    assert shipped and all(any(p.relative_to(SRC / "data").match(pat) for pat in patterns) for p in shipped)
    assert importlib.resources.files("beyondbp.data").joinpath("corpora", "tinyshakespeare.txt.xz").is_file()
