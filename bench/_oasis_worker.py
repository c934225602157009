"""Run automated OASIS cell by cell on traces from a ``.npy`` file (executed by the OASIS venv).

Invoked by ``bench/bench_cadecon_peers.py`` (and ``tools/groundtruth_study.py rates``) with
that venv's interpreter, never imported by calab.  Writes the spike estimates ``(n_cells, T)``
float64 to ``OUT_PREFIX_arK.npy`` and prints one JSON line: wall seconds per order.  Traces of
different lengths come as an ``.npz`` (``arr_0``, ``arr_1``, ... as ``np.savez`` names them)
and go back as ``OUT_PREFIX_arK.npz`` under the same names.

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
    ragged = args.traces.endswith(".npz")
    if ragged:
        with np.load(args.traces) as archive:
            names = sorted(archive.files, key=lambda name: int(name.split("_")[1]))
            traces = [archive[name].astype(np.float64) for name in names]
    else:
        traces = np.load(args.traces).astype(np.float64)
    timings = {}
    for order in (int(o) for o in args.orders.split(",")):
        started = time.perf_counter()
        # "Automated": AR coefficients and noise estimated per cell, constrained foopsi
        # (penalty=1, OASIS's default), as a user calls it without any known kernel.
        spikes = [deconvolve(trace, g=(None,) * order, penalty=1)[1] for trace in traces]
        timings[f"ar{order}"] = time.perf_counter() - started
        if ragged:
            np.savez(f"{args.out_prefix}_ar{order}.npz", *spikes)
        else:
            np.save(f"{args.out_prefix}_ar{order}.npy", np.array(spikes))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
