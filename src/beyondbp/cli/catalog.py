"""``beyondbp rules``, ``beyondbp models``, ``beyondbp data``: what is registered, with its options.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .._lazy import lazy
from .common import DebugOpt, _console, app

# imported on first use, so that --help and usage errors answer without importing torch
data_mod = lazy("beyondbp.data")
models_mod = lazy("beyondbp.models")
rules_mod = lazy("beyondbp.rules")


# -- commands -----------------------------------------------------------------------------------
@app.command("rules")
def rules_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (as in the README).")] = False,
    options: Annotated[Optional[str], typer.Option("--options", help="List the options of rule NAME: what each accepts, its default and "
        "help.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the registered rules: name, family, description, paper (or one rule's options)."""
    if options is not None:
        _print_rule_options(options, markdown)
        return
    rows = rules_mod.describe()
    if markdown:
        typer.echo(rules_markdown(rows))
        return
    table = Table(title="beyondbp rules")
    for col in ("name", "family", "description", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["family"], r["summary"], r["paper"])
    _console().print(table)


def _print_rule_options(name: str, markdown: bool) -> None:
    cls = rules_mod.rule_class(name)
    rows = cls.describe_options()
    if markdown:
        lines = ["| option | accepts | default | help |", "|---|---|---|---|"]
        lines += [
            "| " + " | ".join(c.replace("|", "\\|") for c in (f"`{r['name']}`", r["accepts"], f"`{r['default']}`", r["help"])) + " |"
            for r in rows
        ]
        typer.echo("\n".join(lines) if rows else f"rule '{name}' takes no options")
        return
    if not rows:
        typer.echo(f"rule '{name}' takes no options")
        return
    table = Table(title=f"options of rule {name} (--rule-opt KEY=VALUE, values as JSON)")
    for col in ("option", "accepts", "default", "help"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["accepts"], r["default"], r["help"])
    _console().print(table)


def _print_catalogue(kind: str, registry: Any, name: str | None, markdown: bool) -> None:
    """``beyondbp models`` / ``beyondbp data``: every entry of ``registry`` (a name, a line, its
    options), or with ``name`` its options as ``rules --options`` lists a rule's."""
    flag = {"model": "--model-opt", "data set": "--data-opt"}[kind]
    if name is None:
        rows = registry.describe()
        cols, cells = (kind.split()[0], "description", "options"), [(r["name"], r["summary"], r["options"] or "-") for r in rows]
        title = f"beyondbp {'models' if kind == 'model' else 'data'} (options: --options NAME)"
    else:
        rows = registry.describe_options(name)
        if not rows:
            typer.echo(f"{kind} '{name}' takes no options")
            return
        cols, cells = ("option", "accepts", "default", "help"), [(r["name"], r["accepts"], r["default"], r["help"]) for r in rows]
        title = f"options of {kind} {name} ({flag} KEY=VALUE, values as JSON)"
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        typer.echo("\n".join(lines))
        return
    table = Table(title=title)
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in cells:
        table.add_row(*row)
    _console().print(table)


@app.command("models")
def models_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    options: Annotated[Optional[str], typer.Option("--options", help="List the options of model NAME: what each accepts, its default and "
        "help.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the models (--model NAME): name, description, options (or one model's options)."""
    _print_catalogue("model", models_mod, options, markdown)


@app.command("data")
def data_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    options: Annotated[Optional[str], typer.Option("--options", help="List the options of data set NAME: what each accepts, its default and "
        "help.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the data sets (--data NAME): name, description, options (or one set's options)."""
    _print_catalogue("data set", data_mod, options, markdown)


def rules_markdown(rows: list[dict[str, str]] | None = None) -> str:
    """The README's table of rules, generated from ``rules.describe()``."""
    rows = rules_mod.describe() if rows is None else rows
    lines = ["| rule | family | description | paper |", "|---|---|---|---|"]
    for r in rows:
        cells = [f"`{r['name']}`", r["family"], r["summary"], r["paper"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
