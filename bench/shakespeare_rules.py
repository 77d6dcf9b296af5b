"""Validation loss of a small GPT on tiny-shakespeare after the same token budget, per rule.

Every rule trains the same initial model (same seed) on the same batches for the same number
of tokens with the same optimizer; the table gives the validation cross-entropy in nats per
character on the whole validation split (the last 10 % of the text), its difference to
backprop, and the measured FLOPs and wall time per training token with their ratio to
backprop, next to the uniform, unigram and bigram baselines of the same split.

    python bench/shakespeare_rules.py                                # 2e5 tokens, 5 rules
    python bench/shakespeare_rules.py --tokens 2e6 --n-layer 4 --d-model 128 --context 128

Runs go through ``beyondbp.training.run`` (the same loop as ``beyondbp train``). Wall times of
separate runs on a shared machine are noisy; ``bench/transformer_step.py`` measures step time
interleaved.
"""

from __future__ import annotations

import argparse
import time

import torch

from beyondbp import data, rules
from beyondbp.training import RunConfig, run

DEFAULT_RULES = "backprop,dfa,fa,usf,pfa"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=float, default=2e5, help="training tokens per rule (default 2e5)")
    p.add_argument("--rules", default=DEFAULT_RULES, help=f"comma-separated (default {DEFAULT_RULES}; "
                   "rules that are not registered are skipped)")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-windows", type=int, default=None, help="validation windows (default: all)")
    p.add_argument("--data-dir", default=None, help="tiny-shakespeare file or directory")
    p.add_argument("--threads", type=int, default=1, help="torch threads during each run (default 1)")
    args = p.parse_args()

    names = [r for r in args.rules.split(",") if r]
    skipped = [r for r in names if r not in rules.names()]
    names = [r for r in names if r in rules.names()]
    ds = data.load("shakespeare-char", args.data_dir)
    model_options = dict(n_layer=args.n_layer, n_head=args.n_head, d_model=args.d_model)
    results = {}
    for name in names:
        config = RunConfig(
            rule=name, model="gpt", model_options=model_options, data="shakespeare-char", data_dir=args.data_dir,
            tokens=int(args.tokens), context=args.context, batch_size=args.batch_size, optimizer=args.optimizer,
            lr=args.lr, seed=args.seed, eval_windows=args.eval_windows, threads=args.threads,
        )
        start = time.perf_counter()
        results[name] = run(config, dataset=ds)
        print(f"  {name}: done in {time.perf_counter() - start:.0f} s", flush=True)

    first = next(iter(results.values()))
    print(
        f"\nGPT n_layer={args.n_layer} d_model={args.d_model} n_head={args.n_head} context={args.context} "
        f"({first.n_params:,} parameters) on {ds.name}; {first.tokens:,} training tokens "
        f"({first.steps} steps of {args.batch_size}×{args.context}), {args.optimizer} lr {args.lr:g}, seed {args.seed}"
    )
    bp = results.get("backprop")
    print(f"{'':<10} {'val nats/tok':>12} {'Δ vs bp':>8} {'MFLOP/tok':>10} {'× bp':>6} {'µs/tok':>8} {'× bp':>6}")
    for name, r in results.items():
        val = r.final["val_loss"]
        delta = f"{val - bp.final['val_loss']:+.3f}" if bp else "—"
        fr = f"{r.flops_per_token / bp.flops_per_token:.3f}" if bp else "—"
        tr = f"{r.time_per_token / bp.time_per_token:.3f}" if bp and r.time_per_token and bp.time_per_token else "—"
        tpt = f"{1e6 * r.time_per_token:.2f}" if r.time_per_token else "—"
        status = "" if r.status == "ok" else f" ({r.status})"
        print(f"{name:<10} {val:>12.4f} {delta:>8} {r.flops_per_token / 1e6:>10.3f} {fr:>6} {tpt:>8} {tr:>6}{status}")
    b = ds.baselines()
    print(f"{'uniform':<10} {b['uniform']:>12.4f}   (log {ds.vocab_size})")
    print(f"{'unigram':<10} {b['unigram']:>12.4f}   (add-one smoothed, counted on the training split)")
    print(f"{'bigram':<10} {b['bigram']:>12.4f}   (add-one smoothed, counted on the training split)")
    if skipped:
        print(f"skipped (not registered): {', '.join(skipped)}")
    print(f"torch {torch.__version__}, {first.environment.get('threads')} threads")


if __name__ == "__main__":
    main()
