"""Measure loading the real-size model from its weight files on this machine.

    python benchmarks/make_fullsize_weights.py --out /tmp/regionvlm_fullsize   # once: ~17 GB of stand-ins
    python benchmarks/bench_load.py --weights /tmp/regionvlm_fullsize               # fp32 (default)
    python benchmarks/bench_load.py --weights /tmp/regionvlm_fullsize --dtype bf16  # frozen towers in bf16

Per run: the files the preset reads are read with plain reads into one reused buffer (twice:
the second pass is the warm-page-cache figure) and once into newly allocated memory (what
any loader that builds the model pays at least); then a fresh Python process runs
``load_model_and_preprocess("regionvlm_t5", PRESET, weights=...)`` and reports its wall time
and peak RSS (``VmHWM``, the kernel's high-water mark of the process's resident set).
Printed (the median of ``--repeat`` runs): the times, peak RSS,
the loaded model's bytes, and the ratios the loader is held to: peak RSS / model bytes (goal
<= 1.15) and load time / warm read time (goal <= 2). ``--dtype bf16`` asks the loader for bf16
ViT and T5 weights (Q-Former, queries,
``ln_vision`` and ``t5_proj`` stay fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from make_fullsize_weights import PRESET_SETTINGS, release_paths


def files_of(paths: Dict[str, str]) -> List[Path]:
    """Every file the loader opens for these settings (a directory: its index and shards)."""
    from regionvlm.models.weights import hf_directory

    out: List[Path] = []
    for p in map(Path, paths.values()):
        if p.is_dir():
            d = hf_directory(p)
            out += ([d.index] if d.index else []) + d.files
        else:
            out.append(p)
    return out


def read_once(files: List[Path], chunk: int = 64 << 20) -> float:
    """Seconds to read every byte of ``files`` once with plain reads."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
    return time.perf_counter() - start


def read_fresh(files: List[Path]) -> float:
    """Seconds to read every byte of ``files`` into newly allocated memory (kept until all are
    read): what any loader that materializes the model pays at least."""
    import torch

    start = time.perf_counter()
    kept = []
    for path in files:
        buf = torch.empty(path.stat().st_size, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        with open(path, "rb", buffering=0) as f:
            done = 0
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    break
                done += n
        kept.append(buf)
    seconds = time.perf_counter() - start
    del kept
    return seconds


def peak_rss() -> int:
    """This process's peak resident set: ``VmHWM`` where Linux has it (``ru_maxrss`` would also
    count the parent's peak, which a child started with vfork inherits at exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def child(weights: Path, preset: str, dtype: str) -> Dict[str, object]:
    """Runs in the fresh process: the user-facing load, timed, with its peak RSS."""
    import importlib

    from regionvlm import load_model_and_preprocess
    from regionvlm.models import weights as weight_io

    start = time.perf_counter()
    importlib.import_module("transformers.models.t5.modeling_t5")  # the slowest import, timed apart

    import_s = time.perf_counter() - start
    # model.precision=bf16: the loader reads the frozen ViT and T5 straight into bf16 (on CPU
    # the default policy is fp32)
    overrides = {"precision": "bf16"} if dtype == "bf16" else {}
    rss_before = peak_rss()
    start = time.perf_counter()
    model, _, _ = load_model_and_preprocess(
        "regionvlm_t5", preset, is_eval=True, load_pretrained=True, weights=release_paths(weights, preset), **overrides
    )
    load_s = time.perf_counter() - start
    peak = peak_rss()
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        raise RuntimeError("a tensor was left on the meta device")
    report = model.load_report
    return {
        "import_s": import_s,
        "load_s": load_s,
        "plan_s": report.plan_seconds,
        "peak_rss": peak,
        "rss_before_load": rss_before,
        "model_bytes": weight_io.state_bytes(model),
        "loader_read_bytes": report.bytes_read,
        "loader_read_s": report.seconds,
        "dtypes": weight_io.group_dtypes(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "report": str(report),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, type=Path, help="folder written by make_fullsize_weights.py")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--preset", choices=sorted(PRESET_SETTINGS), default="flant5xl")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("--repeat", type=int, default=1, help="runs (the median run is summarized)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="run even if free memory looks too small")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.weights, args.preset, args.dtype)))
        return 0

    files = files_of(release_paths(args.weights, args.preset))
    file_bytes = sum(f.stat().st_size for f in files)
    need = int(file_bytes * (1.2 if args.dtype == "fp32" else 0.65))
    if mem_available() < need and not args.force:
        print(
            f"only {mem_available() / 2**30:.1f} GiB available, the load needs about {need / 2**30:.1f} GiB; "
            "free memory or pass --force",
            file=sys.stderr,
        )
        return 2
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--weights",
        str(args.weights),
        "--dtype",
        args.dtype,
        "--preset",
        args.preset,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    runs = []
    for _ in range(args.repeat):
        first, warm = read_once(files), read_once(files)
        fresh = read_fresh(files)
        read_once(files)  # warm again for the load
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        process_s = time.perf_counter() - start
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(
            {
                "read_s_first": first,
                "read_s_warm": warm,
                "read_s_fresh_memory": fresh,
                "process_s": process_s,
                **r,
                "rss_ratio": r["peak_rss"] / r["model_bytes"],
                "time_ratio": r["load_s"] / warm,
                "time_ratio_fresh": r["load_s"] / fresh,
            }
        )
        print(
            f"run {len(runs)}: read {warm:5.1f} s warm ({first:5.1f} s first pass, {fresh:5.1f} s into fresh "
            f"memory), load {r['load_s']:5.1f} s, peak RSS {r['peak_rss'] / 1e9:5.2f} GB",
            flush=True,
        )
    r = sorted(runs, key=lambda run: run["time_ratio"])[len(runs) // 2]  # the median run
    print(r["report"])
    print(f"preset {args.preset}, {args.dtype}: {r['parameters'] / 1e9:.3f} B parameters, dtypes {r['dtypes']}")
    print(
        f"files read once           {file_bytes / 1e9:6.2f} GB  {r['read_s_warm']:6.1f} s warm "
        f"({r['read_s_first']:.1f} s first pass; {r['read_s_fresh_memory']:.1f} s into fresh memory)"
    )
    print(
        f"load_model_and_preprocess {r['load_s']:6.1f} s  (checking the files {r['plan_s']:.1f} s, reading "
        f"{r['loader_read_bytes'] / 1e9:.2f} GB {r['loader_read_s']:.1f} s; imports before it {r['import_s']:.1f} s, "
        f"whole process {r['process_s']:.1f} s)"
    )
    print(
        f"peak RSS {r['peak_rss'] / 1e9:6.2f} GB (after imports {r['rss_before_load'] / 1e9:.2f} GB), "
        f"model {r['model_bytes'] / 1e9:6.2f} GB"
    )
    print(
        f"ratios: peak RSS / model bytes = {r['rss_ratio']:.3f} (goal <= 1.15), load time / warm read time = "
        f"{r['time_ratio']:.2f} (goal <= 2), load time / read into fresh memory = {r['time_ratio_fresh']:.2f}"
    )
    if args.json:
        from regionvlm.common.io import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "preset": args.preset,
                "dtype": args.dtype,
                "files": [str(f) for f in files],
                "file_bytes": file_bytes,
                "runs": [{k: v for k, v in run.items() if k != "report"} for run in runs],
            },
            indent=1,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
