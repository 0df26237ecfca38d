"""Tensor files, read without running code and without a second copy in memory.

The generic file layer under the weight loader (``regionvlm.models.weights``) and the export:
what a ``.pth``/``.bin`` (PyTorch zip or legacy pickle) or ``.safetensors`` file holds, where
each tensor's bytes lie (:class:`TensorEntry`), the weight files of a Hugging Face model
directory (single or sharded, :func:`hf_directory`), and a reader that copies a tensor's bytes
straight into a tensor of any floating dtype (:class:`TensorReader`).

* safetensors: the ``safetensors`` library parses and checks the header (names, dtypes,
  shapes, metadata, offsets that index the data without holes); byte offsets follow from
  its offset order. A file the library refuses is examined here only to say what is wrong
  (truncated, corrupt header entry, not safetensors at all).
* PyTorch zip files are loaded on the meta device (``weights_only=True``: only the pickle is
  read, and it may hold nothing but tensors and plain values); each storage records its
  byte offset in the file. Legacy (pre-1.6) files are read whole.
* Reads are plain positional reads (no memory mapping: a mapping keeps every page it touched
  resident until closed, which would add a whole shard on top of the model being built),
  converted to the target dtype through one reused scratch buffer per source dtype.

Every damaged, truncated or unexpected file raises :class:`~regionvlm.common.errors.CheckpointError`
naming the file and what to do.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from regionvlm.common.errors import CheckpointError, MissingFileError
from regionvlm.common.io import check_regular_file

CHUNK_ELEMENTS = 1 << 23  # dtype conversion goes through a scratch buffer of at most this many elements

_ST_DTYPES = {
    name: getattr(torch, attr)
    for name, attr in (
        ("F64", "float64"),
        ("F32", "float32"),
        ("F16", "float16"),
        ("BF16", "bfloat16"),
        ("I64", "int64"),
        ("I32", "int32"),
        ("I16", "int16"),
        ("I8", "int8"),
        ("U8", "uint8"),
        ("BOOL", "bool"),
        ("U16", "uint16"),
        ("U32", "uint32"),
        ("U64", "uint64"),
        ("F8_E4M3", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2"),
    )
    if hasattr(torch, attr)
}


@dataclass(frozen=True, eq=False)
class TensorEntry:
    """One tensor of a weights file: where it is and what it is, nothing read yet."""

    name: str
    dtype: torch.dtype
    shape: Tuple[int, ...]
    path: Path
    offset: int = -1  # byte offset of the element at storage_offset; -1: ``value`` holds the tensor
    stride: Optional[Tuple[int, ...]] = None  # None: contiguous
    value: Optional[torch.Tensor] = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def span_bytes(self) -> int:
        """Bytes from ``offset`` that hold the tensor's elements."""
        itemsize = _itemsize(self.dtype)
        if self.stride is None or self.numel == 0:
            return self.numel * itemsize
        return (sum((s - 1) * st for s, st in zip(self.shape, self.stride)) + 1) * itemsize


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def sniff_format(path: Path) -> str:
    """``safetensors``, ``torch-zip`` or ``torch-legacy`` from the file's first bytes."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"'{path}' is empty (0 bytes): an interrupted download? Fetch the file again.")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":
        n = struct.unpack("<Q", head[:8])[0]
        if n + 8 <= size:
            return "safetensors"
        raise CheckpointError(
            f"'{path}' is a truncated safetensors file: its header alone claims {n} bytes, "
            f"the file has {size}. Fetch it again."
        )
    if head[:1] == b"\x80":  # pickle protocol marker: the pre-1.6 PyTorch format
        return "torch-legacy"
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"'{path}' is a Git LFS pointer, not the weights: run `git lfs pull` "
            "in its repository or download the file itself."
        )
    raise CheckpointError(
        f"'{path}' is neither a PyTorch (.pth/.bin) nor a safetensors file (it starts with {head[:16]!r})."
    )


def safetensors_entries(path: Path) -> Tuple[List[TensorEntry], Dict[str, str]]:
    """Every tensor of a safetensors file, located: the ``safetensors`` library reads and
    checks the header; the byte offsets follow from its offset order (the data is indexed
    without holes). A file it refuses is explained by :func:`_parse_safetensors_header`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = f.offset_keys()
            meta = f.metadata() or {}
            specs = [(name, f.get_slice(name)) for name in names]
            specs = [(name, sl.get_dtype(), tuple(int(d) for d in sl.get_shape())) for name, sl in specs]
    except AttributeError:  # a safetensors library without offset_keys (< 0.4): the header by hand
        return _parse_safetensors_header(path)
    except Exception as exc:  # SafetensorError and the OSErrors it wraps
        _parse_safetensors_header(path)  # raises the precise reason when there is one
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({exc}). Fetch it again.") from None
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    offset = 8 + n
    entries = []
    for name, dtype_name, shape in specs:
        dtype = _ST_DTYPES.get(dtype_name)
        if dtype is None:
            raise CheckpointError(f"'{path}': tensor '{name}' has the dtype {dtype_name}, which PyTorch cannot hold.")
        entry = TensorEntry(name, dtype, shape, path, offset)
        entries.append(entry)
        offset += entry.numel * _itemsize(dtype)
    if offset != path.stat().st_size:  # the library checks this; a file that changed since is caught here
        _parse_safetensors_header(path)
        raise CheckpointError(f"'{path}' changed while it was being read; try again.")
    return entries, dict(meta)


def _parse_safetensors_header(path: Path) -> Tuple[List[TensorEntry], Dict[str, str]]:
    """The header parsed by hand (u64 length + JSON), every tensor checked to lie inside the
    file; says precisely what is wrong with a damaged file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"'{path}' is truncated: {size} bytes, shorter than a safetensors header.")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 * 2**20):
            raise CheckpointError(f"'{path}' is truncated or not safetensors: header length {n}, file {size} bytes.")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"'{path}' has a corrupt safetensors header ({exc}).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"'{path}' has a corrupt safetensors header (not a JSON object).")
    meta = header.pop("__metadata__", None) or {}
    data_start, data_size = 8 + n, size - 8 - n
    entries, short = [], []
    for name, info in header.items():
        try:
            dtype, shape = _ST_DTYPES[info["dtype"]], tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"'{path}': corrupt header entry for '{name}': {info!r}.") from None
        entry = TensorEntry(name, dtype, shape, path, data_start + begin)
        if end - begin != entry.numel * _itemsize(dtype) or begin > end:
            raise CheckpointError(
                f"'{path}': header entry '{name}' has {end - begin} bytes for shape "
                f"{list(shape)} {info['dtype']}: the file is corrupt."
            )
        if end > data_size:
            short.append(name)
        entries.append(entry)
    if short:
        need = max(int(header[k]["data_offsets"][1]) for k in short) + data_start
        raise CheckpointError(
            f"'{path}' is truncated: it has {size} bytes but its header places tensors up "
            f"to byte {need} ({len(short)} tensors cut off, e.g. {short[:3]}). Fetch it again."
        )
    return entries, dict(meta)


def _torch_load_error(path: Path, exc: BaseException) -> CheckpointError:
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        reason = next(
            (line.strip() for line in text.splitlines() if "Unsupported" in line or "GLOBAL" in line),
            text.splitlines()[0] if text else "",
        )
        return CheckpointError(
            f"'{path}' holds pickled Python objects besides tensors ({reason}). Weights are read with "
            "weights_only=True, which refuses to run code stored in a weights file. Use the published "
            "file, or re-save it as a plain state dict (torch.save(model.state_dict())) or as safetensors."
        )
    return CheckpointError(
        f"cannot read '{path}': it looks truncated or corrupt ({type(exc).__name__}: "
        f"{text.splitlines()[0] if text else ''}). Fetch the file again."
    )


def _flatten_tensors(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded object (a LAVIS checkpoint's ``model`` entry is unwrapped;
    other entries such as ``optimizer`` are left alone)."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"'{path}' does not hold a state dict (got {type(obj).__name__}).")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"'{path}': the state dict has entries that are not tensors: {bad[:5]}.")
    return dict(obj)


def torch_entries(path: Path, fmt: str) -> List[TensorEntry]:
    """Locate the tensors of a PyTorch file. Zip files are loaded on the meta device (only the
    pickle is read; each storage records its byte offset); legacy files are read whole."""
    size = path.stat().st_size
    try:
        if fmt == "torch-zip":
            obj = torch.load(path, map_location="meta", weights_only=True)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _torch_load_error(path, exc) from None
    state = _flatten_tensors(obj, path)
    entries, short = [], []
    for name, t in state.items():
        shape = tuple(t.shape)
        stride = None if t.is_contiguous() else tuple(t.stride())
        if not t.is_meta:
            entries.append(TensorEntry(name, t.dtype, shape, path, value=t))
            continue
        base = _storage_file_offset(t)
        if base is None:  # a PyTorch without meta offsets: fall back to memory-mapping the file
            return _mapped_entries(path)
        entry = TensorEntry(name, t.dtype, shape, path, base + t.storage_offset() * t.element_size(), stride)
        if entry.offset + entry.span_bytes > size:
            short.append(name)
        entries.append(entry)
    if short:
        raise CheckpointError(
            f"'{path}' is truncated: {len(short)} tensors end past its {size} bytes (e.g. {short[:3]}). Fetch it again."
        )
    return entries


def _storage_file_offset(t: torch.Tensor) -> Optional[int]:
    """Where a meta-loaded tensor's storage starts in its zip file (recorded by PyTorch >= 2.5)."""
    return getattr(t.untyped_storage(), "_checkpoint_offset", None)


def _mapped_entries(path: Path) -> List[TensorEntry]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise _torch_load_error(path, exc) from None
    return [TensorEntry(k, v.dtype, tuple(v.shape), path, value=v) for k, v in _flatten_tensors(obj, path).items()]


def file_entries(path: Path) -> List[TensorEntry]:
    """All tensors of one weights file, located but not read."""
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a directory; a weights file is expected here.")
    check_regular_file(path, "weights file")
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return safetensors_entries(path)[0]
    return torch_entries(path, fmt)


@dataclass
class HFDirectory:
    """A Hugging Face model directory: its weight files and, if sharded, the index."""

    files: List[Path]
    index: Optional[Path] = None
    weight_map: Dict[str, str] = field(default_factory=dict)


def hf_directory(directory: Path) -> HFDirectory:
    """Find the weights of a Hugging Face directory (safetensors before .bin, sharded or single)."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"the shard index '{index}' is not valid JSON ({exc}). Fetch it again.") from None
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if (
                not isinstance(weight_map, dict)
                or not weight_map
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())
            ):
                raise CheckpointError(
                    f"the shard index '{index}' has no valid \"weight_map\" "
                    "(a JSON object from tensor name to shard file)."
                )
            files = []
            for shard in sorted(set(weight_map.values())):
                p = directory / shard
                if not p.is_file():
                    raise MissingFileError(
                        f"weight shard '{p}' is named in '{index}' but absent. Download "
                        f"it into '{directory}' (all shards the index lists are needed)."
                    )
                files.append(p)
            return HFDirectory(files, index, dict(weight_map))
        if (directory / single).is_file():
            return HFDirectory([directory / single])
    raise CheckpointError(
        f"'{directory}' has no model.safetensors / pytorch_model.bin (or their sharded index); "
        "point the setting to a Hugging Face model directory."
    )


# --- read --------------------------------------------------------------------------


class TensorReader:
    """Reads tensors of one file with plain positional reads into fresh tensors."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self.bytes_read = 0
        self._scratch: Dict[torch.dtype, torch.Tensor] = {}
        if hasattr(os, "posix_fadvise"):  # reads go forward through the file: a larger read-ahead
            os.posix_fadvise(self.file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def close(self) -> None:
        self.file.close()
        self._scratch.clear()

    def scratch(self, dtype: torch.dtype) -> torch.Tensor:
        """One conversion buffer per source dtype, reused for every tensor of the file: a
        fresh buffer per tensor would leave holes between the model's tensors in the heap."""
        if dtype not in self._scratch:
            self._scratch[dtype] = torch.empty(CHUNK_ELEMENTS, dtype=dtype)
        return self._scratch[dtype]

    def _fill(self, offset: int, target: torch.Tensor) -> None:
        view = memoryview(target.reshape(-1).view(torch.uint8).numpy())
        done = 0
        self.file.seek(offset)
        while done < len(view):
            n = self.file.readinto(view[done:])
            if not n:
                raise CheckpointError(
                    f"'{self.path}' ended early: truncated while being read (offset {offset + done}). Fetch it again."
                )
            done += n
        self.bytes_read += done

    def read(self, entry: TensorEntry, dtype: torch.dtype) -> torch.Tensor:
        """The entry as a contiguous tensor of ``dtype``, converted chunk by chunk."""
        if entry.value is not None:  # legacy files (already in memory) and the mmap fallback
            value = entry.value
            return value.to(dtype).contiguous() if value.dtype != dtype else value.contiguous().clone()
        if entry.stride is not None:  # a strided view: read its storage span, then lay it out
            span = torch.empty(entry.span_bytes // _itemsize(entry.dtype), dtype=entry.dtype)
            self._fill(entry.offset, span)
            return span.as_strided(entry.shape, entry.stride).to(dtype).contiguous()
        out = torch.empty(entry.shape, dtype=dtype)
        if entry.numel == 0:
            return out
        if dtype == entry.dtype:
            self._fill(entry.offset, out)
            return out
        flat = out.view(-1)
        scratch = self.scratch(entry.dtype)
        itemsize = _itemsize(entry.dtype)
        for start in range(0, entry.numel, CHUNK_ELEMENTS):
            n = min(CHUNK_ELEMENTS, entry.numel - start)
            self._fill(entry.offset + start * itemsize, scratch[:n])
            flat[start : start + n].copy_(scratch[:n])
        return out


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Read a ``.pth``/``.bin``/``.safetensors`` file safely (``weights_only=True``, no code
    runs); a LAVIS checkpoint's ``model`` entry is unwrapped. Tensors keep their dtype."""
    entries = file_entries(Path(path))
    reader = TensorReader(Path(path))
    try:
        return {e.name: reader.read(e, e.dtype) for e in sorted(entries, key=lambda e: e.offset)}
    finally:
        reader.close()


def read_hf_directory(directory: Path) -> Dict[str, torch.Tensor]:
    """All tensors of a Hugging Face model directory (single or sharded, safetensors or bin)."""
    out: Dict[str, torch.Tensor] = {}
    for p in hf_directory(directory).files:
        out.update(read_state_dict(p))
    return out
