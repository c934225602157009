#!/usr/bin/env python
"""Benchmark ``calab.run_deconvolution_full`` per backend, side by side with ``calab==0.3.0``.

Run with the venv that has OUR calab installed::

    python bench/bench_deconvolution.py                       # 100 cells x 9000 frames
    python bench/bench_deconvolution.py --cells 100,1000 --frames 9000 \\
        --modes fft,banded --backends numpy,jax,cupy --repeats 5 --json bench/results/run.json
    python bench/bench_deconvolution.py --no-reference        # ours only

For every backend x (cells, frames) x conv_mode it reports the steady-state wall time
(best and median of ``--repeats`` calls after one cold call), throughput in
cells*frames per second, the mean FISTA iteration count, the JIT/compile warm-up
(first call minus steady median) and the speed-up over the reference.  Times are end to
end for NumPy input: validation, transfer to the device, the solve and the transfer back.

The reference runs in its own venv (``tools/reference_env.py``; created on first use
unless ``--no-reference``) through ``bench/_reference_worker.py``; the traces reach it via
a temporary ``.npy`` file.  If the reference cannot be made available the table is
printed without it, with a note saying why.

Data: deterministic gcamp6f-like traces in raw fluorescence units (tau 0.1/0.6 s,
fs 30 Hz, Poisson spikes at ~1 Hz, F0 ~ 1000, ~100 per spike, Gaussian noise, slow
drift), deconvolved with lambda = 0.5.
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
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_data.py

import reference_env  # noqa: E402  (tools/reference_env.py)

import calab  # noqa: E402  (our package; the reference is only ever a subprocess)
from _data import FS, LAMBDA, TAU_DECAY, TAU_RISE, make_traces  # noqa: E402  (bench/_data.py)
from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)

REFERENCE_WORKER = Path(__file__).resolve().parent / "_reference_worker.py"

# -------------------------------------------------------------------------------- timing
def time_ours(traces: np.ndarray, backend: str, mode: str, repeats: int, max_iters: int) -> dict[str, Any]:
    """One cold call (includes JIT compilation, plan and FFT-plan caches) then ``repeats`` timed calls."""
    call = dict(fs=FS, tau_r=TAU_RISE, tau_d=TAU_DECAY, lam=LAMBDA, max_iters=max_iters, conv_mode=mode, backend=backend)
    start = time.perf_counter()
    result = calab.run_deconvolution_full(traces, **call)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = calab.run_deconvolution_full(traces, **call)
        times.append(time.perf_counter() - start)
    return dict(
        first_s=first,
        times_s=times,
        mean_iterations=float(np.mean(result.iterations)),
        converged_fraction=float(np.mean(result.converged)),
        activity=np.asarray(result.activity),
    )


def time_reference(python: Path, traces: np.ndarray, modes: list[str], repeats: int, max_iters: int) -> dict[str, Any]:
    """Run ``_reference_worker.py`` in the reference venv; return its timings and activities."""
    with tempfile.TemporaryDirectory(prefix="calab-bench-") as tmpdir:
        tmp = Path(tmpdir)
        path = tmp / "traces.npy"
        np.save(path, np.ascontiguousarray(traces, dtype=np.float64))
        cmd = [
            str(python), str(REFERENCE_WORKER), "--traces", str(path),
            "--fs", repr(FS), "--tau-r", repr(TAU_RISE), "--tau-d", repr(TAU_DECAY), "--lam", repr(LAMBDA),
            "--max-iters", str(max_iters), "--modes", ",".join(modes), "--repeats", str(repeats),
        ]  # fmt: skip
        # cwd outside the repository so the worker imports the reference, not our calab.
        proc = subprocess.run(cmd, cwd=tmpdir, env=reference_env.reference_subprocess_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference worker failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        for entry in report["results"].values():
            entry["activity"] = np.load(entry.pop("activity_path"))
        return report


def max_relative_difference(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst cell's max |ours - ref| / peak |ref| (the golden tests' activity criterion)."""
    ours = np.atleast_2d(np.asarray(ours, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    peak = np.maximum(np.abs(ref).max(axis=1), 1e-6)
    return float((np.abs(ours - ref).max(axis=1) / peak).max())


def summarise(entry: dict[str, Any], cells: int, frames: int) -> dict[str, Any]:
    times = entry["times_s"] or [entry["first_s"]]
    median = statistics.median(times)
    return dict(
        best_s=min(times),
        median_s=median,
        first_s=entry["first_s"],
        warmup_s=max(0.0, entry["first_s"] - median),
        throughput=cells * frames / median,
        mean_iterations=entry["mean_iterations"],
        converged_fraction=entry["converged_fraction"],
    )


# ---------------------------------------------------------------------------------- main
def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def environment() -> dict[str, Any]:
    infos = calab.available_backends(with_reasons=True)
    return dict(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        numpy=np.__version__,
        calab=getattr(calab, "__version__", "?"),
        backends={name: dict(usable=info.usable, reason=info.reason, has_gpu=info.has_gpu) for name, info in infos.items()},
    )


def print_table(rows: list[dict[str, Any]], reference_available: bool) -> None:
    header = ["backend", "cells x frames", "mode", "best s", "median s", "warm-up s", "cell*frames/s", "mean iters", "speed-up", "max|Δact|/peak"]
    lines = [header]
    for row in rows:
        speedup = f"{row['speedup']:.2f}x" if row.get("speedup") is not None else "-"
        agreement = f"{row['max_rel_diff']:.1e}" if row.get("max_rel_diff") is not None else "-"
        lines.append(
            [
                row["backend"],
                f"{row['cells']} x {row['frames']}",
                row["mode"],
                f"{row['best_s']:.3f}",
                f"{row['median_s']:.3f}",
                f"{row['warmup_s']:.3f}" if row["backend"] != "reference 0.3.0" else "-",
                f"{row['throughput']:.3g}",
                f"{row['mean_iterations']:.1f}",
                speedup,
                agreement,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if j < 3 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if not reference_available:
        print("(speed-up and agreement columns need the reference; see the note above)")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description="Benchmark calab deconvolution backends against calab==0.3.0")
    parser.add_argument("--cells", default="100", help="comma-separated cell counts (default 100)")
    parser.add_argument("--frames", default="9000", help="comma-separated trace lengths (default 9000 = 5 min at 30 Hz)")
    parser.add_argument("--modes", default="fft,banded", help="conv modes (default fft,banded)")
    parser.add_argument("--backends", default=",".join(calab.available_backends(with_reasons=True)), help="backends to time (default: all registered; unusable ones are listed as skipped)")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls after the cold one (default 3)")
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--no-reference", action="store_true", help="do not time calab==0.3.0")
    parser.add_argument("--reference-venv", default=None, help="reference venv (default $CALAB_REFERENCE_VENV or .venv-ref)")
    parser.add_argument("--json", type=Path, default=None, help="also save all results to this JSON file")
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)

    cells_list, frames_list = parse_ints(args.cells), parse_ints(args.frames)
    modes, requested = parse_names(args.modes), parse_names(args.backends)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    for mode in modes:
        if mode not in ("fft", "banded"):
            parser.error(f"unknown conv mode {mode!r}; use fft and/or banded")

    env = environment()
    print(f"calab {env['calab']} | Python {env['python']} | NumPy {env['numpy']} | {env['cpu_count']} CPU cores | {env['platform']}")
    print(f"problem: gcamp6f-like raw fluorescence, tau {TAU_RISE}/{TAU_DECAY} s, fs {FS:g} Hz, lambda {LAMBDA}, max_iters {args.max_iters}")

    infos = calab.available_backends(with_reasons=True)
    backends, skipped = [], {}
    for name in requested:
        info = infos.get(name)
        if info is None:
            skipped[name] = f"unknown backend; registered: {', '.join(infos)}"
        elif not info.usable:
            skipped[name] = info.reason
        else:
            backends.append(name)
            print(f"backend {name}: {info.reason}")
    for name, reason in skipped.items():
        print(f"backend {name}: SKIPPED ({reason})")

    reference_python = None
    reference_note = None
    if args.no_reference:
        reference_note = "reference timing disabled (--no-reference)"
    else:
        try:
            reference_python = reference_env.ensure_reference_python(args.reference_venv, quiet=True)
            print(f"reference: calab=={reference_env.REFERENCE_VERSION} via {reference_python}")
        except reference_env.ReferenceEnvError as exc:
            reference_note = f"NOTE: reference calab=={reference_env.REFERENCE_VERSION} unavailable, timing ours only: {exc}"
    if reference_note:
        print(reference_note)
    print()

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for cells in cells_list:
        for frames in frames_list:
            traces = make_traces(cells, frames, seed=args.seed)
            reference: dict[str, Any] | None = None
            if reference_python is not None:
                print(f"timing reference 0.3.0 on {cells} x {frames} ...", file=sys.stderr, flush=True)
                try:
                    reference = time_reference(reference_python, traces, modes, args.repeats, args.max_iters)["results"]
                except RuntimeError as exc:
                    reference_note = f"NOTE: reference run failed, timing ours only: {exc}"
                    print(reference_note)
                if reference is not None:
                    for mode in modes:
                        rows.append(dict(backend="reference 0.3.0", cells=cells, frames=frames, mode=mode, speedup=1.0, max_rel_diff=None, **summarise(reference[mode], cells, frames)))
            for backend in backends:
                for mode in modes:
                    print(f"timing {backend} {mode} on {cells} x {frames} ...", file=sys.stderr, flush=True)
                    entry = time_ours(traces, backend, mode, args.repeats, args.max_iters)
                    row = dict(backend=backend, cells=cells, frames=frames, mode=mode, **summarise(entry, cells, frames))
                    if reference is not None:
                        ref = reference[mode]
                        row["speedup"] = statistics.median(ref["times_s"]) / row["median_s"]
                        row["max_rel_diff"] = max_relative_difference(entry["activity"], ref["activity"])
                        row["reference_mean_iterations"] = ref["mean_iterations"]
                    rows.append(row)

    load_after = os.getloadavg()
    print()
    print_table(rows, reference_available=reference_python is not None)
    print(f"load average (1/5/15 min): before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print("\nbest/median: steady-state wall time of one call; warm-up: first call minus median (JIT compile, caches);")
    print("speed-up: reference median / ours median; max|Δact|/peak: worst cell's activity difference vs the reference.")

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(
            environment=env,
            config=dict(cells=cells_list, frames=frames_list, modes=modes, backends=requested, repeats=args.repeats, max_iters=args.max_iters, seed=args.seed, fs=FS, tau_rise=TAU_RISE, tau_decay=TAU_DECAY, lam=LAMBDA),
            skipped=skipped,
            load_average=dict(before=load_before, after=load_after),
            reference=dict(python=str(reference_python) if reference_python else None, note=reference_note),
            results=rows,
        )
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
