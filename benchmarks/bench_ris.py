"""RIS scoring cost: the authors' per-mask protocol against this project's fast path.

In one process and on the same model, both implementations of ``regionvlm.tasks.ris``
score the same synthetic images (``--masks`` kept proposals x ``--repeats`` draws each,
``--sentences`` referring sentences per image, as in RefCOCO val's ~7 per image). Reported:
seconds per sentence, peak memory (CUDA allocator peak on GPU, peak process RSS on CPU),
the ratio, and how well the two agree (max |score difference|, same arg-min).

Both sides measure model work only (image preprocessing, proposal decoding and file I/O
are excluded; the evaluator overlaps them with the GPU by prefetching).

    python benchmarks/bench_ris.py                               # tiny preset, CPU
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
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor  # noqa: E402
from regionvlm.region import MaskPointSampler  # noqa: E402
from regionvlm.tasks.ris import (DrawGroup, RISSettings, score_image_fast,  # noqa: E402
                                 score_image_official)

SENTENCES = [
    "man in red shirt on the left", "the woman holding an umbrella", "bottom right giraffe",
    "white car behind the bus", "the smaller elephant in the middle of the picture", "guy",
    "second bowl from the right with broccoli in it", "table closest to the camera",
    "a brown dog lying on the couch next to a sleeping cat", "right zebra",
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


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.preset == "flant5xl-random" and device.type != "cuda":
        print("warning: the full-size model on CPU is very slow; pass --device cuda on a GPU machine.")
    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    t0 = time.perf_counter()
    model = build_model(args.preset, device, args.init or ("meta" if args.preset == "flant5xl-random" else "preset"))
    build_s = time.perf_counter() - t0
    settings = RISSettings(max_masks=args.masks, num_points=args.points, repeats=args.repeats,
                           decoder_batch=args.decoder_batch, encoder_batch=args.encoder_batch).resolved(device)
    vis, txt = BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()
    rng = np.random.default_rng(0)
    images = []
    for i in range(args.images):
        image, masks = synthetic_image(rng, args.height, args.width, args.masks)
        sentences = [txt(SENTENCES[(i * args.sentences + j) % len(SENTENCES)]) for j in range(args.sentences)]
        images.append((vis(image).unsqueeze(0).to(device), [MaskPointSampler(m) for m in masks], sentences))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def score(fn, idx: int, sentences: List[str]) -> np.ndarray:
        tensor, samplers, _ = images[idx]
        groups = [DrawGroup(f"bench{idx}", list(range(len(sentences))))]
        return fn(model, tensor, samplers, sentences, groups, settings, txt)

    # warm-up (kernels, allocator, tokenizer caches)
    score(score_image_fast, 0, images[0][2][:2])
    score(score_image_official, 0, images[0][2][:1])
    sync()

    fast_scores, official_scores = [], []
    with PeakMemory(device) as fast_mem:
        t, c = time.perf_counter(), time.process_time()
        for i in range(len(images)):
            fast_scores.append(score(score_image_fast, i, images[i][2]))
        sync()
        fast_s, fast_cpu = time.perf_counter() - t, time.process_time() - c
    n_fast = sum(len(s) for _, _, s in images)
    n_official = min(args.official_sentences or n_fast, n_fast)
    with PeakMemory(device) as official_mem:
        t, c = time.perf_counter(), time.process_time()
        done = 0
        for i in range(len(images)):
            take = images[i][2][:max(0, n_official - done)]
            if take:
                official_scores.append(score(score_image_official, i, take))
                done += len(take)
        sync()
        official_s, official_cpu = time.perf_counter() - t, time.process_time() - c
    diffs, same = [], 0
    for f, o in zip(fast_scores, official_scores):
        diffs.append(float(np.abs(f[:len(o)] - o).max()))
        same += int((f[:len(o)].argmin(1) == o.argmin(1)).sum())
    result = {
        "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads",
        "parameters": sum(p.numel() for p in model.parameters()), "build_s": round(build_s, 1),
        "images": args.images, "sentences_per_image": args.sentences, "masks": args.masks,
        "repeats": args.repeats, "points": args.points, "decoder_batch": settings.decoder_batch,
        "official_s_per_sentence": official_s / n_official, "fast_s_per_sentence": fast_s / n_fast,
        "ratio": (official_s / n_official) / (fast_s / n_fast),
        # process CPU time: the fairer comparison on a shared CPU (wall time includes other jobs)
        "official_cpu_s_per_sentence": official_cpu / n_official, "fast_cpu_s_per_sentence": fast_cpu / n_fast,
        "ratio_cpu_time": (official_cpu / n_official) / (fast_cpu / n_fast),
        "official_peak_mem_gib": official_mem.peak / 2 ** 30, "fast_peak_mem_gib": fast_mem.peak / 2 ** 30,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "sentences_timed": {"official": n_official, "fast": n_fast},
        "max_abs_score_diff": max(diffs) if diffs else None, "same_argmin": f"{same}/{n_official}",
    }
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="tiny")
    p.add_argument("--device", default=None)
    p.add_argument("--init", choices=("preset", "meta"), default=None,
                   help="preset: the preset's own random init; meta: build on meta, init on the device")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--sentences", type=int, default=7, help="sentences per image (RefCOCO val: ~7.2)")
    p.add_argument("--masks", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--decoder-batch", type=int, default=0, help="0 = auto (1024 on GPU, 64 on CPU)")
    p.add_argument("--encoder-batch", type=int, default=128)
    p.add_argument("--official-sentences", type=int, default=None,
                   help="time the (slow) official protocol on this many sentences only (default: all)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = run(args)
    print(f"{result['preset']} on {result['device_name']}: {result['masks']} masks x {result['repeats']} draws, "
          f"{result['sentences_per_image']} sentences/image")
    print(f"  official protocol: {result['official_s_per_sentence']:.4f} s/sentence, peak "
          f"{result['official_peak_mem_gib']:.2f} GiB ({result['memory_kind']})")
    print(f"  fast path:         {result['fast_s_per_sentence']:.4f} s/sentence, peak "
          f"{result['fast_peak_mem_gib']:.2f} GiB")
    if result["device"] == "cpu":
        print(f"  CPU time: official {result['official_cpu_s_per_sentence']:.4f}, fast "
              f"{result['fast_cpu_s_per_sentence']:.4f} s/sentence -> {result['ratio_cpu_time']:.1f}x")
    print(f"  ratio (wall): {result['ratio']:.1f}x   max |score diff| {result['max_abs_score_diff']:.2e}, "
          f"same arg-min {result['same_argmin']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
