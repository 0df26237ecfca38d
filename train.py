"""Train or evaluate any RegionVLM task from one YAML file (see ``regionvlm/train.py``).

python train.py --cfg-path configs/synthetic/train_tiny.yaml
torchrun --nproc_per_node=8 train.py --cfg-path configs/blip2/train/LN_ft.yaml
"""

from regionvlm.common.cli import run
from regionvlm.train import main, parse_args  # noqa: F401  (re-exported for scripts and tests)

if __name__ == "__main__":
    run(main)
