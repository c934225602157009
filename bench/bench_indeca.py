#!/usr/bin/env python
"""Benchmark ``calab.solve_traces`` (batched InDeCa) against calab 0.3.0's cell-by-cell ``solve_trace``.

Run under the shared lock, with the venv that has OUR calab::

    python bench/bench_indeca.py                 # 20 x 9000, u = 10 (--lock PATH on a shared machine)
    python bench/bench_indeca.py --cells 20 --frames 9000 --backends numpy,jax --json out.json
    python bench/bench_indeca.py --cells 1000 --frames 27000 --no-reference   # memory chunking

Settings are the CaDecon app's: gcamp6f taus (0.1/0.6 s), fs 30 Hz, upsample factor 10
(300 Hz), band-pass on, noise-constrained thresholds, 500 FISTA iterations, tol 1e-4.
Data: ``bench/_data.make_traces`` (raw fluorescence, F0 ~ 1000, ~100 per spike).

Per backend it reports the wall time of a cold call (includes Numba/JIT compilation) and
of a warm call, the speed-up of the warm call over the reference's loop measured in the
same run, and the agreement with the reference per cell (the per-cell parity criteria:
count correlation, total count, alpha, PVE, iterations).
"""

from __future__ import annotations

import argparse
import json
import platform
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


def run_reference(traces: np.ndarray, workdir: Path, venv: str | None) -> dict | None:
    python = reference_env.reference_python(venv)
    if python is None:
        return None
    path = workdir / "traces.npy"
    np.save(path, traces)
    proc = subprocess.run([str(python), str(WORKER), str(path), json.dumps(SETTINGS)], cwd=str(workdir),
                          env=reference_env.reference_subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return None
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(report["outputs"]) as data:
        report["s_counts"], report["scalars"] = data["s_counts"], data["scalars"]
    return report


def time_ours(traces: np.ndarray, backend: str) -> dict:
    start = time.perf_counter()
    calab.solve_traces(traces, **SETTINGS, backend=backend)
    cold = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    result = calab.solve_traces(traces, **SETTINGS, backend=backend)
    warm = time.perf_counter() - start
    return dict(cold_s=cold, warm_s=warm, cpu_s=time.process_time() - cpu_start, result=result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--frames", type=int, default=9000)
    parser.add_argument("--backends", default="numpy,jax")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--reference-venv", default=None)
    parser.add_argument("--json", type=Path, default=None)
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)

    traces = make_traces(args.cells, args.frames, seed=0)
    reference = None
    if not args.no_reference:
        with tempfile.TemporaryDirectory(prefix="calab-bench-indeca-") as tmp:
            reference = run_reference(traces, Path(tmp), args.reference_venv)
    rows = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        from calab.backends import backend_info

        if not backend_info(name).usable:
            print(f"skipping {name}: {backend_info(name).reason}", file=sys.stderr)
            continue
        timing = time_ours(traces, name)
        row = dict(backend=name, cold_s=timing["cold_s"], warm_s=timing["warm_s"], cpu_s=timing["cpu_s"])
        if reference is not None:
            res = timing["result"]
            metrics = [cell_metrics(reference["s_counts"][i], reference["scalars"][i], res.s_counts[i], res.alpha[i],
                                    res.pve[i], int(res.iterations[i])) for i in range(args.cells)]
            row.update(
                speedup=reference["seconds"] / timing["warm_s"],
                cpu_ratio=reference["cpu_seconds"] / timing["cpu_s"],
                cells_ok=sum(bool(m["ok"]) for m in metrics),
                min_corr=min(m["corr"] for m in metrics),
                max_total_rel=max(m["total_rel"] for m in metrics),
                max_alpha_rel=max(float(m["alpha_rel"]) for m in metrics),
                max_pve_abs=max(float(m["pve_abs"]) for m in metrics),
                max_iter_rel=max(float(m["iter_rel"]) for m in metrics),
            )
        rows.append(row)
    print(f"# solve_traces, {args.cells} cells x {args.frames} frames, u = 10, HP+LP, noise-constrained "
          f"({platform.node()}, {platform.processor() or platform.machine()})")
    if reference is not None:
        print(f"reference calab {reference['version']} solve_trace loop: {reference['seconds']:.1f} s wall, "
              f"{reference['cpu_seconds']:.1f} s CPU ({np.mean(reference['per_cell_s']):.2f} s/cell)")
    header = "| backend | cold (s) | warm (s) | CPU (s) | speed-up vs reference (wall) | reference CPU / our CPU | cells meeting all parity criteria | min count corr | max |Δtotal|/total | max |Δalpha|/alpha | max |ΔPVE| | max |Δiter|/iter |"
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if reference is None:
            print(f"| {row['backend']} | {row['cold_s']:.1f} | {row['warm_s']:.1f} | {row['cpu_s']:.1f} | – | – | – | – | – | – | – | – |")
        else:
            print(f"| {row['backend']} | {row['cold_s']:.1f} | {row['warm_s']:.1f} | {row['cpu_s']:.1f} | {row['speedup']:.1f}× | {row['cpu_ratio']:.1f}× | "
                  f"{row['cells_ok']}/{args.cells} | {row['min_corr']:.4f} | {row['max_total_rel']:.3f} | "
                  f"{row['max_alpha_rel']:.3f} | {row['max_pve_abs']:.4f} | {row['max_iter_rel']:.3f} |")
    if args.json:
        payload = dict(cells=args.cells, frames=args.frames, settings=SETTINGS, rows=rows,
                       reference=None if reference is None else dict(version=reference["version"], seconds=reference["seconds"], cpu_seconds=reference["cpu_seconds"],
                                                                     per_cell_s=reference["per_cell_s"]))
        args.json.write_text(json.dumps(payload, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
