#!/usr/bin/env bash
# The GPU check, in one command, on a CUDA machine (sized for one H100/H200 and 16 cores, no network, the
# machine's torch/torchvision/triton): every stage under its own budget, the budgets adding up to 9 minutes
# (GPU_CHECK_BUDGET, 540 s) with the install, in the order that answers most if the run is cut short.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # from the repository root; the table in $OUT/summary.md
#   bash benchmarks/gpu_check.sh --plan          # the stages, their budgets and the total; runs nothing
#   bash benchmarks/gpu_check.sh --cpu-smoke     # the same stages, tiny, on the CPU: checks the script itself
#
# $OUT receives at most 7 small files, rewritten after every stage (a cut-off run still leaves them):
# summary.md (the table), gpu_check.log (this output), figures.json (every stage's figures), suite.log (one
# line per test, written as the tests run), junit-fast.xml, junit-slow.xml, e2e-metrics.jsonl (the step lines
# of the end-to-end runs). Data, runs and stage logs stay in a scratch folder under ${TMPDIR:-/tmp}.
set -uo pipefail

MODE=gpu
PLAN=0
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) MODE=smoke ;;
    --plan) PLAN=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (--plan, --cpu-smoke, --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
BUDGET=${GPU_CHECK_BUDGET:-540}
if [[ ! "$BUDGET" =~ ^[0-9]+$ ]] || ((BUDGET < 60)); then
  echo "gpu_check: GPU_CHECK_BUDGET must be a whole number of seconds, 60 or more, not '$BUDGET'" >&2
  exit 2
fi

# name:seconds, in running order; the slow suite gets what the others leave (at most its budget)
STAGES=(install:35 env:30 suite-fast:130 model:45 data:40 e2e-gpu-decode:100 e2e-cpu-decode:100 loader:25 suite-slow:30)
if ((PLAN)); then
  total=0
  printf '%-16s %6s  %s\n' stage budget what
  for s in "${STAGES[@]}"; do
    name=${s%%:*} secs=${s##*:}
    total=$((total + secs))
    case $name in
      install) what="pip install --no-deps --no-build-isolation --no-index -e . (else PYTHONPATH=src)" ;;
      env) what="GPU, versions, setuptools, ulimit -n, /dev/shm; JPEG decode alone: nvJPEG 20 batches, CPU" ;;
      suite-fast) what="pytest -m 'not slow' -n 8, one line per test to suite.log as it goes" ;;
      model) what="model only, cudnn.benchmark: torchvision alexnet() fp32 vs ours bf16 channels_last" ;;
      data) what="12,800 synthetic 256 px JPEGs, prepare, the index tiled to one long epoch" ;;
      e2e-gpu-decode) what="alexnet train --config paper, data.decode=auto: window >= 1000 steps or 60 s" ;;
      e2e-cpu-decode) what="the same with data.decode=cpu (libjpeg-turbo in the loader processes)" ;;
      loader) what="the loader alone, decode in this process (nvJPEG) and in the workers" ;;
      suite-slow) what="pytest -m slow -n 8, with what is left" ;;
    esac
    printf '%-16s %5ss  %s\n' "$name" "$secs" "$what"
  done
  printf '%-16s %5ss  (budget %ss, the table ~5 s)\n' total "$total" "$BUDGET"
  exit 0
fi

OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT" || { echo "gpu_check: cannot make $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{summary.md,gpu_check.log,figures.json,suite.log,junit-fast.xml,junit-slow.xml,e2e-metrics.jsonl}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/alexnet-gpu-check.XXXXXX") || exit 2
mkdir -p "$SCRATCH/fig" "$SCRATCH/logs"
: > "$SCRATCH/stages.tsv"
exec > >(tee "$OUT/gpu_check.log") 2>&1
if [[ -z "${PYTHON:-}" ]]; then
  if [[ $MODE == smoke && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PY=$PYTHON
CORES=$(nproc)
START=$SECONDS
echo "gpu_check: mode $MODE, python $PY, out $OUT, scratch $SCRATCH, $CORES cores, budget ${BUDGET}s, $(date -u +%FT%TZ)"

budget_of() { local s; for s in "${STAGES[@]}"; do [[ ${s%%:*} == "$1" ]] && echo "${s##*:}"; done; }

# run_stage NAME COMMAND...: the command under `timeout` (SIGINT first, so pytest still writes its JUnit file;
# SIGKILL 10 s later), its limit the stage's budget cut to what the whole budget has left; its output in the
# log and in $SCRATCH/logs/NAME.log; "NAME<TAB>status<TAB>seconds" appended to $SCRATCH/stages.tsv; then the
# table and figures are written again.
run_stage() {
  local name=$1
  shift
  local limit
  limit=$(budget_of "$name")
  local left=$((BUDGET - (SECONDS - START) - 10))
  [[ $name == suite-slow ]] && limit=$left
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    echo "=== $name: skipped, no time left in the budget"
    printf '%s\tskipped (no time left)\t0\n' "$name" >> "$SCRATCH/stages.tsv"
    return 0
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  if declare -F "$1" >/dev/null; then  # a function of this script: run it in a bash that has it, under timeout
    set -- bash -c "set -o pipefail; $(declare -p PY OUT SCRATCH DEV MODE CORES REPO XDIST); \
$(declare -f); $1 $limit"
  fi
  timeout -s INT -k 10 "$limit" "$@" 2>&1 | tee "$SCRATCH/logs/$name.log"
  local rc=${PIPESTATUS[0]}
  local status=ok
  ((rc == 124 || rc == 137 || rc == 130)) && status="timeout after ${limit}s"
  ((rc != 0 && rc != 124 && rc != 137 && rc != 130)) && status="failed (exit $rc)"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$SCRATCH/stages.tsv"
  echo "=== $name: $status in $((SECONDS - t0))s"
  table > /dev/null
  return 0
}

if [[ $MODE == gpu ]]; then
  DEV=cuda
  XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
else
  DEV=cpu
  XDIST=""
fi

install_stage() {
  if [[ $MODE == smoke ]]; then
    echo "cpu smoke: not installing (this venv may be shared); the GPU run does:"
    echo "  $PY -m pip install --no-deps --no-build-isolation --no-index -e ."
  else
    $PY -m pip install --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -n 5
  fi
}

env_stage() {
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  lscpu | grep 'Model name' || true
  grep -o -w -E 'avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  echo "ulimit -n: $(ulimit -n)"
  df -h /dev/shm | tail -n 1 | awk '{print "/dev/shm: " $2 " size, " $4 " free"}'
  $PY - "$SCRATCH/fig/env.json" "$(ulimit -n)" "$(df -k /dev/shm | awk 'NR==2 {print $4}')" <<'EOF'
import importlib, json, os, platform, sys
info = {"python": platform.python_version(), "ulimit_n": sys.argv[2], "dev_shm_free_kb": sys.argv[3]}
for name in ("torch", "torchvision", "triton", "numpy", "PIL", "yaml", "tqdm", "matplotlib", "safetensors",
             "pytest", "xdist", "onnx", "onnxscript", "onnxruntime", "setuptools", "pip"):
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "present")
    except Exception:
        info[name] = None
import torch
info["cuda"] = torch.version.cuda
info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
import alexnet
info["alexnet"] = alexnet.__file__
print(json.dumps(info))
missing = [k for k in ("numpy", "PIL", "yaml", "tqdm", "matplotlib", "safetensors", "torchvision", "pytest") if not info[k]]
if missing:
    print(f"gpu_check: MISSING required modules: {', '.join(missing)} (no network here: install them first)")
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=1)
EOF
  if [[ $MODE == gpu ]]; then
    $PY benchmarks/gpu_pipeline.py decode --device cuda --batch 256 --batches 20 --json "$SCRATCH/fig/decode.json"
  else
    $PY benchmarks/gpu_pipeline.py decode --device cpu --batch 16 --batches 4 --json "$SCRATCH/fig/decode.json"
  fi
}

# suite KIND LIMIT: pytest, one line per test into $OUT/suite.log as the tests run (-v; -rA at the end), and
# its JUnit file when it ends or is interrupted (SIGINT from timeout); the table counts the log's lines when
# there is no JUnit file.
suite() {
  local kind=$1 files=()
  if [[ $MODE == smoke ]]; then
    files=(tests/test_lrn_triton.py tests/test_loop_sync.py)
    [[ $kind == slow ]] && files=(tests/test_engine.py::test_resume_inside_the_warm_up_is_exact)
  fi
  local marker="not slow"
  [[ $kind == slow ]] && marker=slow
  echo "--- suite $kind" >> "$OUT/suite.log"
  local start
  start=$(wc -l < "$OUT/suite.log")
  # straight into the file (no pipe: SIGINT from timeout reaches every process of the group, and a pipe's reader
  # dying first would cut pytest off before it writes the JUnit file)
  $PY -m pytest $XDIST -v -rA --tb=short -p no:cacheprovider -m "$marker" --junitxml="$OUT/junit-$kind.xml" \
    "${files[@]}" >> "$OUT/suite.log" 2>&1
  local rc=$?
  tail -n +$((start + 1)) "$OUT/suite.log" | grep -E -v '(PASSED|SKIPPED|XFAIL)' | tail -n 30
  return $rc
}
suite_fast_stage() { suite fast; }
suite_slow_stage() { suite slow; }

model_stage() {
  if [[ $MODE == gpu ]]; then
    $PY benchmarks/train_throughput.py --batch 256 --json "$SCRATCH/fig/model.json"
  else
    $PY benchmarks/train_throughput.py --device cpu --batch 4 --steps 1 --warmup 1 --matmul-size 256 \
      --json "$SCRATCH/fig/model.json"
  fi
}

data_stage() {
  local d="$SCRATCH/data"
  if [[ $MODE == gpu ]]; then
    $PY benchmarks/synth_shards.py "$d" --train 12800 --val 0 --workers "$CORES" &&
      $PY benchmarks/gpu_pipeline.py tile "$d/prep" "$d/tiled" --samples $((2500 * 256))
  else
    $PY -m alexnet.cli.main data synth "$d/src" --size 32 --train-per-class 20 --val-per-class 0 --no-progress &&
      $PY -m alexnet.cli.main prepare "$d/src" "$d/prep" --no-progress &&
      $PY benchmarks/gpu_pipeline.py tile "$d/prep" "$d/tiled" --samples 20000
  fi
}

e2e() {  # e2e DECODE LIMIT
  local decode=$1 limit=$2
  local args=(--run "$SCRATCH/e2e-$decode/run" --decode "$decode" --limit-s $((limit - 12)) --json "$SCRATCH/fig/e2e-$decode.json")
  if [[ $MODE == gpu ]]; then
    args+=(--device cuda --batch 256 --steps 1000 --window-s 60 --warmup-s 8)
  else
    args+=(--device cpu --config demo --batch 32 --workers 1 --steps 30 --window-s 10 --warmup-s 3 --log-every 5)
  fi
  $PY benchmarks/gpu_pipeline.py e2e "$SCRATCH/data/tiled" "${args[@]}"
}
e2e_gpu_decode_stage() { e2e auto "$1"; }
e2e_cpu_decode_stage() { e2e cpu "$1"; }

loader_stage() {
  if [[ $MODE == gpu ]]; then
    $PY benchmarks/gpu_pipeline.py loader "$SCRATCH/data/tiled" --device cuda --batch 256 --seconds 8 \
      --json "$SCRATCH/fig/loader.json"
  else
    $PY benchmarks/gpu_pipeline.py loader "$SCRATCH/data/tiled" --device cpu --batch 32 --workers 1 --seconds 2 \
      --json "$SCRATCH/fig/loader.json"
  fi
}

# ---------------------------------------------------------------- the table (after every stage)
table() {
  $PY - "$OUT" "$SCRATCH" "$MODE" "$((SECONDS - START))" <<'EOF'
import json, re, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, scratch, mode, total = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
figs = {}
for p in sorted((scratch / "fig").glob("*.json")):
    try:
        figs[p.stem] = json.loads(p.read_text())
    except (OSError, ValueError):
        pass
stages = {}
for line in (scratch / "stages.tsv").read_text().splitlines():
    name, status, secs = line.split("\t")
    stages[name] = (status, int(secs))
figs["stages"] = {k: {"status": s, "seconds": t} for k, (s, t) in stages.items()}
figs["total_s"], figs["mode"] = total, mode
tmp = out / "figures.json.tmp"
tmp.write_text(json.dumps(figs, indent=1))
tmp.replace(out / "figures.json")

metrics = []  # the end-to-end runs' step lines, for $OUT
for arm in ("auto", "cpu"):
    p = scratch / f"e2e-{arm}" / "run" / "metrics.jsonl"
    if p.is_file():
        rows = []
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("kind") in ("setup", "step"):
                rows.append(json.dumps({"arm": arm, **r}))
        metrics += rows[-400:]
if metrics:
    (out / "e2e-metrics.jsonl").write_text("\n".join(metrics) + "\n")


def stage(name):
    status, secs = stages.get(name, ("not run", 0))
    return f"{status}, {secs} s"


def suite(kind):
    try:
        root = ET.parse(out / f"junit-{kind}.xml").getroot()
        s = root if root.tag == "testsuite" else root.find("testsuite")
        n, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        bad = [f"{c.get('classname')}::{c.get('name')}" for c in s.iter("testcase")
               if c.find("failure") is not None or c.find("error") is not None]
        text = f"{n - f - e - sk} passed, {f} failed, {e} errors, {sk} skipped"
    except (OSError, ET.ParseError, AttributeError):  # cut off before pytest wrote it: count the log's lines
        try:
            log = (out / "suite.log").read_text(errors="replace").split(f"--- suite {kind}\n", 1)[1].split("--- suite ")[0]
        except (OSError, IndexError):
            return "no result"
        lines = [l for l in log.splitlines() if "::" in l]
        counts = {k: sum(1 for l in lines if re.search(rf"\b{k}\b", l)) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        bad = [l.split()[-1] for l in lines if re.search(r"\b(FAILED|ERROR)\b", l)]
        text = (f"cut off: {counts['PASSED']} passed, {counts['FAILED']} failed, {counts['ERROR']} errors, "
                f"{counts['SKIPPED']} skipped so far (from suite.log)")
    return text + (" (" + ", ".join(bad[:6]) + (", ..." if len(bad) > 6 else "") + ")" if bad else "")


env, dec, model, loader = (figs.get(k) or {} for k in ("env", "decode", "model", "loader"))
rows = [("machine", f"{env.get('gpu') or 'no GPU'}; torch {env.get('torch')}, torchvision {env.get('torchvision')}, "
         f"triton {env.get('triton')}, CUDA {env.get('cuda')}; setuptools {env.get('setuptools')}, ulimit -n "
         f"{env.get('ulimit_n')}, /dev/shm free {env.get('dev_shm_free_kb')} KB", stage("env")),
        ("install (pip -e . --no-deps --no-index)", stages.get("install", ("not run", 0))[0], stage("install"))]
if dec:
    gpu = f"nvJPEG {dec['gpu_img_s']:,.0f} img/s" if dec.get("gpu_img_s") else f"nvJPEG: {dec.get('gpu_problem') or 'not run'}"
    rows.append(("JPEG decode alone, 256 px", f"{gpu}; libjpeg-turbo {dec['cpu_one_thread_img_s']:,.0f} img/s per "
                 f"thread x {dec['cores']} cores = {dec['cpu_all_cores_img_s']:,.0f}", ""))
smoke = " (smoke: a few files)" if mode == "smoke" else ""
rows.append(("test suite, -m 'not slow'" + smoke, suite("fast"), stage("suite-fast")))
if model:
    b, o = model["baseline_img_s"], model["ours_bf16_channels_last_img_s"]
    rows.append((f"model only, batch {model['batch']}, cudnn.benchmark: torchvision alexnet() fp32 NCHW",
                 f"{b:,.0f} img/s = 1.00x", stage("model")))
    tv = model.get("torchvision_bf16_channels_last_img_s")
    if tv:
        rows.append(("model only: torchvision alexnet() bf16 autocast + channels_last", f"{tv:,.0f} img/s = {tv / b:.2f}x", ""))
    rows.append((f"model only: ours bf16 channels_last, LRN: {model['lrn']}", f"{o:,.0f} img/s = {o / b:.2f}x",
                 "target >= 1.5x"))
else:
    rows.append(("model only", "no result", stage("model")))
rows.append(("synthetic 256 px JPEG shards, one long epoch", stages.get("data", ("not run", 0))[0], stage("data")))
for arm, name in (("auto", "e2e-gpu-decode"), ("cpu", "e2e-cpu-decode")):
    r = figs.get(f"e2e-{arm}") or {}
    if r.get("img_s"):
        frac = f", {r['img_s'] / model['ours_bf16_channels_last_img_s']:.2f} of ours model-only" \
            if model and model.get("batch") == r.get("batch") else ""
        fig = (f"{r['img_s']:,.0f} img/s over {r['steps']} steps, {r['seconds']:.0f} s"
               f"{'' if r.get('complete') else ' (window incomplete)'}{frac}")
    else:
        fig = "no result"
    rows.append((f"end to end, train --config {r.get('config', 'paper')}, data.decode={arm}: decoder "
                 f"{r.get('decoder', '?')}, LRN {r.get('lrn', '?')}", fig,
                 stage(name) + ("; target >= 10,000 img/s" if mode == "gpu" and arm == "auto" else "")))
if loader:
    parts = [f"decode={w}: {loader.get(f'decode_{w}_img_s') or 0:,.0f} img/s ({loader.get(f'decode_{w}_decoder')})"
             for w in ("main", "workers") if f"decode_{w}_decoder" in loader]
    rows.append((f"loader alone, batch {loader['batch']}, {loader['workers']} workers", "; ".join(parts), stage("loader")))
else:
    rows.append(("loader alone", "no result", stage("loader")))
rows.append(("test suite, -m slow" + smoke, suite("slow"), stage("suite-slow")))
rows.append(("whole check", f"{total} s", f"mode {mode}; scratch {scratch}"))

width = [max(len(str(r[i])) for r in rows + [("check", "figure", "stage")]) for i in range(3)]
lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(("check", "figure", "stage / note"), width)) + " |",
         "|" + "|".join("-" * (w + 2) for w in width) + "|"]
lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, width)) + " |" for r in rows]
table = "\n".join(lines)
(out / "summary.md.tmp").write_text(table + "\n")
(out / "summary.md.tmp").replace(out / "summary.md")
print(table)
EOF
}

run_stage install install_stage
# the package must import from THIS checkout (a venv may hold another checkout's editable install)
if ! $PY -c "import alexnet, os, sys; sys.exit(not alexnet.__file__.startswith(os.path.realpath('src') + os.sep))" \
    2>/dev/null; then
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: alexnet does not import from $REPO/src after the install step; using PYTHONPATH=$REPO/src"
fi
run_stage env env_stage
run_stage suite-fast suite_fast_stage
run_stage model model_stage
run_stage data data_stage
run_stage e2e-gpu-decode e2e_gpu_decode_stage
run_stage e2e-cpu-decode e2e_cpu_decode_stage
run_stage loader loader_stage
run_stage suite-slow suite_slow_stage

echo
table
echo
echo "gpu_check: files in $OUT ($(ls "$OUT" | wc -l), $(du -ck "$OUT"/* | tail -n 1 | cut -f1) KB in all): $(ls "$OUT" | tr '\n' ' ')"
echo "gpu_check: data, runs and stage logs kept in $SCRATCH"
