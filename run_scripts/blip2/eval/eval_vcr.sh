#!/usr/bin/env bash
# Zero-shot VCR (Q->A, QA->R, Q->AR) on val, official generation protocol, on all local GPUs.
#   VCR_ROOT=/data/vcr (default $REGIONVLM_DATA/vcr) REGIONVLM_WEIGHTS=/weights bash run_scripts/blip2/eval/eval_vcr.sh [--mode ranking] ...
# Extra arguments go to eval_VCR.py. Resumes when started again with the same settings.
set -euo pipefail
cd "$(dirname "$0")/../../.."
NGPU="${NGPU:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
torchrun --standalone --nproc_per_node="$NGPU" eval_VCR.py \
  --cfg-path configs/blip2/eval/vcr_val.yaml \
  --data-root "${VCR_ROOT:-${REGIONVLM_DATA:-data}/vcr}" \
  --out "${OUT:-output/vcr_val}" \
  "$@"
