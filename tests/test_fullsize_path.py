"""The whole path at the real size on CPU, one fp32 model (4.02 B parameters) loaded once from
real-size stand-ins of the released files and used by every step, the training step last:

1. load ``flant5xl`` with ``load_model_and_preprocess`` (``model.weights.*`` set to the files);
2. a region caption of one image (beam 5, at most ``CAPTION_TOKENS`` new tokens);
3. RIS on one image through the task's scorers: 3 masks x 1 draw x 2 sentences, the fast path
   and the authors' protocol give the same choices and scores within 1e-3 relative;
4. one VQA question (``predict_answers`` with the VQAv2 settings);
5. one training step of the Q-Former (LN_ft's optimizer): the loss is finite, every trainable
   tensor with a nonzero gradient changes, every frozen tensor and buffer is bit-identical.

Each step's seconds and the process's peak RSS after it are printed and written as JSON to
``$REGIONVLM_FULLSIZE_REPORT`` (default: ``fullsize_path.json`` in the test's temporary folder).

    REGIONVLM_FULLSIZE_WEIGHTS=/tmp/regionvlm_fullsize python -m pytest -q -m fullsize tests/test_fullsize_path.py

``REGIONVLM_FULLSIZE_WEIGHTS``: a folder written by ``python benchmarks/make_fullsize_weights.py
--out DIR``; without it the stand-ins are written to a temporary folder first (17.4 GB, about
2.5 minutes). Needs ~19 GiB of available RAM (the fp32 model is 16.1 GB; the training step adds
gradients and AdamW's state for the 0.19 B trainable parameters) and skips otherwise. Random
weights: the outputs are meaningless, the test checks the path, not the answers.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image
from weight_generator import gen

from regionvlm import Region
from regionvlm.models import place_model
from regionvlm.models.weights import param_group
from regionvlm.tasks.ris import DrawGroup, RISSettings, build_prompts, score_image_fast, score_image_official

pytestmark = [pytest.mark.slow, pytest.mark.fullsize]
ROOT = Path(__file__).resolve().parents[1]
NEED_RAM = 19 * 2**30
NEED_DISK = 20 * 10**9
# Random weights rarely emit </s>, so a caption runs to its limit: 30 new tokens (the default)
# take ~80 s on one CPU thread, the ViT pass included; the path is the same at any limit.
CAPTION_TOKENS = 30
TRAINABLE = {"Q-Former", "Q-Former text path", "query_tokens", "ln_vision", "t5_proj"}
FROZEN = {"vision encoder", "T5"}
TIMING_KEYS = ("seconds", "peak_rss_gib")


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _write_standins(out: Path) -> None:
    gen.write_all(out)


@pytest.fixture(scope="module")
def report(request, tmp_path_factory):
    """Seconds and peak RSS per step; written and printed when the module ends."""
    steps: Dict[str, Dict[str, float]] = {}
    yield steps
    if not steps:
        return
    path = Path(os.environ.get("REGIONVLM_FULLSIZE_REPORT") or tmp_path_factory.mktemp("report") / "fullsize_path.json")
    data = {
        "steps": steps,
        "peak_rss_gib": round(_peak_rss() / 2**30, 2),
        "threads": torch.get_num_threads(),
        "caption_max_new_tokens": CAPTION_TOKENS,
        "torch": torch.__version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    threads = torch.get_num_threads()
    lines = [f"full-size path on CPU ({threads} thread(s)), peak RSS {data['peak_rss_gib']} GiB -> {path}"]
    for name, v in steps.items():
        extra = "".join(f"   {k.replace('_', ' ')} {x:.1e}" for k, x in v.items() if k not in TIMING_KEYS)
        lines.append(f"  {name:<14} {v['seconds']:8.1f} s   peak RSS so far {v['peak_rss_gib']:6.2f} GiB{extra}")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


def _record(report: Dict, name: str, start: float, **extra: float) -> float:
    seconds = time.perf_counter() - start
    report[name] = {"seconds": round(seconds, 2), "peak_rss_gib": round(_peak_rss() / 2**30, 2), **extra}
    return seconds


@pytest.fixture(scope="module")
def loaded(request, tmp_path_factory, report):
    markexpr = request.config.option.markexpr or ""
    if "fullsize" not in markexpr or "not fullsize" in markexpr:
        pytest.skip("real-size test (17 GB of files, ~19 GiB of RAM): select it with -m fullsize")
    if _mem_available() < NEED_RAM:
        pytest.skip(
            f"needs {NEED_RAM / 2**30:.0f} GiB of available RAM for the fp32 model and a training step, "
            f"{_mem_available() / 2**30:.1f} GiB available"
        )
    given = os.environ.get("REGIONVLM_FULLSIZE_WEIGHTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("fullsize")
    if not given:
        if shutil.disk_usage(folder).free < NEED_DISK:
            pytest.skip(
                f"needs {NEED_DISK / 1e9:.0f} GB of free disk for the stand-in files "
                "(or set REGIONVLM_FULLSIZE_WEIGHTS to a folder written by make_fullsize_weights.py)"
            )
        start = time.perf_counter()
        _write_standins(folder)
        _record(report, "write files", start)
    from regionvlm import load_model_and_preprocess

    start = time.perf_counter()
    model, vis, txt = load_model_and_preprocess(
        "regionvlm_t5",
        "flant5xl",
        is_eval=True,
        precision="fp32",
        weights=gen.release_paths(folder, "flant5xl"),
    )
    _record(report, "load", start)
    yield model, vis["eval"], txt["eval"]
    del model
    gc.collect()
    if not given:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))


def test_load_gives_the_fp32_model(loaded):
    model, _, _ = loaded
    assert sum(p.numel() for p in model.parameters()) == 4_023_505_536
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    assert not model.training and model.precision.name == "fp32"


def test_region_caption_of_one_image(loaded, image, report):
    model, vis, txt = loaded
    region = txt(Region.from_box((120, 40, 380, 300), image_size=image.size).to_text(rng=np.random.default_rng(0)))
    x = vis(image).unsqueeze(0)
    start = time.perf_counter()
    with torch.inference_mode():
        caption = model.generate({"image": x, "text_input": [region]}, num_beams=5, max_length=CAPTION_TOKENS)
    _record(report, "caption", start)
    assert len(caption) == 1 and isinstance(caption[0], str)
    assert len(model.t5_tokenizer(caption[0], add_special_tokens=False).input_ids) <= CAPTION_TOKENS + 2


def _masks(height: int, width: int):
    yy, xx = np.mgrid[:height, :width]
    ellipse = ((yy - 200) / 90.0) ** 2 + ((xx - 180) / 110.0) ** 2 <= 1
    box = (yy >= 250) & (yy < 420) & (xx >= 380) & (xx < 600)
    small = (yy >= 60) & (yy < 170) & (xx >= 420) & (xx < 560)
    return [ellipse, box, small]


def test_ris_fast_path_equals_the_official_protocol(loaded, image, report):
    model, vis, txt = loaded
    prompts = build_prompts("points", image, _masks(image.height, image.width), vis)
    sentences = [txt("the round object on the left"), txt("bottom right box next to the small one")]
    settings = RISSettings(max_masks=3, num_points=10, repeats=1)
    groups = [DrawGroup("fullsize", [0, 1])]
    start = time.perf_counter()
    fast = score_image_fast(model, prompts, sentences, groups, settings, txt)
    _record(report, "RIS fast", start)
    start = time.perf_counter()
    official = score_image_official(model, prompts, sentences, groups, settings, txt)
    relative = float(np.max(np.abs(fast - official) / np.abs(official)))
    _record(report, "RIS official", start, max_relative_score_difference=relative)
    assert fast.shape == official.shape == (2, 3) and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, official, rtol=1e-3, atol=0)
    assert list(fast.argmin(1)) == list(official.argmin(1))


def test_one_vqa_question(loaded, image, report):
    model, vis, _ = loaded
    start = time.perf_counter()
    with torch.inference_mode():
        answers = model.predict_answers(
            {"image": vis(image).unsqueeze(0), "text_input": ["what is on the table?"]},
            num_beams=5,
            max_len=10,
            prompt="Question: {} Short answer:",
        )
    _record(report, "VQA", start)
    assert len(answers) == 1 and isinstance(answers[0], str)


def _digests(model: torch.nn.Module) -> Dict[str, bytes]:
    """SHA-256 of every parameter's and buffer's bytes (no copy of the 16 GB model)."""
    out = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        out[name] = hashlib.sha256(memoryview(t.detach().contiguous().view(torch.uint8).numpy())).digest()
    return out


def test_one_training_step_changes_only_the_trainable_groups(loaded, image, report):
    """Last: it leaves the model in train mode with changed Q-Former weights."""
    from regionvlm.common.optims import param_groups

    model, vis, txt = loaded
    model = place_model(model, is_eval=False, device="cpu")  # as the runner places it (fp32 on CPU)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {param_group(n) for n in trainable} == TRAINABLE
    assert {param_group(n) for n, p in model.named_parameters() if not p.requires_grad} == FROZEN
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=5e-6, betas=(0.9, 0.999))  # LN_ft's
    region = txt(Region.from_box((120, 40, 380, 300), image_size=image.size).to_text(rng=np.random.default_rng(1)))
    samples = {
        "image": vis(image).unsqueeze(0),
        "image_index": [0, 0],
        "text_input": [region, ""],
        "text_output": ["a wooden table with a bowl of fruit on it", "a kitchen with a table and two chairs"],
    }
    before = _digests(model)
    start = time.perf_counter()
    with model.precision.train_autocast():
        loss = model(samples)["loss"]
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    # the text tokens' outputs of the last Q-Former layer feed nothing: their FFN gets zero gradients
    # (weight decay still moves its matrices, not its biases)
    zero_grad = {n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _record(report, "train step", start)
    after = _digests(model)
    assert math.isfinite(float(loss.detach()))
    assert with_grad == trainable, sorted(trainable ^ with_grad)[:5]
    assert all(param_group(n) == "Q-Former text path" for n in zero_grad), sorted(zero_grad)[:5]
    changed = {n for n in before if before[n] != after[n]}
    assert changed <= trainable, sorted(changed - trainable)[:5]  # every frozen tensor and buffer bit-identical
    assert trainable - zero_grad <= changed, sorted(trainable - zero_grad - changed)[:5]
    assert {param_group(n) for n in changed} == TRAINABLE
