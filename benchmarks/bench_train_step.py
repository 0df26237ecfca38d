"""Training-step benchmark, same model, same samples, one process. Two modes.

**A step at given settings** (``--batch N``): the runner's step exactly — the precision
policy's autocast around the forward, a GradScaler under ``official``, backward, AdamW over
LAVIS's two parameter groups, ``zero_grad`` — with ViT and T5 frozen as in training from
BLIP-2, on ``--batch`` samples of the training mix (60 % region texts of 10 points, 40 %
global captions ``""``; targets of Localized Narratives' lengths, one image per sample).
Prints and writes seconds per step, samples per second and peak memory (CUDA allocator peak
on GPU; the process's peak RSS on CPU, weights included). The ``LN_ft`` settings
(``configs/blip2/train/LN_ft.yaml``: batch 8 per GPU, ``use_grad_checkpoint: true``,
``precision: official`` on GPU):

    python benchmarks/bench_train_step.py --preset flant5xl-random --device cuda --batch 8 \\
        --precision official --grad-checkpoint --json train_step.json
    python benchmarks/bench_train_step.py --batch 2 --precision official --steps 2     # tiny, CPU

``flant5xl-random`` is the paper's architecture (3.96 B parameters) with random weights built
straight on the device (``bench_ris.build_model``: no weight file needed).

**Comparisons** (no ``--batch``; the numbers quoted in ``docs/tiny_training.md``):

* several region samples per image with the image encoded once (``image_index``, what the
  synthetic recipe uses) against the naive way (the image repeated for every sample);
* the loss with the vocabulary projection on real target tokens only (what the model does)
  against Hugging Face's ``labels=`` loss, which projects every padded position too: the
  regionvlm mix pads short region phrases to the length of long captions;
* glibc keeping freed memory for reuse (``host_memory.retain_freed_memory``, what the runner
  does on CPU) against its defaults, which unmap and page-fault large tensors every step.

    python benchmarks/bench_train_step.py                       # tiny preset, CPU
    python benchmarks/bench_train_step.py --preset flant5xl-random --device cuda --images 8 --per-image 2

These print seconds per step, peak memory and the ratio; also the forward-only time and peak
memory of one tiny forward.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionvlm.common import host_memory
from regionvlm.common.optims import param_groups
from regionvlm.models import place_model
from regionvlm.models.regionvlm_t5 import RegionVLMT5

REGION = "[10 10] [12 15] [20 20] [15 11] [11 19] [18 14] [13 13] [16 17] [19 12] [14 18]"
# Localized Narratives region captions and global captions of typical lengths (T5 tokens 8-30)
TARGETS = [
    "in this image i can see a person standing and holding an umbrella",
    "a red car parked on the road",
    "at the bottom of the image there is a wooden table with a few plates, cups and a bowl of fruit on it",
    "a man riding a horse on a beach",
    "on the left side there is a tree and a building with glass windows",
]
LN_FT = {"init_lr": 5e-6, "weight_decay": 0.05, "betas": (0.9, 0.999)}  # configs/blip2/train/LN_ft.yaml


def build(preset: str, device: str) -> RegionVLMT5:
    name = "tiny" if preset == "tiny" else "flant5xl"
    cfg = OmegaConf.load(RegionVLMT5.default_config_path(name)).model
    cfg.load_pretrained = False
    return place_model(RegionVLMT5.from_config(cfg), is_eval=False, device=device).train()


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_loss(model, samples) -> torch.Tensor:
    return model(samples)["loss"]


def hf_labels_loss(model, samples) -> torch.Tensor:
    """The naive loss: logits for every (padded) decoder position, as T5's ``labels=`` does."""
    queries = model.region_queries(model._image_embeds_for(samples), samples["text_input"])
    embeds, mask = model.t5_inputs(queries)
    tok = model.tokenize_targets(samples["text_output"])
    labels = tok.input_ids.masked_fill(tok.input_ids == model.t5_tokenizer.pad_token_id, -100)
    return model.t5_model(
        inputs_embeds=embeds, attention_mask=mask, labels=labels, decoder_attention_mask=tok.attention_mask
    ).loss


def time_steps(model, samples, steps: int, device: str, loss_fn=model_loss) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = loss_fn(model, samples)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


# --- a step at given settings (the runner's step) ----------------------------------------


def process_peak_rss() -> int:
    """Peak resident set of this process in bytes (``VmHWM``; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU x{torch.get_num_threads()} threads"


def build_training_model(preset: str, device: torch.device, precision: str, grad_checkpoint: bool) -> RegionVLMT5:
    """The preset with random weights (``flant5xl-random``: built on the device), ViT and T5
    frozen as in training from BLIP-2, placed for training under ``precision``."""
    from bench_ris import build_model  # benchmarks/bench_ris.py: the same random full-size model

    model = build_model(preset, device, "meta" if preset == "flant5xl-random" else "preset")
    model.freeze_vit = model.freeze_t5 = True  # the tiny preset trains everything; LN_ft does not
    model._freeze()
    model.use_grad_checkpoint(grad_checkpoint)
    return place_model(model, is_eval=False, device=device, precision=precision)


def training_mix(batch: int, image_size: int, device: torch.device, seed: int = 0) -> Dict[str, Any]:
    """``batch`` samples like the regionvlm mix: 60 % region texts, 40 % global (``""``), one
    image each (random pixels), targets of Localized Narratives' lengths."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 3, image_size, image_size, generator=gen).to(device),
        "text_input": [REGION if i % 5 < 3 else "" for i in range(batch)],
        "text_output": [TARGETS[i % len(TARGETS)] for i in range(batch)],
    }


def runner_step(
    model: RegionVLMT5, samples: Dict[str, Any], optimizer: torch.optim.Optimizer, scaler: Optional[Any]
) -> torch.Tensor:
    """One update as ``RunnerBase.train`` takes it (``accum_grad_iters: 1``, no clipping)."""
    with model.precision.train_autocast():
        loss = model(samples)["loss"]
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def bench_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """Seconds per step, samples/s and peak memory of the runner's step at these settings."""
    device = torch.device(args.device)
    start = time.perf_counter()
    model = build_training_model(args.preset, device, args.precision, args.grad_checkpoint)
    build_s = time.perf_counter() - start
    policy = model.precision
    optimizer = torch.optim.AdamW(param_groups(model, LN_FT["weight_decay"]), lr=LN_FT["init_lr"], betas=LN_FT["betas"])
    scaler = policy.grad_scaler()
    samples = training_mix(args.batch, model.image_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    losses: List[float] = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
        losses.append(runner_step(model, samples, optimizer, scaler))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    losses = [float(v) for v in losses]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else process_peak_rss()
    return {
        "preset": args.preset,
        "device": str(device),
        "device_name": device_name(device),
        "precision": policy.name,
        "grad_scaler": scaler is not None,
        "grad_checkpoint": args.grad_checkpoint,
        "batch": args.batch,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "build_s": round(build_s, 2),
        "s_per_step": wall / args.steps,
        "cpu_s_per_step": cpu / args.steps,
        "samples_per_s": args.batch * args.steps / wall,
        "peak_memory_gib": peak / 2**30,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS (VmHWM)",
        "losses": losses,
        "losses_finite": all(math.isfinite(v) for v in losses),
        "grad_scale": float(scaler.get_scale()) if scaler is not None else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def print_settings(r: Dict[str, Any]) -> None:
    print(
        f"{r['preset']} on {r['device_name']}: precision {r['precision']} (GradScaler: {r['grad_scaler']}), "
        f"grad checkpointing {r['grad_checkpoint']}, batch {r['batch']}, {r['trainable_parameters'] / 1e6:.1f} M "
        f"of {r['parameters'] / 1e6:.1f} M parameters train"
    )
    print(
        f"  {r['s_per_step']:.4f} s/step over {r['steps']} steps after {r['warmup_steps']} warm-up: "
        f"{r['samples_per_s']:.1f} samples/s; peak memory {r['peak_memory_gib']:.2f} GiB ({r['memory_kind']})"
    )
    print(f"  losses {[round(v, 4) for v in r['losses']]}, grad scale {r['grad_scale']}", flush=True)


# --- comparisons -------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = build(args.preset, args.device)
    size = model.image_size
    images = torch.randn(args.images, 3, size, size, device=args.device)
    n = args.images * args.per_image
    texts = [REGION] * n
    targets = ["a small red circle"] * n
    index = [i // args.per_image for i in range(n)]
    shared = {"image": images, "image_index": index, "text_input": texts, "text_output": targets}
    naive = {"image": images[index], "text_input": texts, "text_output": targets}
    with torch.no_grad():
        one = {"image": images[:1], "text_input": [REGION], "text_output": ["a small red circle"]}
        model(one)
        start = time.perf_counter()
        model(one)
        forward_s = time.perf_counter() - start
    print(f"one forward (batch 1): {forward_s * 1000:.1f} ms, peak memory so far {peak_mb(args.device):.0f} MiB")
    t_naive = time_steps(model, naive, args.steps, args.device)
    t_shared = time_steps(model, shared, args.steps, args.device)
    print(
        f"{args.preset}, {args.images} images x {args.per_image} samples, {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  naive (image repeated per sample): {t_naive:.3f} s/step")
    print(f"  image encoded once (image_index):  {t_shared:.3f} s/step")
    print(f"  ratio: {t_naive / t_shared:.2f}x   peak memory {peak_mb(args.device):.0f} MiB")
    # the regionvlm mix: 60 % short region phrases, 40 % long global captions in one batch
    long_caption = "a large purple star and a small green triangle and a small red circle and a large blue square"
    mixed = dict(shared, text_output=[long_caption if i % 5 < 2 else "a small red circle" for i in range(n)])
    t_padded = time_steps(model, mixed, args.steps, args.device, loss_fn=hf_labels_loss)
    t_valid = time_steps(model, mixed, args.steps, args.device)
    print("  mixed-length targets (60 % region phrases, 40 % long captions), image encoded once:")
    print(f"    vocabulary projection on every padded position (HF labels=): {t_padded:.3f} s/step")
    print(f"    vocabulary projection on real target tokens only:            {t_valid:.3f} s/step")
    print(f"    ratio: {t_padded / t_valid:.2f}x")
    if args.device == "cpu" and host_memory.release_freed_memory():
        t_default = time_steps(model, mixed, args.steps, args.device)
        host_memory.retain_freed_memory()
        t_retained = time_steps(model, mixed, args.steps, args.device)
        print("  same mixed step, host memory (CPU, glibc):")
        print(f"    malloc defaults (large blocks unmapped after each use): {t_default:.3f} s/step")
        print(f"    freed memory retained for reuse (the runner's setting): {t_retained:.3f} s/step")
        print(f"    ratio: {t_default / t_retained:.2f}x")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line, checked (``gpu_check.sh --dry-run`` commands are tested against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    g = p.add_argument_group("a step at given settings (selected by --batch)")
    g.add_argument("--batch", type=int, default=None, help="samples per step (LN_ft: 8)")
    g.add_argument(
        "--precision",
        choices=("auto", "official", "bf16", "fp32"),
        default="auto",
        help="precision policy (auto: official on GPU, fp32 on CPU)",
    )
    g.add_argument("--grad-checkpoint", action="store_true", help="use_grad_checkpoint (LN_ft: true)")
    g.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first allocates AdamW's state)")
    g.add_argument("--json", type=Path, default=None, help="also write the result here")
    g = p.add_argument_group("comparisons (without --batch)")
    g.add_argument("--images", type=int, default=32)
    g.add_argument("--per-image", type=int, default=2)
    args = p.parse_args(argv)
    for name in ("steps", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.batch is None and args.json:
        p.error("--json applies to a step at given settings (--batch)")
    return args


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch is None:
        compare(args)
        return None
    result = bench_settings(args)
    print_settings(result)
    if args.json:
        from regionvlm.common.io import atomic_write_json

        atomic_write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()
