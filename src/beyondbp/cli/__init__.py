"""The ``beyondbp`` command line: ``rules``, ``models``, ``data``, ``train``, ``compare``, ``sample``,
``study``, ``analyze``, ``adapt``, ``continual``, ``memory``, ``evolve``.

    beyondbp rules
    beyondbp train --rule dfa --model lenet --data fashion-mnist --epochs 5 --seed 0
    beyondbp compare --rules backprop,fa,dfa,usf --model mlp --data mnist1d --epochs 20
    beyondbp train --model gpt --data shakespeare-char --rule dfa --tokens 2e6 --n-layer 4 --d-model 128
    beyondbp sample --checkpoint gpt.pt --prompt "ROMEO:" --tokens 300 --temperature 0.8 --seed 0
    beyondbp study fit points.csv --params N --tokens D --loss loss --exclude-top 5 --bootstrap 200
    beyondbp study run spec.toml --workers 2          # or --executor ray [--address ADDR]
    beyondbp study status spec.toml [--json]
    beyondbp study check spec.toml
    beyondbp study report spec.toml [--out DIR]        # fits, verdicts: report.html / .md / .json
    beyondbp analyze spec.toml [--out DIR]             # representations: CKA, RSA, shape metrics, identification
    beyondbp adapt source --checkpoint src.pt [--epochs 3]   # test-time adaptation (Fashion-MNIST-C):
    beyondbp adapt run --checkpoint src.pt --methods all --corruptions all --severity 5 --out DIR [--episodic]
    beyondbp adapt gallery gallery.png
    beyondbp continual --methods finetune,gpm,hlop,multitask --rule fa --tasks permuted-fashion-mnist:10 --out DIR
    beyondbp memory all --stored 10,100,1000 --noise 0,0.1,0.2,0.3 --out DIR   # associative memories
    beyondbp evolve --population 64 --generations 200 --control --workers 2 --out DIR   # evolved plasticity

Every setting is checked before anything trains, including that ``--out`` and
``--checkpoint`` can be written. Any error the library raises on purpose, and any usage error,
prints exactly one line ``error: <message>`` on stderr and exits with status 2 (``--debug``
shows the traceback instead). Outputs are written only after every run has finished: into a
temporary sibling directory that is renamed into place, so ``--out`` holds either the old or
the new results, never a mix. An existing non-empty ``--out`` (also compare's default
``results/compare-<data>-<model>``) or an existing ``--checkpoint`` file is refused unless
``--overwrite`` is given. Progress bars go to stderr, tables to stdout; when stderr is not a
terminal, ``train``, ``compare``, ``study run``, ``continual`` and ``sample`` print instead a
plain ``progress [...]`` line every $BEYONDBP_PROGRESS_INTERVAL seconds (default 30).

Exit status: 0 success; 1 an unexpected error (a bug: please report it with ``--debug``);
2 bad input; 3 a run diverged (its training loss became non-finite or blew up): its results
are still written, marked ``diverged`` with the step, but no checkpoint is saved; ``compare``
finishes the other rules first; 130 interrupted (Ctrl-C), 143 stopped by SIGTERM, both with
one line saying how to go on (:mod:`beyondbp.interrupts`). ``study check`` exits 5 when the store has
problems (one line each); ``study run`` exits 4 when some runs failed (the study still ran the
others). A bad spec is refused before the run store is opened or created; ``study run``,
``status`` and ``report`` refuse a damaged store (exit 2, naming the file and how to recover).
"""

from __future__ import annotations

import sys
import traceback

from .. import interrupts
from ..errors import BeyondBPError
from .common import _ABORTS, _CLICK_ERRORS, _INTERRUPT, _USAGE_ERRORS, _one_line, _usage_message, app

__all__ = ["EXIT_DIVERGED", "app", "main", "rules_markdown", "write_outputs"]


def _exit_interrupted(stopping: interrupts.Stopping) -> None:
    """One line on stderr, then exit 128 + the signal (130 Ctrl-C, 143 SIGTERM)."""
    hint = _INTERRUPT["hint"]
    try:
        hint = hint() if callable(hint) else hint
    except Exception:  # the hint must never hide the interruption
        hint = None
    print(f"interrupted: {hint}" if hint else "interrupted", file=sys.stderr)
    sys.exit(stopping.status)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turn errors into one line and exit status 2; Ctrl-C
    and SIGTERM into one line and exit status 130 / 143."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args in (["study"], ["adapt"]):  # a bare command group shows its help, not a usage error
        args = [*args, "--help"]
    debug = "--debug" in args
    _INTERRUPT.update(hint=None, args=args)
    with interrupts.Stopping() as stopping:
        _main(args, debug, stopping)


def _main(args: list[str], debug: bool, stopping: interrupts.Stopping) -> None:
    try:
        rv = app(args=args, prog_name="beyondbp", standalone_mode=False)
    except _USAGE_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_usage_message(exc)}", file=sys.stderr)
        sys.exit(2)
    except _CLICK_ERRORS as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code or 2)
    except _ABORTS:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except BeyondBPError as exc:
        if debug:
            raise
        for problem in getattr(exc, "problems", None) or [str(exc)]:  # ConfigErrors: one line each
            print(f"error: {_one_line(problem)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _exit_interrupted(stopping)
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    if stopping.signum is not None or rv == 130:  # typer returns 130 for a KeyboardInterrupt
        _exit_interrupted(stopping)
    sys.exit(rv if isinstance(rv, int) else 0)


# the command modules register their commands on `app` when imported
from . import catalog, runs, study, fit, analyze, adapt, continual, memory, evolve  # noqa: E402,F401,I001  (this order is --help's)
from .catalog import rules_markdown  # noqa: E402,F401
from .common import EXIT_DIVERGED, write_outputs  # noqa: E402,F401
