#!/usr/bin/env python
"""InDeCa and CaDecon on the GPU backends, against the NumPy backend in the same run.

The reference cannot run on a GPU, and the lent GPU machine has no package index, so the
yardstick here is our NumPy backend (whose parity with calab 0.3.0 is measured by
``bench_indeca.py`` / ``bench_cadecon.py`` on the development machine)::

    python bench/bench_gpu_indeca.py --part indeca  --backends numpy,cupy,jax --json out.json
    python bench/bench_gpu_indeca.py --part chunked --backends cupy,jax         # 1000 x 27,000, u = 10
    python bench/bench_gpu_indeca.py --part cadecon --backends numpy,cupy,jax

* ``indeca``: ``solve_traces`` on 20 x 9000 (u = 10, the CaDecon app's settings, as
  ``bench_indeca.py``): cold and warm wall time per backend, and each GPU backend's
  per-cell agreement with the NumPy backend under the per-cell parity criteria;
* ``chunked``: ``solve_traces`` on 1000 x 27,000 at u = 10 (270,000 activity samples per
  cell: blocks bounded by the device's free memory), one call per backend;
* ``cadecon``: ``run_cadecon`` on a simulated gcamp6f population (200 x 9000, seed 42)
  with the defaults, ``--calls`` times per backend (the first call compiles), the learned taus and
  their agreement with NumPy's.

Only measured values are printed; each part writes its rows to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (str(REPO_ROOT), str(REPO_ROOT / "tests"), str(Path(__file__).resolve().parent)):
    if path not in sys.path:
        sys.path.insert(0, path)

import calab  # noqa: E402
from _data import FS, TAU_DECAY, TAU_RISE, make_traces  # noqa: E402
from _indeca_parity import cell_metrics  # noqa: E402

SETTINGS = dict(tau_rise=TAU_RISE, tau_decay=TAU_DECAY, fs=FS, upsample_factor=10, max_iters=500, tol=1e-4,
                hp_enabled=True, lp_enabled=True, noise_constrained=True)


def usable(name: str) -> bool:
    from calab.backends import backend_info

    info = backend_info(name)
    if not info.usable:
        print(f"skipping {name}: {info.reason}", flush=True)
    return info.usable


def timed(function, *args, **kwargs) -> tuple[float, Any]:
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return time.perf_counter() - start, out


def part_indeca(args: argparse.Namespace) -> list[dict[str, Any]]:
    traces = make_traces(args.cells, args.frames, seed=0)
    rows, baseline = [], None
    for name in args.backends:
        if not usable(name):
            continue
        cold, _ = timed(calab.solve_traces, traces, **SETTINGS, backend=name)
        warm, result = timed(calab.solve_traces, traces, **SETTINGS, backend=name)
        row: dict[str, Any] = dict(part="indeca", backend=name, cells=args.cells, frames=args.frames, cold_s=cold, warm_s=warm,
                                   mean_iterations=float(np.mean(result.iterations)))
        if name == "numpy":
            baseline = result
        elif baseline is not None:
            scalars = np.stack([baseline.alpha, baseline.baseline, baseline.threshold, baseline.pve,
                                baseline.iterations.astype(float)], axis=1)
            metrics = [cell_metrics(baseline.s_counts[i], scalars[i], result.s_counts[i], result.alpha[i], result.pve[i],
                                    int(result.iterations[i])) for i in range(args.cells)]
            row.update(cells_ok_vs_numpy=sum(bool(m["ok"]) for m in metrics), min_corr=min(m["corr"] for m in metrics),
                       max_total_rel=max(m["total_rel"] for m in metrics), max_alpha_rel=max(float(m["alpha_rel"]) for m in metrics),
                       max_pve_abs=max(float(m["pve_abs"]) for m in metrics), max_iter_rel=max(float(m["iter_rel"]) for m in metrics))
        if baseline is not None and name != "numpy":
            row["speedup_vs_numpy"] = rows[0]["warm_s"] / warm if rows and rows[0]["backend"] == "numpy" else None
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


def part_chunked(args: argparse.Namespace) -> list[dict[str, Any]]:
    traces = make_traces(1000, 27_000, seed=0)
    rows = []
    for name in args.backends:
        if not usable(name):
            continue
        seconds, result = timed(calab.solve_traces, traces, **SETTINGS, backend=name)
        row = dict(part="chunked", backend=name, cells=1000, frames=27_000, wall_s=seconds,
                   mean_iterations=float(np.mean(result.iterations)), converged=float(np.mean(result.converged)),
                   total_counts=float(np.sum(result.s_counts)))
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


def part_cadecon(args: argparse.Namespace) -> list[dict[str, Any]]:
    sim = calab.simulate(calab.presets.gcamp6f(num_cells=200, num_timepoints=9000, fs_hz=30.0, seed=42))
    traces = np.ascontiguousarray(sim.traces, dtype=np.float64)
    rows, numpy_taus = [], None
    for name in args.backends:
        if not usable(name):
            continue
        first, result = timed(calab.run_cadecon, traces, 30.0, backend=name, progress=False)
        second = None
        if args.calls > 1:
            second, result = timed(calab.run_cadecon, traces, 30.0, backend=name, progress=False)
        meta = result.metadata
        taus = (float(meta["tau_rise"]), float(meta["tau_decay"]))
        row: dict[str, Any] = dict(part="cadecon", backend=name, cells=200, frames=9000, first_s=first, second_s=second,
                                   iterations=meta["num_iterations"], converged_at=meta["converged_at_iteration"],
                                   tau_rise=taus[0], tau_decay=taus[1])
        if name == "numpy":
            numpy_taus = taus
        elif numpy_taus is not None:
            row["tau_rise_rel_vs_numpy"] = abs(taus[0] - numpy_taus[0]) / numpy_taus[0]
            row["tau_decay_rel_vs_numpy"] = abs(taus[1] - numpy_taus[1]) / numpy_taus[1]
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


PARTS = {"indeca": part_indeca, "chunked": part_chunked, "cadecon": part_cadecon}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--backends", default="numpy,cupy,jax")
    parser.add_argument("--cells", type=int, default=20, help="indeca part: cells (default 20)")
    parser.add_argument("--frames", type=int, default=9000, help="indeca part: frames (default 9000)")
    parser.add_argument("--calls", type=int, default=2, help="cadecon part: calls per backend (the first compiles)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(f"# {args.part} on {platform.node()} ({platform.processor() or platform.machine()}), calab {calab.__version__}", flush=True)
    rows = PARTS[args.part](args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
