#!/usr/bin/env bash
# Zero-shot OK-VQA (test), VQA accuracy on lemmatized predictions, RegionVLM FlanT5-XL (docs/evaluation.md).
# Usage: bash run_scripts/blip2/eval/eval_okvqa_zeroshot_flant5xl.sh [key=value ...]   (see run_scripts/blip2/launch_train.sh)
LAUNCH_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch_train.sh" configs/blip2/eval/okvqa_zeroshot_flant5xl_eval.yaml "$@"
