#!/usr/bin/env bash
# Shared launcher of the run scripts: train.py --cfg-path CFG under torchrun on the visible GPUs,
# or one process (run.device=cpu) without GPUs, every extra argument forwarded as --options.
#
# Usage: bash run_scripts/blip2/launch_train.sh CFG.yaml [key=value ...]
#   Each argument becomes an --options item of train.py (a leading "--options" is accepted), e.g.
#     model.weights.regionvlm=/ckpts/ckpoint_RegionVLM.pth run.batch_size_eval=32 run.output_dir=out/x
# Environment:
#   NGPU            processes for torchrun (default: every visible GPU); 0 = one CPU process
#                   (then run.device=cpu is set before your options)
#   PYTHON          interpreter (default: python)
#   LAUNCHER        command that replaces "$PYTHON [-m torch.distributed.run --nproc_per_node=N]"
#                   (e.g. for several nodes)
#   REGIONVLM_DATA, REGIONVLM_WEIGHTS  data and weight folders the YAML reads (default ./data, ./weights)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CFG="$1"
shift
NAME="${LAUNCH_NAME:-$(basename "$0")}"

count_gpus() {
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    local visible="${CUDA_VISIBLE_DEVICES// /}"
    if [ -z "$visible" ] || [ "$visible" = "-1" ]; then echo 0; else awk -F, '{print NF}' <<< "$visible"; fi
  elif command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

NGPU="${NGPU:-$(count_gpus)}"
if ! [[ "$NGPU" =~ ^[0-9]+$ ]]; then
  echo "$NAME: NGPU must be a non-negative integer, got '$NGPU'" >&2
  exit 2
fi

options=()
if [ "$NGPU" -eq 0 ]; then options+=(run.device=cpu); fi
for arg in "$@"; do
  if [ "$arg" = "--options" ]; then continue; fi
  case "$arg" in
    ?*=*) options+=("$arg") ;;
    *) echo "$NAME: '$arg' is not a key=value option (e.g. run.batch_size_eval=8)" >&2; exit 2 ;;
  esac
done

if [ -n "${LAUNCHER:-}" ]; then
  read -r -a launch <<< "$LAUNCHER"
elif [ "$NGPU" -gt 0 ]; then
  read -r -a launch <<< "${PYTHON:-python} -m torch.distributed.run --nproc_per_node=$NGPU"
else
  read -r -a launch <<< "${PYTHON:-python}"
fi

command=("${launch[@]}" "$ROOT/train.py" --cfg-path "$ROOT/$CFG")
if [ "${#options[@]}" -gt 0 ]; then command+=(--options "${options[@]}"); fi
exec "${command[@]}"
