#!/usr/bin/env python
"""GPU rows of the benchmark: CuPy and JAX on one GPU, the reference's CPU time alongside.

Run on a machine with a CUDA GPU, with the environment that has OUR calab (see
``bench/README.md``, section "GPU", for the exact commands and how to bring the reference
onto a machine without network access)::

    python bench/bench_gpu.py                                  # the full grid
    python bench/bench_gpu.py --cells 10000 --frames 27000     # the "done when" row only
    python bench/bench_gpu.py --cells 1000 --frames 9000 --backends cupy --no-reference

Rows: every backend (``cupy``, ``jax``; ``numpy`` also works, for smoke tests) × cells
(1k, 10k, 50k) × frames (9k, 27k) × conv mode (fft, banded), on deterministic gcamp6f-like
traces (τ 0.1/0.6 s, 30 Hz, λ = 0.5; ``bench_deconvolution.make_traces``, generated in
blocks of 1000 cells so that the first cells are the same at every size).

Measured for each row, each backend in its own subprocess (so CuPy's and JAX's memory
pools never compete):

* ``compile s``  — CuPy: NVRTC compilation of calab's ``.cu`` kernels, in a fresh kernel
  cache (``CUPY_CACHE_DIR``), before any solve.  JAX: not separable (see warm-up);
* ``first s``    — the first call (cuFFT plans, CuPy's own kernels, JAX tracing + XLA);
* ``warm-up s``  — first call minus the steady median;
* ``best/median s`` — steady state over ``--repeats`` calls with the traces already on the
  GPU (CuPy/JAX array in, same-library array out), synchronised before the clock stops;
* ``host s``     — one end-to-end call from a NumPy float64 array to NumPy float64
  outputs (validation, float64→float32 on the host, transfers), after the warm-up;
* ``peak GiB``   — CuPy: the largest number of bytes live in CuPy's memory pool during the
  calls (a tracking allocator, cuFFT work areas included); JAX: the device's
  ``peak_bytes_in_use`` for the process;
* ``mean iters`` and the converged fraction;
* ``vs numpy``   — on the first ``--parity-cells`` cells: worst cell's max |Δactivity| /
  peak against the NumPy backend, and the largest iteration-count difference;
* ``ref s``      — the published ``calab==0.3.0`` (single-threaded Rust) timed in the same
  run on the same machine, on the first ``--reference-cells`` cells, and **extrapolated
  linearly** to the row's cell count (cells are solved independently, one after another);
  the column says ``×k`` for the extrapolation factor.  ``speed-up`` = ref s / median s.

Nothing is estimated or filled in: a value that was not measured prints as ``-``.  The
"done when" lines at the end compare the 10,000 × 27,000 rows with the performance targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
for path in (str(REPO_ROOT), str(BENCH), str(REPO_ROOT / "tools")):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_deconvolution import FS, LAMBDA, TAU_DECAY, TAU_RISE, make_traces  # noqa: E402

BLOCK = 1000
#: the performance targets for 10,000 cells x 27,000 frames on one H200, after warm-up
TARGETS = {"fft": 4.0, "banded": 2.0}
JAX_TARGET_RATIO = 2.0


# ----------------------------------------------------------------------------- data
def _block(args: tuple[str, int, int, int, int]) -> None:
    path, start, stop, frames, seed = args
    traces = np.load(path, mmap_mode="r+")
    # Always a whole block, truncated: the first cells are the same data at every size.
    traces[start:stop] = make_traces(BLOCK, frames, seed=seed * 1_000_003 + start // BLOCK)[: stop - start]
    traces.flush()


def generate(path: Path, cells: int, frames: int, seed: int, workers: int) -> float:
    """Write ``(cells, frames)`` float32 traces to ``path`` (blocks of 1000 cells in parallel)."""
    start = time.perf_counter()
    traces = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(cells, frames))
    del traces
    jobs = [(str(path), s, min(s + BLOCK, cells), frames, seed) for s in range(0, cells, BLOCK)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_block, jobs))
    else:
        for job in jobs:
            _block(job)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- worker
class Device:
    """Upload, synchronisation and peak-memory accounting for one backend's library."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.peak = 0
        if backend == "cupy":
            import cupy

            self.cupy = cupy
            self.pool = cupy.get_default_memory_pool()

            def tracking_malloc(size: int):
                memory = self.pool.malloc(size)
                self.peak = max(self.peak, self.pool.used_bytes())
                return memory

            cupy.cuda.set_allocator(tracking_malloc)
        elif backend == "jax":
            import jax

            self.jax = jax

    def upload(self, traces: np.ndarray) -> Any:
        if self.backend == "cupy":
            return self.cupy.asarray(traces)
        if self.backend == "jax":
            return self.jax.device_put(self.jax.numpy.asarray(traces))
        return np.asarray(traces)

    def sync(self, result: Any = None) -> None:
        if self.backend == "cupy":
            self.cupy.cuda.Device().synchronize()
        elif self.backend == "jax" and result is not None:
            self.jax.block_until_ready(result)

    def reset_peak(self) -> None:
        if self.backend == "cupy":
            self.pool.free_all_blocks()
            self.peak = self.pool.used_bytes()

    def peak_bytes(self) -> int | None:
        if self.backend == "cupy":
            return int(self.peak)
        if self.backend == "jax":
            try:
                stats = self.jax.devices()[0].memory_stats() or {}
                return int(stats["peak_bytes_in_use"])
            except Exception:  # noqa: BLE001 - CPU devices have no stats
                return None
        return None

    def host(self, array: Any) -> np.ndarray:
        if self.backend == "cupy":
            return self.cupy.asnumpy(array)
        return np.asarray(array)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time one backend on one traces file; the report is printed as one JSON line."""
    import calab

    backend = args.backend
    infos = calab.available_backends(with_reasons=True)
    info = infos.get(backend)
    if info is None or not info.usable or (backend == "jax" and not info.has_gpu and not args.allow_cpu):
        reason = "unknown backend" if info is None else info.reason
        if info is not None and info.usable:
            reason = f"JAX sees no GPU ({info.reason})"
        return {"backend": backend, "skipped": reason}
    traces = np.ascontiguousarray(np.load(args.traces, mmap_mode="r"))
    cells, frames = traces.shape
    device = Device(backend)
    report: dict[str, Any] = {"backend": backend, "device": info.reason, "cells": cells, "frames": frames, "modes": {}}
    if backend == "cupy":
        chosen = calab.backends.get_backend("cupy")
        start = time.perf_counter()
        chosen.warmup()
        report["compile_s"] = time.perf_counter() - start
        report["ar2_chunks_env"] = os.environ.get("CALAB_CUDA_AR2_CHUNKS", "auto")
    start = time.perf_counter()
    on_device = device.upload(traces)
    device.sync(on_device)
    report["upload_s"] = time.perf_counter() - start
    host64 = traces.astype(np.float64) if args.host else None
    for mode in args.modes.split(","):
        call = dict(fs=FS, tau_r=TAU_RISE, tau_d=TAU_DECAY, lam=LAMBDA, max_iters=args.max_iters, conv_mode=mode, backend=backend)
        device.reset_peak()

        def timed(data: Any) -> tuple[float, Any]:
            begin = time.perf_counter()
            result = calab.run_deconvolution_full(data, **call)
            device.sync(result.activity)
            return time.perf_counter() - begin, result

        first, result = timed(on_device)
        print(f"  {backend} {mode}: first call {first:.2f} s", file=sys.stderr, flush=True)
        times = []
        for _ in range(args.repeats):
            seconds, result = timed(on_device)
            times.append(seconds)
            print(f"  {backend} {mode}: steady call {seconds:.3f} s", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {
            "first_s": first,
            "times_s": times,
            "peak_bytes": device.peak_bytes(),
            "mean_iterations": float(np.mean(device.host(result.iterations))),
            "converged_fraction": float(np.mean(device.host(result.converged))),
        }
        sample = device.host(result.activity[: args.parity_cells]).astype(np.float32)
        sample_path = Path(args.samples) / f"{backend}_{mode}.npy"
        np.save(sample_path, sample)
        np.save(sample_path.with_name(f"{backend}_{mode}_iterations.npy"), device.host(result.iterations)[: args.parity_cells])
        entry["sample_path"] = str(sample_path)
        del result
        if host64 is not None:
            begin = time.perf_counter()
            host_result = calab.run_deconvolution_full(host64, **call)
            entry["host_s"] = time.perf_counter() - begin
            print(f"  {backend} {mode}: NumPy in/out call {entry['host_s']:.2f} s", file=sys.stderr, flush=True)
            assert isinstance(host_result.activity, np.ndarray) and host_result.activity.dtype == np.float64
            del host_result
        report["modes"][mode] = entry
    return report


def run_worker(backend: str, traces: Path, samples: Path, args: argparse.Namespace, env_extra: dict[str, str]) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--backend", backend, "--traces", str(traces),
        "--samples", str(samples), "--modes", args.modes, "--repeats", str(args.repeats),
        "--max-iters", str(args.max_iters), "--parity-cells", str(args.parity_cells),
    ]  # fmt: skip
    if args.no_host:
        cmd.append("--no-host")
    if args.allow_cpu:
        cmd.append("--allow-cpu")
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # stderr passes through: the worker's per-call timings show even if a time limit stops the run
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=args.worker_timeout)
    if proc.returncode != 0:
        return {"backend": backend, "skipped": f"worker failed (exit {proc.returncode}); its error is printed above"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- comparisons
def compare(ours: np.ndarray, ours_iterations: np.ndarray, activity: np.ndarray, iterations: np.ndarray) -> dict[str, Any]:
    """Worst cell's max |Δactivity| / peak and iteration-count differences on a sample."""
    reference = np.atleast_2d(np.asarray(activity, dtype=np.float64))
    ours = np.atleast_2d(ours.astype(np.float64))
    peak = np.maximum(np.abs(reference).max(axis=1), 1e-6)
    error = np.abs(ours - reference).max(axis=1) / peak
    iterations = np.atleast_1d(iterations)
    delta = np.abs(np.asarray(ours_iterations, dtype=np.int64) - iterations)
    return {
        "max_rel_diff": float(error.max()),
        "max_rel_diff_same_iterations": float(error[delta == 0].max()) if np.any(delta == 0) else None,
        "max_iteration_diff": int(delta.max()),
        "cells_with_other_iterations": int(np.count_nonzero(delta)),
        "cells": int(len(delta)),
    }


def summarise(times: list[float]) -> dict[str, float]:
    median = statistics.median(times)
    return {"best_s": min(times), "median_s": median}


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ["backend", "cells x frames", "mode", "compile s", "first s", "warm-up s", "best s", "median s",
              "cell*frames/s", "host s", "peak GiB", "mean iters", "vs numpy", "vs ref", "ref s", "speed-up"]  # fmt: skip
    lines = [header]
    for r in rows:
        parity = r.get("parity") or {}
        parity_text = "-"
        if parity:
            parity_text = f"{parity['max_rel_diff']:.1e}/±{parity['max_iteration_diff']}"
        ref = r.get("reference_s")
        ref_text = "-" if ref is None else f"{ref:.1f}" + (f" (x{r['reference_factor']:.0f})" if r.get("reference_factor", 1) != 1 else "")
        lines.append([
            r["backend"], f"{r['cells']} x {r['frames']}", r["mode"], fmt(r.get("compile_s"), ".2f"),
            fmt(r.get("first_s"), ".2f"), fmt(r.get("warmup_s"), ".2f"), fmt(r.get("best_s"), ".3f"),
            fmt(r.get("median_s"), ".3f"), fmt(r.get("throughput"), ".3g"), fmt(r.get("host_s"), ".2f"),
            fmt(None if r.get("peak_bytes") is None else r["peak_bytes"] / 2**30, ".2f"),
            fmt(r.get("mean_iterations"), ".1f"), parity_text, fmt(r.get("vs_reference_max_rel_diff"), ".1e"),
            ref_text, fmt(r.get("speedup"), ".1f"),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def done_when(rows: list[dict[str, Any]]) -> list[str]:
    """The acceptance lines for the 10,000 x 27,000 rows (measured values only)."""
    lines = []
    target_rows = [r for r in rows if r["cells"] == 10_000 and r["frames"] == 27_000]
    for mode, limit in TARGETS.items():
        cupy = next((r for r in target_rows if r["backend"].startswith("cupy") and r["mode"] == mode), None)
        if cupy is None:
            lines.append(f"{mode}: no CuPy row for 10000 x 27000 was measured")
            continue
        ok = cupy["median_s"] <= limit
        lines.append(f"{mode}: CuPy median {cupy['median_s']:.3f} s (target <= {limit} s): {'MET' if ok else 'NOT MET'}")
        parity = cupy.get("parity")
        if parity:
            lines.append(
                f"{mode}: vs NumPy backend on {parity['cells']} cells: worst max|Δ|/peak {parity['max_rel_diff']:.2e}, "
                f"{parity['cells_with_other_iterations']} cell(s) with another iteration count (max ±{parity['max_iteration_diff']})"
            )
        jax = next((r for r in target_rows if r["backend"] == "jax" and r["mode"] == mode), None)
        if jax is not None:
            ratio = jax["median_s"] / cupy["median_s"]
            lines.append(f"{mode}: JAX/CuPy median ratio {ratio:.2f} (target <= {JAX_TARGET_RATIO}): {'MET' if ratio <= JAX_TARGET_RATIO else 'NOT MET'}")
    return lines


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GPU benchmark rows (CuPy, JAX) with the reference's CPU time alongside")
    parser.add_argument("--cells", default="1000,10000,50000")
    parser.add_argument("--frames", default="9000,27000")
    parser.add_argument("--modes", default="fft,banded")
    parser.add_argument("--backends", default="cupy,jax")
    parser.add_argument("--ar2-chunks", default="auto", help="comma-separated CALAB_CUDA_AR2_CHUNKS values for CuPy rows (e.g. auto,1)")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls after the first (default 3)")
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parity-cells", type=int, default=32, help="cells compared with the NumPy backend (default 32)")
    parser.add_argument("--reference-cells", type=int, default=100, help="cells the reference is timed on (default 100)")
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--reference-venv", default=None, help="venv holding calab==0.3.0 (default $CALAB_REFERENCE_VENV or .venv-ref)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--no-host", action="store_true", help="skip the NumPy-in/NumPy-out timing")
    parser.add_argument("--allow-cpu", action="store_true", help="also time JAX when it sees no GPU (smoke tests)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating data")
    parser.add_argument("--worker-timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="where traces are written (default: a temp dir)")
    # internal: worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--traces", help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)
    parser.add_argument("--host", action="store_true", default=True, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.no_host:
        args.host = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import calab
    import reference_env
    from bench_deconvolution import time_reference

    cells_list = [int(v) for v in args.cells.split(",") if v.strip()]
    frames_list = [int(v) for v in args.frames.split(",") if v.strip()]
    modes = [m for m in args.modes.split(",") if m]
    backends = [b for b in args.backends.split(",") if b]
    chunk_settings = [c for c in args.ar2_chunks.split(",") if c]
    print(f"calab {getattr(calab, '__version__', '?')} | Python {platform.python_version()} | NumPy {np.__version__} | {os.cpu_count()} CPU cores | {platform.platform()}")
    for name, info in calab.available_backends(with_reasons=True).items():
        print(f"backend {name}: {'usable' if info.usable else 'UNUSABLE'} - {info.reason}")
    print(f"problem: gcamp6f-like raw fluorescence, tau {TAU_RISE}/{TAU_DECAY} s, fs {FS:g} Hz, lambda {LAMBDA}, max_iters {args.max_iters}")

    reference_python = None
    if not args.no_reference:
        try:
            reference_python = reference_env.ensure_reference_python(args.reference_venv, quiet=True)
            print(f"reference: calab=={reference_env.REFERENCE_VERSION} via {reference_python}")
        except reference_env.ReferenceEnvError as exc:
            print(f"NOTE: reference unavailable, no reference column: {exc}")
    print(flush=True)

    rows: list[dict[str, Any]] = []
    workdir_context = tempfile.TemporaryDirectory(prefix="calab-bench-gpu-") if args.workdir is None else None
    workdir = Path(workdir_context.name) if workdir_context else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    cupy_cache = Path(tempfile.mkdtemp(prefix="calab-cupy-cache-", dir=workdir))
    oracle_cache: dict[tuple[int, str], Any] = {}
    reference_cache: dict[int, dict[str, Any]] = {}
    try:
        for frames in frames_list:
            for cells in cells_list:
                path = workdir / f"traces_{cells}x{frames}.npy"
                seconds = generate(path, cells, frames, args.seed, args.workers)
                print(f"generated {cells} x {frames} in {seconds:.1f} s", file=sys.stderr, flush=True)
                traces = np.load(path, mmap_mode="r")
                parity = min(args.parity_cells, cells)
                for mode in modes:  # NumPy-backend oracle on the first cells (same data at every size)
                    key = (frames, mode)
                    if key not in oracle_cache or np.shape(oracle_cache[key].activity)[0] < parity:
                        oracle_cache[key] = calab.run_deconvolution_full(
                            np.asarray(traces[:parity], dtype=np.float64), FS, TAU_RISE, TAU_DECAY, LAMBDA,
                            max_iters=args.max_iters, conv_mode=mode, backend="numpy",
                        )  # fmt: skip
                if reference_python is not None and frames not in reference_cache:
                    count = min(args.reference_cells, cells)
                    print(f"timing reference 0.3.0 on {count} x {frames} ...", file=sys.stderr, flush=True)
                    try:
                        report = time_reference(reference_python, np.asarray(traces[:count], dtype=np.float64), modes, args.reference_repeats, args.max_iters)
                        reference_cache[frames] = {"cells": count, "results": report["results"]}
                    except RuntimeError as exc:
                        print(f"NOTE: reference run failed: {exc}")
                        reference_python = None
                for backend in backends:
                    settings = chunk_settings if backend == "cupy" else ["auto"]
                    for chunks in settings:
                        samples = workdir / f"samples_{backend}_{chunks}_{cells}x{frames}"
                        samples.mkdir(exist_ok=True)
                        env = {"CUPY_CACHE_DIR": str(cupy_cache / f"{chunks}_{cells}_{frames}"), "CALAB_CUDA_AR2_CHUNKS": chunks}
                        label = backend if len(settings) == 1 else f"{backend}[chunks={chunks}]"
                        print(f"timing {label} on {cells} x {frames} ...", file=sys.stderr, flush=True)
                        report = run_worker(backend, path, samples, args, env)
                        if "skipped" in report:
                            print(f"{label} {cells} x {frames}: SKIPPED ({report['skipped']})")
                            continue
                        for mode, entry in report["modes"].items():
                            times = entry["times_s"] or [entry["first_s"]]
                            row = dict(backend=label, cells=cells, frames=frames, mode=mode, device=report["device"],
                                       compile_s=report.get("compile_s"), upload_s=report.get("upload_s"),
                                       first_s=entry["first_s"], times_s=entry["times_s"], **summarise(times),
                                       host_s=entry.get("host_s"), peak_bytes=entry.get("peak_bytes"),
                                       mean_iterations=entry["mean_iterations"], converged_fraction=entry["converged_fraction"])  # fmt: skip
                            row["warmup_s"] = max(0.0, row["first_s"] - row["median_s"])
                            row["throughput"] = cells * frames / row["median_s"]
                            sample = np.load(entry["sample_path"])[:parity]
                            sample_iterations = np.load(entry["sample_path"].replace(".npy", "_iterations.npy"))[:parity]
                            oracle = oracle_cache[(frames, mode)]
                            row["parity"] = compare(sample, sample_iterations, np.asarray(oracle.activity)[:parity], np.atleast_1d(oracle.iterations)[:parity])
                            ref = reference_cache.get(frames)
                            if ref is not None and mode in ref["results"]:
                                times_ref = ref["results"][mode]["times_s"] or [ref["results"][mode]["first_s"]]
                                factor = cells / ref["cells"]
                                row["reference_s"] = statistics.median(times_ref) * factor
                                row["reference_factor"] = factor
                                row["reference_cells"] = ref["cells"]
                                row["speedup"] = row["reference_s"] / row["median_s"]
                                agree = min(parity, ref["cells"])
                                ref_activity = np.asarray(ref["results"][mode]["activity"])[:agree]
                                peak = np.maximum(np.abs(ref_activity).max(axis=1), 1e-6)
                                row["vs_reference_max_rel_diff"] = float((np.abs(sample[:agree] - ref_activity).max(axis=1) / peak).max())
                            rows.append(row)
                            print(json.dumps({k: v for k, v in row.items() if k != "device"}, default=str), flush=True)
                path.unlink(missing_ok=True)
    finally:
        if workdir_context is not None:
            workdir_context.cleanup()

    print()
    print_table(rows)
    print("\ncompile: NVRTC build of calab's CUDA kernels (fresh cache); first: first call; warm-up: first - median;")
    print("best/median: steady state, traces already on the GPU; host: NumPy float64 in -> NumPy float64 out;")
    print("peak: largest CuPy pool bytes in use (JAX: device peak_bytes_in_use); vs numpy: worst max|Δact|/peak / largest")
    print("iteration difference on the first cells; vs ref: the same against calab==0.3.0's activity;")
    print("ref s: calab==0.3.0 on this machine's CPU, (xk) = extrapolated")
    print("linearly from the cells it was timed on; speed-up = ref s / median s.")
    if rows:
        print()
        for line in done_when(rows):
            print("done-when:", line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(
            environment=dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count(),
                             backends={n: i._asdict() for n, i in calab.available_backends(with_reasons=True).items()}),
            config=vars(args) | {"json": str(args.json), "workdir": str(args.workdir)},
            reference=dict(python=str(reference_python) if reference_python else None,
                           cells={f: r["cells"] for f, r in reference_cache.items()}),
            results=rows,
        )  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
