#!/usr/bin/env bash
# Zero-shot region captioning (RegionVLM FlanT5-XL; beam 3, max 20, min 5; METEOR/CIDEr ...):
#   refcocog   RefCOCOg val, GLaMM's layout          configs/blip2/eval/caption_refcocog_val.yaml
#   vg_glamm   Visual Genome test, GLaMM's subset    configs/blip2/eval/caption_vg_glamm_test.yaml
#   vg_grit    Visual Genome test, GRiT's full set   configs/blip2/eval/caption_vg_grit_test.yaml
#   all        the three, one after the other
# Usage: bash run_scripts/blip2/eval/eval_region_captions.sh BENCHMARK [key=value ...]
#   e.g. ... refcocog model.weights.regionvlm=/ckpts/ckpoint_RegionVLM.pth run.batch_size_eval=64
# (GPUs, NGPU and the rest: see run_scripts/blip2/launch_train.sh)
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
usage="usage: $(basename "$0") refcocog|vg_glamm|vg_grit|all [key=value ...]"
if [ "$#" -lt 1 ]; then echo "$usage" >&2; exit 2; fi
benchmark="$1"
shift
case "$benchmark" in
  refcocog) configs=(caption_refcocog_val.yaml) ;;
  vg_glamm) configs=(caption_vg_glamm_test.yaml) ;;
  vg_grit) configs=(caption_vg_grit_test.yaml) ;;
  all) configs=(caption_refcocog_val.yaml caption_vg_glamm_test.yaml caption_vg_grit_test.yaml) ;;
  *) echo "$(basename "$0"): unknown benchmark '$benchmark'; $usage" >&2; exit 2 ;;
esac
for cfg in "${configs[@]}"; do
  LAUNCH_NAME="$(basename "$0")" bash "$HERE/../launch_train.sh" "configs/blip2/eval/$cfg" "$@"
done
