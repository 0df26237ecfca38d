#!/usr/bin/env bash
# Zero-shot RIS evaluation on every visible GPU (torchrun, images sharded, results gathered),
# or in one process on one GPU / the CPU. Extra arguments go to eval_RIS.py, e.g.
#   run_scripts/blip2/eval/eval_ris.sh --dataset_name refcoco --splitBy unc --split testA
#   CUDA_VISIBLE_DEVICES=0,1 run_scripts/blip2/eval/eval_ris.sh --cfg-path configs/blip2/eval/ris_refcocog_test.yaml
# All 8 splits: for c in configs/blip2/eval/ris_ref*.yaml; do run_scripts/blip2/eval/eval_ris.sh --cfg-path "$c"; done
# Relative paths (--out, --data-root, --cfg-path, ...) are the caller's: the script runs where it is called.
# Environment: PYTHON (default: python) is the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PY="${PYTHON:-python}"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "${NGPU}" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="${NGPU}" "$ROOT/eval_RIS.py" "$@"
else
  exec "$PY" "$ROOT/eval_RIS.py" "$@"
fi
