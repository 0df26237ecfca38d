#!/usr/bin/env bash
# Zero-shot VQAv2 (val), VQA accuracy per answer type, RegionVLM FlanT5-XL (docs/evaluation.md).
# Usage: bash run_scripts/blip2/eval/validate_vqa_zeroshot_flant5xl.sh [key=value ...]   (see run_scripts/blip2/launch_train.sh)
LAUNCH_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch_train.sh" configs/blip2/eval/vqav2_zeroshot_flant5xl_eval.yaml "$@"
