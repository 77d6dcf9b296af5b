#!/usr/bin/env bash
# The GPU check (issue 23, section 6): on one CUDA GPU, in at most 8 minutes,
#   1. the GPU tests (tests/test_gpu.py: the ones that skip without CUDA run here),
#   2. a GPT study slice on cuda (a 4-run spec written below: backprop, DFA, FA, PFA on
#      tiny-shakespeare, 2 blocks x 64 wide, 96 steps, 2 workers sharing the GPU),
#   3. the DFA/FA/PFA step-time and FLOP ratios to backprop of bench/transformer_step.py on cuda
#      (4 blocks, d_model 128, context 128, batch 16),
# then prints one table. Each part has a timeout (150 s; 7.5 minutes in all). Run it from anywhere, on the GPU machine, with beyondbp's environment:
#   bash bench/gpu_check.sh                 # OUT_DIR=... keeps the files (default: a temporary folder)
# Exit status: 0 when every part passed, 1 when one failed, 2 when torch sees no CUDA GPU.
# DEVICE=cpu runs the same parts on the CPU (a check of this script, not of the GPU; slow).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
OUT=${OUT_DIR:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

if [ "$DEVICE" != cpu ] && ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA GPU here; run it on a GPU machine" >&2
    exit 2
fi

echo "gpu_check: files in $OUT" >&2
# 1. the GPU tests (about a minute)
timeout 150 $PY -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py --junitxml "$OUT/gpu_tests.xml" \
    > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" > "$OUT/rc.txt"

# 2. a GPT study slice on cuda (about a minute)
cat > "$OUT/gpt_slice.toml" <<SPEC
[study]
name = "gpt-gpu-slice"
description = "issue 23 section 6: a slice of examples/rules_gpt.toml on one GPU"

[base]
model = "gpt"
data = "shakespeare-char"
context = 64
batch_size = 16
eval_windows = 64
optimizer = "adam"
lr = 3e-3
steps = 96
model_options = {n_layer = 2, d_model = 64, n_head = 4}

[axes]
rule = ["backprop", {name = "dfa", label = "dfa-macro", options = {points = "macro"}}, "fa",
        {name = "pfa", label = "pfa", options = {expansion = 2}}]

[execution]
device = "$DEVICE"
workers_per_gpu = 2
SPEC
timeout 150 $PY -m beyondbp study run "$OUT/gpt_slice.toml" --store "$OUT/gpt_slice.db" --workers 2 --quiet \
    > "$OUT/study.log" 2>&1
echo "study rc=$?" >> "$OUT/rc.txt"

# 3. the step-time ratios on cuda (about a minute)
STEP_SIZE="--layers 4 --repeats 20 --warmup 3"
[ "$DEVICE" = cpu ] && STEP_SIZE="--layers 1 --d-model 64 --context 64 --repeats 3 --warmup 1"  # a CPU takes minutes
timeout 150 $PY bench/transformer_step.py --device "$DEVICE" $STEP_SIZE --rules backprop,dfa,fa,pfa \
    --json "$OUT/transformer_step.json" > "$OUT/transformer_step.log" 2>&1
echo "transformer_step rc=$?" >> "$OUT/rc.txt"

OUT="$OUT" $PY - <<'TABLE'
import json, os, re, sqlite3, sys
from pathlib import Path

import torch

out = Path(os.environ["OUT"])
rcs = dict(line.split(" rc=") for line in (out / "rc.txt").read_text().split("\n") if line)
gpu = f"{torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible" if torch.cuda.is_available() else "no GPU (DEVICE=cpu)"
print(f"GPU check: {gpu}, torch {torch.__version__}")
print(f"{'part':<17} {'row':<14} {'status':<9} {'device':<7} {'ms/step':>9} {'MFLOP/step':>11} {'time × bp':>10} {'FLOP × bp':>10}")

log = (out / "gpu_tests.log").read_text()
counts = re.findall(r"(\d+) (passed|failed|skipped|errors?)", log.strip().split("\n")[-1] if log.strip() else "")
print(f"{'gpu tests':<17} {'tests/test_gpu':<14} {'ok' if rcs.get('tests') == '0' else 'FAILED':<9} "
      + ", ".join(f"{n} {w}" for n, w in counts))

rows = []
if (out / "gpt_slice.db").exists():
    db = sqlite3.connect(f"file:{out / 'gpt_slice.db'}?mode=ro", uri=True)
    for label, status, result in db.execute("SELECT label, status, result FROM runs ORDER BY position"):
        r = json.loads(result) if result else {}
        rows.append((label, status, (r.get("environment") or {}).get("device", "-"), r.get("time_per_step"), r.get("flops_per_step")))
bp = next((r for r in rows if r[0] == "backprop"), None)
for label, status, device, tps, fps in rows:
    ratio_t = f"{tps / bp[3]:.3f}" if tps and bp and bp[3] else "-"
    ratio_f = f"{fps / bp[4]:.3f}" if fps and bp and bp[4] else "-"
    print(f"{'GPT study slice':<17} {label:<14} {status:<9} {device:<7} {(tps or 0) * 1e3:>9.2f} {(fps or 0) / 1e6:>11.1f} {ratio_t:>10} {ratio_f:>10}")
if not rows:
    print(f"{'GPT study slice':<17} {'-':<14} FAILED    (see {out / 'study.log'})")

step = out / "transformer_step.json"
for r in json.loads(step.read_text()) if step.exists() else []:
    tokens = r["tokens"]  # of one step's batch
    print(f"{'transformer_step':<17} {r['rule']:<14} {'ok':<9} {r['device'][:7]:<7} {r['seconds_per_token'] * tokens * 1e3:>9.2f} "
          f"{r['flops_per_token'] * tokens / 1e6:>11.1f} {r['time_ratio']:>10.3f} {r['flops_ratio']:>10.3f}")
if not step.exists():
    print(f"{'transformer_step':<17} {'-':<14} FAILED    (see {out / 'transformer_step.log'})")
failed = [k for k, v in rcs.items() if v != "0"] + ([] if rows and all(r[1] == "done" for r in rows) else ["study runs"])
print("all parts passed" if not failed else f"FAILED: {', '.join(failed)} (logs in {out})")
sys.exit(1 if failed else 0)
TABLE
