#!/usr/bin/env python
"""Benchmark ``calab.solve_traces`` (batched InDeCa) against calab 0.3.0's cell-by-cell ``solve_trace``.

Run with the venv that has OUR calab (``--lock PATH`` on a shared machine, so that timing
runs do not overlap)::

    python bench/bench_indeca.py                                            # 20 x 9000, u = 10, 5 runs
    python bench/bench_indeca.py --cells 20 --frames 9000 --backends numpy,jax --json out.json
    python bench/bench_indeca.py --cells 1000 --frames 27000 --no-reference  # memory chunking

Settings are the CaDecon app's: gcamp6f taus (0.1/0.6 s), fs 30 Hz, upsample factor 10
(300 Hz), band-pass on, noise-constrained thresholds, 500 FISTA iterations, tol 1e-4.
Data: ``bench/_data.make_traces`` (raw fluorescence, F0 ~ 1000, ~100 per spike).

Per backend it reports the wall time of a cold call (includes Numba/JIT compilation) and
the median of ``--repeats`` warm calls, the speed-up over the reference's loop measured in
the same run (the runs alternate: reference loop, then each backend, ``--repeats`` times,
so both see the same machine load; speed-up = median reference time / median warm time),
the 1-minute load average before and after, and the agreement with the reference per cell
(the per-cell parity criteria: count correlation, total count, alpha, PVE, iterations).
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

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # time the calab of this checkout
sys.path.insert(0, str(REPO_ROOT / "tools"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_env  # noqa: E402

import calab  # noqa: E402
from _data import FS, TAU_DECAY, TAU_RISE, make_traces  # noqa: E402
from _lock import add_lock_option, hold_lock  # noqa: E402
from _indeca_parity import cell_metrics  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_indeca_reference_worker.py"
SETTINGS = dict(tau_rise=TAU_RISE, tau_decay=TAU_DECAY, fs=FS, upsample_factor=10, max_iters=500, tol=1e-4,
                hp_enabled=True, lp_enabled=True, noise_constrained=True)


def run_reference(traces: np.ndarray, workdir: Path, venv: str | None, repeats: int = 1) -> dict | None:
    python = reference_env.reference_python(venv)
    if python is None:
        return None
    path = workdir / "traces.npy"
    np.save(path, traces)
    proc = subprocess.run([str(python), str(WORKER), str(path), json.dumps(SETTINGS), str(repeats)], cwd=str(workdir),
                          env=reference_env.reference_subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return None
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(report["outputs"]) as data:
        report["s_counts"], report["scalars"] = data["s_counts"], data["scalars"]
    return report


def time_call(traces: np.ndarray, backend: str) -> tuple[float, float, object]:
    start, cpu_start = time.perf_counter(), time.process_time()
    result = calab.solve_traces(traces, **SETTINGS, backend=backend)
    return time.perf_counter() - start, time.process_time() - cpu_start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--frames", type=int, default=9000)
    parser.add_argument("--backends", default="numpy,jax")
    parser.add_argument("--repeats", type=int, default=5, help="warm runs per backend (and reference runs), alternating")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--reference-venv", default=None)
    parser.add_argument("--json", type=Path, default=None)
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)

    from calab.backends import backend_info

    traces = make_traces(args.cells, args.frames, seed=0)
    names = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend_info(name).usable:
            names.append(name)
        else:
            print(f"skipping {name}: {backend_info(name).reason}", file=sys.stderr)
    load_before = os.getloadavg()
    cold = {}
    for name in names:  # cold calls first (compilation), not part of the comparison
        cold[name] = time_call(traces, name)[0]
    reference = None
    reference_wall: list[float] = []
    reference_cpu: list[float] = []
    warm = {name: [] for name in names}
    cpu = {name: [] for name in names}
    results = {}
    with tempfile.TemporaryDirectory(prefix="calab-bench-indeca-") as tmp:
        for _ in range(max(1, args.repeats)):
            if not args.no_reference:
                report = run_reference(traces, Path(tmp), args.reference_venv, repeats=1)
                if report is not None:
                    reference = report
                    reference_wall += report["seconds"]
                    reference_cpu += report["cpu_seconds"]
            for name in names:
                wall_s, cpu_s, results[name] = time_call(traces, name)
                warm[name].append(wall_s)
                cpu[name].append(cpu_s)
    load_after = os.getloadavg()
    rows = []
    for name in names:
        row = dict(backend=name, cold_s=cold[name], warm_s=statistics.median(warm[name]), warm_runs_s=warm[name],
                   cpu_s=statistics.median(cpu[name]))
        if reference is not None:
            res = results[name]
            metrics = [cell_metrics(reference["s_counts"][i], reference["scalars"][i], res.s_counts[i], res.alpha[i],
                                    res.pve[i], int(res.iterations[i])) for i in range(args.cells)]
            row.update(
                speedup=statistics.median(reference_wall) / row["warm_s"],
                cpu_ratio=statistics.median(reference_cpu) / row["cpu_s"],
                cells_ok=sum(bool(m["ok"]) for m in metrics),
                min_corr=min(m["corr"] for m in metrics),
                max_total_rel=max(m["total_rel"] for m in metrics),
                max_alpha_rel=max(float(m["alpha_rel"]) for m in metrics),
                max_pve_abs=max(float(m["pve_abs"]) for m in metrics),
                max_iter_rel=max(float(m["iter_rel"]) for m in metrics),
            )
        rows.append(row)
    print(f"# solve_traces, {args.cells} cells x {args.frames} frames, u = 10, HP+LP, noise-constrained "
          f"({platform.node()}, {platform.processor() or platform.machine()}); {args.repeats} alternating runs; "
          f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    if reference is not None:
        print(f"reference calab {reference['version']} solve_trace loop: median {statistics.median(reference_wall):.1f} s wall "
              f"(runs {', '.join(f'{v:.1f}' for v in reference_wall)}), {statistics.median(reference_cpu):.1f} s CPU")
    header = "| backend | cold (s) | warm median (s) | warm runs (s) | CPU (s) | speed-up vs reference (wall, medians) | reference CPU / our CPU | cells meeting all parity criteria | min count corr | max |Δtotal|/total | max |Δalpha|/alpha | max |ΔPVE| | max |Δiter|/iter |"
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        runs = ", ".join(f"{v:.2f}" for v in row["warm_runs_s"])
        if reference is None:
            print(f"| {row['backend']} | {row['cold_s']:.1f} | {row['warm_s']:.2f} | {runs} | {row['cpu_s']:.1f} | – | – | – | – | – | – | – | – |")
        else:
            print(f"| {row['backend']} | {row['cold_s']:.1f} | {row['warm_s']:.2f} | {runs} | {row['cpu_s']:.1f} | {row['speedup']:.1f}× | {row['cpu_ratio']:.1f}× | "
                  f"{row['cells_ok']}/{args.cells} | {row['min_corr']:.4f} | {row['max_total_rel']:.3f} | "
                  f"{row['max_alpha_rel']:.3f} | {row['max_pve_abs']:.4f} | {row['max_iter_rel']:.3f} |")
    if args.json:
        payload = dict(cells=args.cells, frames=args.frames, settings=SETTINGS, repeats=args.repeats, rows=rows,
                       load_before=load_before, load_after=load_after,
                       reference=None if reference is None else dict(version=reference["version"], seconds=reference_wall,
                                                                     cpu_seconds=reference_cpu))
        args.json.write_text(json.dumps(payload, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
