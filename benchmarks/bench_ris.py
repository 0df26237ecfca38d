"""RIS scoring cost: the authors' per-mask protocol against this project's fast path.

In one process and on the same model, both implementations of ``regionvlm.tasks.ris``
score the same synthetic images (``--masks`` kept proposals x ``--repeats`` draws each,
``--sentences`` referring sentences per image, as in RefCOCO val's ~7 per image), once per
``region_prompt`` mode in ``--modes`` (default: all of them; the visual modes ``crop``,
``blur``, ``circle`` score each mask once, from its own prompted image). One line per mode:
seconds per sentence of each protocol, their ratio (wall and CPU time), peak memory of the
fast path (CUDA allocator peak on GPU, peak process RSS on CPU), the time to build the
prompts of one image, and how well the two protocols agree (max |score difference|, same
arg-min).

Both protocols are timed on model work only (image preprocessing, the visual-prompt
transforms, proposal decoding and file I/O are excluded; the evaluator overlaps them with
the model by prefetching on threads). That preparation is reported on its own, per image
(``prompts s/image``: the transforms at the image's resolution plus the image processor).

    python benchmarks/bench_ris.py                               # tiny preset, CPU, every mode
    python benchmarks/bench_ris.py --modes points,crop           # some modes only
    python benchmarks/bench_ris.py --preset flant5xl-random      # full architecture, random weights, GPU

``flant5xl-random`` builds the paper's architecture (3.96 B parameters) with
``load_pretrained: false`` on the meta device and initializes it directly on the target
device (N(0, 0.02) weights, unit norms), so no weight file is needed; frozen towers run in
bf16 on GPU as in evaluation. ``--init meta`` uses that path for any preset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import timed

from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
from regionvlm.tasks.ris import (
    REGION_PROMPTS,
    DrawGroup,
    RISSettings,
    build_prompts,
    score_image_fast,
    score_image_official,
)

SENTENCES = [
    "man in red shirt on the left",
    "the woman holding an umbrella",
    "bottom right giraffe",
    "white car behind the bus",
    "the smaller elephant in the middle of the picture",
    "guy",
    "second bowl from the right with broccoli in it",
    "table closest to the camera",
    "a brown dog lying on the couch next to a sleeping cat",
    "right zebra",
]


def build_model(preset: str, device: torch.device, init: str) -> torch.nn.Module:
    """``tiny`` (the preset's own init) or the full architecture with random weights."""
    from omegaconf import OmegaConf

    from regionvlm.models import place_model
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    model_type = {"tiny": "tiny", "flant5xl-random": "flant5xl"}[preset]
    cfg = OmegaConf.load(RegionVLMT5.default_config_path(model_type)).model
    cfg.load_pretrained = False
    cfg.checkpoint = None
    if init == "preset":
        torch.manual_seed(0)
        return place_model(RegionVLMT5.from_config(cfg), True, device)
    with torch.device("meta"):
        model = RegionVLMT5.from_config(cfg)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.endswith(("q_bias", "v_bias")):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)  # LayerNorm / T5 RMSNorm scales
            else:
                p.normal_(0.0, 0.02, generator=gen)
        pos = model.Qformer.bert.embeddings.position_ids
        pos.copy_(torch.arange(pos.shape[1], device=device).unsqueeze(0))
    t5 = model.t5_model
    t5.encoder.embed_tokens = t5.shared  # one input table for encoder and decoder, as the model builds it
    t5.decoder.embed_tokens = t5.shared
    return place_model(model, True, device)


def synthetic_image(rng: np.random.Generator, height: int, width: int, masks: int):
    """A random image and ``masks`` random ellipse/rectangle masks of 5-30 % of its area."""
    from PIL import Image

    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    yy, xx = np.mgrid[:height, :width]
    out = []
    while len(out) < masks:
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.12, 0.3) * height, rng.uniform(0.12, 0.3) * width
        if rng.random() < 0.5:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        if 0.05 <= m.mean() <= 0.3:
            out.append(np.ascontiguousarray(m))
    return image, out


class PeakMemory:
    """CUDA allocator peak, or the peak resident set size sampled every 2 ms on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self._rss()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())


def _timed(device: torch.device, fn) -> Tuple[Any, float, float, float]:
    """(result, wall seconds, process CPU seconds, peak memory bytes) of ``fn()``."""
    with PeakMemory(device) as mem:
        out, wall, cpu = timed(device, fn)
    return out, wall, cpu, mem.peak


def bench_mode(
    mode: str,
    model: torch.nn.Module,
    device: torch.device,
    scenes: List[Tuple[Any, list, List[str]]],
    args: argparse.Namespace,
    vis,
    txt,
) -> Dict[str, Any]:
    """Both protocols on every scene in one ``region_prompt`` mode."""
    settings = RISSettings(
        max_masks=args.masks,
        num_points=args.points,
        repeats=args.repeats,
        decoder_batch=args.decoder_batch,
        encoder_batch=args.encoder_batch,
        region_prompt=mode,
    ).resolved(device)
    build_prompts(mode, scenes[0][0], scenes[0][1][:1], vis)  # warm-up (lazy imports)
    t = time.perf_counter()
    prompts = [build_prompts(mode, image, masks, vis).to(device) for image, masks, _ in scenes]
    prepare_s = (time.perf_counter() - t) / len(scenes)

    def score(fn, idx: int, sentences: List[str]) -> np.ndarray:
        groups = [DrawGroup(f"bench{idx}", list(range(len(sentences))))]
        return fn(model, prompts[idx], sentences, groups, settings, txt)

    # warm-up (kernels, allocator, tokenizer caches)
    score(score_image_fast, 0, scenes[0][2][:2])
    score(score_image_official, 0, scenes[0][2][:1])

    n_fast = sum(len(sentences) for _, _, sentences in scenes)
    n_official = min(args.official_sentences or n_fast, n_fast)

    def run_fast() -> List[np.ndarray]:
        return [score(score_image_fast, i, scene[2]) for i, scene in enumerate(scenes)]

    def run_official() -> List[np.ndarray]:
        out, done = [], 0
        for i, scene in enumerate(scenes):
            take = scene[2][: max(0, n_official - done)]
            if take:
                out.append(score(score_image_official, i, take))
                done += len(take)
        return out

    fast_scores, fast_s, fast_cpu, fast_mem = _timed(device, run_fast)
    official_scores, official_s, official_cpu, official_mem = _timed(device, run_official)
    diffs, same = [], 0
    for f, o in zip(fast_scores, official_scores):
        diffs.append(float(np.abs(f[: len(o)] - o).max()))
        same += int((f[: len(o)].argmin(1) == o.argmin(1)).sum())
    return {
        "mode": mode,
        "passes_per_mask": 1 if prompts[0].visual else settings.repeats,
        "official_s_per_sentence": official_s / n_official,
        "fast_s_per_sentence": fast_s / n_fast,
        "ratio": (official_s / n_official) / (fast_s / n_fast),
        # process CPU time: the fairer comparison on a shared CPU (wall time includes other jobs)
        "official_cpu_s_per_sentence": official_cpu / n_official,
        "fast_cpu_s_per_sentence": fast_cpu / n_fast,
        "ratio_cpu_time": (official_cpu / n_official) / (fast_cpu / n_fast),
        "official_peak_mem_gib": official_mem / 2**30,
        "fast_peak_mem_gib": fast_mem / 2**30,
        "prepare_s_per_image": prepare_s,
        "sentences_timed": {"official": n_official, "fast": n_fast},
        "max_abs_score_diff": max(diffs) if diffs else None,
        "same_argmin": f"{same}/{n_official}",
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.preset == "flant5xl-random" and device.type != "cuda":
        print("warning: the full-size model on CPU is very slow; pass --device cuda on a GPU machine.")
    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    t0 = time.perf_counter()
    model = build_model(args.preset, device, args.init or ("meta" if args.preset == "flant5xl-random" else "preset"))
    build_s = time.perf_counter() - t0
    vis, txt = BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(args.images):
        image, masks = synthetic_image(rng, args.height, args.width, args.masks)
        sentences = [txt(SENTENCES[(i * args.sentences + j) % len(SENTENCES)]) for j in range(args.sentences)]
        scenes.append((image, masks, sentences))
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    )
    result = {
        "preset": args.preset,
        "device": str(device),
        "device_name": device_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": round(build_s, 1),
        "images": args.images,
        "image_size": [args.width, args.height],
        "sentences_per_image": args.sentences,
        "masks": args.masks,
        "repeats": args.repeats,
        "points": args.points,
        "decoder_batch": RISSettings(decoder_batch=args.decoder_batch).resolved(device).decoder_batch,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "modes": {},
    }
    for mode in args.modes:
        result["modes"][mode] = bench_mode(mode, model, device, scenes, args, vis, txt)
        print_line(result["modes"][mode], header=len(result["modes"]) == 1, result=result)
    return result


def print_line(m: Dict[str, Any], header: bool, result: Dict[str, Any]) -> None:
    if header:
        print(
            f"{result['preset']} on {result['device_name']}: {result['images']} images of "
            f"{result['image_size'][0]}x{result['image_size'][1]}, {result['masks']} masks x {result['repeats']} "
            f"draws of {result['points']} points (visual modes: 1 pass), {result['sentences_per_image']} "
            f"sentences/image; peak memory: {result['memory_kind']}"
        )
        print(
            f"{'mode':<7} {'official s/sent':>15} {'fast s/sent':>11} {'ratio':>6} {'ratio CPU':>9} "
            f"{'fast peak GiB':>13} {'prompts s/image':>15} {'max|diff|':>9} {'same arg-min':>12}"
        )
    print(
        f"{m['mode']:<7} {m['official_s_per_sentence']:>15.4f} {m['fast_s_per_sentence']:>11.4f} "
        f"{m['ratio']:>5.1f}x {m['ratio_cpu_time']:>8.1f}x {m['fast_peak_mem_gib']:>13.2f} "
        f"{m['prepare_s_per_image']:>15.3f} {m['max_abs_score_diff']:>9.1e} {m['same_argmin']:>12}",
        flush=True,
    )


def _modes(text: str) -> List[str]:
    modes = [m for m in text.split(",") if m]
    unknown = [m for m in modes if m not in REGION_PROMPTS]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes must be among {','.join(REGION_PROMPTS)}, got {text!r}")
    return modes


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="tiny")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--init",
        choices=("preset", "meta"),
        default=None,
        help="preset: the preset's own random init; meta: build on meta, init on the device",
    )
    p.add_argument(
        "--modes",
        type=_modes,
        default=list(REGION_PROMPTS),
        help="comma-separated region_prompt modes (default: %(default)s)",
    )
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--sentences", type=int, default=7, help="sentences per image (RefCOCO val: ~7.2)")
    p.add_argument("--masks", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--decoder-batch", type=int, default=0, help="0 = auto (1024 on GPU, 64 on CPU)")
    p.add_argument("--encoder-batch", type=int, default=128)
    p.add_argument(
        "--official-sentences",
        type=int,
        default=None,
        help="time the (slow) official protocol on this many sentences only (default: all)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
