#!/usr/bin/env bash
# Zero-shot GQA (balanced test-dev), exact match, RegionVLM FlanT5-XL (docs/evaluation.md).
# Usage: bash run_scripts/blip2/eval/eval_gqa_zeroshot_flant5xl.sh [key=value ...]   (see run_scripts/blip2/launch_train.sh)
LAUNCH_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch_train.sh" configs/blip2/eval/gqa_zeroshot_flant5xl_eval.yaml "$@"
