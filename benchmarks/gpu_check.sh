#!/usr/bin/env bash
# The GPU check, one command: the full-size model with random weights (built on the GPU, no
# weight file needed) through the benchmarks whose GPU figures the README reports.
#
#   bash benchmarks/gpu_check.sh                      # on a GPU machine: < 8 min on one H100/H200
#   bash benchmarks/gpu_check.sh --smoke              # the same stages at the tiny size on CPU (~35 s)
#   bash benchmarks/gpu_check.sh --only env,quickstart   # `python -m regionvlm.quickstart --retrain`, timed
#
# Stages (each its own process, under its own time limit; a failed or timed-out stage is
# reported and the next one runs):
#   env         GPU name(s), driver, torch/CUDA/cuDNN versions, Python packages the stages need
#   ris         benchmarks/bench_ris.py --preset flant5xl-random under the `official` and `bf16`
#               precision policies, one model: fast path vs the authors' protocol (goal >= 55x)
#   train       benchmarks/bench_train_step.py at the LN_ft settings: batch 8, ViT gradient
#               checkpointing, official precision (fp16 autocast + GradScaler, T5 bf16 frozen,
#               Q-Former trainable): samples/s (goal >= 200) and peak GPU memory
#   generation  benchmarks/bench_gpu_generation.py: region caption (beam 5, 30 tokens) and VQA
#               (beam 5, 10 tokens) latency at batch 1 and 8
#   profile     benchmarks/profile_gpu.py: where the time goes when a goal is missed — the training
#               step split into ViT / rest of the forward / backward / optimizer, samples/s at
#               batch 16-64, kernel launches per step and the top operators; the RIS fast path
#               split into image / Q-Former + T5 encoder / decoder, and fast vs official scores
#               under fp32 and official precision
#   quickstart  (only with --with-quickstart or --only ...,quickstart) the tiny model retrained
#               and evaluated end to end: python -m regionvlm.quickstart --retrain --device cuda
#
# Writes into --out DIR (default: $OUT if set, else output/gpu_check), rewritten after every stage:
#   gpu_check.json   every number, each stage's status (ok / failed / timeout / skipped), seconds, limit
#   summary.txt      the short text summary (also printed at the end)
#   gpu_check.log    every stage's output
# Exit status: 0 when every stage that ran succeeded, 1 otherwise, 2 on a usage error.
#
# Options:
#   --smoke              tiny preset on CPU, a few samples: checks the script itself in seconds
#   --out DIR            where the three files go
#   --device DEV         cuda (default) or cpu; --smoke implies cpu
#   --only LIST          comma-separated stages to run (env,ris,train,generation,quickstart)
#   --with-quickstart    add the quickstart stage (off by default: it takes several minutes)
#   --limit STAGE=SEC    a stage's time limit (defaults: env 60, ris 180, train 120, generation 120,
#                        profile 150, quickstart 540; smoke: 60 each); repeatable
#   --dry-run            print each stage's command (one line: STAGE: COMMAND) and run nothing
#   --budget SEC         stop starting stages once this much wall time is spent; a stage's limit is
#                        cut to what remains (default 480; 0 = no budget). The quickstart stage is
#                        outside the budget.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # the repository is enough; no install needed
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

ARGS="$*"
SMOKE=0; OUTDIR="${OUT:-output/gpu_check}"; DEVICE=""; ONLY=""; WITH_QS=0; BUDGET=""; DRY=0
declare -A LIMIT=([env]=60 [ris]=180 [train]=120 [generation]=120 [profile]=150 [quickstart]=540)
declare -A LIMIT_SET=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUTDIR="${2:?--out needs a folder}"; shift ;;
    --device) DEVICE="${2:?--device needs cuda or cpu}"; shift ;;
    --only) ONLY="${2:?--only needs a list of stages}"; shift ;;
    --with-quickstart) WITH_QS=1 ;;
    --dry-run) DRY=1 ;;
    --limit)
      spec="${2:?--limit needs STAGE=SECONDS}"; shift
      stage="${spec%%=*}"; secs="${spec#*=}"
      if [ -z "${LIMIT[$stage]+x}" ] || ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
        echo "gpu_check.sh: --limit wants STAGE=SECONDS with STAGE in: ${!LIMIT[*]}, got '$spec'" >&2; exit 2
      fi
      LIMIT_SET[$stage]="$secs" ;;
    --budget) BUDGET="${2:?--budget needs seconds}"; shift
      [[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget wants whole seconds, got '$BUDGET'" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ALL_STAGES="env ris train generation profile quickstart"
if [ -n "$ONLY" ]; then
  STAGES=""
  for s in ${ONLY//,/ }; do
    case " $ALL_STAGES " in *" $s "*) STAGES="$STAGES $s" ;;
      *) echo "gpu_check.sh: unknown stage '$s' in --only (stages: $ALL_STAGES)" >&2; exit 2 ;; esac
  done
else
  STAGES="env ris train generation profile"
  [ "$WITH_QS" = 1 ] && STAGES="$STAGES quickstart"
fi
if [ "$SMOKE" = 1 ]; then
  DEVICE="${DEVICE:-cpu}"
  for s in $ALL_STAGES; do LIMIT[$s]=60; done
  LIMIT[quickstart]=300
  BUDGET="${BUDGET:-0}"
else
  DEVICE="${DEVICE:-cuda}"
  BUDGET="${BUDGET:-480}"
fi
for s in "${!LIMIT_SET[@]}"; do LIMIT[$s]="${LIMIT_SET[$s]}"; done
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac

if [ "$DRY" = 0 ]; then
  mkdir -p "$OUTDIR" || exit 2
  OUTDIR="$(cd "$OUTDIR" && pwd)"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")" || exit 2
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/status" "$WORK/results" "$WORK/logs"
LOG="$OUTDIR/gpu_check.log"
[ "$DRY" = 1 ] || : > "$LOG"
START=$(date +%s)
printf '%s\n' "bash benchmarks/gpu_check.sh $ARGS" > "$WORK/command"

# --- helpers run by the stages (plain Python files, written here so the script is self-contained)
cat > "$WORK/env_info.py" <<'PY'
"""What the machine is: GPU, driver, versions, and which Python packages the stages need are absent."""
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys

out = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
       "executable": sys.executable}
needed = ["torch", "numpy", "PIL", "scipy", "torchvision", "transformers", "tokenizers", "safetensors",
          "omegaconf", "yaml", "tqdm", "regionvlm"]
if sys.argv[1:] and sys.argv[1] == "quickstart":
    needed += ["pycocotools", "tensorboard"]
missing = {m: "not installed" for m in needed if importlib.util.find_spec(m) is None}
out["missing_packages"] = missing
try:
    import torch

    out.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    out["gpus"] = [{"name": torch.cuda.get_device_name(i),
                    "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                    "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
                   for i in range(torch.cuda.device_count())]
except Exception as exc:  # noqa: BLE001
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
if shutil.which("nvidia-smi"):
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    out["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
for key in ("python", "torch", "cuda", "cudnn", "cuda_available", "gpus", "nvidia_smi", "missing_packages"):
    print(f"{key}: {out.get(key)}")
with open(sys.argv[-1], "w") as f:
    json.dump(out, f, indent=1)
sys.exit(1 if missing else 0)
PY

cat > "$WORK/ris_policies.py" <<'PY'
"""benchmarks/bench_ris.py under several precision policies on one model, built once."""
import importlib.util
import json
import sys
import traceback
from pathlib import Path

root, out, policies, argv = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
spec = importlib.util.spec_from_file_location("bench_ris", root / "benchmarks" / "bench_ris.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_ris"] = bench
spec.loader.exec_module(bench)
from regionvlm.models import place_model  # noqa: E402

state = {"model": None, "policy": None}
build_model = bench.build_model


def build_once(preset, device, init):
    """The model of the first call, placed again under the current policy (frozen towers' dtypes)."""
    if state["model"] is None:
        state["model"] = build_model(preset, device, init)
    return place_model(state["model"], True, device, precision=state["policy"])


bench.build_model = build_once
results = {}
for policy in policies:
    state["policy"] = policy
    print(f"--- precision policy: {policy}", flush=True)
    try:
        result = bench.main(argv)
        result["precision"] = policy
        for mode in result["modes"].values():
            mode["meets_goal_55x"] = mode["ratio"] >= 55
        results[policy] = result
    except Exception as exc:  # noqa: BLE001 - one policy failing must not hide the other
        traceback.print_exc()
        results[policy] = {"precision": policy, "error": f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(results, indent=1) + "\n")
sys.exit(1 if any("error" in r for r in results.values()) else 0)
PY

cat > "$WORK/quickstart_timed.py" <<'PY'
"""python -m regionvlm.quickstart with its arguments, timed; its summary and the wall time as JSON."""
import json
import sys
import time

from regionvlm import quickstart

out, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
summary = quickstart.main(argv)
with open(out, "w") as f:
    json.dump({"argv": argv, "wall_s": round(time.perf_counter() - start, 1), "summary": summary}, f, indent=1)
PY

cat > "$WORK/merge.py" <<'PY'
"""Gather the stages' statuses and results into gpu_check.json and summary.txt."""
import datetime
import json
import os
import sys
from pathlib import Path

work, outdir, mode, device, planned = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split()
GOALS = {"ris_fast_over_official": 55.0, "train_samples_per_s": 200.0}


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


stages = {}
for name in planned:
    status = load(work / "status" / f"{name}.json") or {"status": "not run"}
    status["result"] = load(work / "results" / f"{name}.json")
    stages[name] = status
env = stages.get("env", {}).get("result") or {}
lines = [f"gpu_check ({mode}) on {device}: " + (", ".join(g["name"] for g in env.get("gpus") or []) or "no GPU")
         + f"; torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, Python {env.get('python')}"]
if env.get("nvidia_smi"):
    lines.append(f"  nvidia-smi: {env['nvidia_smi']}")
if env.get("missing_packages"):
    lines.append(f"  missing Python packages: {sorted(env['missing_packages'])}")
smoke = mode == "smoke"
note = "  (smoke: tiny preset on CPU, goals do not apply)" if smoke else ""
for name, st in stages.items():
    head = f"[{name}] {st['status']}"
    if "seconds" in st:
        head += f" in {st['seconds']} s (limit {st['limit_s']} s)"
    if st.get("reason"):
        head += f": {st['reason']}"
    lines.append(head)
    r = st.get("result")
    if not r:
        continue
    if name == "ris":
        for policy, res in r.items():
            if "error" in res:
                lines.append(f"  {policy}: error {res['error']}")
                continue
            for m in res["modes"].values():
                goal = "" if smoke else f" (goal >= {GOALS['ris_fast_over_official']:.0f}x: " \
                    f"{'met' if m['ratio'] >= GOALS['ris_fast_over_official'] else 'NOT met'})"
                lines.append(f"  {policy:<8} {m['mode']}: official {m['official_s_per_sentence']:.4f} s/sentence, fast "
                             f"{m['fast_s_per_sentence']:.5f} s/sentence -> {m['ratio']:.1f}x{goal}; fast peak "
                             f"{m['fast_peak_mem_gib']:.2f} GiB; max |score diff| {m['max_abs_score_diff']:.1e}, "
                             f"same arg-min {m['same_argmin']}")
    elif name == "train":
        goal = "" if smoke else f" (goal >= {GOALS['train_samples_per_s']:.0f}: " \
            f"{'met' if r['samples_per_s'] >= GOALS['train_samples_per_s'] else 'NOT met'})"
        lines.append(f"  {r['preset']}, precision {r['precision']} (GradScaler {r['grad_scaler']}), grad checkpointing "
                     f"{r['grad_checkpoint']}, batch {r['batch']}: {r['s_per_step']:.4f} s/step, "
                     f"{r['samples_per_s']:.1f} samples/s{goal}; peak memory {r['peak_memory_gib']:.2f} GiB "
                     f"({r['memory_kind']}); losses finite {r['losses_finite']}")
    elif name == "generation":
        for b in r["batches"]:
            lines.append(f"  {r['preset']} ({r['precision']}), batch {b['batch']}: encode {b['encode_s'] * 1000:.1f} ms, "
                         f"caption {b['caption']['median_s'] * 1000:.1f} ms ({max(b['caption']['output_tokens'])} "
                         f"tokens, beam {r['num_beams']}), VQA {b['vqa']['median_s'] * 1000:.1f} ms "
                         f"({max(b['vqa']['output_tokens'])} tokens)")
    elif name == "profile" and "train" in r:
        t, p = r["train"], r["train"]["profile"]
        parts = ", ".join(f"{k} {v['wall_s'] * 1000:.0f} ms (CPU {v['cpu_s'] * 1000:.0f})" for k, v in t["stages_median"].items())
        lines.append(f"  train step, batch {t['batch']}: {parts}; {p['kernel_launches_per_step']} kernel launches/step")
        lines.append("  samples/s by batch: " + ", ".join(f"{b}: {v['samples_per_s']:.1f}" for b, v in t["batch_scaling"].items()))
        for policy, v in r.get("ris", {}).items():
            st = ", ".join(f"{k} {s * 1000:.0f} ms" for k, s in v["fast_stages_s"].items())
            lines.append(f"  RIS fast path ({policy}), one image: {st}; fast vs official {v['ratio']:.1f}x, "
                         f"max rel score diff {v['max_rel_score_diff']:.1e}, same arg-min {v['same_argmin']}")
    elif name == "quickstart":
        s = r.get("summary") or {}
        lines.append(f"  wall {r['wall_s']} s; RIS {s.get('ris_accuracy')} % (EMPTY {s.get('ris_empty_prompt_accuracy')} %), "
                     f"caption exact match {s.get('caption_exact_match')} %")
if note:
    lines.append(note)
report = {
    "mode": mode, "device": device, "command": (work / "command").read_text().strip(),
    "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "goals": GOALS, "env": env, "stages": stages, "summary": lines,
}
tmp = outdir / ".gpu_check.json.tmp"
tmp.write_text(json.dumps(report, indent=1) + "\n")
os.replace(tmp, outdir / "gpu_check.json")
tmp = outdir / ".summary.txt.tmp"
tmp.write_text("\n".join(lines) + "\n")
os.replace(tmp, outdir / "summary.txt")
PY

merge() { "$PY" "$WORK/merge.py" "$WORK" "$OUTDIR" "$MODE" "$DEVICE" "$STAGES" || echo "gpu_check.sh: merging the results failed" >&2; }

status() {  # stage status reason [seconds limit rc]
  "$PY" - "$WORK/status/$1.json" "$2" "$3" "${4:-}" "${5:-}" "${6:-}" <<'PY'
import json, sys
path, status, reason, seconds, limit, rc = sys.argv[1:7]
out = {"status": status}
if reason:
    out["reason"] = reason
if seconds:
    out.update(seconds=int(seconds), limit_s=int(limit), rc=int(rc))
open(path, "w").write(json.dumps(out))
PY
}

run_stage() {  # name, then the command
  local name="$1"; shift
  local limit="${LIMIT[$name]}" now elapsed rc t0
  if [ "$DRY" = 1 ]; then
    printf '%s:' "$name"; printf ' %q' "$@"; printf '\n'
    return 0
  fi
  now=$(date +%s); elapsed=$((now - START))
  if [ "$name" != quickstart ] && [ "$BUDGET" -gt 0 ]; then
    if [ $((BUDGET - elapsed)) -lt 10 ]; then
      status "$name" skipped "the --budget of $BUDGET s was spent"; merge; return 1
    fi
    [ $((BUDGET - elapsed)) -lt "$limit" ] && limit=$((BUDGET - elapsed))
  fi
  printf '\n=== %s (limit %s s) : %s\n' "$name" "$limit" "$*" | tee -a "$LOG"
  t0=$(date +%s)
  if command -v timeout > /dev/null; then
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG" "$WORK/logs/$name.log"
  else  # no coreutils timeout: the stage runs without its limit (said in the log)
    echo "gpu_check.sh: no 'timeout' command here; $name runs without a time limit" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$LOG" "$WORK/logs/$name.log"
  fi
  rc=${PIPESTATUS[0]}
  local secs=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    status "$name" ok "" "$secs" "$limit" "$rc"
  elif [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ "$secs" -ge "$limit" ]; }; then
    status "$name" timeout "stopped at its limit of $limit s; the end of its output is in gpu_check.log" "$secs" "$limit" "$rc"
  elif [ $rc -eq 137 ]; then
    status "$name" failed "killed (signal 9) before its limit: out of memory? the end of its output is in gpu_check.log" \
      "$secs" "$limit" "$rc"
  else
    status "$name" failed "exit status $rc; the end of its output: $(tail -n 3 "$WORK/logs/$name.log" | tr '\n' ' ' | cut -c1-400)" "$secs" "$limit" "$rc"
  fi
  merge
  return $rc
}

MODE=full; [ "$SMOKE" = 1 ] && MODE=smoke
R="$WORK/results"
if [ "$SMOKE" = 1 ]; then
  RIS_ARGS=(--preset tiny --device "$DEVICE" --modes points --images 1 --sentences 2 --masks 3 --repeats 1
            --height 60 --width 80)
  TRAIN_ARGS=(--preset tiny --device "$DEVICE" --batch 2 --steps 1 --warmup 1)
  GEN_ARGS=(--preset tiny --device "$DEVICE" --batches 1 --repeats 1 --caption-tokens 5 --vqa-tokens 3)
  PROFILE_ARGS=(--preset tiny --device "$DEVICE" --steps 1 --scale-batches 4 --masks 3 --sentences 3)
  QS_ARGS=(--retrain --device "$DEVICE" --num-train 40 --num-test 4
           --train-options run.max_epoch=1 run.stop_after_steps=2 run.batch_size_train=4)
else
  RIS_ARGS=(--preset flant5xl-random --device "$DEVICE" --modes points --images 2 --sentences 7 --masks 20
            --repeats 5 --official-sentences 7)
  TRAIN_ARGS=(--preset flant5xl-random --device "$DEVICE" --batch 8 --steps 10 --warmup 3)
  GEN_ARGS=(--preset flant5xl-random --device "$DEVICE" --precision official --batches 1,8 --repeats 5)
  PROFILE_ARGS=(--preset flant5xl-random --device "$DEVICE")
  QS_ARGS=(--retrain --device "$DEVICE")
fi

FAILED=0
NEED_GPU=0; case "$DEVICE" in cuda*) NEED_GPU=1 ;; esac
for stage in $STAGES; do
  if [ "$NEED_GPU" = 1 ] && [ "$stage" != env ] && [ -f "$R/env.json" ] && \
     ! "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("cuda_available") else 1)' "$R/env.json"; then
    status "$stage" skipped "no CUDA device is visible to torch (run with --smoke, or --device cpu)"; merge
    FAILED=1; continue
  fi
  case "$stage" in
    env) run_stage env "$PY" "$WORK/env_info.py" $([ "$WITH_QS" = 1 ] || [[ " $STAGES " == *" quickstart "* ]] && echo quickstart) "$R/env.json" ;;
    ris) run_stage ris "$PY" "$WORK/ris_policies.py" "$ROOT" "$R/ris.json" official,bf16 "${RIS_ARGS[@]}" ;;
    train) run_stage train "$PY" benchmarks/bench_train_step.py "${TRAIN_ARGS[@]}" --precision official \
             --grad-checkpoint --json "$R/train.json" ;;
    generation) run_stage generation "$PY" benchmarks/bench_gpu_generation.py "${GEN_ARGS[@]}" --json "$R/generation.json" ;;
    profile) run_stage profile "$PY" benchmarks/profile_gpu.py "${PROFILE_ARGS[@]}" --json "$R/profile.json" ;;
    quickstart) run_stage quickstart "$PY" "$WORK/quickstart_timed.py" "$R/quickstart.json" "${QS_ARGS[@]}" \
                  --out "$WORK/quickstart" ;;
  esac
  [ $? -eq 0 ] || FAILED=1
done
[ "$DRY" = 1 ] && exit 0
merge
echo
cat "$OUTDIR/summary.txt" 2>/dev/null
echo "(every number: $OUTDIR/gpu_check.json; every stage's output: $LOG)"
exit "$FAILED"
