"""The tiny training setup the trainer tests share: the synthetic world's training split,
preprocessed as the real Localized Narratives are, and the command-line options that point
``configs/synthetic/train_tiny.yaml`` at it (each test adds its own ``run.*`` settings; a later
option wins)."""

from __future__ import annotations

from pathlib import Path
from typing import List

from regionvlm.data.localized_narratives import preprocess_localized_narratives
from regionvlm.synthetic.world import write_world

REPO = Path(__file__).resolve().parents[1]
TRAIN_CFG = REPO / "configs" / "synthetic" / "train_tiny.yaml"


def write_train_world(root: Path, num_train: int = 12) -> Path:
    write_world(root, num_train=num_train, num_val=0, num_test=0, seed=0)
    preprocess_localized_narratives(
        [root / "localized_narratives" / "synthetic_train_localized_narratives.jsonl"],
        root / "annotations" / "ln_synthetic_train.json",
        image_root=root / "images",
        patterns={"synthetic": ["{image_id}.png"]},
        progress=False,
    )
    return root


def train_options(world: Path, out: Path, *extra: str) -> List[str]:
    """``train.main`` arguments: the tiny recipe on ``world``, batch 2 on the CPU, into ``out``."""
    return [
        "--cfg-path",
        str(TRAIN_CFG),
        "--options",
        f"datasets.regionvlm_mix.region_ann={world}/annotations/ln_synthetic_train.json",
        f"datasets.regionvlm_mix.coco_ann={world}/captions/coco_karpathy_train.json",
        f"datasets.regionvlm_mix.coco_image_root={world}/images",
        "datasets.regionvlm_mix.region_prob_by_epoch={0: 1.0, 1: 0.6}",
        "run.batch_size_train=2",
        "run.device=cpu",
        f"run.output_dir={out}",
        *extra,
    ]
