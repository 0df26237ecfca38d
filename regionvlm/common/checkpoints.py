"""Training checkpoints in two formats, both loadable without running pickled code.

``pth`` (default, LAVIS's layout): ``torch.save`` of ``{"model", "optimizer", "scheduler",
"scaler", "epoch", "step", "step_in_epoch", "rng", "config"}`` holding only tensors and plain
Python values, so ``torch.load(weights_only=True)`` reads it.

``safetensors``: one ``.safetensors`` file. The model's trainable weights are stored under
their own names (so any safetensors reader — and ``model.load_checkpoint`` — sees a plain
state dict); every other tensor of the training state (optimizer moments, RNG states) under
``__train_state__/<path>``, and the non-tensor rest as JSON in the file's metadata.
Nothing is pickled at all. Both formats are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import torch

from regionvlm.common.errors import CheckpointError
from regionvlm.common.io import atomic_path, atomic_torch_save

FORMATS = ("pth", "safetensors")
TRAIN_STATE_PREFIX = "__train_state__/"
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_METADATA_KEY = "regionvlm_training_state"


def suffix(fmt: str) -> str:
    return ".safetensors" if fmt == "safetensors" else ".pth"


def _pack(obj: Any, path: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of ``obj`` with tensors replaced by references into ``tensors``."""
    if torch.is_tensor(obj):
        key = TRAIN_STATE_PREFIX + path
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, Mapping):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"checkpoint keys at {path!r} must be str or int")
        return {"__dict__": [[k, _pack(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_pack(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a safetensors checkpoint")


def _unpack(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unpack(v, tensors) for v in obj[_TUPLE])
        return {k: _unpack(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    return obj


def save_training_checkpoint(state: Dict[str, Any], path: str | Path, fmt: str = "pth") -> Path:
    """Write ``state`` (with ``state["model"]`` the trainable weights) atomically."""
    if fmt not in FORMATS:
        raise CheckpointError(f"run.save_format must be one of {list(FORMATS)}, got {fmt!r}.")
    path = Path(path)
    if fmt == "pth":
        atomic_torch_save(state, path)
        return path
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    rest = {k: v for k, v in state.items() if k != "model"}
    skeleton = _pack(rest, "state", tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(skeleton)})
    return path


def load_training_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Read a training checkpoint of either format; errors name the file and the problem."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except Exception as exc:
            raise CheckpointError(f"cannot read the checkpoint '{path}': {exc}") from None
        if _METADATA_KEY not in metadata:
            raise CheckpointError(
                f"'{path}' holds weights only, not a training state; to start a new run from "
                "these weights set `model.checkpoint` instead of `run.resume_ckpt_path`."
            )
        state = _unpack(json.loads(metadata[_METADATA_KEY]), tensors)
        state["model"] = {k: v for k, v in tensors.items() if not k.startswith(TRAIN_STATE_PREFIX)}
        return state
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the checkpoint '{path}': {exc}") from None
    if not isinstance(state, Mapping) or not {"model", "optimizer", "step"} <= set(state):
        raise CheckpointError(
            f"'{path}' holds weights only, not a training state (no optimizer/step); to start a "
            "new run from these weights set `model.checkpoint` instead of `run.resume_ckpt_path`."
        )
    return dict(state)


def split_weights(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], int]:
    """The model weights of a state dict read from a checkpoint file, without the training
    state a safetensors training checkpoint carries; and how many entries were dropped."""
    weights = {k: v for k, v in state.items() if not k.startswith(TRAIN_STATE_PREFIX)}
    return weights, len(state) - len(weights)
