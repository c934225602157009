"""Run automated OASIS cell by cell on traces from a ``.npy`` file (executed by the OASIS venv).

Invoked by ``bench/bench_cadecon_peers.py`` with that venv's interpreter, never imported
by calab.  Writes the spike estimates ``(n_cells, T)`` float64 to ``OUT.npy`` and prints
one JSON line: wall seconds per order.

    python _oasis_worker.py TRACES.npy OUT_PREFIX --orders 1,2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from oasis.functions import deconvolve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("traces")
    parser.add_argument("out_prefix")
    parser.add_argument("--orders", default="1,2")
    args = parser.parse_args()
    traces = np.load(args.traces).astype(np.float64)
    timings = {}
    for order in (int(o) for o in args.orders.split(",")):
        spikes = np.empty_like(traces)
        started = time.perf_counter()
        # "Automated": AR coefficients and noise estimated per cell, constrained foopsi
        # (penalty=1, OASIS's default), as a user calls it without any known kernel.
        for row, trace in enumerate(traces):
            spikes[row] = deconvolve(trace, g=(None,) * order, penalty=1)[1]
        timings[f"ar{order}"] = time.perf_counter() - started
        np.save(f"{args.out_prefix}_ar{order}.npy", spikes)
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
