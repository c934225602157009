#!/usr/bin/env python
"""Benchmark the CaDecon loop: the reference's building blocks chained cell by cell vs ``calab.run_cadecon``.

One invocation runs, on the same simulated population (calab.simulate, gcamp6f, seed 42):

1. the loop chained from calab 0.3.0's ``solve_trace`` / ``estimate_kernel`` /
   ``fit_biexponential`` / peak seeding, exactly as the browser app chains them, in its
   separate venv (``bench/_reference_cadecon_worker.py``; optional sampling of the
   finalisation and iteration extrapolation for big sizes, reported as such);
2. ``calab.run_cadecon`` on each requested backend, with the reference loop's settings
   (``--settings spec``: peak seeding, u from 300 Hz, 8 subsets), with our defaults
   (``--settings default``: the bispectral kernel, no refinement rounds) and with the
   previous default (``--settings loop``: autocovariance start refined by the loop).

Reported: wall time, peak RSS of the process (ours: ``resource.getrusage`` delta,
approximate), iterations to convergence and the learned taus against the truth.

Usage (on a shared machine, always under the lock)::

    python bench/bench_cadecon.py --lock PATH --cells 200 --frames 9000 \\
        --backends numpy --final-sample 20
    python bench/bench_cadecon.py --cells 1000 --frames 27000 --no-reference --backends jax,cupy
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tools"))
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import reference_env  # noqa: E402

import calab  # noqa: E402
from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)

WORKER = Path(__file__).resolve().parent / "_reference_cadecon_worker.py"
SETTINGS = {
    "spec": dict(initialization="peaks", upsample_target=300, num_subsets=8, patience=3, min_iterations=2),
    "default": {},
    # the default before the bispectral kernel: autocovariance start, refined by the loop
    "loop": dict(initialization="autocovariance"),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_reference(traces: np.ndarray, fs: float, args: argparse.Namespace) -> dict[str, Any]:
    python = reference_env.reference_python()
    if python is None:
        raise SystemExit("no reference venv: set CALAB_REFERENCE_VENV (e.g. .venv-ref in the repository) or run "
                         "tools/reference_env.py, or pass --no-reference")
    with tempfile.TemporaryDirectory(prefix="calab-cadecon-bench-") as tmp:
        path = Path(tmp) / "traces.npy"
        np.save(path, traces)
        command = [str(python), str(WORKER), "--traces", str(path), "--fs", str(fs),
                   "--final-sample", str(args.final_sample), "--time-limit", str(args.time_limit),
                   "--assume-iterations", str(args.assume_iterations)]
        started = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=reference_env.reference_subprocess_env())
        wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"reference worker failed:\n{out.stderr[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["process_wall_s"] = wall
    return report


def run_ours(traces: np.ndarray, fs: float, backend: str, settings: str) -> dict[str, Any]:
    before = peak_rss_mb()
    started = time.perf_counter()
    result = calab.run_cadecon(traces, fs, backend=backend, progress=False, **SETTINGS[settings])
    wall = time.perf_counter() - started
    meta = result.metadata
    return dict(backend=backend, settings=settings, wall_s=wall, peak_rss_growth_mb=peak_rss_mb() - before,
                iterations=meta["num_iterations"], converged_at=meta["converged_at_iteration"],
                tau_rise=meta["tau_rise"], tau_decay=meta["tau_decay"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--frames", type=int, default=9000)
    parser.add_argument("--fs", type=float, default=30.0)
    parser.add_argument("--backends", default="numpy")
    parser.add_argument("--settings", default="spec,default")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--final-sample", type=int, default=0, help="reference: finalise this many cells and scale")
    parser.add_argument("--time-limit", type=float, default=0.0, help="reference: stop iterating after this many s")
    parser.add_argument("--assume-iterations", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)

    sim = calab.simulate(calab.presets.gcamp6f(num_cells=args.cells, num_timepoints=args.frames, fs_hz=args.fs, seed=42))
    traces = np.ascontiguousarray(sim.traces, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    reference = None
    if not args.no_reference:
        reference = run_reference(traces, args.fs, args)
        print(f"reference (0.3.0 chained): estimated {reference['estimated_total_s']:.0f} s "
              f"(seed {reference['timed_s']['seed']:.1f} s, {reference['per_iteration_s']:.1f} s/iteration x "
              f"{reference['iterations_assumed']}, finalisation {reference['timed_s']['finalization']:.0f} s from "
              f"{reference['finalized_cells']} cells), iterations run {reference['iterations_run']}, converged at "
              f"{reference['converged_at']}, taus {reference['final_taus']}", flush=True)
    for backend in args.backends.split(","):
        for settings in args.settings.split(","):
            row = run_ours(traces, args.fs, backend, settings)
            if reference is not None:
                row["speedup"] = reference["estimated_total_s"] / row["wall_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"| run ({args.cells} x {args.frames}) | wall s | peak RSS growth MB | iterations (converged at) | tau_r / tau_d (true 0.1 / 0.6) | speed-up |")
    print("|---|---|---|---|---|---|")
    if reference is not None:
        print(f"| 0.3.0 chained, cell by cell | {reference['estimated_total_s']:.0f} (estimated) | n/a | "
              f"{reference['iterations_run']} ({reference['converged_at']}) | "
              f"{reference['final_taus'][0]:.3f} / {reference['final_taus'][1]:.3f} | 1 |")
    for row in rows:
        print(f"| run_cadecon {row['backend']} ({row['settings']}) | {row['wall_s']:.0f} | {row['peak_rss_growth_mb']:.0f} | "
              f"{row['iterations']} ({row['converged_at']}) | {row['tau_rise']:.3f} / {row['tau_decay']:.3f} | "
              f"{row.get('speedup', float('nan')):.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"reference": reference, "ours": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
