"""Generation latency of the full-size model: a region caption and a VQA answer, per request.

For each batch size in ``--batches`` (requests served together), the median over
``--repeats`` timed calls (after one warm-up call) of

* ``encode``: the ViT + ``ln_vision`` on the preprocessed images (part of both requests);
* ``caption``: ``model.generate`` for one region per image (10-point region text), beam 5,
  at most 30 new tokens (the defaults of ``generate``, what the chat and demo use);
* ``vqa``: ``model.predict_answers`` with the VQAv2 settings (queries without region text,
  prompt ``Question: {} Short answer:``, beam 5, at most 10 new tokens, length penalty -1),

from the preprocessed image tensor on the device to the decoded strings. Random weights
(``flant5xl-random``, built on the device as ``bench_ris.build_model`` does) rarely emit
``</s>``, so decoding usually runs to the token limit: the figures are the cost of full-length
outputs (``output_tokens`` in the JSON: the T5 tokens of each decoded output).

    python benchmarks/bench_gpu_generation.py --preset flant5xl-random --device cuda --json gen.json
    python benchmarks/bench_gpu_generation.py --preset tiny --device cpu --batches 1 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_ris import build_model
from timing import timed

from regionvlm.models import place_model

REGION = "[31 42] [35 48] [40 40] [33 51] [38 45] [29 47] [36 39] [41 50] [34 44] [37 41]"
QUESTION = "what color is the umbrella the woman on the left is holding?"
VQA_PROMPT = "Question: {} Short answer:"


def repeated(fn: Callable[[], Any], device: torch.device, repeats: int) -> Dict[str, Any]:
    """One warm-up call, then the median, min and max seconds of ``repeats`` calls."""
    out = fn()
    seconds = []
    for _ in range(repeats):
        out, wall, _ = timed(device, fn)
        seconds.append(wall)
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats": repeats,
        "output": out,
    }


def bench_batch(model: torch.nn.Module, batch: int, device: torch.device, args: argparse.Namespace) -> Dict[str, Any]:
    gen = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, model.image_size, model.image_size, generator=gen).to(device)
    with torch.inference_mode():
        encode = repeated(lambda: model.encode_image(images), device, args.repeats)
        caption = repeated(
            lambda: model.generate(
                {"image": images, "text_input": [REGION] * batch}, num_beams=args.beams, max_length=args.caption_tokens
            ),
            device,
            args.repeats,
        )
        vqa = repeated(
            lambda: model.predict_answers(
                {"image": images, "text_input": [QUESTION] * batch},
                num_beams=args.beams,
                max_len=args.vqa_tokens,
                prompt=VQA_PROMPT,
            ),
            device,
            args.repeats,
        )
    tok = model.t5_tokenizer

    def tokens(texts: List[str]) -> List[int]:
        return [len(tok(t, add_special_tokens=False).input_ids) for t in texts]

    out = {"batch": batch, "encode_s": encode["median_s"]}
    for name, r in (("caption", caption), ("vqa", vqa)):
        out[name] = {k: v for k, v in r.items() if k != "output"}
        out[name]["output_tokens"] = tokens(r["output"])
        out[name]["s_per_request"] = r["median_s"] / batch
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = build_model(args.preset, device, "meta" if args.preset == "flant5xl-random" else "preset")
    model = place_model(model, is_eval=True, device=device, precision=args.precision)
    build_s = time.perf_counter() - start
    result: Dict[str, Any] = {
        "preset": args.preset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU x{torch.get_num_threads()} threads",
        "precision": model.precision.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": round(build_s, 2),
        "num_beams": args.beams,
        "caption_max_new_tokens": args.caption_tokens,
        "vqa_max_new_tokens": args.vqa_tokens,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "batches": [],
    }
    for batch in args.batches:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        r = bench_batch(model, batch, device, args)
        if device.type == "cuda":
            r["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["batches"].append(r)
        print(
            f"{args.preset} on {result['device_name']} ({result['precision']}), batch {batch}: encode "
            f"{r['encode_s'] * 1000:.1f} ms; caption {r['caption']['median_s'] * 1000:.1f} ms "
            f"({max(r['caption']['output_tokens'])} tokens); VQA {r['vqa']['median_s'] * 1000:.1f} ms "
            f"({max(r['vqa']['output_tokens'])} tokens)",
            flush=True,
        )
    return result


def _batches(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batches must be positive integers, got {text!r}")
    return values


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line, checked (``gpu_check.sh --dry-run`` commands are tested against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="flant5xl-random")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument(
        "--precision",
        choices=("auto", "official", "bf16", "fp32"),
        default="auto",
        help="precision policy (auto: official on GPU, fp32 on CPU)",
    )
    p.add_argument("--batches", type=_batches, default=[1, 8], help="requests per call (default: 1,8)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (after one warm-up)")
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--caption-tokens", type=int, default=30, help="caption: at most this many new tokens")
    p.add_argument("--vqa-tokens", type=int, default=10, help="VQA: at most this many new tokens")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    for name in ("repeats", "beams", "caption_tokens", "vqa_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        from regionvlm.common.io import atomic_write_json

        atomic_write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()
