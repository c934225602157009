#!/usr/bin/env python
"""The parts of the prepared GPU run (``bench/gpu_session.sh``), one process per part.

Each part prints one line per measured row **as soon as it is measured** (and appends the
row as JSON to ``--rows``), checks its own time budget before every step, and skips the
steps that no longer fit, so a part stopped at its limit still leaves every row it
finished.  Nothing is estimated or filled in: a value that was not measured is absent.

Parts::

    python bench/gpu_proof.py env                       # machine, driver, library versions
    python bench/gpu_proof.py deconv  --backend cupy    # run_deconvolution_full, fft + banded
    python bench/gpu_proof.py deconv  --backend jax
    python bench/gpu_proof.py oom                       # the same under a CuPy pool limit
    python bench/gpu_proof.py cadecon --backend cupy    # run_cadecon, phases, taus
    python bench/gpu_proof.py cadecon-cpu               # NumPy taus on the subset (host CPU)
    python bench/gpu_proof.py indeca  --backend cupy    # solve_traces at u = 10
    python bench/gpu_proof.py dataset                   # deconvolve_dataset, Zarr > pool limit
    python bench/gpu_proof.py tests-row --step NAME --exit RC --log FILE
    python bench/gpu_proof.py summary                   # every row against its target

Sizes: ``--size full`` (default; the figures the targets are about: 10,000 x 27,000
deconvolution, 1000 x 27,000 CaDecon and InDeCa) or ``--size dry`` (small, for a rehearsal
on a CPU).  ``--standin`` (or ``CALAB_GPU_STANDIN=1``) runs the NumPy backend wherever CuPy
is asked for and lets JAX run on the CPU, so that every part can be rehearsed on a machine
without a GPU; its rows say so and the summary judges no target on them.

Data (all deterministic, cached in ``--workdir`` so that later parts reuse it):

* deconvolution: ``bench/_data.make_traces`` (gcamp6f-like raw fluorescence, tau 0.1/0.6 s,
  30 Hz, lambda 0.5), generated in blocks of 1000 cells by parallel processes;
* CaDecon: ``calab.simulate(calab.presets.gcamp6f(...), seed 42)``, the kernel known;
* InDeCa: ``make_traces`` at the CaDecon app's settings (u = 10, band-pass, noise-constrained
  thresholds, 500 FISTA iterations, tol 1e-4).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
for _path in (str(REPO_ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _data import FS, LAMBDA, TAU_DECAY, TAU_RISE, make_traces  # noqa: E402
from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)

#: Problem sizes per ``--size``: (cells, frames) unless said otherwise.
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(
        deconv=(10_000, 27_000), parity_cells=32, repeats=2, oom_cells=10_000,
        cadecon=(1000, 27_000), cadecon_subset=200, indeca=(1000, 27_000),
        dataset=(20_000, 9000), dataset_limit=512 << 20, dataset_sample=64,
    ),
    "dry": dict(
        deconv=(64, 1500), parity_cells=8, repeats=2, oom_cells=64,
        cadecon=(64, 2400), cadecon_subset=32, indeca=(16, 1500),
        dataset=(600, 1500), dataset_limit=None, dataset_sample=16,
    ),
}  # fmt: skip

#: Targets after warm-up, as the summary judges them (CuPy seconds; JAX as a multiple of CuPy).
DECONV_TARGET_S = {"fft": 4.0, "banded": 2.0}
CADECON_TARGET_S = 30.0
JAX_RATIO_TARGET = 2.0
TAU_TARGET_REL = 0.02

#: The CaDecon app's InDeCa settings (as bench_indeca.py): u = 10, band-pass, noise floor.
INDECA_SETTINGS = dict(upsample_factor=10, max_iters=500, tol=1e-4, hp_enabled=True, lp_enabled=True,
                       noise_constrained=True)
CADECON_SEED = 42
BLOCK = 1000
#: Data-writing processes start fresh: a forked child would inherit a CUDA context or JAX's threads.
_SPAWN = multiprocessing.get_context("spawn")


# ============================================================================ plumbing
class Budget:
    """Seconds left for this part; a step starts only if its estimate fits."""

    def __init__(self, seconds: float | None, margin: float = 3.0) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds
        self.margin = margin

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.perf_counter() - self.start) - self.margin

    def allows(self, estimate: float) -> bool:
        return self.left() > estimate * 1.15


class Rows:
    """Print each row as one line when it is measured and append it to a JSON-lines file."""

    def __init__(self, path: Path | None, context: dict[str, Any]) -> None:
        self.path = path
        self.context = context

    def emit(self, part: str, **row: Any) -> dict[str, Any]:
        row = {"part": part, **self.context, **row, "utc": time.strftime("%H:%M:%S", time.gmtime())}
        shown = "  ".join(f"{k}={_short(v)}" for k, v in row.items() if k not in ("utc",) and v is not None)
        print(f"ROW {shown}", flush=True)
        if self.path is not None:
            line = json.dumps(row, default=_jsonable) + "\n"
            with open(self.path, "a", encoding="utf-8") as handle:  # one write per row: whole lines
                handle.write(line)
        return row

    def note(self, part: str, text: str) -> None:
        self.emit(part, note=text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _short(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and len(value) <= 8:
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def gib(value: int | None) -> float | None:
    return None if value is None else value / 2**30


class Target:
    """Which backend really runs for a requested one (NumPy stands in for CuPy in rehearsals)."""

    def __init__(self, requested: str, standin: bool) -> None:
        from calab.backends import backend_info

        self.requested = requested
        self.standin = standin and requested == "cupy"
        self.name = "numpy" if self.standin else requested
        self.info = backend_info(self.name)
        self.label = f"{requested} (numpy standing in)" if self.standin else requested
        if requested == "jax" and standin and self.info.usable and not self.info.has_gpu:
            self.label = "jax (on the CPU)"

    def unusable_reason(self, allow_cpu: bool) -> str | None:
        if not self.info.usable:
            return self.info.reason
        if self.name in ("cupy", "jax") and not self.info.has_gpu and not allow_cpu:
            return f"{self.name} sees no GPU ({self.info.reason})"
        return None


class DeviceMemory:
    """Peak device memory of this process for one backend.

    CuPy: a tracking allocator around the default pool records the largest number of bytes
    in use (and held by the pool) at any allocation, cuFFT work areas included.  JAX: the
    device's ``peak_bytes_in_use`` (a process-wide peak; it cannot be reset).  NumPy: none.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.peak_used = 0
        self.peak_held = 0
        if backend == "cupy":
            import cupy

            self.cupy = cupy
            self.pool = cupy.get_default_memory_pool()

            def tracking_malloc(size: int):
                memory = self.pool.malloc(size)
                self.peak_used = max(self.peak_used, self.pool.used_bytes())
                self.peak_held = max(self.peak_held, self.pool.total_bytes())
                return memory

            cupy.cuda.set_allocator(tracking_malloc)
        elif backend == "jax":
            import jax

            self.jax = jax

    def reset(self, release: bool = False) -> None:
        """Start a new peak from what is in use now; ``release`` also empties the pool's cache
        (a warm run keeps it, as a user's second call would)."""
        if self.backend == "cupy":
            if release:
                self.pool.free_all_blocks()
            self.peak_used = self.pool.used_bytes()
            self.peak_held = self.pool.total_bytes()

    def peak(self) -> int | None:
        if self.backend == "cupy":
            return int(self.peak_used)
        if self.backend == "jax":
            try:
                return int((self.jax.devices()[0].memory_stats() or {})["peak_bytes_in_use"])
            except Exception:  # noqa: BLE001 - CPU devices keep no statistics
                return None
        return None

    def upload(self, host: np.ndarray) -> Any:
        if self.backend == "cupy":
            return self.cupy.asarray(host)
        if self.backend == "jax":
            return self.jax.device_put(self.jax.numpy.asarray(host))
        return host

    def sync(self, value: Any = None) -> None:
        if self.backend == "cupy":
            self.cupy.cuda.Device().synchronize()
        elif self.backend == "jax" and value is not None:
            self.jax.block_until_ready(value)

    def host(self, value: Any) -> np.ndarray:
        if self.backend == "cupy":
            return self.cupy.asnumpy(value)
        return np.asarray(value)

    def rows(self, value: Any, indices: np.ndarray) -> np.ndarray:
        """``value[indices]`` on the host, gathered on the device first."""
        if self.backend == "cupy":
            return self.cupy.asnumpy(value[self.cupy.asarray(indices)])
        if self.backend == "jax":
            return np.asarray(value[self.jax.numpy.asarray(indices)])
        return np.asarray(value)[indices]


def sample_indices(cells: int, count: int) -> np.ndarray:
    """``count`` cells spread evenly over the whole batch (first and last included)."""
    return np.unique(np.linspace(0, cells - 1, min(count, cells)).round().astype(np.int64))


# ============================================================================ data
def _write_block(job: tuple[str, int, int, int, int]) -> None:
    path, start, stop, frames, seed = job
    traces = np.load(path, mmap_mode="r+")
    traces[start:stop] = make_traces(BLOCK, frames, seed=seed * 1_000_003 + start // BLOCK)[: stop - start]
    traces.flush()


def ensure_traces(workdir: Path, cells: int, frames: int, seed: int = 0) -> tuple[Path, float]:
    """float32 ``make_traces`` data as ``.npy`` in ``workdir`` (made once; blocks in parallel)."""
    path = workdir / f"traces_{cells}x{frames}_s{seed}.npy"
    if path.exists():
        return path, 0.0
    began = time.perf_counter()
    partial = path.with_suffix(".partial.npy")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(cells, frames))
    del array
    jobs = [(str(partial), s, min(s + BLOCK, cells), frames, seed) for s in range(0, cells, BLOCK)]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
            list(pool.map(_write_block, jobs))
    else:
        for job in jobs:
            _write_block(job)
    os.replace(partial, path)
    return path, time.perf_counter() - began


def ensure_simulation(workdir: Path, cells: int, frames: int) -> tuple[np.ndarray, dict[str, float], float]:
    """The CaDecon population (gcamp6f, seed 42) and its true taus, cached in ``workdir``."""
    import calab

    path = workdir / f"cadecon_{cells}x{frames}_s{CADECON_SEED}.npy"
    config = calab.presets.gcamp6f(num_cells=cells, num_timepoints=frames, fs_hz=FS, seed=CADECON_SEED)
    truth = {"tau_rise": float(config.kernel.tau_rise_s), "tau_decay": float(config.kernel.tau_decay_s)}
    began = time.perf_counter()
    if path.exists():
        with contextlib.suppress(ValueError, OSError):  # another process may be writing it
            return np.load(path), truth, 0.0
    traces = np.ascontiguousarray(calab.simulate(config).traces, dtype=np.float32)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    np.save(partial, traces)
    os.replace(partial, path)
    return traces, truth, time.perf_counter() - began


# ============================================================================ parity
def parity(ours: np.ndarray, ours_iterations: np.ndarray, oracle: np.ndarray, oracle_iterations: np.ndarray,
           chaotic: np.ndarray | None = None) -> dict[str, Any]:
    """Per-cell agreement with the NumPy backend under the golden tests' two criteria.

    * GPU golden criterion (``tests/test_cuda_gpu.py``): iterations within one, activity
      within 1e-3 of the cell's peak when the counts are equal, else within 5e-3;
    * reference criterion (``tests/conftest.assert_activity_matches``): within 1e-3 of the
      peak, or a Pearson correlation of at least 0.999.

    ``chaotic`` marks cells whose NumPy FFT and banded solves already differ by more than
    one iteration (the golden README's chaotic cells): reported, not excused.
    """
    ours = np.atleast_2d(np.asarray(ours, np.float64))
    oracle = np.atleast_2d(np.asarray(oracle, np.float64))
    peak = np.maximum(np.abs(oracle).max(axis=1), 1e-6)
    error = np.abs(ours - oracle).max(axis=1) / peak
    delta = np.abs(np.asarray(ours_iterations, np.int64) - np.asarray(oracle_iterations, np.int64))
    golden = (delta <= 1) & (error <= np.where(delta == 0, 1e-3, 5e-3))
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant row has no correlation (NaN: not met)
        pearson = np.array([1.0 if e <= 1e-3 else float(np.corrcoef(a, b)[0, 1])
                            for a, b, e in zip(ours, oracle, error, strict=True)])
    reference = (error <= 1e-3) | (pearson >= 0.999)
    failing = np.flatnonzero(~(golden | reference))
    worst = int(np.argmax(error))
    out = {
        "cells": int(len(error)),
        "meet_gpu_golden_criterion": int(golden.sum()),
        "meet_reference_criterion": int(reference.sum()),
        "meet_either": int((golden | reference).sum()),
        "worst_rel_error": float(error[worst]),
        "worst_cell_iterations": [int(np.asarray(ours_iterations)[worst]), int(np.asarray(oracle_iterations)[worst])],
        "max_iteration_diff": int(delta.max()),
        "cells_other_iterations": int(np.count_nonzero(delta)),
        "bit_identical_cells": int(np.sum(np.all(ours == oracle, axis=1))),
    }
    if chaotic is not None and len(failing):
        out["failing_cells_chaotic_on_cpu"] = f"{int(np.sum(chaotic[failing]))}/{len(failing)}"
    return out


def ensure_oracle(workdir: Path, traces_path: Path, indices: np.ndarray, mode: str, max_iters: int) -> dict[str, np.ndarray]:
    """The NumPy backend's solution of the sample cells (cached in ``workdir``)."""
    import calab

    path = workdir / f"oracle_{traces_path.stem}_{mode}_{len(indices)}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    traces = np.load(traces_path, mmap_mode="r")
    block = np.asarray(traces[indices], dtype=np.float64)
    result = calab.run_deconvolution_full(block, FS, TAU_RISE, TAU_DECAY, LAMBDA, max_iters=max_iters,
                                          conv_mode=mode, backend="numpy")
    out = {"activity": np.asarray(result.activity, np.float32), "iterations": np.atleast_1d(result.iterations)}
    np.savez(path, **out)
    return out


# ============================================================================ parts
def part_env(args: argparse.Namespace, rows: Rows) -> None:
    """Machine, driver and library versions (one row)."""
    import calab

    row: dict[str, Any] = dict(python=platform.python_version(), numpy=np.__version__, cpu_cores=os.cpu_count(),
                               calab=getattr(calab, "__version__", "?"))
    for module in ("scipy", "numba", "cupy", "jax", "zarr", "numcodecs", "pydantic", "hypothesis", "pytest"):
        try:
            row[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - report what is missing
            row[module] = f"missing ({type(exc).__name__})"
    try:
        import cupy

        row["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        row["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        row["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        row["gpu_memory_gib"] = props["totalGlobalMem"] / 2**30
    except Exception as exc:  # noqa: BLE001
        row["cuda"] = f"unavailable ({type(exc).__name__})"
    with contextlib.suppress(Exception):
        query = "name,memory.total,driver_version,clocks.max.sm"
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], check=False, capture_output=True,
                              text=True, timeout=20).stdout.strip()
        if line:
            row["nvidia_smi"] = line
    for name, info in calab.available_backends(with_reasons=True).items():
        row[f"backend_{name}"] = f"{'usable' if info.usable else 'UNUSABLE'}: {info.reason}"
    with contextlib.suppress(Exception):
        row["commit"] = subprocess.run(["git", "log", "-1", "--format=%h %cI"], check=False, capture_output=True, text=True,
                                       cwd=REPO_ROOT, timeout=10).stdout.strip() or None
    rows.emit("env", **row)


def part_deconv(args: argparse.Namespace, rows: Rows) -> None:
    """``run_deconvolution_full`` on the whole batch, FFT then banded: cold, warm, peak, parity."""
    import calab

    size = SIZES[args.size]
    cells, frames = size["deconv"]
    target = Target(args.backend, args.standin)
    reason = target.unusable_reason(allow_cpu=args.standin)
    if reason:
        rows.emit("deconv", backend=target.label, skipped=reason)
        return
    budget = Budget(args.budget)
    path, generated = ensure_traces(args.workdir, cells, frames)
    if generated:
        rows.emit("deconv", backend=target.label, step="data", cells=cells, frames=frames, generate_s=generated)
    traces = np.load(path)
    memory = DeviceMemory(target.name)
    began = time.perf_counter()
    on_device = memory.upload(traces)
    memory.sync(on_device)
    upload_s = time.perf_counter() - began
    indices = sample_indices(cells, size["parity_cells"])
    modes = [m for m in args.modes.split(",") if m]
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    warm_estimates: dict[str, float] = {}
    last = None

    def call(data: Any, mode: str) -> tuple[float, Any]:
        start = time.perf_counter()
        result = calab.run_deconvolution_full(data, FS, TAU_RISE, TAU_DECAY, LAMBDA, max_iters=args.max_iters,
                                              conv_mode=mode, backend=target.name)
        memory.sync(result.activity)
        return time.perf_counter() - start, result

    for mode in modes:
        if last is not None and not budget.allows(last):
            rows.emit("deconv", backend=target.label, mode=mode, skipped=f"time budget ({budget.left():.0f} s left)")
            continue
        memory.reset()
        cold, result = call(on_device, mode)
        warm = []
        while len(warm) < size["repeats"] and budget.allows(cold if not warm else max(warm)):
            seconds, result = call(on_device, mode)
            warm.append(seconds)
        iterations = memory.host(result.iterations)
        median = statistics.median(warm) if warm else None
        rows.emit(
            "deconv", backend=target.label, mode=mode, cells=cells, frames=frames, cold_s=cold, warm_s=median,
            warm_runs=warm, upload_s=upload_s, peak_device_gib=gib(memory.peak()),
            mean_iterations=float(np.mean(iterations)), max_iterations=int(np.max(iterations)),
            converged=float(np.mean(memory.host(result.converged))),
            ms_per_iteration=None if median is None else 1e3 * median / max(int(np.max(iterations)), 1),
            us_per_cell_iteration=None if median is None else 1e6 * median / max(int(np.sum(iterations)), 1),
            cell_frames_per_s=None if median is None else cells * frames / median,
            device=target.info.reason,
        )  # fmt: skip
        samples[mode] = (memory.rows(result.activity, indices).astype(np.float32), iterations[indices])
        warm_estimates[mode] = median if median is not None else cold
        last = cold  # the next mode's first call is the next step
        del result
    # Parity against the NumPy backend on the sample (computed on the host CPU, cached).
    oracles: dict[str, dict[str, np.ndarray]] = {}
    for mode in samples:
        if not budget.allows(5.0):
            rows.emit("deconv-parity", backend=target.label, mode=mode, skipped=f"time budget ({budget.left():.0f} s left)")
            continue
        oracles[mode] = ensure_oracle(args.workdir, path, indices, mode, args.max_iters)
    chaotic = None
    if len(oracles) == 2 and set(oracles) == {"fft", "banded"}:
        chaotic = np.abs(oracles["fft"]["iterations"] - oracles["banded"]["iterations"]) > 1
    for mode, (activity, iterations) in samples.items():
        if mode in oracles:
            rows.emit("deconv-parity", backend=target.label, mode=mode, sample=f"{len(indices)} cells spread over {cells}",
                      **parity(activity, iterations, oracles[mode]["activity"], oracles[mode]["iterations"], chaotic))
    # What one iteration's memory traffic costs on this card, to read the solve times against.
    if target.name == "cupy" and budget.allows(10.0):
        rows.emit("deconv-roofline", backend=target.label, **_roofline(memory, cells, frames))
    # End to end from float64 NumPy to float64 NumPy (validation, conversion, transfers).
    if target.name != "numpy":
        host64 = None
        for mode in modes:
            if mode not in samples or not budget.allows(upload_s * 4 + warm_estimates[mode]):
                continue
            if host64 is None:
                host64 = traces.astype(np.float64)
            seconds, _ = call(host64, mode)
            rows.emit("deconv-host", backend=target.label, mode=mode, numpy_in_out_s=seconds)


def _roofline(memory: DeviceMemory, cells: int, frames: int) -> dict[str, Any]:
    """Two ceilings of the card for a batch of this shape, timed with CUDA events.

    * a device-to-device copy of the float32 batch (bytes read + written per second);
    * one batched real FFT and its inverse at the padded length calab's FFT mode uses, per cell
      (each FFT-mode iteration does at least one such pair per active cell).

    ``us_per_cell_iteration`` of the deconvolution rows over ``fft_pair_us_per_cell`` says how many
    FFT pairs' worth of time one cell-iteration costs.
    """
    from calab.backends import get_backend

    cupy = memory.cupy
    size = get_backend("cupy").fft_length(frames + max(256, frames // 8))
    x = cupy.random.standard_normal((cells, size), dtype=cupy.float32)

    def timed(function: Any, repeats: int = 5) -> float:
        function()  # plans, first-touch
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(repeats):
            function()
        stop.record()
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) / repeats  # ms

    def fft_pair() -> Any:
        return cupy.fft.irfft(cupy.fft.rfft(x, axis=1), n=size, axis=1)

    copy_ms = timed(x.copy)
    fft_ms = timed(fft_pair)
    return dict(cells=cells, fft_length=size, copy_gb_per_s=2 * cells * size * 4 / copy_ms / 1e6, fft_pair_ms=fft_ms,
                fft_pair_us_per_cell=1e3 * fft_ms / cells)


def part_oom(args: argparse.Namespace, rows: Rows) -> None:
    """The FFT solve unrestricted, then under CuPy pool limits below its own peak.

    The limit leaves the caller's traces plus a fraction (1/2, then 3/4 if that fails) of
    what the unrestricted call allocated at its peak, so the solve must plan smaller blocks or
    recover from an out-of-memory error.  Both results are compared bit for bit.
    """
    import calab
    from calab.backends import get_backend

    size = SIZES[args.size]
    cells, frames = size["oom_cells"], size["deconv"][1]
    target = Target("cupy", args.standin)
    reason = target.unusable_reason(allow_cpu=args.standin)
    if reason:
        rows.emit("oom", backend=target.label, skipped=reason)
        return
    budget = Budget(args.budget)
    path, _ = ensure_traces(args.workdir, size["deconv"][0], frames)
    traces = np.ascontiguousarray(np.load(path, mmap_mode="r")[:cells])
    memory = DeviceMemory(target.name)
    on_device = memory.upload(traces)
    backend = get_backend(target.name)

    def call() -> tuple[float, np.ndarray, np.ndarray]:
        start = time.perf_counter()
        result = calab.run_deconvolution_full(on_device, FS, TAU_RISE, TAU_DECAY, LAMBDA, max_iters=args.max_iters,
                                              conv_mode="fft", backend=target.name)
        memory.sync(result.activity)
        seconds = time.perf_counter() - start
        return seconds, memory.host(result.activity), memory.host(result.iterations)  # device copies freed here

    memory.reset(release=True)
    base = memory.pool.used_bytes() if target.name == "cupy" else 0
    free_seconds, free_activity, free_iterations = call()
    need = (memory.peak() or 0) - base
    for fraction in (0.5, 0.75):
        if not budget.allows(free_seconds * 2.5):
            rows.emit("oom", backend=target.label, fraction=fraction, unrestricted_s=free_seconds,
                      skipped=f"time budget ({budget.left():.0f} s left)")
            return
        limit = None
        recoveries = getattr(backend, "oom_recoveries", None)
        if target.name == "cupy":
            memory.reset(release=True)
            limit = memory.pool.used_bytes() + int(need * fraction)
            memory.pool.set_limit(size=limit)
            memory.peak_used = memory.peak_held = 0
        error = None
        try:
            limited_seconds, activity, iterations = call()
        except Exception as exc:  # noqa: BLE001 - an out-of-memory failure is the finding
            error, limited_seconds = f"{type(exc).__name__}: {exc}"[:300], None
        finally:
            if target.name == "cupy":
                memory.pool.set_limit(size=0)
        held = memory.peak_held if target.name == "cupy" else None
        rows.emit(
            "oom", backend=target.label, cells=cells, frames=frames, mode="fft", unrestricted_s=free_seconds,
            unrestricted_need_gib=gib(need) if target.name == "cupy" else None, pool_limit_gib=gib(limit),
            limit_fraction_of_need=fraction if limit is not None else None, limited_s=limited_seconds,
            limited_peak_held_gib=gib(held), stayed_under_limit=None if limit is None else held <= limit,
            oom_recoveries=None if recoveries is None else backend.oom_recoveries - recoveries, error=error,
            identical_activity=None if error else bool(np.array_equal(activity, free_activity)),
            identical_iterations=None if error else bool(np.array_equal(iterations, free_iterations)),
            note=None if limit is not None else "the NumPy stand-in has no memory pool: both calls unrestricted",
        )  # fmt: skip
        if error is None:
            return


def _cadecon_call(traces: np.ndarray, target: Target, memory: DeviceMemory, stop_at_finalization: bool,
                  on_kernel: Any = None) -> dict[str, Any]:
    """One ``run_cadecon``; the time of each phase from its progress events.

    ``on_kernel(seconds, tau_rise, tau_decay)`` is called when finalisation begins (the
    kernel is final then), so a call stopped at a time limit still reports its kernel phase.
    """
    import calab

    control = calab.CaDeconControl()
    events: list[tuple[float, str]] = []

    def progress(event: Any) -> None:
        events.append((time.perf_counter(), event.phase))
        if event.phase == "finalization" and sum(phase == "finalization" for _, phase in events) == 1:
            if on_kernel is not None:
                on_kernel(events[-1][0] - start, event.tau_rise, event.tau_decay)
            if stop_at_finalization:
                control.stop(finalize=False)  # the taus are final once finalisation begins

    memory.reset()
    start = time.perf_counter()
    result = calab.run_cadecon(traces, FS, backend=target.name, progress=progress, control=control)
    wall = time.perf_counter() - start
    firsts: dict[str, float] = {}
    for stamp, phase in events:
        firsts.setdefault(phase, stamp - start)
    order = sorted(firsts.items(), key=lambda item: item[1])
    phases = {name: (order[i + 1][1] if i + 1 < len(order) else wall) - at for i, (name, at) in enumerate(order)}
    finalization_at = firsts.get("finalization")
    meta = result.metadata
    return dict(
        wall_s=wall,
        kernel_estimate_s=finalization_at,  # from the call to the first finalisation event
        finalization_s=None if finalization_at is None or stop_at_finalization else wall - finalization_at,
        phases_s=phases, tau_rise=float(meta["tau_rise"]), tau_decay=float(meta["tau_decay"]),
        kernel_method=(meta.get("initialization") or {}).get("method") if isinstance(meta.get("initialization"), dict) else None,
        iterations=meta.get("num_iterations"), peak_device_gib=gib(memory.peak()),
    )


def part_cadecon(args: argparse.Namespace, rows: Rows) -> None:
    """``run_cadecon`` on the whole population: cold, the subset's taus, then warm."""
    size = SIZES[args.size]
    cells, frames = size["cadecon"]
    subset = size["cadecon_subset"]
    target = Target(args.backend, args.standin)
    reason = target.unusable_reason(allow_cpu=args.standin)
    if reason:
        rows.emit("cadecon", backend=target.label, skipped=reason)
        return
    budget = Budget(args.budget)
    traces, truth, simulated = ensure_simulation(args.workdir, cells, frames)
    host = np.asarray(traces, dtype=np.float64)
    memory = DeviceMemory(target.name)
    base = dict(backend=target.label, cells=cells, frames=frames, true_tau_rise=truth["tau_rise"],
                true_tau_decay=truth["tau_decay"])
    if simulated:
        rows.emit("cadecon", backend=target.label, step="data", simulate_s=simulated)

    def kernel_row(call: str):
        def report(seconds: float, tau_rise: float, tau_decay: float) -> None:
            rows.emit("cadecon-kernel", call=call, **base, kernel_estimate_s=seconds, tau_rise=tau_rise, tau_decay=tau_decay)

        return report

    cold = _cadecon_call(host, target, memory, stop_at_finalization=False, on_kernel=kernel_row("cold"))
    rows.emit("cadecon", call="cold", **base, **cold)
    # The taus on the subset the NumPy backend also runs (on the host CPU, in the background).
    if budget.allows(0.5 * (cold["kernel_estimate_s"] or cold["wall_s"])):
        mine = _cadecon_call(np.ascontiguousarray(host[:subset]), target, memory, stop_at_finalization=True)
        reference_path = args.workdir / f"cadecon_cpu_{cells}x{frames}_{subset}.json"
        while not reference_path.exists() and budget.left() > 0:
            time.sleep(0.5)
        row: dict[str, Any] = dict(backend=target.label, subset=f"first {subset} of {cells} cells", frames=frames,
                                   tau_rise=mine["tau_rise"], tau_decay=mine["tau_decay"],
                                   kernel_estimate_s=mine["kernel_estimate_s"])
        if reference_path.exists():
            reference = json.loads(reference_path.read_text())
            row.update(numpy_tau_rise=reference["tau_rise"], numpy_tau_decay=reference["tau_decay"],
                       tau_rise_rel_vs_numpy=abs(mine["tau_rise"] - reference["tau_rise"]) / reference["tau_rise"],
                       tau_decay_rel_vs_numpy=abs(mine["tau_decay"] - reference["tau_decay"]) / reference["tau_decay"],
                       whole_population_tau_rise_rel_vs_numpy=abs(cold["tau_rise"] - reference["tau_rise"]) / reference["tau_rise"],
                       whole_population_tau_decay_rel_vs_numpy=abs(cold["tau_decay"] - reference["tau_decay"]) / reference["tau_decay"])
        else:
            row["numpy"] = "the NumPy subset run had not finished"
        rows.emit("cadecon-taus", **row)
    else:
        rows.emit("cadecon-taus", backend=target.label, skipped=f"time budget ({budget.left():.0f} s left)")
    if budget.allows(cold["wall_s"]):
        warm = _cadecon_call(host, target, memory, stop_at_finalization=False, on_kernel=kernel_row("warm"))
        rows.emit("cadecon", call="warm", **base, **warm)
    else:
        rows.emit("cadecon", backend=target.label, call="warm", skipped=f"time budget ({budget.left():.0f} s left)")


def part_cadecon_cpu(args: argparse.Namespace, rows: Rows) -> None:
    """NumPy ``run_cadecon`` on the subset, on the host CPU, up to the final taus."""
    size = SIZES[args.size]
    cells, frames = size["cadecon"]
    subset = size["cadecon_subset"]
    traces, truth, _ = ensure_simulation(args.workdir, cells, frames)
    target = Target("numpy", False)
    result = _cadecon_call(np.ascontiguousarray(traces[:subset], dtype=np.float64), target, DeviceMemory("numpy"),
                           stop_at_finalization=True)
    path = args.workdir / f"cadecon_cpu_{cells}x{frames}_{subset}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(result, default=_jsonable))
    os.replace(partial, path)
    rows.emit("cadecon-cpu", backend="numpy (host CPU)", subset=f"first {subset} of {cells} cells", frames=frames,
              threads=os.environ.get("NUMBA_NUM_THREADS"), kernel_estimate_s=result["kernel_estimate_s"],
              tau_rise=result["tau_rise"], tau_decay=result["tau_decay"], **{f"true_{k}": v for k, v in truth.items()})


def part_indeca(args: argparse.Namespace, rows: Rows) -> None:
    """``solve_traces`` at u = 10 (the CaDecon app's settings): wall time and peak device memory."""
    import calab

    cells, frames = SIZES[args.size]["indeca"]
    target = Target(args.backend, args.standin)
    reason = target.unusable_reason(allow_cpu=args.standin)
    if reason:
        rows.emit("indeca", backend=target.label, skipped=reason)
        return
    budget = Budget(args.budget)
    path, _ = ensure_traces(args.workdir, cells, frames, seed=1)
    traces = np.load(path).astype(np.float64)
    memory = DeviceMemory(target.name)
    calls = ["cold", "warm"]
    last = None
    for call in calls:
        if last is not None and not budget.allows(last):
            rows.emit("indeca", backend=target.label, call=call, skipped=f"time budget ({budget.left():.0f} s left)")
            break
        memory.reset()
        start = time.perf_counter()
        result = calab.solve_traces(traces, TAU_RISE, TAU_DECAY, FS, **INDECA_SETTINGS, backend=target.name)
        last = time.perf_counter() - start
        rows.emit("indeca", backend=target.label, call=call, cells=cells, frames=frames, upsample=10, wall_s=last,
                  peak_device_gib=gib(memory.peak()), mean_iterations=float(np.mean(result.iterations)),
                  converged=float(np.mean(result.converged)), total_counts=float(np.sum(result.s_counts)))


def _write_zarr_block(job: tuple[str, int, int, int]) -> None:
    import zarr

    path, start, stop, frames = job
    array = zarr.open_array(path, mode="r+")
    array[start:stop] = make_traces(BLOCK, frames, seed=7_000_003 + start // BLOCK)[: stop - start].astype(np.float32)


def part_dataset(args: argparse.Namespace, rows: Rows) -> None:
    """``deconvolve_dataset`` from a Zarr input bigger than a CuPy pool limit."""
    import calab

    try:
        import zarr
    except ImportError as exc:
        rows.emit("dataset", skipped=f"zarr is not importable ({exc}); carry its wheels (bench/gpu_wheels.sh)")
        return
    size = SIZES[args.size]
    cells, frames = size["dataset"]
    target = Target("cupy", args.standin)
    reason = target.unusable_reason(allow_cpu=args.standin)
    if reason:
        rows.emit("dataset", backend=target.label, skipped=reason)
        return
    source = args.workdir / f"dataset_{cells}x{frames}.zarr"
    complete = source.with_name(source.name + ".complete")
    began = time.perf_counter()
    if not complete.exists():
        zarr.open_array(str(source), mode="w", shape=(cells, frames), chunks=(BLOCK, frames), dtype="f4")
        jobs = [(str(source), s, min(s + BLOCK, cells), frames) for s in range(0, cells, BLOCK)]
        with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1), mp_context=_SPAWN) as pool:
            list(pool.map(_write_zarr_block, jobs))
        complete.touch()
    written = time.perf_counter() - began
    input_bytes = cells * frames * 4
    memory = DeviceMemory(target.name)
    limit = size["dataset_limit"] if target.name == "cupy" else None
    budget_options: dict[str, Any] = {}
    if target.name == "cupy":
        memory.reset(release=True)
        memory.pool.set_limit(size=limit)
        memory.peak_used = memory.peak_held = 0
    else:  # the stand-in has no device: a small host budget still forces many chunks
        budget_options["memory_budget"] = max(1, cells // 6) * frames * 88
    poll = _DevicePoller(target.name)
    output = args.workdir / f"dataset_{cells}x{frames}_out.zarr"
    try:
        with poll:
            run = calab.deconvolve_dataset(str(source), str(output), fs=FS, tau_r=TAU_RISE, tau_d=TAU_DECAY, lam=LAMBDA,
                                           max_iters=args.max_iters, backend=target.name, overwrite=True, progress=False,
                                           **budget_options)
    finally:
        if target.name == "cupy":
            memory.pool.set_limit(size=0)
    held = memory.peak_held if target.name == "cupy" else None
    rows.emit(
        "dataset", backend=target.label, cells=cells, frames=frames, input_gib=gib(input_bytes), write_input_s=written,
        pool_limit_gib=gib(limit), input_over_limit=None if limit is None else input_bytes / limit,
        wall_s=run.seconds, chunk_cells=run.chunk_cells, chunks=run.chunks_total,
        peak_pool_used_gib=gib(memory.peak_used if target.name == "cupy" else None), peak_pool_held_gib=gib(held),
        stayed_under_limit=None if limit is None else held <= limit,
        device_used_growth_gib=gib(poll.growth()),
    )  # fmt: skip
    # The streamed output against one in-memory call on a sample of its cells.
    indices = sample_indices(cells, size["dataset_sample"])
    block = np.asarray(zarr.open_array(str(source), mode="r").oindex[indices, :], dtype=np.float32)
    streamed = zarr.open_group(str(output), mode="r")
    streamed_activity = np.asarray(streamed["activity"].oindex[indices, :])
    streamed_iterations = np.asarray(streamed["iterations"].oindex[indices])
    in_memory = calab.run_deconvolution_full(memory.upload(block), FS, TAU_RISE, TAU_DECAY, LAMBDA,
                                             max_iters=args.max_iters, backend=target.name)
    activity = memory.host(in_memory.activity).astype(np.float32)
    iterations = memory.host(in_memory.iterations)
    rows.emit("dataset-equality", backend=target.label, sample=f"{len(indices)} cells spread over {cells}",
              identical=bool(np.array_equal(activity, streamed_activity) and np.array_equal(iterations, streamed_iterations)),
              **parity(streamed_activity, streamed_iterations, activity, iterations))


class _DevicePoller:
    """Largest device memory in use (``cudaMemGetInfo``) while the block runs, sampled every 20 ms."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.baseline = self.peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _used(self) -> int:
        import cupy

        free, total = cupy.cuda.runtime.memGetInfo()
        return int(total - free)

    def __enter__(self) -> _DevicePoller:
        if self.backend == "cupy":
            self.baseline = self.peak = self._used()

            def loop() -> None:
                while not self._stop.wait(0.02):
                    self.peak = max(self.peak, self._used())

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def growth(self) -> int | None:
        return None if self.baseline is None else int(self.peak - self.baseline)


def part_tests_row(args: argparse.Namespace, rows: Rows) -> None:
    """One row from a verbose pytest log: its closing counts line (or, for a run stopped at its
    time limit, the outcomes printed so far) and the failed tests."""
    text = Path(args.log).read_text(errors="replace") if args.log and Path(args.log).exists() else ""
    lines = text.splitlines()
    closing = [line.strip("= ") for line in lines if re.search(r"^=+ .*\d+ (passed|failed|skipped|deselected|errors?)\b", line)]
    # "tests/x.py::test PASSED [ 1%]" (serial) or "[gw0] [  1%] PASSED tests/x.py::test" (xdist)
    outcome = re.compile(r"(?:(tests/\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b)|"
                         r"(?:\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(tests/\S+::\S+))")
    seen: dict[str, str] = {}
    for line in lines:
        match = outcome.search(line)
        if match:
            name = match.group(1) or match.group(4)
            seen[name] = match.group(2) or match.group(3)
    counts = {state: sum(1 for v in seen.values() if v == state) for state in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    failed = sorted(name for name, state in seen.items() if state in ("FAILED", "ERROR"))
    failed += [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR ")) and line.split(" - ")[0].split()[-1] not in failed]
    if closing:
        result = closing[-1]
    else:
        result = (f"no closing line (stopped at its time limit?): so far {counts['PASSED']} passed, {counts['FAILED']} failed, "
                  f"{counts['ERROR']} errors, {counts['SKIPPED']} skipped")
    rows.emit("tests", step=args.step, exit=int(args.exit), result=result, failed=failed or None)


# ============================================================================ summary
def part_summary(args: argparse.Namespace, rows: Rows) -> None:
    """Every measured row against its target; what was not measured says so."""
    records = []
    if args.rows and args.rows.exists():
        records = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    standin = any("standing in" in str(r.get("backend", "")) or "(on the CPU)" in str(r.get("backend", "")) for r in records)
    print("\n==================== summary ====================")
    if standin:
        print("REHEARSAL: NumPy stood in for CuPy and/or JAX ran on the CPU; no target is judged.")

    def pick(part: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in records if r.get("part") == part and all(str(r.get(k, "")).startswith(str(v)) for k, v in match.items())]

    def verdict(ok: bool) -> str:
        return "-" if standin else ("MET" if ok else "NOT MET")

    for r in pick("tests"):
        print(f"tests {r['step']}: {r['result']} (exit {r['exit']})" + (f"; failed: {r['failed']}" if r.get("failed") else ""))
    for r in records:
        if r.get("part") == "run" and r.get("skipped"):
            print(f"part {r.get('step')}: skipped ({r['skipped']})")
        if r.get("part") == "run" and r.get("stopped"):
            print(f"part {r.get('step')}: {r['stopped']}")
    warm: dict[tuple[str, str], float] = {}
    for r in pick("deconv"):
        if "skipped" in r or r.get("step") == "data":
            if "skipped" in r:
                print(f"deconv {r.get('backend')} {r.get('mode', '')}: skipped ({r['skipped']})")
            continue
        backend = r["backend"].split()[0]
        if r.get("warm_s") is not None:
            warm[(backend, r["mode"])] = r["warm_s"]
        line = (f"deconv {r['backend']} {r['mode']} {r['cells']}x{r['frames']}: cold {r['cold_s']:.2f} s, warm "
                f"{'-' if r.get('warm_s') is None else format(r['warm_s'], '.3f')} s, peak "
                f"{'-' if r.get('peak_device_gib') is None else format(r['peak_device_gib'], '.2f')} GiB, iterations mean "
                f"{r['mean_iterations']:.0f} / max {r['max_iterations']}, {_fmt(r.get('us_per_cell_iteration'), '.3f')} us per "
                f"cell-iteration")
        if backend == "cupy" and r.get("warm_s") is not None and r["mode"] in DECONV_TARGET_S:
            line += f" (target <= {DECONV_TARGET_S[r['mode']]} s: {verdict(r['warm_s'] <= DECONV_TARGET_S[r['mode']])})"
        print(line)
    for mode in DECONV_TARGET_S:
        if ("cupy", mode) in warm and ("jax", mode) in warm:
            ratio = warm[("jax", mode)] / warm[("cupy", mode)]
            print(f"deconv {mode}: JAX/CuPy warm {ratio:.2f} (target <= {JAX_RATIO_TARGET}: {verdict(ratio <= JAX_RATIO_TARGET)})")
    for r in pick("deconv-parity"):
        if "skipped" in r:
            print(f"parity {r['backend']} {r['mode']}: skipped ({r['skipped']})")
            continue
        print(f"parity {r['backend']} {r['mode']}: {r['meet_either']}/{r['cells']} cells meet the golden criteria "
              f"(GPU criterion {r['meet_gpu_golden_criterion']}, reference criterion {r['meet_reference_criterion']}); "
              f"worst {r['worst_rel_error']:.1e} of peak, max iteration diff {r['max_iteration_diff']}"
              + (f", failing cells chaotic on the CPU {r['failing_cells_chaotic_on_cpu']}" if "failing_cells_chaotic_on_cpu" in r else ""))
    for r in pick("deconv-roofline"):
        print(f"roofline {r['backend']} {r['cells']} x {r['fft_length']}: device copy {r['copy_gb_per_s']:.0f} GB/s, "
              f"rfft+irfft {r['fft_pair_ms']:.2f} ms ({r['fft_pair_us_per_cell']:.3f} us per cell)")
    for r in pick("deconv-host"):
        print(f"deconv {r['backend']} {r['mode']}: NumPy float64 in/out {r['numpy_in_out_s']:.2f} s")
    for r in pick("oom"):
        if "skipped" in r:
            print(f"oom: skipped ({r['skipped']})")
            continue
        outcome = (f"FAILED ({r['error']})" if r.get("error") else
                   f"{r['limited_s']:.2f} s, identical activity {r['identical_activity']}, identical iterations "
                   f"{r['identical_iterations']}")
        print(f"oom {r['backend']} {r['cells']}x{r['frames']}: unrestricted {r['unrestricted_s']:.2f} s (needs "
              f"{_fmt(r.get('unrestricted_need_gib'), '.2f')} GiB); under a pool limit of {_fmt(r.get('pool_limit_gib'), '.2f')} "
              f"GiB ({_fmt(r.get('limit_fraction_of_need'), '.2f')} of that need): {outcome}; out-of-memory recoveries "
              f"{r.get('oom_recoveries')}, pool peak {_fmt(r.get('limited_peak_held_gib'), '.2f')} GiB, under the limit: "
              f"{r.get('stayed_under_limit')}")
    cadecon_warm: dict[str, float] = {}
    for r in pick("cadecon"):
        if "skipped" in r:
            print(f"cadecon {r.get('backend')} {r.get('call', '')}: skipped ({r['skipped']})")
            continue
        if r.get("step") == "data":
            continue
        backend = r["backend"].split()[0]
        if r["call"] == "warm":
            cadecon_warm[backend] = r["wall_s"]
        line = (f"cadecon {r['backend']} {r['call']} {r['cells']}x{r['frames']}: {r['wall_s']:.1f} s (kernel estimate "
                f"{_fmt(r.get('kernel_estimate_s'), '.1f')} s, finalisation {_fmt(r.get('finalization_s'), '.1f')} s), taus "
                f"{r['tau_rise']:.4f}/{r['tau_decay']:.4f} (true {r['true_tau_rise']}/{r['true_tau_decay']}), peak "
                f"{_fmt(r.get('peak_device_gib'), '.2f')} GiB")
        if backend == "cupy" and r["call"] == "warm":
            line += f" (target <= {CADECON_TARGET_S:.0f} s: {verdict(r['wall_s'] <= CADECON_TARGET_S)})"
        print(line)
    finished = {(r.get("backend"), r.get("call")) for r in pick("cadecon")}
    for r in pick("cadecon-kernel"):
        if (r["backend"], r["call"]) not in finished:
            print(f"cadecon {r['backend']} {r['call']} {r['cells']}x{r['frames']}: kernel estimate done at "
                  f"{r['kernel_estimate_s']:.1f} s (taus {r['tau_rise']:.4f}/{r['tau_decay']:.4f}); the call did not finish")
    if "cupy" in cadecon_warm and "jax" in cadecon_warm:
        ratio = cadecon_warm["jax"] / cadecon_warm["cupy"]
        print(f"cadecon: JAX/CuPy warm {ratio:.2f} (target <= {JAX_RATIO_TARGET}: {verdict(ratio <= JAX_RATIO_TARGET)})")
    for r in pick("cadecon-cpu"):
        print(f"cadecon numpy (host CPU) {r['subset']}: taus {r['tau_rise']:.4f}/{r['tau_decay']:.4f} "
              f"(kernel estimate {r['kernel_estimate_s']:.1f} s)")
    for r in pick("cadecon-taus"):
        if "skipped" in r or "tau_rise_rel_vs_numpy" not in r:
            print(f"cadecon taus {r.get('backend')}: {r.get('skipped') or r.get('numpy')}")
            continue
        worst = max(r["tau_rise_rel_vs_numpy"], r["tau_decay_rel_vs_numpy"])
        print(f"cadecon taus {r['backend']} vs NumPy on {r['subset']}: rise {100 * r['tau_rise_rel_vs_numpy']:.2f} %, "
              f"decay {100 * r['tau_decay_rel_vs_numpy']:.2f} % (target <= {100 * TAU_TARGET_REL:.0f} %: "
              f"{verdict(worst <= TAU_TARGET_REL)}); whole population vs NumPy subset: rise "
              f"{100 * r['whole_population_tau_rise_rel_vs_numpy']:.2f} %, decay {100 * r['whole_population_tau_decay_rel_vs_numpy']:.2f} %")
    for r in pick("indeca"):
        if "skipped" in r:
            print(f"solve_traces {r.get('backend')} {r.get('call', '')}: skipped ({r['skipped']})")
            continue
        print(f"solve_traces u=10 {r['backend']} {r['call']} {r['cells']}x{r['frames']}: {r['wall_s']:.1f} s, peak "
              f"{_fmt(r.get('peak_device_gib'), '.2f')} GiB, mean iterations {r['mean_iterations']:.0f}")
    for r in pick("dataset"):
        if "skipped" in r:
            print(f"dataset: skipped ({r['skipped']})")
            continue
        print(f"dataset {r['backend']} {r['cells']}x{r['frames']} ({r['input_gib']:.2f} GiB, "
              f"{_fmt(r.get('input_over_limit'), '.2f')}x the pool limit of {_fmt(r.get('pool_limit_gib'), '.2f')} GiB): "
              f"{r['wall_s']:.1f} s in {r['chunks']} chunks of {r['chunk_cells']} cells, pool peak "
              f"{_fmt(r.get('peak_pool_held_gib'), '.3f')} GiB, under the limit: {r.get('stayed_under_limit')}, "
              f"device use grew by {_fmt(r.get('device_used_growth_gib'), '.3f')} GiB")
    for r in pick("dataset-equality"):
        print(f"dataset output vs in-memory on {r['sample']}: identical {r['identical']}, "
              f"{r['bit_identical_cells']}/{r['cells']} cells bit-identical, worst {r['worst_rel_error']:.1e} of peak")
    if not records:
        print("no rows were recorded")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ============================================================================ main
PARTS = {
    "env": part_env, "deconv": part_deconv, "oom": part_oom, "cadecon": part_cadecon, "cadecon-cpu": part_cadecon_cpu,
    "indeca": part_indeca, "dataset": part_dataset, "tests-row": part_tests_row, "summary": part_summary,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--backend", default="cupy", choices=["cupy", "jax", "numpy"])
    parser.add_argument("--size", default=os.environ.get("CALAB_GPU_SIZE", "full"), choices=sorted(SIZES))
    parser.add_argument("--standin", action="store_true", default=os.environ.get("CALAB_GPU_STANDIN", "") == "1",
                        help="NumPy in place of CuPy, JAX allowed on the CPU (a rehearsal without a GPU)")
    parser.add_argument("--budget", type=float, default=None, help="seconds this part may take (steps that no longer fit are skipped)")
    parser.add_argument("--modes", default="fft,banded")
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("WORK") or Path(tempfile.gettempdir()) / "gpu-session-work"))
    parser.add_argument("--rows", type=Path, default=None, help="JSON-lines file the rows are appended to (default $OUT/rows.jsonl)")
    parser.add_argument("--step", default="")
    parser.add_argument("--exit", default="0")
    parser.add_argument("--log", default=None)
    add_lock_option(parser)
    args = parser.parse_args(argv)
    if args.rows is None and os.environ.get("OUT"):
        args.rows = Path(os.environ["OUT"]) / "rows.jsonl"
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.rows is not None:
        args.rows.parent.mkdir(parents=True, exist_ok=True)
    context = {"size": args.size} if args.part not in ("tests-row", "summary", "env") else {}
    rows = Rows(args.rows, context)
    if args.part not in ("tests-row", "summary", "env", "cadecon-cpu"):
        # cadecon-cpu runs beside a GPU part that waits for it: it must not queue behind it
        hold_lock(args.lock)
    PARTS[args.part](args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
