#!/usr/bin/env bash
# Zero-shot VCR (Q->A, QA->R, Q->AR) on val, official generation protocol, on all local GPUs.
#   VCR_ROOT=/data/vcr (default $REGIONVLM_DATA/vcr) REGIONVLM_WEIGHTS=/weights bash run_scripts/blip2/eval/eval_vcr.sh [--mode ranking] ...
# Extra arguments go to eval_VCR.py. Resumes when started again with the same settings.
# Relative paths (VCR_ROOT, OUT, --out, ...) are the caller's: the script runs where it is called.
# Environment: PYTHON (default: python) is the interpreter; NGPU the number of processes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PY="${PYTHON:-python}"
NGPU="${NGPU:-$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" "$ROOT/eval_VCR.py" \
  --cfg-path "$ROOT/configs/blip2/eval/vcr_val.yaml" \
  --data-root "${VCR_ROOT:-${REGIONVLM_DATA:-data}/vcr}" \
  --out "${OUT:-output/vcr_val}" \
  "$@"
