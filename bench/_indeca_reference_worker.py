"""Time the published ``calab==0.3.0`` ``solve_trace`` cell by cell — runs INSIDE the reference venv.

Launched by ``bench/bench_indeca.py`` with the reference venv's interpreter, from a working
directory outside the repository.  Reads the traces from a ``.npy`` file and the settings
from a JSON string, calls ``calab.solve_trace`` once per cell (the only way the reference
offers), saves counts and scalars next to the traces and prints one JSON line::

    {"version": "0.3.0", "seconds": ..., "cpu_seconds": ..., "per_cell_s": [...], "outputs": "..."}

An optional third argument runs the loop that many times (``seconds``/``cpu_seconds`` are
then the lists of every run's times; the outputs are the last run's, all runs agree).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
from pathlib import Path

import numpy as np

import calab  # the reference, thanks to the interpreter we are run with


def main(argv: list[str]) -> int:
    traces = np.load(argv[1])
    settings = json.loads(argv[2])
    repeats = int(argv[3]) if len(argv) > 3 else None
    wall, cpu = [], []
    for _ in range(repeats or 1):
        counts, scalars, per_cell = [], [], []
        start = time.perf_counter()
        cpu_start = time.process_time()
        for row in traces:
            t0 = time.perf_counter()
            result = calab.solve_trace(row, **settings)
            per_cell.append(time.perf_counter() - t0)
            counts.append(np.asarray(result.s_counts, dtype=np.float32))
            scalars.append([result.alpha, result.baseline, result.threshold, result.pve, result.iterations, float(result.converged)])
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    outputs = Path(argv[1]).with_name("reference_outputs.npz")
    np.savez(outputs, s_counts=np.stack(counts), scalars=np.asarray(scalars))
    seconds, cpu_seconds = (wall, cpu) if repeats else (wall[0], cpu[0])
    print(json.dumps({"version": importlib.metadata.version("calab"), "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "per_cell_s": per_cell, "outputs": str(outputs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
