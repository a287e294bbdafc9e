#!/usr/bin/env bash
# The GPU check, in one command, on a CUDA machine (sized for one H100 and 16 cores: about
# 5-7 minutes, every stage under its own time limit, all of them under GPU_CHECK_BUDGET seconds, 540 by
# default, so that it fits a 10-minute command limit):
#
#   bash benchmarks/gpu_check.sh              # from the repository root, with torch/torchvision/triton
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --cpu-smoke  # the same stages, tiny, on the CPU: checks the script itself
#
# Stages: the environment; installs this package (pip --no-deps --no-index -e .: the machine's own torch,
# no network); the model-only throughput benchmark (torchvision alexnet() as the classic fp32 example,
# torchvision with bf16 autocast + channels_last, ours in bf16 channels_last with the Triton LRN);
# synthetic 256 px JPEG shards (benchmarks/synth_shards.py); `alexnet train --config paper` end to end on
# them (images/s); a short training run (the demo recipe on 32 px images, on the GPU); the test suite
# (pytest -n 8: the fast tests, then the slow ones with the time left). Then ONE table. Everything is also
# in $OUT/gpu_check.log, each stage's output in $OUT/<stage>.log, the figures in $OUT/*.json and the
# table in $OUT/summary.md.
set -uo pipefail

MODE=gpu
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) MODE=smoke ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (--cpu-smoke, --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/stages.tsv"
exec > >(tee "$OUT/gpu_check.log") 2>&1
if [[ -z "${PYTHON:-}" ]]; then
  if [[ $MODE == smoke && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PY=$PYTHON
BUDGET=${GPU_CHECK_BUDGET:-540}
CORES=$(nproc)
START=$SECONDS
echo "gpu_check: mode $MODE, python $PY, out $OUT, $CORES cores, budget ${BUDGET}s, $(date -u +%FT%TZ)"

# run_stage NAME LIMIT_S COMMAND...: the command under `timeout` (its limit cut to the budget left), its
# output in $OUT/NAME.log too; appends "NAME<TAB>status<TAB>seconds" to $OUT/stages.tsv.
run_stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START) - 15))
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    echo "=== $name: skipped, no time left in the budget"
    printf '%s\tskipped (no time left)\t0\n' "$name" >> "$OUT/stages.tsv"
    return 0
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  if declare -F "$1" >/dev/null; then  # a function of this script: run it in a bash that has it, under timeout
    set -- bash -c "set -o pipefail; $(declare -p PY OUT DEV MODE CORES DATA_ARGS E2E_ARGS DEMO_SYNTH DEMO_SETS); $(declare -f "$1"); $1"
  fi
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  local status=ok
  ((rc == 124 || rc == 137)) && status="timeout after ${limit}s"
  ((rc != 0 && rc != 124 && rc != 137)) && status="failed (exit $rc)"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$OUT/stages.tsv"
  echo "=== $name: $status in $((SECONDS - t0))s"
  return 0
}

if [[ $MODE == gpu ]]; then
  DEV=cuda
  MODEL_ARGS=(--batch 256)
  DATA_ARGS=(--train 12800 --val 256 --workers "$CORES")
  E2E_ARGS=(--batch 256 --e2e-epochs 4)
  DEMO_SYNTH=(--train-per-class 500 --val-per-class 100)
  DEMO_SETS=()
  XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
  SUITE_FAST=(-m pytest $XDIST -q -p no:cacheprovider -m "not slow" --junitxml="$OUT/junit-fast.xml")
  SUITE_SLOW=(-m pytest $XDIST -q -p no:cacheprovider -m slow --junitxml="$OUT/junit-slow.xml")
else
  DEV=cpu
  MODEL_ARGS=(--device cpu --batch 4 --steps 1 --warmup 1 --matmul-size 256)
  DATA_ARGS=(--train 160 --val 20 --workers 2)
  E2E_ARGS=(--device cpu --batch 8 --e2e-epochs 2 --e2e-workers 1)
  DEMO_SYNTH=(--train-per-class 20 --val-per-class 5)
  DEMO_SETS=(--set run.epochs=1)
  SUITE_FAST=(-m pytest -q -p no:cacheprovider -m "not slow" --junitxml="$OUT/junit-fast.xml" tests/test_devices.py
              tests/test_lrn_triton.py)
  SUITE_SLOW=(-m pytest -q -p no:cacheprovider -m slow --junitxml="$OUT/junit-slow.xml"
              tests/test_engine.py::test_resume_inside_the_warm_up_is_exact)
fi

env_stage() {
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  lscpu | grep 'Model name' || true
  $PY - "$OUT/env.json" <<'EOF'
import importlib, json, platform, sys
info = {"python": platform.python_version()}
for name in ("torch", "torchvision", "triton", "numpy", "PIL", "yaml", "tqdm", "matplotlib", "safetensors",
             "pytest", "xdist", "onnx", "onnxscript", "onnxruntime"):
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "present")
    except Exception as e:
        info[name] = None
import torch
info["cuda"] = torch.version.cuda
info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
missing = [k for k in ("numpy", "PIL", "yaml", "tqdm", "matplotlib", "safetensors", "torchvision", "pytest") if not info[k]]
optional = [k for k in ("triton", "xdist", "onnx", "onnxscript", "onnxruntime") if not info[k]]
print(json.dumps(info))
if missing:
    print(f"gpu_check: MISSING required modules: {', '.join(missing)} (no network here: install them first)")
if optional:
    print(f"gpu_check: optional modules missing: {', '.join(optional)} (their tests skip or the stage says so)")
json.dump(info, open(sys.argv[1], "w"), indent=1)
EOF
}

e2e_stage() {
  $PY benchmarks/train_throughput.py --no-model --e2e "$OUT/data/prep" "${E2E_ARGS[@]}" --json "$OUT/e2e.json" && return 0
  # the GPU decode path may be what failed: measure the CPU decode path too, so the table says which
  if $PY -c "from alexnet.engine.config import DataConfig; assert hasattr(DataConfig, 'decode')" 2>/dev/null; then
    echo "gpu_check: end-to-end run failed; again with data.decode=cpu"
    $PY benchmarks/train_throughput.py --no-model --e2e "$OUT/data/prep" "${E2E_ARGS[@]}" --set data.decode=cpu \
      --json "$OUT/e2e_cpu_decode.json"
  fi
  return 1
}

short_stage() {
  local d="$OUT/short"
  rm -rf "$d"
  $PY -m alexnet.cli.main data synth "$d/src" --size 32 "${DEMO_SYNTH[@]}" --no-progress &&
    $PY -m alexnet.cli.main prepare "$d/src" "$d/prep" --no-progress &&
    $PY -m alexnet.cli.main train --config demo --data "$d/prep" --out "$d/run" --device "$DEV" --no-progress \
      "${DEMO_SETS[@]}" | tee "$d/train.out" &&
    tail -n 1 "$d/train.out" > "$OUT/short.json"
}

install_stage() {
  if [[ $MODE == smoke ]]; then
    echo "cpu smoke: not installing (the venv has the package); the GPU run does:"
    echo "  $PY -m pip install --no-deps --no-build-isolation --no-index -e ."
    $PY -c "import alexnet; print('alexnet', alexnet.__version__, alexnet.__file__)"
  else
    $PY -m pip install --no-deps --no-build-isolation --no-index -e . &&
      $PY -c "import alexnet; print('alexnet', alexnet.__version__, alexnet.__file__)"
  fi
}

data_stage() {
  if [[ -f "$OUT/data/prep/meta.json" ]]; then echo "reusing $OUT/data/prep"; return 0; fi
  rm -rf "$OUT/data"
  $PY benchmarks/synth_shards.py "$OUT/data" "${DATA_ARGS[@]}"
}

rm -f "$OUT"/{model,e2e,e2e_cpu_decode,short}.json "$OUT"/junit-{fast,slow}.xml
run_stage env 30 env_stage
run_stage install 120 install_stage
run_stage model 150 $PY benchmarks/train_throughput.py "${MODEL_ARGS[@]}" --json "$OUT/model.json"
run_stage data 90 data_stage
run_stage e2e 120 e2e_stage
run_stage short 120 short_stage
run_stage suite-fast 240 $PY "${SUITE_FAST[@]}"
run_stage suite-slow 600 $PY "${SUITE_SLOW[@]}"

# ---------------------------------------------------------------- the table
$PY - "$OUT" "$MODE" "$((SECONDS - START))" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, mode, total = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


stages = {}
for line in (out / "stages.tsv").read_text().splitlines():
    name, status, secs = line.split("\t")
    stages[name] = (status, int(secs))


def stage(name):
    status, secs = stages.get(name, ("not run", 0))
    return f"{status}, {secs} s"


env, model, e2e, e2e_cpu, short = (load(n) for n in ("env.json", "model.json", "e2e.json", "e2e_cpu_decode.json",
                                                        "short.json"))
same_batch = [bool(r and model and r.get("batch") == model.get("batch")) for r in (e2e, e2e_cpu)]
e2e, e2e_cpu = (r.get("e2e") if r else None for r in (e2e, e2e_cpu))  # the run's figures in the benchmark's JSON
rows = []
gpu = (env or {}).get("gpu") or "no GPU"
rows.append(("machine", f"{gpu}; torch {(env or {}).get('torch')}, triton {(env or {}).get('triton')}, "
             f"CUDA {(env or {}).get('cuda')}", stage("env")))
rows.append(("install (pip -e . --no-deps --no-index)", stages.get("install", ("not run", 0))[0], stage("install")))


def junit(name):
    try:
        root = ET.parse(out / name).getroot()
    except (OSError, ET.ParseError):
        return "no result"
    s = root if root.tag == "testsuite" else root.find("testsuite")
    n, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    text = f"{n - f - e - sk} passed, {f} failed, {e} errors, {sk} skipped"
    bad = [f"{c.get('classname')}::{c.get('name')}" for c in s.iter("testcase")
           if c.find("failure") is not None or c.find("error") is not None]
    return text + (" (" + ", ".join(bad[:8]) + (", ..." if len(bad) > 8 else "") + ")" if bad else "")


smoke = " (smoke: a few files)" if mode == "smoke" else ""
rows.append(("test suite, -m 'not slow'" + smoke, junit("junit-fast.xml"), stage("suite-fast")))
rows.append(("test suite, -m slow" + smoke, junit("junit-slow.xml"), stage("suite-slow")))
if model:
    b = model["baseline_img_s"]
    rows.append((f"model only, batch {model['batch']}: torchvision alexnet() fp32 NCHW (the classic example)",
                 f"{b:,.0f} img/s = 1.00x", stage("model")))
    tv = model.get("torchvision_bf16_channels_last_img_s")
    if tv:
        rows.append(("model only: torchvision alexnet() bf16 autocast + channels_last", f"{tv:,.0f} img/s = {tv / b:.2f}x", ""))
    o = model["ours_bf16_channels_last_img_s"]
    vs_tv = f", {o / tv:.2f}x torchvision bf16" if tv else ""
    rows.append((f"model only: ours (the paper's net) bf16 channels_last, LRN: {model['lrn']}",
                 f"{o:,.0f} img/s = {o / b:.2f}x{vs_tv}", "target >= 1.5x the classic example"))
    rows.append(("model only: ours, best setting", f"{model['best_setting']}: {model['ours_img_s']:,.0f} img/s, "
                 f"{model['achieved_gflops'] / 1000:.1f} TFLOP/s = {model['fraction_of_bf16_matmul']:.2f} of bf16 matmul", ""))
else:
    rows.append(("model-only throughput", "no result", stage("model")))
rows.append(("synthetic 256 px JPEG shards", stages.get("data", ("not run", 0))[0], stage("data")))
for label, r, same in (("", e2e, same_batch[0]), (" (data.decode=cpu, after the default failed)", e2e_cpu, same_batch[1])):
    if r:
        frac = f", {r['img_s'] / model['ours_bf16_channels_last_img_s']:.2f} of ours model-only" if same else ""
        rows.append((f"end to end: alexnet train --config paper, 256 px JPEG shards{label}",
                     f"{r['img_s']:,.0f} img/s over epochs 2-{r['epochs']} (first {r['first_epoch_img_s']:,.0f}){frac}",
                     stage("e2e") + ("; target >= 10,000 img/s on one H100" if mode == "gpu" else "")))
if not e2e and not e2e_cpu:
    rows.append(("end to end: alexnet train --config paper", "no result", stage("e2e")))
if short:
    err = short.get("best_top1_err")
    rows.append(("short run: demo recipe, alexnet-small, 32 px built-in data",
                 f"{short.get('epochs')} epochs in {short.get('time_s', 0):.0f} s, best val top-1 error "
                 + (f"{err:.2%}" if isinstance(err, (int, float)) else str(err)), stage("short")))
else:
    rows.append(("short run: demo recipe", "no result", stage("short")))
rows.append(("whole check", f"{total} s", f"mode {mode}"))

width = [max(len(str(r[i])) for r in rows + [("check", "figure", "stage")]) for i in range(3)]
lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(("check", "figure", "stage / note"), width)) + " |",
         "|" + "|".join("-" * (w + 2) for w in width) + "|"]
lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, width)) + " |" for r in rows]
table = "\n".join(lines)
(out / "summary.md").write_text(table + "\n")
print()
print(table)
EOF
