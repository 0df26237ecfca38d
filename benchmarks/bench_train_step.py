"""Training-step benchmark, same model, same samples, one process:

* several region samples per image with the image encoded once (``image_index``, what the
  synthetic recipe uses) against the naive way (the image repeated for every sample);
* the loss with the vocabulary projection on real target tokens only (what the model does)
  against Hugging Face's ``labels=`` loss, which projects every padded position too: the
  regionvlm mix pads short region phrases to the length of long captions;
* glibc keeping freed memory for reuse (``host_memory.retain_freed_memory``, what the runner
  does on CPU) against its defaults, which unmap and page-fault large tensors every step.

    python benchmarks/bench_train_step.py                       # tiny preset, CPU
    python benchmarks/bench_train_step.py --preset flant5xl-random --device cuda --images 8 --per-image 2

Prints seconds per step, peak memory and the ratio; also the forward-only time and peak
memory of one tiny forward (the numbers quoted in the README).
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
from omegaconf import OmegaConf

from regionvlm.common import host_memory
from regionvlm.models import place_model
from regionvlm.models.regionvlm_t5 import RegionVLMT5

REGION = "[10 10] [12 15] [20 20] [15 11] [11 19] [18 14] [13 13] [16 17] [19 12] [14 18]"


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
    return model.t5_model(inputs_embeds=embeds, attention_mask=mask, labels=labels,
                          decoder_attention_mask=tok.attention_mask).loss


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--per-image", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
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
    print(f"{args.preset}, {args.images} images x {args.per_image} samples, {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  naive (image repeated per sample): {t_naive:.3f} s/step")
    print(f"  image encoded once (image_index):  {t_shared:.3f} s/step")
    print(f"  ratio: {t_naive / t_shared:.2f}x   peak memory {peak_mb(args.device):.0f} MiB")
    # the regionvlm mix: 60 % short region phrases, 40 % long global captions in one batch
    long_caption = "a large purple star and a small green triangle and a small red circle and a large blue square"
    mixed = dict(shared, text_output=[long_caption if i % 5 < 2 else "a small red circle" for i in range(n)])
    t_padded = time_steps(model, mixed, args.steps, args.device, loss_fn=hf_labels_loss)
    t_valid = time_steps(model, mixed, args.steps, args.device)
    print(f"  mixed-length targets (60 % region phrases, 40 % long captions), image encoded once:")
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


if __name__ == "__main__":
    main()
