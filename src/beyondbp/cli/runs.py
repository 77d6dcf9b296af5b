"""``beyondbp train``, ``beyondbp compare``, ``beyondbp sample``: one run, a comparison of rules, and
sampling from a trained language model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .._lazy import lazy
from ..errors import ConfigError
from .common import (
    _NO_RESUME,
    DataOpt,
    DataOptOpt,
    DebugOpt,
    DModelOpt,
    ModelOpt,
    ModelOptOpt,
    NHeadOpt,
    NLayerOpt,
    OutOverwriteOpt,
    OverwriteOpt,
    RuleOptOpt,
    _check_checkpoint,
    _check_out,
    _check_path_text,
    _console,
    _count,
    _diverged_line,
    _exit_if_diverged,
    _on_interrupt,
    _same_command,
    _sparsity_line,
    _spikes_line,
    _timed,
    app,
    parse_assignments,
    parse_rules,
    parse_seeds,
    split_rule_options,
    write_outputs,
)
from .progress import _Bars, _Ticker
from .settings import RUN_FLAGS, check_switched, config_values, with_run_settings

# imported on first use, so that --help and usage errors answer without importing torch
report = lazy("beyondbp.reporting.runs")


@app.command()
@with_run_settings(*RUN_FLAGS, "checkpoint", "init_from", "state", "checkpoint_every")
def train(
    settings: dict[str, Any],
    model: ModelOpt,
    data: DataOpt,
    rule: Annotated[str, typer.Option("--rule", help="Rule name (see `beyondbp rules`).")] = "backprop",
    n_layer: NLayerOpt = None,
    n_head: NHeadOpt = None,
    d_model: DModelOpt = None,
    rule_opt: RuleOptOpt = None,
    model_opt: ModelOptOpt = None,
    data_opt: DataOptOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write results.json, table.md, curves.png here.")] = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train one model with one rule and report accuracy, FLOPs and time per step.

    Exit status 3 when the run diverged (results are still written, marked diverged)."""
    from .. import training as train_mod

    check_switched(settings)
    _check_path_text(settings["init_from"], "--init-from")
    _check_path_text(settings["state"], "--state")
    config = train_mod.RunConfig(
        **config_values(settings), rule=rule, rule_options=parse_assignments(rule_opt, "--rule-opt"),
        model=model, model_options=gpt_options(model, model_opt, n_layer, n_head, d_model),
        data=data, data_options=parse_assignments(data_opt, "--data-opt"),
    )
    _check_out(out, overwrite)
    _check_checkpoint(settings["checkpoint"], overwrite)
    _on_interrupt(lambda: _train_resume_hint(config))
    ds = train_mod.load_dataset(config)
    train_mod.check(config, ds)
    with _Bars(_console(stderr=True)) as bars:
        result = train_mod.run(config, bars, dataset=ds)

    title = f"{config.rule} on {config.data} / {config.model}"
    written = write_outputs(out, [result], title, overwrite) if out else []
    console = _console()
    if result.resumed_from_step is not None:
        console.print(f"resumed from step {result.resumed_from_step} ({config.state})")
    if result.init_from.get("loaded") == "weights only":
        console.print(
            f"--init-from {config.init_from}: weights only — the checkpoint was trained by rule "
            f"'{result.init_from['checkpoint_rule']}', so rule '{config.rule}' starts with its own state "
            "and no optimizer state"
        )
    if result.tokens is not None:
        _print_language_model_run(console, result, written)
        _exit_if_diverged([result])
        return
    table = Table(title=f"{config.rule} · {config.model} · {config.data} · seed {config.seed}")
    diag_keys = ["cos/all"] if config.diagnostics else []
    for col in ["epoch", "step", "train loss", "test loss", "test acc", *diag_keys]:
        table.add_column(col, justify="right")
    for h in result.history:
        cells = [str(h["epoch"]), str(h["step"]), f"{h['train_loss']:.4f}", f"{h['test_loss']:.4f}",
                 f"{100 * h['test_accuracy']:.1f}%" if h["test_accuracy"] == h["test_accuracy"] else "n/a"]
        cells += [f"{h['diagnostics'].get(k, float('nan')):.3f}" for k in diag_keys]
        table.add_row(*cells)
    console.print(table)
    tps = "n/a" if result.time_per_step is None else f"{1e3 * result.time_per_step:.3f} ms"
    console.print(
        f"parameters {result.n_params:,} · FLOPs/step {result.flops_per_step:,} (batch {result.flops_batch_size}) · "
        f"time/step {tps} ({_timed(result.timed_steps)}) · total {result.total_time:.1f} s"
    )
    if result.sparsity:
        console.print(_sparsity_line(result))
    if result.spikes:
        console.print(_spikes_line(result), soft_wrap=True)
    if result.diverged:
        console.print(_diverged_line(result))
    if result.checkpoint:
        console.print(f"checkpoint: {result.checkpoint}")
    for path in written:
        console.print(f"wrote {path}")
    _exit_if_diverged([result])


def _liquid_progress_hint(again: str) -> str | None:
    """A liquid run stopped while generating its features: where its progress is kept."""
    liquid = sys.modules.get("beyondbp.training.liquid")  # not imported: no liquid ran
    folder = liquid.kept_progress() if liquid is not None else None
    if folder is None:
        return None
    return f"the liquid's features generated so far are kept in {folder}; `{again}` continues from there"


def _train_resume_hint(config: Any) -> str:
    """What an interrupted ``train`` says: whether and how the run continues."""
    again = _same_command()
    liquid = _liquid_progress_hint(again)
    if liquid:
        return liquid
    if config.state is None:
        return "nothing was saved; a run given --state FILE --checkpoint-every N can be continued after an interruption"
    if config.checkpoint_every is None:
        return f"no resume state was written (--state keeps one only with --checkpoint-every N); `{again}` starts the run over"
    if Path(config.state).is_file():
        return f"`{again}` continues the run from its last saved state ({config.state})"
    return f"no state was saved yet (the first comes at step {config.checkpoint_every}); `{again}` starts the run over"


@app.command()
@with_run_settings()
def compare(
    settings: dict[str, Any],
    model: ModelOpt,
    data: DataOpt,
    rules: Annotated[str, typer.Option("--rules", help="Comma-separated rule names, e.g. backprop,fa,dfa.")] = "backprop,fa,dfa",
    n_layer: NLayerOpt = None,
    n_head: NHeadOpt = None,
    d_model: DModelOpt = None,
    rule_opt: Annotated[
        Optional[list[str]],
        typer.Option("--rule-opt", help="KEY=VALUE for every listed rule that has option KEY, or RULE:KEY=VALUE; repeatable."),
    ] = None,
    model_opt: ModelOptOpt = None,
    data_opt: DataOptOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default results/compare-<data>-<model>).")] = None,
    overwrite: OutOverwriteOpt = False,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2, instead of --seed: every rule runs with each, "
        "and the table shows mean ± sd.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Train each rule on the same model, data, budget and seed; print and save a comparison.

    A diverged rule is marked in every output and the others still run; the exit status is
    then 3."""
    from .. import training as train_mod
    from ..study.compare import compare as compare_rules

    seed_list = parse_seeds(seeds, settings["seed"])
    names = parse_rules(rules)
    check_switched(settings)
    per_rule = split_rule_options(rule_opt, names)
    base = dict(
        config_values(settings), model=model, model_options=gpt_options(model, model_opt, n_layer, n_head, d_model),
        data=data, data_options=parse_assignments(data_opt, "--data-opt"),
    )
    c0 = train_mod.RunConfig(**base, rule=names[0], rule_options=per_rule[names[0]])
    for r in names[1:]:  # every rule's options are checked before anything is loaded or trained
        c0.replace(rule=r, rule_options=per_rule[r])
    out = out if out is not None else Path("results") / f"compare-{c0.data}-{c0.model}"
    _check_out(out, overwrite)
    _on_interrupt(_NO_RESUME)
    with _Bars(_console(stderr=True)) as bars:  # the library compares; the CLI only renders
        results = compare_rules(c0, names, rule_options=per_rule, progress=bars, seeds=seed_list)

    budget = _count(c0.epochs, "epoch") if c0.steps is None else _count(c0.steps, "step")
    if c0.tokens is not None:
        budget = f"{c0.tokens:g} tokens, context {train_mod.lm_context(c0)}"
    seed_text = f"seed {c0.seed}" if seed_list is None else f"mean ± sd over seeds {','.join(map(str, seed_list))}"
    title = (f"{report.architecture(results[0])} on {c0.data}, {budget}, {c0.optimizer} lr {c0.lr:g}, "
             f"batch {c0.batch_size}, {seed_text}")
    written = write_outputs(out, results, title, overwrite)
    rows = report.comparison_table(results)
    titles, cells = report.table_cells(rows)
    table = Table(title=title)
    for i, t in enumerate(titles):
        table.add_column(t, justify="left" if i == 0 else "right")
    for line in cells:
        table.add_row(*line)
    console = _console()
    console.print(table)
    console.print(report.baseline_note(rows))
    console.print(
        "FLOPs are counted by torch.utils.flop_counter on one training step at batch size "
        f"{results[0].flops_batch_size}; time/step is the median wall-clock of the other steps."
    )
    for r in results:
        if r.sparsity:
            console.print(f"{r.rule}: {_sparsity_line(r)}")
        if r.spikes:
            console.print(f"{r.rule}: {_spikes_line(r)}", soft_wrap=True)
    if results[0].tokens is not None:
        console.print(language_model_table(results))
        console.print(_baselines_line(results[0]))
    for r in results:
        if r.diverged:
            console.print(_diverged_line(r))
    for path in written:
        console.print(f"wrote {path}")
    _exit_if_diverged(results)


# -- language models ----------------------------------------------------------------------------
def gpt_options(model: str, model_opt: list[str] | None, n_layer: int | None, n_head: int | None,
                d_model: int | None) -> dict[str, Any]:
    """``--model-opt`` assignments plus the GPT size flags (only valid with ``--model gpt``)."""
    opts = parse_assignments(model_opt, "--model-opt")
    sizes = {k: v for k, v in (("n_layer", n_layer), ("n_head", n_head), ("d_model", d_model)) if v is not None}
    if sizes and model != "gpt":
        flags = ", ".join("--" + k.replace("_", "-") for k in sizes)
        raise ConfigError(f"{flags} set the size of model gpt, not of {model!r}; use --model-opt for other models")
    return {**opts, **sizes}


def _baselines_line(result: Any) -> str:
    b = result.data.get("baselines", {})
    return (
        f"baselines on the same validation split (nats/token): uniform {b.get('uniform', float('nan')):.4f} · "
        f"unigram {b.get('unigram', float('nan')):.4f} · bigram {b.get('bigram', float('nan')):.4f}"
    )


def language_model_table(results: list[Any]) -> Table:
    """Validation loss, FLOPs and time per token of language-model runs, with ratios to backprop."""
    base = next((r for r in results if r.rule == "backprop"), results[0])
    table = Table(title=f"per token, ratios to {base.rule}")
    for col in ("rule", "val loss (nats/token)", f"Δ vs {base.rule}", "FLOPs/token", "FLOPs ×", "time/token", "time ×"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for r in results:
        tpt, btpt = r.time_per_token, base.time_per_token
        table.add_row(
            r.rule + report.status_suffix(r),
            f"{r.final['val_loss']:.4f}",
            f"{r.final['val_loss'] - base.final['val_loss']:+.4f}",
            f"{r.flops_per_token / 1e6:.3f} M",
            f"{r.flops_per_token / base.flops_per_token:.2f}×" if base.flops_per_token else "—",
            "—" if tpt is None else f"{1e6 * tpt:.2f} µs",
            f"{tpt / btpt:.2f}×" if tpt and btpt else "—",
        )
    return table


def _print_language_model_run(console: Console, result: Any, written: list[Path]) -> None:
    c = result.config
    table = Table(title=f"{result.rule} · {c['model']} · {c['data']} · seed {c['seed']}")
    diag = bool(c.get("diagnostics"))
    for col in ["eval", "step", "tokens", "train loss", "val loss (nats/token)", "val acc", *(["cos/all"] if diag else [])]:
        table.add_column(col, justify="right")
    for h in result.history:
        cells = [str(h["epoch"]), str(h["step"]), f"{h['tokens']:,}", f"{h['train_loss']:.4f}",
                 f"{h['val_loss']:.4f}", f"{100 * h['test_accuracy']:.1f}%"]
        if diag:
            cells.append(f"{h['diagnostics'].get('cos/all', float('nan')):.3f}")
        table.add_row(*cells)
    console.print(table)
    console.print(_baselines_line(result))
    tpt = "n/a" if result.time_per_token is None else f"{1e6 * result.time_per_token:.2f} µs"
    console.print(
        f"parameters {result.n_params:,} · context {result.data['context']} · FLOPs/token {result.flops_per_token:,.0f} · "
        f"time/token {tpt} ({_timed(result.timed_steps)}) · total {result.total_time:.1f} s"
    )
    console.print("validation loss before the last row is measured on 64 evenly spaced windows; the last row on --eval-windows")
    if result.diverged:
        console.print(_diverged_line(result))
    if result.checkpoint:
        console.print(f"checkpoint: {result.checkpoint}")
    for path in written:
        console.print(f"wrote {path}")


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by `beyondbp train --model gpt ... --checkpoint PATH`.")],
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue (characters of the training corpus).")] = "",
    tokens: Annotated[int, typer.Option("--tokens", help="Number of tokens to generate.")] = 300,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature; 0 picks the most likely token.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample among the k most likely tokens only.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling generator.")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Generate text from a language-model checkpoint and print it."""
    from ..generate import check_options, load_language_model, sample_text

    check_options(tokens, temperature, top_k, seed)  # also: the tokens fit in memory
    model, codec = load_language_model(checkpoint)
    with _Ticker(_console(stderr=True)) as tick:
        text = sample_text(model, codec, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed,
                           progress=lambda done, total: tick("sampling tokens", done, total))
    typer.echo(text)
