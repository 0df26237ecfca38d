"""Where the time of the GPU goals goes: a stage split and a profile of the training step and
of the RIS fast path, at the full size with random weights (no weight file needed).

``gpu_check.sh`` reports the two goals (RIS fast path >= 55x the authors' protocol, training
>= 200 samples/s). When one is missed this script says which stage dominates:

* **train**: the runner's step at the LN_ft settings (batch 8, official precision, ViT
  gradient checkpointing), split into ViT forward / rest of the forward / backward /
  optimizer + GradScaler with a device synchronization between stages (wall and process CPU
  seconds each), the step's samples/s at larger batches (does a step cost per sample or per
  launch?), and the top operators by self CPU and self CUDA time from ``torch.profiler``;
* **ris**: the fast path on one image (20 masks x 5 draws, 7 sentences) split into image
  encoding / Q-Former + T5 encoder / decoder, and, as a check of the precision noise, the
  fast path against the authors' protocol under ``fp32`` and ``official`` on the same draws
  (max score difference, same arg-min).

    python benchmarks/profile_gpu.py --device cuda --json profile.json
    python benchmarks/profile_gpu.py --preset tiny --device cpu          # the script itself, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_ris import SENTENCES, build_model, synthetic_image
from bench_train_step import LN_FT, build_training_model, runner_step, training_mix
from timing import sync, timed

from regionvlm.common.optims import param_groups
from regionvlm.models import place_model
from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
from regionvlm.tasks.ris import (
    DrawGroup,
    RISSettings,
    _region_inputs,
    build_prompts,
    encode_images,
    encode_region_texts,
    score_image_fast,
    score_image_official,
)


def top_ops(prof: Any, key: str, n: int) -> List[Dict[str, Any]]:
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:n]
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
            "self_device_ms": round(getattr(e, "self_device_time_total", 0.0) / 1e3, 2),
        }
        for e in rows
    ]


def forward_rest(model: Any, embeds: torch.Tensor, samples: Dict[str, Any]) -> torch.Tensor:
    """The forward after the ViT: Q-Former, T5 encoder, decoder and the token-mean loss."""
    queries = model.region_queries(embeds, samples["text_input"])
    t5_in, mask = model.t5_inputs(queries)
    nll, valid = model.token_nll(model.encode_t5(t5_in, mask), mask, samples["text_output"])
    return nll.sum() / valid.sum()


def optimizer_step(scaler: Any, opt: torch.optim.Optimizer) -> None:
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)


def repeated_steps(model: Any, samples: Dict[str, Any], opt: torch.optim.Optimizer, scaler: Any, n: int) -> None:
    for _ in range(n):
        runner_step(model, samples, opt, scaler)


def profile_train(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    model = build_training_model(args.preset, device, "official", grad_checkpoint=True)
    opt = torch.optim.AdamW(param_groups(model, LN_FT["weight_decay"]), lr=LN_FT["init_lr"], betas=LN_FT["betas"])
    scaler = model.precision.grad_scaler()
    samples = training_mix(args.batch, model.image_size, device)
    repeated_steps(model, samples, opt, scaler, 3)
    stages: Dict[str, List[tuple]] = {}
    for _ in range(args.steps):
        with model.precision.train_autocast():
            embeds, *vit = timed(device, model.encode_image, samples["image"])
            loss, *rest = timed(device, forward_rest, model, embeds, samples)
        _, *backward = timed(device, scaler.scale(loss).backward)
        _, *optim = timed(device, optimizer_step, scaler, opt)
        for name, value in zip(
            ("vit_forward", "qformer_t5_forward", "backward", "optimizer_scaler"), (vit, rest, backward, optim)
        ):
            stages.setdefault(name, []).append(value)
    split = {
        k: {"wall_s": float(np.median([w for w, _ in v])), "cpu_s": float(np.median([c for _, c in v]))}
        for k, v in stages.items()
    }
    scaling = {}
    for batch in args.scale_batches:
        mix = training_mix(batch, model.image_size, device)
        runner_step(model, mix, opt, scaler)
        _, wall, cpu = timed(device, repeated_steps, model, mix, opt, scaler, 3)
        scaling[str(batch)] = {"s_per_step": wall / 3, "cpu_s_per_step": cpu / 3, "samples_per_s": 3 * batch / wall}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        repeated_steps(model, samples, opt, scaler, 2)
        sync(device)
    events = prof.key_averages()
    kernels = sum(getattr(e, "self_device_time_total", 0.0) for e in events) / 1e3 / 2
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    return {
        "batch": args.batch,
        "stages_median": split,
        "batch_scaling": scaling,
        "profile": {
            "device_time_ms_per_step": round(kernels, 1),
            "kernel_launches_per_step": launches // 2,
            "top_self_cpu": top_ops(prof, "self_cpu_time_total", 12),
            "top_self_device": top_ops(prof, "self_device_time_total", 12),
        },
    }


def decode_pairs(model: Any, hidden: torch.Tensor, mask: torch.Tensor, sentences: List[str], chunk: int) -> None:
    """The decoder over every (encoder row, sentence) pair, ``chunk`` pairs per call."""
    pairs = [(r, s) for s in sentences for r in range(hidden.shape[0])]
    for i in range(0, len(pairs), chunk):
        rows = torch.tensor([r for r, _ in pairs[i : i + chunk]], device=hidden.device)
        model.target_nll(hidden[rows], mask[rows], [s for _, s in pairs[i : i + chunk]])


def profile_ris(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    model = build_model(args.preset, device, "meta" if args.preset == "flant5xl-random" else "preset")
    vis, txt = BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()
    image, masks = synthetic_image(np.random.default_rng(0), 480, 640, args.masks)
    sentences = [txt(s) for s in SENTENCES[: args.sentences]]
    groups = [DrawGroup("profile", list(range(len(sentences))))]
    first3 = [DrawGroup("profile", [0, 1, 2])]  # the same key: the same draws
    out: Dict[str, Any] = {}
    for policy in ("official", "fp32"):
        model = place_model(model, True, device, precision=policy)
        settings = RISSettings(max_masks=args.masks, repeats=5).resolved(device, model.num_points)
        prompts = build_prompts("points", image, masks, vis).to(device)
        score_image_fast(model, prompts, sentences, groups, settings, txt)  # warm-up
        with torch.inference_mode():
            _, _, texts = _region_inputs(prompts, groups, settings, txt)
            emb, w_img, _ = timed(device, encode_images, model, prompts.images, settings.encoder_batch)
            (hidden, mask), w_enc, _ = timed(device, encode_region_texts, model, emb, texts, settings.encoder_batch)
            _, w_dec, _ = timed(device, decode_pairs, model, hidden, mask, sentences, settings.decoder_batch)
        fast, w_fast, _ = timed(device, score_image_fast, model, prompts, sentences, groups, settings, txt)
        official, w_off, _ = timed(device, score_image_official, model, prompts, sentences[:3], first3, settings, txt)
        diff = np.abs(fast[:3] - official)
        out[policy] = {
            "fast_stages_s": {"encode_image": w_img, "qformer_t5_encoder": w_enc, "decoder": w_dec},
            "fast_s_per_sentence": w_fast / len(sentences),
            "official_s_per_sentence": w_off / 3,
            "ratio": (w_off / 3) / (w_fast / len(sentences)),
            "max_abs_score_diff": float(diff.max()),
            "max_rel_score_diff": float((diff / np.abs(official)).max()),
            "score_spread_across_masks": float(np.median(fast.max(1) - fast.min(1))),
            "same_argmin": f"{int((fast[:3].argmin(1) == official.argmin(1)).sum())}/3",
        }
    return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line, checked (``gpu_check.sh --dry-run`` commands are tested against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="flant5xl-random")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--scale-batches", type=lambda s: [int(v) for v in s.split(",") if v], default=[16, 32, 64])
    p.add_argument("--masks", type=int, default=20)
    p.add_argument("--sentences", type=int, default=7)
    p.add_argument("--only", choices=("train", "ris"), default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.sentences < 3:
        p.error("--sentences must be at least 3 (the authors' protocol is timed on 3)")
    if min([args.batch, args.steps, args.masks, *args.scale_batches]) < 1:
        p.error("--batch, --steps, --masks and --scale-batches must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    result: Dict[str, Any] = {"preset": args.preset, "device": str(device)}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
    for name, fn in (("train", profile_train), ("ris", profile_ris)):
        if args.only in (None, name):
            result[name] = fn(args, device)
            print(json.dumps({name: result[name]}, indent=1), flush=True)
            if args.json:
                args.json.write_text(json.dumps(result, indent=1) + "\n")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return result


if __name__ == "__main__":
    main()
