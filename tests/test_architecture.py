"""The package's import graph keeps its shape (issue 10): no cycles, analysis depends on rules
and never the reverse, models know no rule.

The graph is read with ``ast`` from every module of ``src/beyondbp``, counting imports inside
functions too (a lazy import is still a dependency) and leaving out ``if TYPE_CHECKING:``
blocks (annotations only, never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "beyondbp"


def module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                candidates = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            else:
                continue
            for target in candidates:
                # `import beyondbp.x.y` depends on the deepest module of the package it names
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target.startswith("beyondbp") and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_reader_sees_the_imports_it_should():
    graph = import_graph()
    assert "beyondbp.rules.base" in graph["beyondbp.rules.backprop"]
    assert "beyondbp.training" in graph["beyondbp.cli.runs"]  # imported inside a function
    tree = ast.parse("import a\nif TYPE_CHECKING:\n    import b\nelse:\n    import c\n")
    runtime = {a.name for n in _runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert runtime == {"a", "c"}  # annotations-only imports are not dependencies
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_import_graph_has_no_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("low, high", [("beyondbp.rules", "beyondbp.analysis"), ("beyondbp.models", "beyondbp.rules")])
def test_layers_depend_one_way(low, high):
    """``rules`` never imports ``analysis``; ``models`` never import ``rules``."""
    offenders = {
        name: sorted(t for t in targets if t == high or t.startswith(high + "."))
        for name, targets in import_graph().items()
        if name == low or name.startswith(low + ".")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


#: What a rule module may import from the package (besides its contract-suite hook, below).
RULE_MAY_IMPORT = {"beyondbp.rules.base", "beyondbp.rules.common", "beyondbp.rules._autograd", "beyondbp.errors"}
#: The shared modules of ``rules/`` (not rules themselves).
RULE_INFRASTRUCTURE = {"beyondbp.rules", *RULE_MAY_IMPORT}
#: Pure plasticity equations shared by a rule and the families that reuse them (issue 22, item 6):
#: rules may import them, and they import nothing from the package.
EQUATIONS = "beyondbp.plasticity"


def is_equations(module: str) -> bool:
    return module == EQUATIONS or module.startswith(EQUATIONS + ".")


def rule_modules() -> list[str]:
    return sorted(m for m in module_files() if m.startswith("beyondbp.rules.") and m not in RULE_INFRASTRUCTURE)


def module_level_graph() -> dict[str, set[str]]:
    """Like :func:`import_graph` but without imports made inside ``example_model``, the
    contract suite's hook that may build a model from :mod:`beyondbp.models` for the rule."""
    files = module_files()
    saved = {}
    for name in rule_modules():
        tree = ast.parse(files[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "example_model":
                node.body = [ast.Pass()]
        saved[name] = tree
    graph = import_graph()
    for name, tree in saved.items():
        package = name.split(".")[:-1]
        targets = set()
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    t = f"{module}.{a.name}" if f"{module}.{a.name}" in files else module
                    while t and t not in files:
                        t = t.rpartition(".")[0]
                    if t != name:
                        targets.add(t)
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                targets |= {n for n in names if n.startswith("beyondbp")}
        graph[name] = targets
    return graph


def test_rules_are_leaves():
    """A rule imports only base, common, _autograd, errors and the shared equations of
    ``beyondbp.plasticity``: no rule imports another rule."""
    assert len(rule_modules()) >= 7 and "beyondbp.rules.feedback_alignment" in rule_modules()
    graph = module_level_graph()
    offenders = {m: sorted(t for t in graph[m] - RULE_MAY_IMPORT if not is_equations(t)) for m in rule_modules()}
    assert {m: v for m, v in offenders.items() if v} == {}
    assert "beyondbp.plasticity.softhebb" in graph["beyondbp.rules.softhebb"]


def test_shared_equations_are_a_leaf_imported_openly():
    """``beyondbp.plasticity`` (pure equations) imports nothing from the package; SoftHebb's
    equations are imported from there by the rule and by test-time adaptation's NHL."""
    graph = import_graph()
    equations = [m for m in graph if is_equations(m)]
    assert "beyondbp.plasticity.softhebb" in equations
    offenders = {m: sorted(t for t in graph[m] if not is_equations(t)) for m in equations}
    assert {m: v for m, v in offenders.items() if v} == {}
    assert "beyondbp.plasticity.softhebb" in graph["beyondbp.adapt.methods"]


def registry_string_lookups() -> list[str]:
    """Calls ``rule_class("<name>")`` with a literal rule name in the package outside ``rules/``:
    reaching one particular rule's class (and the code it carries) through the registry.
    (``rules.get("backprop")``, a rule built to be attached, is a use of the registry.)"""
    found = []
    for name, path in module_files().items():
        if name.startswith("beyondbp.rules"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                continue
            func = node.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) == "rule_class":
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_rule_is_reached_by_a_registry_string_lookup():
    """Code outside ``rules/`` that needs one rule's equations imports them openly from
    ``beyondbp.plasticity`` instead of ``rules.rule_class("softhebb").plasticity``."""
    assert registry_string_lookups() == []
    import beyondbp as bbp

    softhebb = bbp.rules.rule_class("softhebb")
    assert not {"soft_wta", "plasticity", "scaled_update"} & set(vars(softhebb))


#: Rule modules not named after one registered rule: the long name of a one-rule module, or
#: what a module of several rules holds (FA and its sign-symmetry and Kolen-Pollack relatives).
RULE_MODULE_NAMES = {
    "forward_forward": {"ff"}, "feedback_alignment": {"fa", "usf", "brsf", "frsf", "kp"}, "nalsm": {"nalsm", "stdp"},
    "elm_online": {"elm-online"},
}


def test_rule_files_are_named_after_their_rule():
    """``rules/<name>.py`` holds the rule registered as ``<name>`` (issue 22: ``direct.py`` held
    dfa, ``product.py`` pfa, ``inference.py`` il), and every rule module holds a registered rule
    (no shim left behind by a rename)."""
    import beyondbp as bbp

    held: dict[str, set[str]] = {}
    for name in bbp.rules.names():
        held.setdefault(bbp.rules.rule_class(name).__module__, set()).add(name)
    misnamed = {
        module: sorted(names)
        for module, names in held.items()
        if names != {module.rsplit(".", 1)[-1]} and RULE_MODULE_NAMES.get(module.rsplit(".", 1)[-1]) != names
    }
    assert misnamed == {}
    assert sorted(held) == rule_modules()


def test_nothing_outside_rules_reaches_into_a_rule_module():
    """Outside ``rules/``, code uses the registry (``beyondbp.rules``) and the shared modules,
    never a particular rule's module."""
    rules = set(rule_modules())
    offenders = {
        name: sorted(targets & rules)
        for name, targets in import_graph().items()
        if not name.startswith("beyondbp.rules")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_rule_test_kit_is_a_top_floor():
    """``beyondbp.testing`` (the rule contract, issue 22; a package: kinds, checks, kit) is for
    test suites: nothing else in the package imports it, and it reaches rules through the
    registry only."""
    graph = import_graph()
    kit = {m for m in graph if m == "beyondbp.testing" or m.startswith("beyondbp.testing.")}
    assert {"beyondbp.testing", "beyondbp.testing.kit", "beyondbp.testing.checks"} <= kit
    reached = set().union(*(graph[m] for m in kit)) - kit
    assert "beyondbp.rules" in reached
    importers = sorted(m for m, targets in graph.items() if m not in kit and targets & kit)
    assert importers == []
    assert not reached & set(rule_modules())


def test_models_know_no_rule():
    """No model defines a method or attribute named after a rule (``dfa_points``,
    ``softhebb_defaults``): what rules need comes through ``structure()`` or module types."""
    import beyondbp as bbp

    rule_names = {n for n in bbp.rules.names() if len(n) >= 3}  # "ff" is also d_ff
    offenders = []
    for name, path in module_files().items():
        if not name.startswith("beyondbp.models"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            ident = None
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                ident = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                ident = node.attr
            if ident and rule_names & set(ident.lower().split("_")):
                offenders.append(f"{name}: {ident}")
    assert offenders == []


def test_spiking_is_a_leaf():
    """``beyondbp.spiking`` (neurons, surrogates, encoders) imports only errors and options from
    the package: models and the run loop use it, never the reverse, and no rule imports it."""
    graph = import_graph()
    spiking = [m for m in graph if m == "beyondbp.spiking" or m.startswith("beyondbp.spiking.")]
    assert "beyondbp.spiking.neurons" in spiking
    offenders = {
        m: sorted(t for t in graph[m] if not t.startswith("beyondbp.spiking") and t not in ("beyondbp.errors", "beyondbp.options"))
        for m in spiking
    }
    assert {m: v for m, v in offenders.items() if v} == {}
    rules_using = sorted(m for m, targets in graph.items()
                         if m.startswith("beyondbp.rules") and any(t.startswith("beyondbp.spiking") for t in targets))
    assert rules_using == []


def test_one_home_for_the_run_layer():
    """The run layer lives in ``beyondbp.training`` alone: no re-export shim (the former
    ``beyondbp.train``), and it never imports upward (study, analysis, cli, reporting)."""
    files = module_files()
    assert "beyondbp.train" not in files and "beyondbp.run" not in files
    graph = import_graph()
    training = [m for m in graph if m == "beyondbp.training" or m.startswith("beyondbp.training.")]
    assert "beyondbp.training.loop" in training
    upward = ("beyondbp.study", "beyondbp.analysis", "beyondbp.cli", "beyondbp.reporting", "beyondbp.continual", "beyondbp.adapt")
    offenders = {m: sorted(t for t in graph[m] if t.startswith(upward)) for m in training}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_top_level_exports_the_run_layer_without_shadowing_a_package():
    import importlib
    import inspect

    import beyondbp as bbp
    from beyondbp.study.compare import compare
    from beyondbp.training import RunConfig, RunResult, run

    assert bbp.run is run and inspect.isfunction(bbp.run)
    assert bbp.RunConfig is RunConfig and bbp.RunResult is RunResult and bbp.compare is compare
    assert importlib.import_module("beyondbp.training") is bbp.training
    assert {"run", "RunConfig", "RunResult", "compare", "training"} <= set(bbp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bbp.nope  # noqa: B018


def test_importing_the_package_does_not_import_torch():
    """``import beyondbp`` is cheap: torch and the modules that need it load on first use."""
    import subprocess
    import sys

    code = "import sys, beyondbp; print('torch' in sys.modules); beyondbp.RunConfig; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_every_submodule_loads_on_first_access():
    """``bbp.sparsity.SET`` (as the README writes it) works in a fresh interpreter."""
    import subprocess
    import sys

    code = "import beyondbp as bbp; print(bbp.sparsity.SET.__name__, bbp.spiking.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["SET", "beyondbp.spiking"]


def test_reporting_is_the_top_floor():
    """Every renderer (Markdown, PNG, HTML, the report files) lives in ``beyondbp.reporting``
    (issue 22): only the command line imports it, and it imports no CLI. The modules that used to
    render beside their computing are gone (no shim left behind)."""
    files = module_files()
    graph = import_graph()
    reporting = sorted(m for m in graph if m == "beyondbp.reporting" or m.startswith("beyondbp.reporting."))
    assert {"beyondbp.reporting.runs", "beyondbp.reporting.study", "beyondbp.reporting.similarity"} <= set(reporting)
    importers = sorted(
        m for m, targets in graph.items()
        if m not in reporting and any(t == "beyondbp.reporting" or t.startswith("beyondbp.reporting.") for t in targets)
    )
    assert all(m == "beyondbp.cli" or m.startswith("beyondbp.cli.") for m in importers), importers
    assert importers  # the command line does render through it
    upward = {m: sorted(t for t in graph[m] if t == "beyondbp.cli" or t.startswith("beyondbp.cli.")) for m in reporting}
    assert {m: v for m, v in upward.items() if v} == {}
    gone = {"beyondbp.report", "beyondbp.study.report", "beyondbp.study.analysis", "beyondbp.study.representations",
            "beyondbp.adapt.report"}
    assert gone & set(files) == set()


def test_one_name_one_module():
    """A module's name says what it holds: no two ``report.py``, ``analysis`` or
    ``representations.py`` in the package (issue 22). ``reporting/<name>.py`` renders what
    ``<name>`` computes (``reporting/study.py`` a study's report), so its names mirror others."""
    names = [m.rsplit(".", 1)[-1] for m in module_files() if not m.startswith("beyondbp.reporting")]
    assert "report" not in names
    repeated = sorted({n for n in names if names.count(n) > 1} & {"analysis", "representations", "similarity", "verdict"})
    assert repeated == [], repeated


def test_one_writer_of_output_folders():
    """Every command's output folder is written by ``files.write_directory`` (all or nothing,
    the user's files never deleted); nothing else builds one from the temporary-directory parts."""
    offenders = []
    for name, path in module_files().items():
        if name == "beyondbp.files":
            continue
        text = path.read_text(encoding="utf-8")
        if "temporary_directory(" in text or "publish_directory(" in text:
            offenders.append(name)
    assert offenders == []


def test_the_command_line_is_split_by_command_group():
    files = {name: path for name, path in module_files().items() if name.startswith("beyondbp.cli")}
    assert {"beyondbp.cli", "beyondbp.cli.runs", "beyondbp.cli.study", "beyondbp.cli.adapt", "beyondbp.cli.continual"} <= set(files)
    long = {name: n for name, path in files.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def test_no_source_file_is_longer_than_700_lines():
    long = {name: n for name, path in module_files().items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 700}
    assert long == {}
