"""Time the published ``calab==0.3.0`` — runs INSIDE the reference venv.

Launched by ``bench/bench_deconvolution.py`` with the reference venv's interpreter, from a
working directory outside the repository (so our own ``calab`` cannot shadow the
reference).  It reads the traces from a ``.npy`` file, runs
``calab.run_deconvolution_full`` once cold and ``--repeats`` more times per conv mode,
saves the activity of the last run next to the traces (for an agreement check) and
prints one JSON line on stdout::

    {"version": "0.3.0", "results": {"fft": {"first_s": ..., "times_s": [...],
     "mean_iterations": ..., "converged_fraction": ..., "activity_path": "..."}, ...}}
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from pathlib import Path

import numpy as np

import calab  # the reference, thanks to the interpreter we are run with


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, time the reference, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", required=True, type=Path, help=".npy file, (cells, frames) float64")
    parser.add_argument("--fs", type=float, required=True)
    parser.add_argument("--tau-r", type=float, required=True)
    parser.add_argument("--tau-d", type=float, required=True)
    parser.add_argument("--lam", type=float, required=True)
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--modes", default="fft,banded")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    version = importlib.metadata.version("calab")
    if "site-packages" not in str(Path(calab.__file__)):
        raise SystemExit(f"expected the installed reference calab, imported {calab.__file__}")
    traces = np.load(args.traces, allow_pickle=False)
    results: dict[str, dict] = {}
    for mode in [m for m in args.modes.split(",") if m]:
        call = dict(fs=args.fs, tau_r=args.tau_r, tau_d=args.tau_d, lam=args.lam, max_iters=args.max_iters, conv_mode=mode)
        start = time.perf_counter()
        result = calab.run_deconvolution_full(traces, **call)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = calab.run_deconvolution_full(traces, **call)
            times.append(time.perf_counter() - start)
        activity_path = args.traces.with_name(f"reference_activity_{mode}.npy")
        np.save(activity_path, np.asarray(result.activity, dtype=np.float32))
        iterations = np.atleast_1d(result.iterations)
        results[mode] = dict(
            first_s=first,
            times_s=times,
            mean_iterations=float(np.mean(iterations)),
            converged_fraction=float(np.mean(np.atleast_1d(result.converged))),
            activity_path=str(activity_path),
        )
    print(json.dumps({"version": version, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
