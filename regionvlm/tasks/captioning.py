"""Region captioning: the training task of RegionVLM (and its evaluation by generation)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import torch

from regionvlm.common.io import atomic_write_json
from regionvlm.common.registry import registry
from regionvlm.tasks.base_task import BaseTask
from regionvlm.tasks.eval_loop import clear_partials, run_resumable


@registry.register_task("region_captioning")
class RegionCaptioningTask(BaseTask):
    """Train: T5 cross-entropy of the region (or global) caption. Evaluate: caption every
    region of the ``eval`` split and report exact match against the reference."""

    def evaluate(self, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]],
                 run_cfg: Any, output_dir: Path) -> Dict[str, float]:
        split = run_cfg.get("eval_split", "val")
        metrics: Dict[str, float] = {}
        for name, by_split in datasets.items():
            if split not in by_split:
                continue
            dataset = by_split[split]
            items = list(range(len(dataset)))

            def caption(index: int) -> List[Dict[str, str]]:
                sample = dataset[index]
                image = sample["image"].unsqueeze(0).to(model.device)
                texts = sample["text_input"] if isinstance(sample["text_input"], list) else [sample["text_input"]]
                refs = sample["text_output"] if isinstance(sample["text_output"], list) else [sample["text_output"]]
                preds = model.generate({"image": image, "image_index": [0] * len(texts), "text_input": texts},
                                       num_beams=int(run_cfg.get("num_beams", 1)),
                                       max_length=int(run_cfg.get("max_len", 30)))
                return [{"region": t, "reference": r, "prediction": p} for t, r, p in zip(texts, refs, preds)]

            rows = [row for group in run_resumable(items, str, caption, output_dir, f"captions_{name}")
                    for row in group]
            exact = sum(r["prediction"].strip() == r["reference"].strip() for r in rows) / max(1, len(rows))
            metrics[f"{name}_{split}_exact_match"] = round(100.0 * exact, 2)
            atomic_write_json(Path(output_dir) / f"captions_{name}_{split}.json",
                              {"metrics": metrics, "captions": rows})
            clear_partials(output_dir, f"captions_{name}")
        return metrics
