"""Whole-dataset streaming: peak memory on a big Zarr input, throughput versus in-memory.

Two measurements (on a shared machine pass ``--lock PATH`` or set ``CALAB_BENCH_LOCK``):

``memory``
    Generates a float32 Zarr input chunk by chunk (default 200,000 cells x 3,000 frames
    = 2.4 GB; never held in memory), streams it to a Zarr output with
    ``calab deconvolve --out`` in a child process under ``/usr/bin/time -v``, and reports
    the child's peak RSS against the input size.  The input is deleted afterwards.

``throughput``
    On a size both paths can hold, alternates (interleaved, ``--repeats`` times) the
    in-memory path — read the whole Zarr array, ``run_deconvolution_full``, save the
    activity — with the streamed path ``deconvolve_dataset`` Zarr -> Zarr, and reports
    cells/s of each and their ratio.  The results are checked to be identical.

Examples::

    python bench/bench_datasets.py throughput --cells 4000 --frames 3000 --repeats 2
    python bench/bench_datasets.py memory --cells 200000 --frames 3000 --max-iters 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's calab
from _data import FS, LAMBDA, TAU_DECAY, TAU_RISE, make_traces  # noqa: E402
from _lock import add_lock_option, hold_lock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BLOCK = 2000  # cells generated at a time


def generate(path: Path, cells: int, frames: int, seed: int = 0) -> float:
    """Write a float32 (cells, frames) Zarr array block by block; returns seconds."""
    import zarr

    began = time.perf_counter()
    array = zarr.open_array(str(path), mode="w", shape=(cells, frames), chunks=(1000, frames), dtype="f4")
    base = make_traces(BLOCK, frames, seed=seed)  # realistic shapes, reused with fresh noise
    rng = np.random.default_rng(seed + 1)
    for start in range(0, cells, BLOCK):
        stop = min(start + BLOCK, cells)
        block = base[: stop - start] + rng.normal(scale=5.0, size=(stop - start, frames))
        array[start:stop] = block.astype(np.float32)
    return time.perf_counter() - began


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_params(path: Path) -> Path:
    path.write_text(json.dumps({"schema_version": "1.2.0", "parameters": {
        "tau_rise_s": TAU_RISE, "tau_decay_s": TAU_DECAY, "lambda": LAMBDA, "sampling_rate_hz": FS,
        "filter_enabled": False}}))
    return path


def run_memory(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="calab-bench-", dir=args.workdir))
    try:
        source = work / "input.zarr"
        generate_s = generate(source, args.cells, args.frames)
        logical = args.cells * args.frames * 4
        on_disk = directory_bytes(source)
        params = export_params(work / "params.json")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = ["/usr/bin/time", "-v", sys.executable, str(Path(__file__).resolve()), "_stream",
                   str(source), str(work / "out.zarr"), str(args.max_iters), args.backend]
        began = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if done.returncode:
            raise SystemExit(f"streamed run failed:\n{done.stdout}\n{done.stderr}")
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
        child = json.loads(done.stdout.strip().splitlines()[-1])
        return {
            "cells": args.cells, "frames": args.frames, "max_iters": args.max_iters,
            "input_bytes": logical, "input_bytes_on_disk": on_disk, "generate_s": round(generate_s, 1),
            "wall_s": round(seconds, 1), "cells_per_s": round(args.cells / child["seconds"], 1),
            "chunk_cells": child["chunk_cells"], "peak_rss_bytes": peak_kb * 1024,
            "peak_rss_over_input": round(peak_kb * 1024 / logical, 4),
            "output_bytes_on_disk": directory_bytes(work / "out.zarr"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stream_child(source: str, output: str, max_iters: str, backend: str) -> None:
    from calab.datasets import deconvolve_dataset

    run = deconvolve_dataset(source, output, fs=FS, tau_r=TAU_RISE, tau_d=TAU_DECAY, lam=LAMBDA,
                             max_iters=int(max_iters), backend=backend, progress=False)
    print(json.dumps({"seconds": run.seconds, "chunk_cells": run.chunk_cells}))


def run_throughput(args: argparse.Namespace) -> dict:
    import zarr

    import calab
    from calab.datasets import deconvolve_dataset

    work = Path(tempfile.mkdtemp(prefix="calab-bench-", dir=args.workdir))
    try:
        source = work / "input.zarr"
        generate(source, args.cells, args.frames)
        times: dict[str, list[float]] = {"in_memory": [], "streamed": []}
        cpu: dict[str, list[float]] = {"in_memory": [], "streamed": []}
        chunk = None
        for repeat in range(args.repeats):
            cpu_began = _cpu_seconds()
            began = time.perf_counter()
            traces = np.asarray(zarr.open_array(str(source), mode="r")[...])
            result = calab.run_deconvolution_full(traces, FS, TAU_RISE, TAU_DECAY, LAMBDA,
                                                  max_iters=args.max_iters, backend=args.backend, progress=False)
            np.save(work / "activity.npy", result.activity.astype(np.float32))
            times["in_memory"].append(time.perf_counter() - began)
            cpu["in_memory"].append(_cpu_seconds() - cpu_began)
            del traces

            out = work / f"out{repeat}.zarr"
            cpu_began = _cpu_seconds()
            began = time.perf_counter()
            run = deconvolve_dataset(source, out, fs=FS, tau_r=TAU_RISE, tau_d=TAU_DECAY, lam=LAMBDA,
                                     max_iters=args.max_iters, backend=args.backend, progress=False)
            times["streamed"].append(time.perf_counter() - began)
            cpu["streamed"].append(_cpu_seconds() - cpu_began)
            chunk = run.chunk_cells
            streamed = zarr.open_group(str(out), mode="r")["activity"][...]
            if not np.array_equal(streamed, result.activity.astype(np.float32)):
                raise SystemExit("streamed activity differs from the in-memory result")
            shutil.rmtree(out)
        best = {name: min(values) for name, values in times.items()}
        return {
            "cells": args.cells, "frames": args.frames, "max_iters": args.max_iters, "repeats": args.repeats,
            "chunk_cells_streamed": chunk,
            "in_memory_s": [round(t, 2) for t in times["in_memory"]],
            "streamed_s": [round(t, 2) for t in times["streamed"]],
            "in_memory_cells_per_s": round(args.cells / best["in_memory"], 1),
            "streamed_cells_per_s": round(args.cells / best["streamed"], 1),
            "streamed_over_in_memory": round(best["in_memory"] / best["streamed"], 3),
            # CPU seconds (all threads) do not depend on what else the machine runs
            "in_memory_cpu_s": [round(t, 2) for t in cpu["in_memory"]],
            "streamed_cpu_s": [round(t, 2) for t in cpu["streamed"]],
            "streamed_over_in_memory_cpu": round(min(cpu["in_memory"]) / min(cpu["streamed"]), 3),
            "identical": True,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_stream":
        _stream_child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("memory", "throughput"))
    parser.add_argument("--cells", type=int, default=None)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--workdir", default=None, help="where the temporary input/output go (default: $TMPDIR)")
    parser.add_argument("--json", help="also write the result to this file")
    add_lock_option(parser)
    args = parser.parse_args()
    hold_lock(args.lock)
    if args.cells is None:
        args.cells = 200_000 if args.what == "memory" else 4000
    result = run_memory(args) if args.what == "memory" else run_throughput(args)
    result["load_average_before_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
