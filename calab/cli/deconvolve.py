"""``calab deconvolve FILE``: batch deconvolution with a known kernel.

The kernel and λ come from the command line (``--tau-rise``, ``--tau-decay``,
``--lambda``) or from a parameters file (``-p``): a CaTune export, the dict
``calab.tune()`` returns, or ``STEM_results.json`` from ``calab cadecon -o``.  Values
typed on the command line override the file's.  With ``--out OUT.zarr`` a recording of
any size and format is streamed in chunks of cells (:func:`calab.datasets.deconvolve_dataset`),
optionally on a Dask cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calab.cli._common import (
    CommandError,
    ProgressBar,
    backend_arg,
    check_output,
    plot_path,
    read_traces,
    save_npy,
    save_text,
    sidecar_rate,
    write_figure,
    write_files,
)
from calab.cli._parsing import (
    add_backend,
    add_dataset_options,
    add_force,
    add_plot,
    command_parser,
    nonnegative_float,
    positive_float,
)
from calab.cli._streaming import stream_to_store

EXAMPLES = """\
examples:
  # the kernel of GCaMP6f (rise 0.1 s, decay 0.6 s) at 30 Hz; lambda defaults to each
  # cell's noise SD, a good start
  calab deconvolve traces.npy --fs 30 --tau-rise 0.1 --tau-decay 0.6 --plot fit.png

  # parameters from CaTune's Export, from calab.tune() saved as JSON, or the kernel
  # learned by 'calab cadecon FILE --native -o run'
  calab deconvolve traces.npy -p export.json
  calab deconvolve traces.npy -p run_results.json --lambda 2

  # a recording bigger than memory, streamed to a Zarr store
  calab deconvolve caiman_results.hdf5 --tau-rise 0.1 --tau-decay 0.6 --lambda 0.5 --out activity.zarr
"""


def add_parser(commands: Any) -> None:
    deconvolve = command_parser(
        commands, "deconvolve", help="Batch deconvolution with a known kernel (taus and lambda, or -p FILE)",
        description="Deconvolve every cell of FILE with one calcium kernel: non-negative FISTA, all cells "
                    "as one batch. Give the kernel with --tau-rise/--tau-decay (seconds) or a parameters "
                    "file with -p; options typed here override the file's values.",
        examples=EXAMPLES,
    )
    deconvolve.add_argument("file", help="input .npy file (n_cells x n_timepoints) or a calab stem "
                                         "(any format with --out)")
    deconvolve.add_argument("--params", "-p", metavar="JSON",
                            help="parameters: a CaTune export, calab.tune()'s dict saved as JSON, or "
                                 "STEM_results.json from 'calab cadecon -o STEM'")
    deconvolve.add_argument("--fs", type=positive_float, metavar="HZ",
                            help="sampling rate (default: the parameters file's, else the input's metadata)")
    deconvolve.add_argument("--tau-rise", type=positive_float, metavar="S", help="kernel rise time constant (s)")
    deconvolve.add_argument("--tau-decay", type=positive_float, metavar="S", help="kernel decay time constant (s)")
    deconvolve.add_argument("--lambda", dest="lam", type=nonnegative_float, metavar="X",
                            help="sparsity weight in the traces' units (default: the file's, else each "
                                 "cell's noise SD: larger keeps fewer, bigger events)")
    deconvolve.add_argument("--filter", action=argparse.BooleanOptionalAction, default=None,
                            help="band-pass each trace around the kernel first, as CaTune's noise filter "
                                 "(default: the file's setting, else off)")
    deconvolve.add_argument("--output", "-o", default="activity.npy", help="output file (default activity.npy)")
    deconvolve.add_argument("--full", action="store_true", help="save full results (also <output>_info.json)")
    add_plot(deconvolve)
    add_backend(deconvolve)
    add_force(deconvolve)
    deconvolve.set_defaults(handler=run)
    add_dataset_options(deconvolve)


@dataclass
class Settings:
    """Kernel, λ and filter for a run, and where each came from (for the printed summary)."""

    fs: float
    tau_rise: float
    tau_decay: float
    lam: float | None  # None: lambda_per_noise x each cell's noise SD
    lambda_per_noise: float
    filter_enabled: bool
    conv_mode: str  # "banded" reproduces run_cadecon's continuous activity exactly
    from_export_only: bool  # a CaTune export, nothing overridden: deconvolve_from_export itself

    def describe_lambda(self) -> str:
        if self.lam is not None:
            return f"lambda {self.lam:g}"
        return f"lambda {self.lambda_per_noise:g} x each cell's noise SD"


def resolve_settings(args: argparse.Namespace, sidecar_fs: float | None, input_name: str) -> Settings:
    """Merge the parameters file with the command-line options; refuse what cannot be right."""
    from calab._validate import millisecond_taus_message

    if (args.tau_rise is None) != (args.tau_decay is None):
        raise CommandError("give both --tau-rise and --tau-decay (seconds), or neither")
    file: dict[str, Any] = {}
    if args.params:
        from calab.io import read_parameters

        file = read_parameters(args.params)
    elif args.tau_rise is None:
        raise CommandError("give the kernel: --tau-rise S --tau-decay S (seconds, e.g. 0.1 and 0.6 for GCaMP6f), "
                           "or a parameters file with -p (a CaTune export, calab.tune()'s dict, or "
                           "STEM_results.json from 'calab cadecon -o STEM')")
    tau_rise = args.tau_rise if args.tau_rise is not None else file["tau_rise"]
    tau_decay = args.tau_decay if args.tau_decay is not None else file["tau_decay"]
    message = millisecond_taus_message(tau_rise, tau_decay, ("--tau-rise", "--tau-decay"))
    if message is not None:
        raise CommandError(message)
    if not tau_rise < tau_decay:
        raise CommandError(f"--tau-rise ({tau_rise:g} s) must be smaller than --tau-decay ({tau_decay:g} s)")
    fs = args.fs
    if fs is None:
        fs = file.get("fs")
        if fs is not None and sidecar_fs is not None and not math.isclose(sidecar_fs, fs, rel_tol=1e-6):
            print(f"Warning: the parameters were tuned at {fs} Hz but {input_name} was recorded at "
                  f"{sidecar_fs} Hz (its metadata); using {fs} Hz from {args.params}. Pass --fs to choose.",
                  file=sys.stderr)
        fs = fs if fs is not None else sidecar_fs
    if fs is None:
        raise CommandError(f"--fs (sampling rate in Hz) is required: neither {input_name} nor the parameters say it")
    lam = args.lam if args.lam is not None else file.get("lambda_")
    per_noise = file.get("lambda_per_noise") or 1.0
    filter_enabled = args.filter if args.filter is not None else bool(file.get("filter_enabled", False))
    overridden = any(value is not None for value in (args.fs, args.tau_rise, args.lam, args.filter))
    return Settings(float(fs), float(tau_rise), float(tau_decay), lam, float(per_noise), filter_enabled,
                    file.get("conv_mode", "fft"), file.get("kind") == "catune-export" and not overridden)


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        for flag, value in (("--resume", args.resume), ("--scheduler", args.scheduler),
                            ("--chunk-cells", args.chunk_cells), ("--format", args.source_format)):
            if value:
                raise CommandError(f"{flag} needs --out OUT.zarr (streamed output)")
        return run_in_memory(args)
    return run_dataset(args)


def run_in_memory(args: argparse.Namespace) -> int:
    """Load the whole ``.npy``, deconvolve it, write the activity (``--full`` info, ``--plot`` figure)."""
    from calab.filters import bandpass_filter
    from calab.noise import noise_sd

    traces, sidecar_fs, npy_path = read_traces(args.file)
    settings = resolve_settings(args, sidecar_fs, str(npy_path))
    output = Path(args.output)
    if output.suffix != ".npy":
        output = Path(f"{args.output}.npy")  # as numpy.save names it
    info_path = output.with_name(output.name[: -len(".npy")] + "_info.json")
    inputs = [npy_path] + ([Path(args.params)] if args.params else [])
    check_output(output, args.force, inputs)
    if args.full:
        check_output(info_path, args.force, inputs)
    figure_path = plot_path(args, inputs)

    full = args.full or figure_path is not None
    backend = backend_arg(args)
    description = f"deconvolving {traces.shape[0]} cells x {traces.shape[1]} frames"
    with ProgressBar(description, traces.shape[0], traces.size) as bar:
        if settings.from_export_only:
            # The library function, filtering included: the command re-implements nothing.
            from calab.io import deconvolve_from_export

            result = deconvolve_from_export(traces, args.params, return_full=full, backend=backend,
                                            progress=bar.callback)
        else:
            from calab.deconvolution import run_deconvolution, run_deconvolution_full

            lam = settings.lam if settings.lam is not None else settings.lambda_per_noise * noise_sd(traces)
            working = traces
            if settings.filter_enabled:
                working = bandpass_filter(traces, settings.tau_rise, settings.tau_decay, settings.fs, backend=backend)
            solve = run_deconvolution_full if full else run_deconvolution
            result = solve(working, settings.fs, settings.tau_rise, settings.tau_decay, lam,
                           conv_mode=settings.conv_mode, backend=backend, progress=bar.callback)
    activity = result.activity if full else result
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
    if figure_path is not None:
        working = traces
        if settings.filter_enabled:
            working = bandpass_filter(traces, settings.tau_rise, settings.tau_decay, settings.fs)
        from calab.plot import plot_deconvolution

        figure = plot_deconvolution(
            working, result, settings.fs, count=args.plot_cells,
            trace_label="band-passed trace" if settings.filter_enabled else "trace",
            title=f"calab deconvolve {Path(args.file).name}: tau_rise {settings.tau_rise:g} s, "
                  f"tau_decay {settings.tau_decay:g} s, {settings.describe_lambda()}",
        )
        write_figure(figure, figure_path, args.force)
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    """``--out OUT.zarr``: stream every cell to a Zarr store."""
    from calab.datasets import deconvolve_dataset, open_source

    source = open_source(args.file, key=args.key, fmt=args.source_format)
    source_fs = source.fs if source.fs is not None else sidecar_rate(args.file)
    source.close()
    settings = resolve_settings(args, source_fs, args.file)
    if settings.lam is None:
        raise CommandError("with --out, give --lambda X: the default (each cell's noise SD) would need a "
                           "first pass over the whole recording")
    figure_path = plot_path(args, [Path(args.file)])
    started = time.perf_counter()
    run = stream_to_store(
        args, deconvolve_dataset, fs=settings.fs, tau_r=settings.tau_rise, tau_d=settings.tau_decay,
        lam=settings.lam, bandpass=settings.filter_enabled, save_reconvolution=args.full,
    )
    seconds = time.perf_counter() - started
    solved_cells = min(run.n_cells, run.chunks_solved * run.chunk_cells)
    rate = f", {solved_cells / seconds:.0f} cells/s" if solved_cells and seconds > 0 else ""
    resumed = f" ({run.chunks_resumed} of {run.chunks_total} chunks were already done)" if run.chunks_resumed else ""
    print(f"Deconvolved {run.n_cells} cells x {run.n_timepoints} frames in {seconds:.1f} s{rate}{resumed}")
    print(f"Saved to {run.output} (activity, baseline, iterations, converged)")
    if figure_path is not None:
        plot_streamed_cells(args, settings, figure_path)
    return 0


#: ``--out --plot``: the figure's cells are the most active of this many first cells.
PLOT_SAMPLE_CELLS = 200


def plot_streamed_cells(args: argparse.Namespace, settings: Settings, figure_path: Path) -> None:
    """Figure for a streamed run: the first cells read again and solved in memory with the same settings."""
    from calab.datasets import open_source
    from calab.deconvolution import run_deconvolution_full
    from calab.filters import bandpass_filter
    from calab.plot import plot_deconvolution

    data = open_source(args.file, key=args.key, fmt=args.source_format)
    try:
        rows = np.asarray(data.read(0, min(PLOT_SAMPLE_CELLS, data.shape[0])), dtype=np.float64)
    finally:
        data.close()
    if settings.filter_enabled:
        rows = bandpass_filter(rows, settings.tau_rise, settings.tau_decay, settings.fs)
    result = run_deconvolution_full(rows, settings.fs, settings.tau_rise, settings.tau_decay, settings.lam,
                                    backend=backend_arg(args), progress=False)
    figure = plot_deconvolution(
        rows, result, settings.fs, count=args.plot_cells,
        trace_label="band-passed trace" if settings.filter_enabled else "trace",
        title=f"calab deconvolve {Path(args.file).name} (most active of the first {rows.shape[0]} cells)",
    )
    write_figure(figure, figure_path, args.force)
