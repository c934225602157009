"""``calab deconvolve FILE -p PARAMS.json``: batch deconvolution with parameters exported from CaTune.

With ``--out OUT.zarr`` a recording of any size and format is streamed in chunks of cells
(:func:`calab.datasets.deconvolve_dataset`), optionally on a Dask cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from calab.cli._common import (
    CommandError,
    ProgressBar,
    backend_arg,
    check_output,
    read_traces,
    save_npy,
    save_text,
    write_files,
)
from calab.cli._parsing import add_backend, add_dataset_options, add_force
from calab.cli._streaming import stream_to_store


def add_parser(commands: Any) -> None:
    deconvolve = commands.add_parser("deconvolve", help="Batch deconvolution")
    deconvolve.add_argument("file", help="Input .npy file (n_cells x n_timepoints) or calab stem")
    deconvolve.add_argument("--params", "-p", required=True, help="CaTune export JSON")
    deconvolve.add_argument("--output", "-o", default="activity.npy", help="Output file (default activity.npy)")
    deconvolve.add_argument("--full", action="store_true", help="Save full results (also <output>_info.json)")
    add_backend(deconvolve)
    add_force(deconvolve)
    deconvolve.set_defaults(handler=run)
    add_dataset_options(deconvolve)


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        for flag, value in (("--resume", args.resume), ("--scheduler", args.scheduler),
                            ("--chunk-cells", args.chunk_cells), ("--format", args.source_format)):
            if value:
                raise CommandError(f"{flag} needs --out OUT.zarr (streamed output)")
        return run_in_memory(args)
    return run_dataset(args)


def run_in_memory(args: argparse.Namespace) -> int:
    """Load the whole ``.npy``, deconvolve it, write the activity (and ``--full`` info)."""
    from calab.io import deconvolve_from_export, load_export_params

    traces, sidecar_fs, npy_path = read_traces(args.file)
    params = load_export_params(args.params)
    output = Path(args.output)
    if output.suffix != ".npy":
        output = Path(f"{args.output}.npy")  # as numpy.save names it
    info_path = output.with_name(output.name[: -len(".npy")] + "_info.json")
    check_output(output, args.force, [npy_path, Path(args.params)])
    if args.full:
        check_output(info_path, args.force, [npy_path, Path(args.params)])

    fs = params["fs"]
    if sidecar_fs is not None and not math.isclose(sidecar_fs, fs, rel_tol=1e-6):
        print(
            f"Warning: the parameters were tuned at {fs} Hz but {npy_path} was recorded at "
            f"{sidecar_fs} Hz (its metadata); using {fs} Hz from {args.params}.",
            file=sys.stderr,
        )

    description = f"deconvolving {traces.shape[0]} cells x {traces.shape[1]} frames"
    with ProgressBar(description, traces.shape[0], traces.size) as bar:
        # The library function, filtering included: the command re-implements nothing.
        result = deconvolve_from_export(traces, args.params, return_full=args.full, backend=backend_arg(args),
                                        progress=bar.callback)
    activity = result.activity if args.full else result
    files = [(output, save_npy(activity))]
    if args.full:
        info = {
            "baseline": np.asarray(result.baseline).tolist(),
            "iterations": np.asarray(result.iterations).tolist(),
            "converged": np.asarray(result.converged).tolist(),
        }
        files.append((info_path, save_text(json.dumps(info, indent=2))))
    write_files(files)
    print(f"Saved activity to {output}")
    if args.full:
        print(f"Saved info to {info_path}")
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    """``--out OUT.zarr``: stream every cell to a Zarr store."""
    from calab.datasets import deconvolve_dataset
    from calab.io import load_export_params

    params = load_export_params(args.params)
    started = time.perf_counter()
    run = stream_to_store(
        args, deconvolve_dataset, fs=params["fs"], tau_r=params["tau_rise"], tau_d=params["tau_decay"],
        lam=params["lambda_"], bandpass=bool(params["filter_enabled"]), save_reconvolution=args.full,
    )
    seconds = time.perf_counter() - started
    solved_cells = min(run.n_cells, run.chunks_solved * run.chunk_cells)
    rate = f", {solved_cells / seconds:.0f} cells/s" if solved_cells and seconds > 0 else ""
    resumed = f" ({run.chunks_resumed} of {run.chunks_total} chunks were already done)" if run.chunks_resumed else ""
    print(f"Deconvolved {run.n_cells} cells x {run.n_timepoints} frames in {seconds:.1f} s{rate}{resumed}")
    print(f"Saved to {run.output} (activity, baseline, iterations, converged)")
    return 0
