"""The CaDecon loop chained from calab 0.3.0's building blocks — runs INSIDE the reference venv.

What the browser app does (spec ``indeca.md`` §6), cell by cell, one process (the app
runs ``max(2, min(cores − 1, 8))`` workers; on this 2-core machine the subset solves are
still sequential per worker): peak seeding per subset cell (``_solver.py_seed_trace``),
per-subset ``estimate_kernel`` + ``fit_biexponential``, then iterations of
``solve_trace`` on every subset cell's window (warm counts), kernel estimation and fits
(warm), the median merge, the §6.5 convergence rule, §6.6 selection and the §6.7
finalisation of every cell.  The subset placement and shape maths come from our
pure-Python ``calab/cadecon/subsets.py`` and ``shape.py`` (loaded by file path: both
import nothing from calab).

Timing covers the reference calls only.  The Python binding drops the working trace the
kernel step needs; it is rebuilt here on the host (band-pass at the frame rate, causal
rolling 20th percentile) OUTSIDE the timed region, so this approximation costs the
reference nothing.

``--final-sample M`` finalises only M evenly spaced cells and scales the finalisation time
by ``n_cells / M`` (cells are independent and solved one by one, so the scaling is exact
in expectation).  ``--time-limit S`` stops iterating once the subset phase has used S
seconds and extrapolates the remaining iterations at the mean measured cost per
iteration, assuming the loop would have run ``--assume-iterations`` in total.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import calab  # the reference (we are run with its interpreter)
from calab import _solver

_HERE = Path(__file__).resolve().parent


def _load(name: str):
    path = Path(__file__).resolve().parent.parent / "calab" / "cadecon" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cadecon_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


subsets_mod = _load("subsets")
shape_mod = _load("shape")


def working_trace(raw: np.ndarray, tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """Approximate ``filtered_trace``: band-pass + causal rolling 20th percentile, at the frame rate."""
    filtered = np.asarray(calab.bandpass_filter(raw, tau_rise, tau_decay, fs), dtype=np.float64)
    window = 5 * max(1, math.ceil(5 * tau_decay * fs))
    padded = np.concatenate([np.full(window - 1, filtered[0]), filtered])
    views = np.lib.stride_tricks.sliding_window_view(padded, window)
    baseline = np.quantile(views, 0.2, axis=1)
    return (filtered - baseline).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=Path, required=True)
    parser.add_argument("--fs", type=float, required=True)
    parser.add_argument("--num-subsets", type=int, default=8)
    parser.add_argument("--coverage", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--upsample-target", type=float, default=300.0)
    parser.add_argument("--max-iterations", type=int, default=20)
    parser.add_argument("--final-sample", type=int, default=0, help="0 = finalise every cell")
    parser.add_argument("--time-limit", type=float, default=0.0, help="seconds of subset-phase work; 0 = none")
    parser.add_argument("--assume-iterations", type=int, default=0)
    args = parser.parse_args(argv)

    traces = np.load(args.traces).astype(np.float64)
    n_cells, n_frames = traces.shape
    fs = args.fs
    u = calab.compute_upsample_factor(fs, args.upsample_target)
    rects = subsets_mod.place_subsets(n_cells, n_frames, args.num_subsets, args.coverage, 1.0, args.seed)
    timed = {"seed": 0.0, "inference": 0.0, "kernel": 0.0, "finalization": 0.0}
    solve_calls = 0

    def window(rect, cell):
        return traces[cell, rect.t_start:rect.t_stop]

    # ---- seed phase (§6.3)
    seed_len = max(10, min(200, math.ceil(1.5 * fs)))
    fits = []
    for rect in rects:
        flat, spikes, lengths, alphas, baselines = [], [], [], [], []
        start = time.perf_counter()
        for cell in range(rect.cell_start, rect.cell_stop):
            raw = window(rect, cell)
            counts, alpha, baseline = _solver.py_seed_trace(raw.astype(np.float64), fs)
            counts = np.asarray(counts)
            if counts.sum() > 0:
                flat.append(raw); spikes.append(counts); lengths.append(raw.size)
                alphas.append(alpha); baselines.append(baseline)
        if flat:
            h = calab.estimate_kernel(np.concatenate(flat), np.concatenate(spikes), np.array(lengths),
                                      np.array(alphas), np.array(baselines), seed_len)
            fits.append(calab.fit_biexponential(h, fs, refine=True, skip=0))
        timed["seed"] += time.perf_counter() - start
    if fits:
        taus = (float(np.median([f.tau_rise for f in fits])), float(np.median([f.tau_decay for f in fits])))
    else:
        taus = (0.2, 1.0)
    seed_taus = taus
    k_len = max(10, math.ceil(5 * taus[1] * fs))
    tracker = shape_mod.ConvergenceTracker(0.005, 3, 2, fs, taus)
    trail = []
    stitched = np.zeros((n_cells, n_frames), dtype=np.float32)
    have_warm = False
    warm_kernels = [None] * len(rects)
    warm_fits = [None] * len(rects)
    iteration_times = []
    history = []
    for iteration in range(1, args.max_iterations + 1):
        it_start = time.perf_counter()
        results = {}
        for index, rect in enumerate(rects):
            for cell in range(rect.cell_start, rect.cell_stop):
                warm = stitched[cell, rect.t_start:rect.t_stop] if have_warm else None
                start = time.perf_counter()
                res = calab.solve_trace(window(rect, cell), taus[0], taus[1], fs, upsample_factor=u, max_iters=500,
                                        tol=1e-4, hp_enabled=True, lp_enabled=True, warm_counts=warm,
                                        lambda_=0.0, noise_constrained=True)
                timed["inference"] += time.perf_counter() - start
                solve_calls += 1
                results[(index, cell)] = res
        new = np.zeros_like(stitched)
        for (index, cell), res in results.items():
            rect = rects[index]
            new[cell, rect.t_start:rect.t_stop] = res.s_counts
        stitched, have_warm = new, True
        merged = []
        for index, rect in enumerate(rects):
            rows = [(cell, results[(index, cell)]) for cell in range(rect.cell_start, rect.cell_stop)]
            rows = [(c, r) for c, r in rows if r.alpha != 0 and np.asarray(r.s_counts).sum() > 0]
            if not rows:
                continue
            work = [working_trace(window(rect, c), taus[0], taus[1], fs) for c, _ in rows]  # untimed
            start = time.perf_counter()
            h = calab.estimate_kernel(np.concatenate(work), np.concatenate([np.asarray(r.s_counts) for _, r in rows]),
                                      np.array([w.size for w in work]), np.array([r.alpha for _, r in rows]),
                                      np.array([r.baseline for _, r in rows]), k_len, warm_kernel=warm_kernels[index])
            fit = calab.fit_biexponential(h, fs, refine=True, skip=0, warm=warm_fits[index])
            timed["kernel"] += time.perf_counter() - start
            warm_kernels[index], warm_fits[index] = h, fit
            merged.append(fit)
        if not merged:
            break
        new_taus = (float(np.median([f.tau_rise for f in merged])), float(np.median([f.tau_decay for f in merged])))
        rmse = tracker.update(iteration, new_taus)
        if 0 < new_taus[0] < new_taus[1]:
            trail.append(new_taus)
            taus = new_taus
        iteration_times.append(time.perf_counter() - it_start)
        history.append({"iteration": iteration, "tau_rise": new_taus[0], "tau_decay": new_taus[1], "rmse": rmse})
        if tracker.converged:
            break
        if args.time_limit and timed["inference"] + timed["kernel"] >= args.time_limit:
            break
    iterations_run = len(iteration_times)
    final = shape_mod.select_final_taus(trail, 5, taus)
    cells = list(range(n_cells))
    if args.final_sample and args.final_sample < n_cells:
        cells = sorted(set(np.linspace(0, n_cells - 1, args.final_sample).round().astype(int).tolist()))
    start = time.perf_counter()
    for cell in cells:
        calab.solve_trace(traces[cell], final[0], final[1], fs, upsample_factor=u, max_iters=500, tol=1e-4,
                          hp_enabled=True, lp_enabled=True, warm_counts=stitched[cell] if have_warm else None,
                          lambda_=0.0, noise_constrained=True)
    measured_final = time.perf_counter() - start
    timed["finalization"] = measured_final * n_cells / len(cells)
    per_iteration = (timed["inference"] + timed["kernel"]) / max(1, iterations_run)
    assumed = max(args.assume_iterations, iterations_run) if not tracker.converged else iterations_run
    total = timed["seed"] + per_iteration * assumed + timed["finalization"]
    print(json.dumps({
        "version": calab.__version__ if hasattr(calab, "__version__") else "0.3.0",
        "upsample_factor": u, "seed_taus": seed_taus, "final_taus": final, "history": history,
        "iterations_run": iterations_run, "converged": tracker.converged, "converged_at": tracker.converged_at,
        "iterations_assumed": assumed, "timed_s": timed, "per_iteration_s": per_iteration,
        "finalized_cells": len(cells), "estimated_total_s": total, "subset_solves": solve_calls,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
