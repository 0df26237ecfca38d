"""Assemble the model's weights from the partial official files, one tensor at a time.

No released file holds the whole model. The official recipe combines, in this order
(a key provided by several files takes the value of the later one):

==========  ==============================================  ===========================
setting     file                                             provides
==========  ==============================================  ===========================
eva_vit     ``eva_vit_g.pth``                                ``visual_encoder.*``
bert        a bert-base-uncased directory (HF layout)        the Q-Former text path
t5          a google/flan-t5-xl directory (HF layout)        ``t5_model.*``
blip2       ``blip2_pretrained_flant5xl.pth`` (LAVIS)        Q-Former, queries, ln_vision, t5_proj
regionvlm   the RegionVLM checkpoint (LAVIS format)          the trained parts
==========  ==============================================  ===========================

The files themselves (formats, byte offsets, streaming reads) are the generic layer
:mod:`regionvlm.common.tensor_files`; this module maps their keys to the model's.

Loading happens in two passes so a bad file never leaves a half-loaded model:

1. ``plan_weights`` opens every file's *index* only (the safetensors header, the pickle of a
   PyTorch zip file; no tensor data), maps every key to a model name and checks it: unknown
   keys, wrong shapes, shards missing from an index, truncated files and parameter groups no
   file provides all raise here, naming the file.
2. ``materialize`` reads each winning tensor once, file by file in file order, with plain
   reads straight into a tensor of its final dtype (``dtypes``: parameter group -> dtype).
   Tensors a later file replaces are never read. Memory-mapping is avoided on purpose: a
   mapping keeps every page it touched resident until it is closed, which would add a whole
   shard (9.5 GB for Flan-T5-XL) on top of the model being built.

Details of every accepted file layout are in ``docs/weights.md``.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from regionvlm.common.errors import CheckpointError, ConfigError, MissingFileError, require_file
from regionvlm.common.tensor_files import (
    TensorEntry,
    TensorReader,
    file_entries,
    hf_directory,
    read_hf_directory,
    read_state_dict,
    safetensors_entries,
    sniff_format,
    torch_entries,
)
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
# Parameter groups, as ``param_group`` names them; ``dtypes`` mappings use these names.
GROUPS = ("vision encoder", "ln_vision", "Q-Former", "Q-Former text path", "query_tokens", "t5_proj", "T5")

_TEXT_PATH = re.compile(
    r"^Qformer\.bert\.(embeddings\.(word|position)_embeddings\.|encoder\.layer\.\d+\.(intermediate|output)\.)"
)
# Buffers and tied copies that are recomputed, never read from a file.
DERIVED = re.compile(r"^(Qformer\.bert\.embeddings\.position_ids|t5_model\.(encoder|decoder)\.embed_tokens\.weight)$")
# Everything a bert-base-uncased checkpoint may hold (keys without the ``bert.`` prefix).
_BERT_KNOWN = re.compile(
    r"^(embeddings\.((word|position|token_type)_embeddings|LayerNorm)\.|embeddings\.(position_ids|token_type_ids)$"
    r"|encoder\.layer\.\d+\.(attention|intermediate|output)\.|pooler\.|cls\.(predictions|seq_relationship)\.)"
)
_DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def param_group(name: str) -> str:
    """The parameter group a state-dict key belongs to (provenance reports, per-group dtypes)."""
    if name.startswith("visual_encoder."):
        return "vision encoder"
    if name.startswith("Qformer."):
        return "Q-Former text path" if _TEXT_PATH.match(name) else "Q-Former"
    if name.startswith("t5_model."):
        return "T5"
    return name.split(".")[0]  # ln_vision, query_tokens, t5_proj


def resolve_dtypes(dtypes: Optional[Mapping[str, Union[str, torch.dtype]]]) -> Dict[str, torch.dtype]:
    """Per-group target dtypes (``GROUPS`` names; ``fp32``/``bf16``/``fp16`` or torch dtypes),
    fp32 for every group not named."""
    out = dict.fromkeys(GROUPS, torch.float32)
    for group, value in dict(dtypes or {}).items():
        if group not in out:
            raise ConfigError(f"unknown parameter group '{group}' in the weight dtypes; known: {list(GROUPS)}.")
        dtype = _DTYPE_NAMES.get(value.lower()) if isinstance(value, str) else value
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(
                f"weight dtype for '{group}' must be one of {sorted(_DTYPE_NAMES)} "
                f"(or a floating torch dtype), got {value!r}."
            )
        out[group] = dtype
    return out


# --- keys: file names -> model names ----------------------------------------------


def _map_key(kind: str, key: str, info: Mapping[str, int]) -> Tuple[Optional[str], bool]:
    """``(model name, known)``: a name to load, ``(None, True)`` to skip a key the official
    file is known to carry, ``(None, False)`` for a key nothing explains."""
    if kind == "eva_vit":
        m = re.match(r"^blocks\.(\d+)\.", key)
        if (m and int(m.group(1)) >= info["vit_depth"]) or key.split(".")[0] in ("norm", "fc_norm", "head"):
            return None, True  # the 40th block (the official model keeps 39) and the CLIP head
        return "visual_encoder." + key, True
    if kind == "bert":
        name = key[len("bert.") :] if key.startswith("bert.") else key
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        target = "Qformer.bert." + name
        m = re.match(r"^encoder\.layer\.(\d+)\.", name)
        if _TEXT_PATH.match(target) and (m is None or int(m.group(1)) < info["qformer_layers"]):
            return target, True
        return None, bool(_BERT_KNOWN.match(name))
    if kind == "t5":
        if key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            return None, True  # tied copies of shared.weight
        return "t5_model." + key, True
    if key.startswith("Qformer.cls."):
        return None, True  # the Q-Former's language-model head: RegionVLM does not use it
    return key, True


def _shape_transform(kind: str, target: str, entry: TensorEntry, want: Tuple[int, ...]) -> Optional[str]:
    """How a differently shaped tensor becomes the model's (or None if it cannot)."""
    got = entry.shape
    if got == want:
        return "copy"
    if target == "visual_encoder.pos_embed" and len(got) == 3 and got[-1] == want[-1] and got[0] == 1:
        grid = round((got[1] - 1) ** 0.5)
        if grid * grid == got[1] - 1:
            return "interpolate"
    if (
        kind == "bert"
        and target == "Qformer.bert.embeddings.word_embeddings.weight"
        and len(got) == 2
        and got[1] == want[1]
        and got[0] < want[0]
    ):
        return "extend_rows"
    return None


# --- plan ------------------------------------------------------------------------


@dataclass
class LoadReport:
    """Which file every parameter group came from, what was skipped, and what reading cost."""

    sources: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))
    overridden: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))
    ignored: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))
    files: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))  # setting -> weight files
    dtypes: Dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0
    seconds: float = 0.0  # reading
    plan_seconds: float = 0.0  # checking the files

    def add(self, group: str, source: str) -> None:
        if source not in self.sources[group]:
            self.sources[group].append(source)

    def __str__(self) -> str:
        lines = [
            f"  {group:<20} <- {', '.join(srcs)}"
            + (f"  ({self.dtypes[group]})" if group in self.dtypes else "")
            + (f"  [replaces {', '.join(self.overridden[group])}]" if self.overridden.get(group) else "")
            for group, srcs in sorted(self.sources.items())
        ]
        for source, keys in self.ignored.items():
            lines.append(f"  ignored from {source}: {len(keys)} keys (e.g. {keys[:3]})")
        if self.bytes_read:
            lines.append(
                f"  checked the files in {self.plan_seconds:.1f} s, read {self.bytes_read / 1e9:.2f} GB "
                f"in {self.seconds:.1f} s"
            )
        return "weights:\n" + "\n".join(lines)


@dataclass
class Assignment:
    """One model tensor: which file entry provides it and how it is shaped into place."""

    key: str
    entry: TensorEntry
    setting: str
    transform: str  # copy | interpolate | extend_rows


@dataclass
class LoadPlan:
    """Everything checked, nothing read: the winning entry for every model tensor."""

    assignments: "OrderedDict[str, Assignment]"
    expected: Mapping[str, torch.Tensor]
    report: LoadReport


def _source_entries(kind: str, path: Path, info: Mapping[str, int]) -> List[TensorEntry]:
    """All entries of one configured setting (a file, or a Hugging Face directory)."""
    if not path.is_dir():
        return file_entries(path)
    if kind not in ("bert", "t5"):
        raise CheckpointError(f"'{path}' is a directory; the {WHAT[kind]} is a single file.")
    d = hf_directory(path)
    entries: List[TensorEntry] = []
    by_file: Dict[str, set] = {}
    for p in d.files:
        found = file_entries(p)
        by_file[p.name] = {e.name for e in found}
        entries.extend(found)
    absent = [
        k
        for k, shard in d.weight_map.items()
        if k not in by_file.get(shard, ()) and _map_key(kind, k, info)[0] is not None
    ]
    if absent:
        raise CheckpointError(
            f"'{d.index}' lists {len(absent)} tensors that its shards do not hold "
            f"(e.g. {absent[:3]} in '{d.weight_map[absent[0]]}'): a shard is "
            "from another download or truncated. Fetch the directory again."
        )
    return entries


def plan_weights(
    expected: Mapping[str, torch.Tensor],
    paths: Mapping[str, Optional[str]],
    model_info: Mapping[str, int],
    setting_prefix: str = "model.weights",
) -> LoadPlan:
    """Check every configured file against the model without reading tensor data.

    ``expected``: the model's state dict (meta tensors suffice); ``paths``: setting -> path
    (``None`` = not used; an empty string is an error); ``model_info``: ``vit_depth``,
    ``qformer_vocab``, ``qformer_layers``. Raises CheckpointError / MissingFileError."""
    start = time.perf_counter()
    unknown_settings = [k for k, v in paths.items() if v is not None and k not in LOAD_ORDER]
    if unknown_settings:
        raise CheckpointError(f"unknown weight settings {unknown_settings}; known: {list(LOAD_ORDER)}.")
    report = LoadReport()
    chosen: "OrderedDict[str, Assignment]" = OrderedDict()
    replaced: Dict[str, set] = defaultdict(set)
    for kind in LOAD_ORDER:
        raw = paths.get(kind)
        if raw is None:
            continue
        setting = f"{setting_prefix}.{kind}"
        if not str(raw).strip():
            raise MissingFileError(
                f"{WHAT[kind]}: `{setting}` is an empty string. Set it to the local "
                f"path, or to null to leave this file out. It is published at {PUBLISHED[kind]}."
            )
        path = require_file(str(raw), WHAT[kind], setting, PUBLISHED[kind])
        unknown: Dict[Path, List[str]] = defaultdict(list)
        wrong: Dict[Path, List[str]] = defaultdict(list)
        entries = _source_entries(kind, path, model_info)
        report.files[kind] = sorted({str(e.path) for e in entries}) or [str(path)]
        for entry in entries:
            target, known = _map_key(kind, entry.name, model_info)
            if target is not None and DERIVED.match(target):
                target = None  # recomputed
            if target is None:
                if known:
                    report.ignored[kind].append(entry.name)
                else:
                    unknown[entry.path].append(entry.name)
                continue
            if target not in expected:
                unknown[entry.path].append(entry.name)
                continue
            want = expected[target]
            transform = _shape_transform(kind, target, entry, tuple(want.shape))
            if transform is None:
                wrong[entry.path].append(f"{entry.name}: file {list(entry.shape)} vs model {list(want.shape)}")
                continue
            if entry.dtype.is_floating_point != want.dtype.is_floating_point:
                wrong[entry.path].append(f"{entry.name}: file dtype {entry.dtype} vs model {want.dtype}")
                continue
            previous = chosen.get(target)
            if previous is not None and previous.setting != kind:
                replaced[param_group(target)].add(previous.setting)
            chosen[target] = Assignment(target, entry, kind, transform)  # the later file wins
        for p, keys in unknown.items():
            raise CheckpointError(
                f"{kind} ('{p}'): {len(keys)} keys do not exist in this model (e.g. {keys[:5]}). "
                "Is the file for this architecture/preset?"
            )
        for p, rows in wrong.items():
            raise CheckpointError(
                f"{kind} ('{p}'): shape mismatch for {len(rows)} tensors, e.g. {rows[:4]}. The file is for "
                "another model size or variant than this preset."
            )
    missing = [k for k in expected if k not in chosen and not DERIVED.match(k)]
    if missing:
        groups = sorted({param_group(k) for k in missing})
        raise CheckpointError(
            f"{len(missing)} parameters came from no file (groups: {groups}; e.g. {missing[:3]}). "
            f"Configure the file that provides them under `{setting_prefix}` "
            f"({', '.join(LOAD_ORDER)})."
        )
    order = {k: i for i, k in enumerate(LOAD_ORDER)}
    for a in sorted(chosen.values(), key=lambda a: order[a.setting]):
        report.add(param_group(a.key), a.setting)
    for group, settings in replaced.items():
        gone = sorted((s for s in settings if s not in report.sources[group]), key=order.get)
        if gone:
            report.overridden[group] = gone
    report.plan_seconds = time.perf_counter() - start
    return LoadPlan(chosen, expected, report)


# --- read --------------------------------------------------------------------------


def _dec_rows(n: int, width: int) -> torch.Tensor:
    """The rows bert-base lacks (``[DEC]``), N(0, 0.02) as LAVIS initializes them, seeded."""
    return torch.empty(n, width).normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))


def materialize(
    plan: LoadPlan,
    dtypes: Optional[Mapping[str, Union[str, torch.dtype]]] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Read the planned tensors file by file (in file order) into their group's dtype and
    complete the derived buffers; returns a full state dict for ``load_state_dict(assign=True)``."""
    targets = resolve_dtypes(dtypes)
    expected = plan.expected
    by_file: Dict[Path, List[Assignment]] = defaultdict(list)
    for a in plan.assignments.values():
        by_file[a.entry.path].append(a)
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    start, total = time.perf_counter(), 0
    for path, assignments in by_file.items():
        reader = TensorReader(path)
        try:
            for a in sorted(assignments, key=lambda a: a.entry.offset):  # one sequential pass
                want = expected[a.key]
                dtype = targets[param_group(a.key)] if want.dtype.is_floating_point else want.dtype
                if a.transform == "copy":
                    value = reader.read(a.entry, dtype)
                elif a.transform == "interpolate":
                    value = interpolate_pos_embed(reader.read(a.entry, torch.float32), want.shape[1] - 1).to(dtype)
                else:  # extend_rows
                    value = reader.read(a.entry, torch.float32)
                    value = torch.cat([value, _dec_rows(want.shape[0] - value.shape[0], value.shape[1])]).to(dtype)
                state[a.key] = value
        finally:
            reader.close()
            total += reader.bytes_read
    for key, want in expected.items():
        if key.endswith("position_ids") and DERIVED.match(key):
            state[key] = torch.arange(want.shape[-1], dtype=want.dtype).expand(tuple(want.shape)).contiguous()
        elif DERIVED.match(key):
            state[key] = state["t5_model.shared.weight"]
    plan.report.bytes_read += total
    plan.report.seconds += time.perf_counter() - start
    plan.report.dtypes.update({g: str(targets[g]).replace("torch.", "") for g in plan.report.sources})
    return OrderedDict((k, state[k]) for k in expected)


def gather_weights(
    expected: Mapping[str, torch.Tensor],
    paths: Mapping[str, Optional[str]],
    model_info: Mapping[str, int],
    setting_prefix: str = "model.weights",
    dtypes: Optional[Mapping[str, Union[str, torch.dtype]]] = None,
) -> Tuple["OrderedDict[str, torch.Tensor]", LoadReport]:
    """Plan, then read: the complete state dict (derived buffers included) and its report."""
    plan = plan_weights(expected, paths, model_info, setting_prefix)
    return materialize(plan, dtypes), plan.report


# --- single checkpoints (``model.checkpoint``) ----------------------------------------


def check_compatible(
    source: str, incoming: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
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


def check_values(source: str, incoming: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Refuse a checkpoint that provides nothing usable: no tensors at all, integer (or bool)
    tensors where the model has floating-point ones (``load_state_dict`` would cast them
    silently), or NaN/infinite values."""
    if not incoming:
        raise CheckpointError(
            f"{source} holds no tensors: there is nothing to load. Is it a training log or an optimizer "
            "state? Give a RegionVLM checkpoint (its `model` entry holds the weights)."
        )
    kinds = [
        f"{k}: file {v.dtype} vs model {expected[k].dtype}"
        for k, v in incoming.items()
        if k in expected and v.is_floating_point() != expected[k].is_floating_point()
    ]
    if kinds:
        raise CheckpointError(
            f"{source}: {len(kinds)} tensors are not of the model's kind (integer where it has floats, or the "
            f"reverse), e.g. {kinds[:3]}. The file is not a checkpoint of this model's weights."
        )
    bad = [k for k, v in incoming.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensors hold NaN or infinite values (e.g. {bad[:3]}); a run that diverged "
            "wrote it. Use an earlier checkpoint."
        )


def required_keys(expected: Mapping[str, torch.Tensor]) -> List[str]:
    """The keys some file must provide (the derived buffers and tied copies are recomputed)."""
    return [k for k in expected if not DERIVED.match(k)]


def report_checkpoint(
    report: Optional["LoadReport"], loaded: Iterable[str], expected: Mapping[str, torch.Tensor], path: str
) -> "LoadReport":
    """The load report after a checkpoint: a group it provides whole now comes from it (the
    earlier sources listed as replaced); a group it provides in part lists it as one more source."""
    report = report if report is not None else LoadReport()
    provided, total = iter_groups(loaded), iter_groups(required_keys(expected))
    for group, count in provided.items():
        before = list(report.sources.get(group, []))
        if count == total.get(group, count):
            report.sources[group] = ["checkpoint"]
            gone = [s for s in before if s != "checkpoint"]
            if gone:
                report.overridden[group] = sorted(set(report.overridden.get(group, [])) | set(gone))
        else:
            report.add(group, "checkpoint")
    report.files["checkpoint"] = [str(path)]
    return report


def iter_groups(keys: Iterable[str]) -> Dict[str, int]:
    counts: Dict[str, int] = defaultdict(int)
    for k in keys:
        counts[param_group(k)] += 1
    return dict(counts)


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = (t.untyped_storage().data_ptr(), t.dtype) if not t.is_meta else id(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def group_dtypes(module: torch.nn.Module) -> Dict[str, List[str]]:
    """The dtypes present in each parameter group (for reports and tests)."""
    out: Dict[str, set] = defaultdict(set)
    for name, t in module.state_dict().items():
        if t.is_floating_point():
            out[param_group(name)].add(str(t.dtype).replace("torch.", ""))
    return {g: sorted(v) for g, v in out.items()}


__all__ = [
    "DERIVED",
    "GROUPS",
    "LOAD_ORDER",
    "PUBLISHED",
    "WHAT",
    "Assignment",
    "LoadPlan",
    "LoadReport",
    "TensorEntry",
    "check_compatible",
    "check_values",
    "file_entries",
    "gather_weights",
    "group_dtypes",
    "hf_directory",
    "iter_groups",
    "materialize",
    "param_group",
    "plan_weights",
    "read_hf_directory",
    "read_state_dict",
    "report_checkpoint",
    "require_file",
    "required_keys",
    "resolve_dtypes",
    "safetensors_entries",
    "sniff_format",
    "state_bytes",
    "torch_entries",
]
