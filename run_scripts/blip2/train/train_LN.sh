#!/usr/bin/env bash
# RegionVLM training on Localized Narratives (+ VG, COCO and web captions), docs/method.md:
# starts from BLIP-2 FlanT5-XL, AdamW 5e-6, 1000 warm-up steps, cosine, 10 epochs, batch 8 per GPU.
# Usage: NGPU=8 bash run_scripts/blip2/train/train_LN.sh [key=value ...]   (NGPU default: all visible)
#   resume: bash run_scripts/blip2/train/train_LN.sh run.resume_ckpt_path=latest
LAUNCH_NAME="$(basename "$0")" exec bash "$(dirname "${BASH_SOURCE[0]}")/../launch_train.sh" configs/blip2/train/LN_ft.yaml "$@"
