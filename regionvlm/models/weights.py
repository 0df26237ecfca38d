"""Assemble the model's weights from the partial official files (SPEC section 1).

No released file holds the whole model. The official recipe combines, in this order
(later files win):

==========  ==============================================  ===========================
setting     file                                             provides
==========  ==============================================  ===========================
eva_vit     ``eva_vit_g.pth``                                ``visual_encoder.*``
bert        a bert-base-uncased directory (HF layout)        the Q-Former text path
t5          a google/flan-t5-xl directory (HF layout)        ``t5_model.*``
blip2       ``blip2_pretrained_flant5xl.pth`` (LAVIS)        Q-Former, queries, ln_vision, t5_proj
regionvlm   the RegionVLM checkpoint (LAVIS format)          the trained parts
==========  ==============================================  ===========================

Every key must be known and every shape must match; every parameter group must come
from some file. The report says which group came from which file.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from regionvlm.common.errors import CheckpointError, require_file
from regionvlm.models.eva_vit import interpolate_pos_embed

PUBLISHED = {
    "eva_vit": "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth",
    "bert": "https://huggingface.co/bert-base-uncased (download the directory)",
    "t5": "https://huggingface.co/google/flan-t5-xl (download the directory)",
    "blip2": "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/blip2_pretrained_flant5xl.pth",
    "regionvlm": "the RegionVLM release (https://github.com/jbeomlee93/RegionVLM, checkpoint link in its README)",
}
WHAT = {
    "eva_vit": "EVA ViT-g weights",
    "bert": "bert-base-uncased weights directory",
    "t5": "Flan-T5 weights directory",
    "blip2": "BLIP-2 pretrained checkpoint",
    "regionvlm": "RegionVLM checkpoint",
}
LOAD_ORDER = ("eva_vit", "bert", "t5", "blip2", "regionvlm")

_TEXT_PATH = re.compile(
    r"^Qformer\.bert\.(embeddings\.(word|position)_embeddings\.|encoder\.layer\.\d+\.(intermediate|output)\.)"
)
# Buffers that are recomputed, never read from a file.
DERIVED = re.compile(r"^(Qformer\.bert\.embeddings\.position_ids|t5_model\.(encoder|decoder)\.embed_tokens\.weight)$")


def param_group(name: str) -> str:
    """The parameter group a state-dict key belongs to (for provenance reports)."""
    if name.startswith("visual_encoder."):
        return "vision encoder"
    if name.startswith("Qformer."):
        return "Q-Former text path" if _TEXT_PATH.match(name) else "Q-Former"
    if name.startswith("t5_model."):
        return "T5"
    return name.split(".")[0]  # ln_vision, query_tokens, t5_proj


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Read a ``.pth``/``.bin``/``.safetensors`` file safely (``weights_only=True``);
    a LAVIS checkpoint's ``model`` entry is unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - turn any reader failure into one clear message
        raise CheckpointError(f"cannot read weights from '{path}': {exc}") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"'{path}' does not hold a state dict (got {type(obj).__name__}).")
    return dict(obj)


def read_hf_directory(directory: Path) -> Dict[str, torch.Tensor]:
    """All tensors of a Hugging Face model directory (single or sharded, safetensors or bin)."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: Dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(read_state_dict(require_file(str(directory / shard), "weight shard",
                                                        str(index), "")))
            return out
        if (directory / single).is_file():
            return read_state_dict(directory / single)
    raise CheckpointError(
        f"'{directory}' has no model.safetensors / pytorch_model.bin (or their sharded index); "
        "point the setting to a Hugging Face model directory."
    )


@dataclass
class LoadReport:
    """Which file every parameter group came from."""

    sources: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))
    ignored: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, group: str, source: str) -> None:
        if source not in self.sources[group]:
            self.sources[group].append(source)

    def __str__(self) -> str:
        lines = [f"  {group:<20} <- {', '.join(srcs)}" for group, srcs in sorted(self.sources.items())]
        for source, keys in self.ignored.items():
            lines.append(f"  ignored from {source}: {len(keys)} keys (e.g. {keys[:3]})")
        return "weights:\n" + "\n".join(lines)


# --- per-source key mapping ----------------------------------------------------

def _map_eva(sd: Dict[str, torch.Tensor], depth: int) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """eva_vit_g.pth has 40 blocks; the official model keeps 39 (the last is dropped)."""
    out, ignored = {}, []
    for key, value in sd.items():
        m = re.match(r"^blocks\.(\d+)\.", key)
        if (m and int(m.group(1)) >= depth) or key.split(".")[0] in ("norm", "fc_norm", "head"):
            ignored.append(key)
            continue
        out["visual_encoder." + key] = value
    return out, ignored


def _map_bert(sd: Dict[str, torch.Tensor], vocab_size: int, num_layers: int,
              ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Take only the Q-Former text path from bert-base-uncased (as InstructBLIP/RegionVLM do);
    the word table grows by the ``[DEC]`` row, initialized N(0, 0.02) as in LAVIS."""
    out, ignored = {}, []
    for key, value in sd.items():
        name = key if key.startswith("bert.") else "bert." + key
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        m = re.match(r"^bert\.encoder\.layer\.(\d+)\.", name)
        target = "Qformer." + name
        if _TEXT_PATH.match(target) and "attention" not in name and (m is None or int(m.group(1)) < num_layers):
            if name.endswith("word_embeddings.weight") and value.shape[0] < vocab_size:
                extra = torch.empty(vocab_size - value.shape[0], value.shape[1], dtype=value.dtype)
                extra.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
                value = torch.cat([value, extra])
            out[target] = value
        else:
            ignored.append(key)
    return out, ignored


def _map_t5(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    return {"t5_model." + k: v for k, v in sd.items()}, []


def _map_identity(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    return dict(sd), []


def read_source(kind: str, path: str, setting: str, model_info: Mapping[str, int]
                ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Read one configured file and map its keys to model names."""
    p = require_file(path, WHAT[kind], setting, PUBLISHED[kind])
    if kind == "eva_vit":
        return _map_eva(read_state_dict(p), model_info["vit_depth"])
    if kind == "bert":
        return _map_bert(read_hf_directory(p) if p.is_dir() else read_state_dict(p),
                         model_info["qformer_vocab"], model_info["qformer_layers"])
    if kind == "t5":
        return _map_t5(read_hf_directory(p) if p.is_dir() else read_state_dict(p))
    return _map_identity(read_state_dict(p))


def check_compatible(source: str, incoming: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Reject unknown keys and wrong shapes (interpolating ViT position tables)."""
    unknown = [k for k in incoming if k not in expected]
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} keys do not exist in this model (e.g. {unknown[:5]}). "
            "Is the file for this architecture/preset?"
        )
    fixed, wrong = {}, []
    for key, value in incoming.items():
        want = tuple(expected[key].shape)
        if key == "visual_encoder.pos_embed" and tuple(value.shape) != want and value.shape[-1] == want[-1]:
            value = interpolate_pos_embed(value, want[1] - 1)
        if tuple(value.shape) != want:
            wrong.append(f"{key}: file {tuple(value.shape)} vs model {want}")
        fixed[key] = value
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch for {len(wrong)} keys: {wrong[:5]}.")
    return fixed


def gather_weights(expected: Mapping[str, torch.Tensor], paths: Mapping[str, Optional[str]],
                   model_info: Mapping[str, int], setting_prefix: str = "model.weights",
                   ) -> Tuple["OrderedDict[str, torch.Tensor]", LoadReport]:
    """Merge the configured files in the official order into one complete state dict."""
    report = LoadReport()
    merged: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown_settings = [k for k, v in paths.items() if v and k not in LOAD_ORDER]
    if unknown_settings:
        raise CheckpointError(f"unknown weight settings {unknown_settings}; known: {list(LOAD_ORDER)}.")
    for kind in LOAD_ORDER:
        path = paths.get(kind)
        if not path:
            continue
        mapped, ignored = read_source(kind, path, f"{setting_prefix}.{kind}", model_info)
        mapped = check_compatible(f"{kind} ({path})", mapped, expected)
        for key, value in mapped.items():
            merged[key] = value
            report.add(param_group(key), kind)
        if ignored:
            report.ignored[kind] = ignored
    missing = [k for k in expected if k not in merged and not DERIVED.match(k)]
    if missing:
        groups = sorted({param_group(k) for k in missing})
        raise CheckpointError(
            f"{len(missing)} parameters came from no file (groups: {groups}; e.g. {missing[:3]}). "
            f"Configure the file that provides them under `{setting_prefix}` "
            f"({', '.join(LOAD_ORDER)})."
        )
    return merged, report


def load_partial(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> List[str]:
    """Load a partial LAVIS-format state dict into a built model; return the loaded keys."""
    expected = model.state_dict()
    checked = check_compatible(source, state_dict, expected)
    model.load_state_dict(checked, strict=False)
    return sorted(checked)


def iter_groups(keys: Iterable[str]) -> Dict[str, int]:
    counts: Dict[str, int] = defaultdict(int)
    for k in keys:
        counts[param_group(k)] += 1
    return dict(counts)
