#!/usr/bin/env bash
# Open-vocabulary region classification (Osprey's protocol: semantic similarity and IoU) on
# LVIS or PACO val, on every visible GPU (docs/region_classification.md).
# Usage: bash run_scripts/blip2/eval/eval_region_classification.sh lvis|paco [key=value ...]
#   e.g. ... lvis run.similarity_model=/models/all-MiniLM-L6-v2 run.layout=let run.output_dir=out/lvis_let
# Options are train.py --options items (see run_scripts/blip2/launch_train.sh for NGPU, PYTHON, LAUNCHER).
set -euo pipefail
DATASET="${1:-}"
case "$DATASET" in
  lvis | paco) shift ;;
  *)
    echo "$(basename "$0"): the first argument must be lvis or paco, got '${DATASET}'" >&2
    exit 2
    ;;
esac
LAUNCH_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch_train.sh" \
  "configs/blip2/eval/classify_${DATASET}_val.yaml" "$@"
