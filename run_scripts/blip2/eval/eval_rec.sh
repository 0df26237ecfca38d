#!/usr/bin/env bash
# Zero-shot REC evaluation (Acc@0.5) on every visible GPU (torchrun, images sharded, results gathered),
# or in one process on one GPU / the CPU. Extra arguments go to eval_REC.py, e.g.
#   run_scripts/blip2/eval/eval_rec.sh --dataset_name refcoco --splitBy unc --split testA
#   run_scripts/blip2/eval/eval_rec.sh --dataset_name refcoco+ --split val --detections reclip_data/refcoco+_dets_dict.json
#   CUDA_VISIBLE_DEVICES=0,1 run_scripts/blip2/eval/eval_rec.sh --cfg-path configs/blip2/eval/rec_refcocog_test.yaml
# All 8 splits: for c in configs/blip2/eval/rec_ref*.yaml; do run_scripts/blip2/eval/eval_rec.sh --cfg-path "$c"; done
# Relative paths (--out, --detections, --cfg-path, ...) are the caller's: the script runs where it is called.
# Environment: PYTHON (default: python) is the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PY="${PYTHON:-python}"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "${NGPU}" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="${NGPU}" "$ROOT/eval_REC.py" "$@"
else
  exec "$PY" "$ROOT/eval_REC.py" "$@"
fi
