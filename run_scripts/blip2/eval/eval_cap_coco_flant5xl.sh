#!/usr/bin/env bash
# Zero-shot COCO captioning (Karpathy test), RegionVLM FlanT5-XL: beam 3, max 20, min 5, empty region text.
# Usage: bash run_scripts/blip2/eval/eval_cap_coco_flant5xl.sh [key=value ...]   (see run_scripts/blip2/launch_train.sh)
LAUNCH_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch_train.sh" configs/blip2/eval/caption_coco_flant5xl_eval.yaml "$@"
