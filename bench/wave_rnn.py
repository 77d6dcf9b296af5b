"""Wave RNN vs iRNN (and LSTM) on the long-horizon tasks of Keller et al. (ICLR 2024).

Each run builds the models with beyondbp (``models.build``), attaches a rule (``--rule``,
default ``backprop`` = BPTT) and trains with Adam on *fresh* batches every iteration, drawn from
the data set generators with a seeded generator (the authors' protocol: no fixed training set).

    # adding task: iteration at which the training-batch MSE first reaches <= 0.05 ("solved");
    # --lr 1e-4 --clip 0 are the authors' adding_task.py defaults (one point of their sweep grid);
    # the log lines (stderr) carry the mean loss and the gradient norm (before any clipping)
    python bench/wave_rnn.py adding --T 200 --seeds 0 1 2 --max-iters 2000 --models wrnn irnn --lr 1e-4
    # copy task: test cross-entropy per step on 1,000 held-out sequences (the authors' "MSE" is this
    # divided by their test batch, 50) every --log-every iterations and at the end; --clip 128 is
    # their grad_clip 1 (they clip the loss divided by the batch of 128)
    python bench/wave_rnn.py copy --T 30 --iters 2000 --models wrnn irnn --clip 128 --log-every 100
    # sequential vs permuted 14x14 Fashion-MNIST: test accuracy after --epochs
    python bench/wave_rnn.py sfmnist --epochs 1 --models wrnn irnn
    # step time (forward + backward + Adam) per model, ms
    python bench/wave_rnn.py speed --T 100 --models reference-wrnn wrnn irnn lstm
    # cosine of each rule's update to BPTT's gradient, per layer, at initialisation (one batch)
    python bench/wave_rnn.py cosine --T 50 --rules fa usf frsf brsf kp dfa

Models (the authors' sizes): adding: ``wrnn`` 27 rings of 100 (13,015 parameters), ``irnn``
with ``params`` matched (hidden 112) ; copy: ``wrnn`` 6 rings of 100, ``outputs="all"``;
sfmnist: ``wrnn`` 16 rings of ``--ring`` (196 by default for 14x14). One line of JSON per run on
stdout; runs use one torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from beyondbp import data, models, rules
from beyondbp.data.sequences import _generator, adding_batch, copy_batch
from beyondbp.models.rnn import parameter_count


def _build(name: str, input_shape, num_classes: int, seed: int, wave: dict, match: int | None, outputs: str = "last"):
    torch.manual_seed(seed)
    if name == "wrnn":
        return models.build("wrnn", input_shape, num_classes, outputs=outputs, **wave)
    opts = {"outputs": outputs}
    if match is not None:
        opts["params"] = match
    return models.build(name, input_shape, num_classes, **opts)


def _learner(args, model):
    rule = rules.get(args.rule, seed=0)
    learner = rule.attach(model)
    opt = torch.optim.Adam([p for p in learner.optimizer_parameters() if p.requires_grad], lr=args.lr)
    return learner, opt


def _step(learner, opt, x, y, clip: float, norms: list | None = None) -> float:
    opt.zero_grad(set_to_none=True)
    loss = learner.loss_fn(learner.model(x), y)
    loss.backward()
    if clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(learner.model.parameters(), clip)
    elif norms is not None:
        norm = torch.nn.utils.get_total_norm([p.grad for p in learner.model.parameters() if p.grad is not None])
    if norms is not None:  # the gradient's norm before clipping (read only: the update is unchanged)
        norms.append(float(norm))
    opt.step()
    return float(loss.detach())


def adding(args) -> None:
    wave = {"channels": args.channels, "ring": args.ring}
    match = parameter_count("wrnn", (args.T, 2), 1, channels=args.channels, ring=args.ring)
    for name in args.models:
        for seed in args.seeds:
            model = _build(name, (args.T, 2), 1, seed, wave, match)
            learner, opt = _learner(args, model)
            gen = _generator(seed, f"bench:adding:{args.T}")
            solved, losses, norms, t0, c0 = None, [], [], time.perf_counter(), time.process_time()
            for it in range(1, args.max_iters + 1):
                x, y = adding_batch(args.batch, args.T, gen)
                loss = _step(learner, opt, x, y, args.clip, norms)
                losses.append(loss)
                if not math.isfinite(loss):
                    break
                if loss <= 0.05 and solved is None:
                    solved = it
                    if not args.keep_going:
                        break
                if it % args.log_every == 0:
                    window = losses[-args.log_every:]
                    print(json.dumps({"task": "adding", "model": name, "seed": seed, "iter": it, "loss": loss,
                                      "mean_loss": round(sum(window) / len(window), 4),
                                      "grad_norm_median": round(sorted(norms[-args.log_every:])[len(window) // 2], 4),
                                      "grad_norm_max": round(max(norms[-args.log_every:]), 4),
                                      "cpu_s": round(time.process_time() - c0, 1)}),
                          file=sys.stderr, flush=True)
                if args.max_seconds and time.perf_counter() - t0 > args.max_seconds:
                    break
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(json.dumps({
                "task": "adding", "T": args.T, "model": name, "rule": args.rule, "seed": seed,
                "params": sum(p.numel() for p in model.parameters()), "solved_at": solved,
                "iters": len(losses), "final_loss": losses[-1], "min_loss": min(losses),
                "last100_mean": sum(losses[-100:]) / len(losses[-100:]),
                "s_per_iter": seconds / len(losses), "cpu_s": round(cpu, 1), "lr": args.lr, "clip": args.clip,
                "grad_norm_max": max(norms), "clipped_steps": sum(n > args.clip for n in norms) if args.clip > 0 else 0,
                "stopped": "solved" if solved and not args.keep_going else
                           ("time" if len(losses) < args.max_iters and math.isfinite(losses[-1]) else "iters"),
            }), flush=True)


def copy(args) -> None:
    shape = (args.T + args.mem_len, 10)
    wave = {"channels": args.channels, "ring": args.ring}
    match = parameter_count("wrnn", shape, 10, channels=args.channels, ring=args.ring)
    x_test, y_test = copy_batch(1000, args.T, args.mem_len, _generator(99, "bench:copy:test"))
    for name in args.models:
        for seed in args.seeds:
            model = _build(name, shape, 10, seed, wave, match, outputs="all")
            learner, opt = _learner(args, model)
            gen = _generator(seed, f"bench:copy:{args.T}")
            curve, norms, t0, c0, it = [], [], time.perf_counter(), time.process_time(), 0

            def test_loss() -> float:  # held-out, no_grad: reads the model, changes nothing it trains on
                with torch.no_grad():
                    return float(learner.loss_fn(learner.predict(x_test), y_test))

            for it in range(1, args.iters + 1):
                x, y = copy_batch(args.batch, args.T, args.mem_len, gen)
                loss = _step(learner, opt, x, y, args.clip, norms)
                if it % args.log_every == 0:
                    point = {"iter": it, "train": loss, "test": test_loss(),
                             "grad_norm_max": round(max(norms[-args.log_every:]), 4)}
                    curve.append(point)
                    print(json.dumps({"task": "copy", "model": name, "seed": seed, **point,
                                      "cpu_s": round(time.process_time() - c0, 1)}), file=sys.stderr, flush=True)
                if not math.isfinite(loss) or (args.max_seconds and time.perf_counter() - t0 > args.max_seconds):
                    break
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            test = curve[-1]["test"] if curve and curve[-1]["iter"] == it else test_loss()
            print(json.dumps({
                "task": "copy", "T": args.T, "model": name, "rule": args.rule, "seed": seed,
                "params": sum(p.numel() for p in model.parameters()), "iters": it,
                "final_train_loss": loss, "test_loss": test,
                "best_test_loss": min([test] + [p["test"] for p in curve]),
                "s_per_iter": seconds / it, "cpu_s": round(cpu, 1), "lr": args.lr, "clip": args.clip,
                "grad_norm_max": max(norms), "clipped_steps": sum(n > args.clip for n in norms) if args.clip > 0 else 0,
                "stopped": "iters" if it == args.iters else ("time" if math.isfinite(loss) else "nan"),
                "curve": curve,
            }), flush=True)


def sfmnist(args) -> None:
    for perm in (False, True):
        ds = data.load("psfmnist" if perm else "sfmnist", size=14)
        if args.n_train:
            ds = ds.subset(args.n_train, args.n_test)
        wave = {"channels": args.channels, "ring": args.ring}
        match = parameter_count("wrnn", ds.input_shape, 10, channels=args.channels, ring=args.ring)
        for name in args.models:
            for seed in args.seeds:
                model = _build(name, ds.input_shape, 10, seed, wave, match)
                learner, opt = _learner(args, model)
                t0, steps = time.perf_counter(), 0
                for _ in range(args.epochs):
                    for xb, yb in ds.train_loader(args.batch, seed=seed):
                        _step(learner, opt, xb, yb, args.clip)
                        steps += 1
                correct = sum(int((learner.predict(xb).argmax(-1) == yb).sum()) for xb, yb in ds.test_loader(500))
                print(json.dumps({
                    "task": "psfmnist" if perm else "sfmnist", "size": 14, "model": name, "rule": args.rule,
                    "seed": seed, "params": sum(p.numel() for p in model.parameters()), "epochs": args.epochs,
                    "n_train": ds.num_train, "test_accuracy": correct / ds.num_test,
                    "s_per_iter": (time.perf_counter() - t0) / max(1, steps),
                }), flush=True)


class ReferenceWaveRNN(torch.nn.Module):
    """The authors' equations in their repositories' layout (``adding/conv_rnn_model.py``: the
    encoder called on ``x_t`` inside the time loop, time-major input, the hidden state kept flat
    and viewed as rings at every step, the readout on the last state), written here for timing."""

    def __init__(self, channels: int, ring: int, d: int = 2, k: int = 1) -> None:
        super().__init__()
        self.channels, self.ring = channels, ring
        self.Wx = torch.nn.Linear(d, channels * ring)
        self.Wy = torch.nn.Conv1d(channels, channels, 3, padding=1, padding_mode="circular")
        self.readout = torch.nn.Linear(channels * ring, k)

    def forward(self, x):
        x = x.permute(1, 0, 2)
        h = torch.zeros(x.shape[1], self.channels * self.ring)
        for t in range(x.shape[0]):
            h = torch.relu(self.Wx(x[t]) + self.Wy(h.view(-1, self.channels, self.ring)).flatten(start_dim=1))
        return self.readout(h)


def speed(args) -> None:
    wave = {"channels": args.channels, "ring": args.ring}
    match = parameter_count("wrnn", (args.T, 2), 1, channels=args.channels, ring=args.ring)
    x, y = adding_batch(args.batch, args.T, torch.Generator().manual_seed(0))
    for name in args.models:
        if name == "reference-wrnn":
            torch.manual_seed(0)
            model = ReferenceWaveRNN(args.channels, args.ring)
        else:
            model = _build(name, (args.T, 2), 1, 0, wave, match)
        learner, opt = _learner(args, model)
        _step(learner, opt, x, y, 0.0)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _step(learner, opt, x, y, 0.0)
            times.append(time.perf_counter() - t0)
        print(json.dumps({"task": "speed", "T": args.T, "model": name, "rule": args.rule,
                          "ms_per_step_median": 1e3 * sorted(times)[len(times) // 2]}), flush=True)


def cosine(args) -> None:
    from beyondbp.rules.base import cosine as cos

    wave = {"channels": args.channels, "ring": args.ring}
    match = parameter_count("wrnn", (args.T, 2), 1, channels=args.channels, ring=args.ring)
    batch = adding_batch(args.batch, args.T, torch.Generator().manual_seed(0))
    for name in args.models:
        for rule in args.rules:
            model = _build(name, (args.T, 2), 1, 0, wave, match)
            learner = rules.get(rule, seed=0).attach(model)
            est, exact = learner.estimate(batch), learner.backprop_gradients(batch)
            row = {f"cos/{k.removesuffix('.weight')}": round(cos(est[k], exact[k]), 4)
                   for k in exact if k.endswith(".weight") and k in est}
            print(json.dumps({"task": "cosine", "T": args.T, "model": name, "rule": rule, **row}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["adding", "copy", "sfmnist", "speed", "cosine"])
    parser.add_argument("--rules", nargs="+", default=["fa", "usf", "frsf", "brsf", "kp", "dfa"])
    parser.add_argument("--T", type=int, default=200)
    parser.add_argument("--mem-len", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["wrnn", "irnn"])
    parser.add_argument("--rule", default="backprop")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=0.0)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--ring", type=int, default=None)
    parser.add_argument("--keep-going", action="store_true", help="adding: train to --max-iters even once solved")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="adding, copy: stop a run after this many wall-clock seconds (reported as stopped: time)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    defaults = {"adding": (27, 100), "speed": (27, 100), "cosine": (27, 100), "copy": (6, 100), "sfmnist": (16, 196)}[args.task]
    args.channels = args.channels or defaults[0]
    args.ring = args.ring or defaults[1]
    {"adding": adding, "copy": copy, "sfmnist": sfmnist, "speed": speed, "cosine": cosine}[args.task](args)


if __name__ == "__main__":
    main()
