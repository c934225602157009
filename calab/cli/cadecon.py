"""``calab cadecon FILE``: automated deconvolution, the kernel learned from the data.

``--native`` runs the loop in this process (``--out OUT.zarr`` streams a whole dataset);
without it the CaDecon page runs in the browser over the bridge.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from calab.cli._common import (
    CommandError,
    backend_arg,
    bridge_function,
    check_output,
    json_text,
    plot_path,
    read_traces,
    resolve_backend_name,
    save_npy,
    save_text,
    terminal_progress,
    write_figure,
    write_files,
)
from calab.cli._parsing import (
    add_backend,
    add_dataset_options,
    add_force,
    add_plot,
    command_parser,
    positive_float,
)
from calab.cli._streaming import stream_to_store

EXAMPLES = """\
examples:
  # learn the kernel from the data and deconvolve every cell, here in the terminal
  calab cadecon traces.npy --native --fs 30
  # ... and save the activity (run_activity.npy), the kernel and a figure
  calab cadecon traces.npy --native --fs 30 -o run --plot run.png
  # reuse the learned kernel on another recording
  calab deconvolve other.npy -p run_results.json

  # the CaDecon page in the browser (Export to Python returns the result)
  calab cadecon traces.npy --fs 30
"""


def add_parser(commands: Any) -> None:
    cadecon = command_parser(
        commands, "cadecon", help="Automated deconvolution (CaDecon): learn the kernel from the data",
        description="Learn the calcium kernel from the traces themselves, then deconvolve every cell with "
                    "it. --native runs here in the terminal; without it the CaDecon page opens in the "
                    "browser.",
        examples=EXAMPLES,
    )
    cadecon.add_argument("file", help="Input .npy file or calab stem")
    cadecon.add_argument("--fs", type=positive_float, default=None,
                         help="Sampling rate (Hz; default: the file's metadata with --native, else 30)")
    cadecon.add_argument("--port", type=int, help="Server port (0-65535; default: any free port)")
    cadecon.add_argument("--no-browser", action="store_true", help="Don't open browser")
    cadecon.add_argument("--output", "-o", help="Output path stem (writes STEM_activity.npy and STEM_results.json)")
    cadecon.add_argument("--native", action="store_true",
                         help="run the loop here in the terminal (no browser), on a compute backend")
    cadecon.add_argument("--max-iterations", type=int, default=None, help="--native: iteration cap (1-200)")
    cadecon.add_argument("--num-subsets", type=int, default=None, help="--native: number of subsets")
    cadecon.add_argument("--seed", type=int, default=None, help="--native: subset placement seed")
    cadecon.add_argument("--counts", action="store_true", default=None,
                         help="--native: also count whole events in every cell (several times slower); the "
                              "summary then gives spikes per cell, and alphas/pves describe the counts")
    add_plot(cadecon)
    add_backend(cadecon)
    add_force(cadecon)
    add_dataset_options(cadecon)
    cadecon.add_argument("--sample-cells", type=int, metavar="N", default=None,
                         help="--out: cells the kernel is learned from (default 1000, evenly spaced)")
    cadecon.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from calab import cli

    if args.out is not None:
        if not args.native:
            raise CommandError("--out (streamed output) runs the loop here: add --native")
        if args.output:
            raise CommandError("--out and --output are two kinds of output: pass one of them")
        return run_dataset(args)
    for flag, value in (("--resume", args.resume), ("--scheduler", args.scheduler),
                        ("--chunk-cells", args.chunk_cells), ("--format", args.source_format),
                        ("--sample-cells", args.sample_cells)):
        if value:
            raise CommandError(f"{flag} needs --native --out OUT.zarr (streamed output)")
    if args.native:
        config_overrides(args)  # refuse bad settings before reading the recording
    traces, sidecar_fs, npy_path = read_traces(args.file)
    outputs: list[Path] = []
    if args.output:
        outputs = [Path(f"{args.output}_activity.npy"), Path(f"{args.output}_results.json")]
        for path in outputs:
            check_output(path, args.force, [npy_path])
    figure_path = plot_path(args, [npy_path])
    fs = args.fs if args.fs is not None else (sidecar_fs if args.native and sidecar_fs else 30.0)
    if args.native:
        result = run_native(traces, fs, args)
    else:
        if not cli._has_bridge("decon"):
            raise CommandError("'calab cadecon' without --native needs the browser bridge (calab.decon), which is "
                               "not part of this calab build yet; pass --native to run the loop here.")
        decon = bridge_function("decon", "cadecon")
        result = decon(traces, fs, port=args.port, open_browser=not args.no_browser)
    if result is None:
        print("No results received.", file=sys.stderr)
        return 1
    from calab.cadecon.display import cadecon_summary

    for line in cadecon_summary(result, traces.shape):
        print(line)
    if outputs:
        # Whole-recording arrays stay out of the JSON (the activity has its own .npy).
        metadata = {key: value for key, value in result.metadata.items()
                    if key not in ("continuous_activity", "counts")}
        summary = {
            "alphas": np.asarray(result.alphas).tolist(),
            "baselines": np.asarray(result.baselines).tolist(),
            "pves": np.asarray(result.pves).tolist(),
            "fs": result.fs,
            "kernel_slow_length": len(result.kernel_slow),
            "kernel_fast_length": len(result.kernel_fast),
            "metadata": metadata,
        }
        write_files(
            [
                (outputs[0], save_npy(np.asarray(result.activity, dtype=np.float32))),
                (outputs[1], save_text(json_text(summary))),
            ]
        )
        print(f"Saved to {outputs[0]} and {outputs[1]}")
        print(f"Reuse the kernel on other recordings: calab deconvolve OTHER.npy -p {outputs[1]}")
    else:
        print(f"Nothing was saved. To save the activity and the kernel: calab {' '.join(save_command(args))}")
    if figure_path is not None:
        if result.metadata.get("tau_rise") is None or isinstance(result.activity, list):
            raise CommandError("no figure: the run learned no kernel (see the warnings above)")
        figure = result.plot(traces, count=args.plot_cells, backend=backend_arg(args),
                             title=f"calab cadecon {Path(args.file).name}")
        write_figure(figure, figure_path, args.force)
    return 0


def save_command(args: argparse.Namespace) -> list[str]:
    """This run's command with ``-o STEM`` added (STEM from the input's name)."""
    import shlex

    stem = Path(args.file).name
    stem = stem[: -len(".npy")] if stem.endswith(".npy") else stem
    words = ["cadecon", args.file] + (["--native"] if args.native else [])
    if args.fs is not None:
        words += ["--fs", f"{args.fs:g}"]
    for flag, value in (("--max-iterations", args.max_iterations), ("--num-subsets", args.num_subsets),
                        ("--seed", args.seed), ("--backend", args.backend)):
        if value is not None:
            words += [flag, str(value)]
    if getattr(args, "counts", None):
        words.append("--counts")
    return [shlex.quote(word) for word in words] + ["-o", shlex.quote(f"{stem}_cadecon")]


def run_native(traces: np.ndarray, fs: float, args: argparse.Namespace) -> Any:
    """``calab cadecon --native``: the automated loop in this process, with a progress bar."""
    from calab.cadecon import CaDeconWarning, run_cadecon

    overrides = config_overrides(args)
    print(f"CaDecon (native) on {traces.shape[0]} cells x {traces.shape[1]} frames at {fs:g} Hz, "
          f"backend '{resolve_backend_name(backend_arg(args))}'", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaDeconWarning)  # the summary lists them
        return run_cadecon(traces, fs, backend=backend_arg(args), progress=terminal_progress(), **overrides)


def config_overrides(args: argparse.Namespace) -> dict:
    """The DeconConfig fields given on the command line, checked by DeconConfig (a bad one
    is a pydantic error, which ``main`` prints as one line) before any data is read."""
    from calab.cadecon import DeconConfig

    overrides = {name: getattr(args, name) for name in ("max_iterations", "num_subsets", "seed", "counts")
                 if getattr(args, name, None) is not None}
    DeconConfig(**overrides)
    return overrides


def run_dataset(args: argparse.Namespace) -> int:
    """``calab cadecon BIG --native --out OUT.zarr``: learn the kernel on a sample, stream every cell."""
    from calab.datasets import cadecon_dataset
    from calab.datasets._cadecon import DEFAULT_SAMPLE_CELLS
    from calab.datasets._store import OutputStore

    started = time.perf_counter()
    # 0 is refused by cadecon_dataset, as --chunk-cells 0 is; only an absent flag means the default
    sample_cells = DEFAULT_SAMPLE_CELLS if args.sample_cells is None else args.sample_cells
    run = stream_to_store(args, cadecon_dataset, fs=args.fs, sample_cells=sample_cells, **config_overrides(args))
    parameters = OutputStore(run.output).read_manifest()["parameters"]
    seconds = time.perf_counter() - started
    resumed = f" ({run.chunks_resumed} of {run.chunks_total} chunks were already done)" if run.chunks_resumed else ""
    print(f"Learned kernel: tau_rise {parameters['tau_r']:.4f} s, tau_decay {parameters['tau_d']:.4f} s "
          f"(from {parameters['learned']['sample_cells']} of {run.n_cells} cells)")
    print(f"Deconvolved {run.n_cells} cells x {run.n_timepoints} frames in {seconds:.1f} s{resumed}")
    print(f"Saved to {run.output} (activity = spike counts, alpha, baseline, pve)")
    return 0
