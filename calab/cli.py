"""The ``calab`` command line.

Commands
--------
``calab demo``        simulate a dataset, deconvolve it, report accuracy and speed
``calab deconvolve``  batch-deconvolve a ``.npy`` with parameters exported from CaTune
``calab convert``     CaImAn / Minian / suite2p / NWB output -> CaTune ``.npy`` + sidecar
``calab info``        summarise a ``.npy``, a JSON file or a pipeline output
``calab doctor``      which compute backends work here, why not, devices and versions
``calab tune``        open CaTune in the browser (listed once calab has ``calab.tune``)
``calab cadecon``     automated deconvolution: ``--native`` runs the loop here, else CaDecon in the browser

Exit codes follow the published calab: 0 on success, 1 for errors the command reports
(printed as ``Error: ...`` on stderr, without a traceback), 2 for command-line usage
errors (argparse).  Set ``CALAB_DEBUG=1`` to get the full traceback of an error.

Outputs are written atomically and an existing file is never replaced unless
``--force`` is given.  Long computations show a progress bar when stderr is a
terminal and stay quiet when it is piped or redirected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_parser", "main"]

from calab._progress import PROGRESS_MIN_SAMPLES as _PROGRESS_MIN_SAMPLES
from calab._progress import cell_bar, stderr_is_tty

_BACKEND_CHOICES = ("auto", "numpy", "jax", "cupy")


class CommandError(Exception):
    """An error the command reports as ``Error: <message>`` with exit status 1."""


# --------------------------------------------------------------------------- helpers
def _stderr_is_tty() -> bool:
    return stderr_is_tty()


def _backend_arg(args: argparse.Namespace) -> str | None:
    # None (not "auto") when the flag is absent, so CALAB_BACKEND still applies.
    return getattr(args, "backend", None)


def _resolve_backend_name(backend: str | None) -> str:
    from calab.backends import resolve_backend

    return resolve_backend(backend).name


def _check_output(path: Path, force: bool, inputs: Sequence[Path] = ()) -> Path:
    """Fail before any computation if ``path`` cannot or must not be written."""
    from calab._atomic import check_writable

    for source in inputs:
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise CommandError(
                f"Output {path} is the input file; choose another output name with -o."
            )
    try:
        return check_writable(path, overwrite=force)
    except FileExistsError:
        raise CommandError(
            f"{path} already exists. Pass --force to overwrite it, or choose another name with -o."
        ) from None


def _read_traces(path_text: str) -> tuple[np.ndarray, float | None, Path]:
    """Traces from a ``.npy`` file or a save_for_tuning stem, as ``(n_cells, T)`` float64.

    Returns the traces, the sampling rate recorded in a sidecar (None if there is none),
    and the path of the ``.npy`` file read.
    """
    from calab.io import load_tuning_data, tuning_paths
    from calab.loaders._common import as_traces_2d, read_json_object, read_npy

    path = Path(path_text)
    npy_path, json_path = tuning_paths(path)
    if path.suffix == ".npy" and path.is_file():
        npy_path = path
        traces = read_npy(path)
        sidecar = {}
        if json_path.is_file():  # optional for a plain .npy: a broken one only warns
            try:
                sidecar = read_json_object(json_path, "Metadata file")
            except ValueError as exc:
                print(f"Warning: ignoring {json_path}: {exc}", file=sys.stderr)
    elif npy_path.is_file():
        traces, sidecar = load_tuning_data(path)
    else:
        raise FileNotFoundError(
            f"Trace file not found: {path}. Pass a .npy file or the stem of files written by "
            "calab.save_for_tuning / calab convert."
        )
    traces = as_traces_2d(traces, f"Trace file {npy_path}")
    fs = sidecar.get("sampling_rate_hz")
    fs = float(fs) if isinstance(fs, (int, float)) and not isinstance(fs, bool) and fs > 0 else None
    return traces, fs, npy_path


class _ProgressBar:
    """The library's progress policy (:mod:`calab._progress`) with the command's label.

    Does nothing unless stderr is a terminal and the job is big enough to take a while.
    """

    def __init__(self, label: str, cells: int, samples: int) -> None:
        self.enabled = _stderr_is_tty() and samples >= _PROGRESS_MIN_SAMPLES
        self.label, self.cells = label, cells
        self._bar: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            self._bar = cell_bar(self.cells, self.label)
        return self

    @property
    def callback(self) -> Any:
        """The engine's ``progress`` argument: our bar's update, or False when silent."""
        return self._bar.update if self._bar is not None else False

    def __exit__(self, *exc_info: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def _solve(
    traces: np.ndarray,
    fs: float,
    tau_rise: float,
    tau_decay: float,
    lam: float,
    *,
    full: bool,
    backend: str | None,
    label: str = "deconvolving",
) -> Any:
    """run_deconvolution(_full) over a 2-D batch, with a live indicator on a terminal."""
    from calab.deconvolution import run_deconvolution, run_deconvolution_full

    solve = run_deconvolution_full if full else run_deconvolution
    description = f"{label} {traces.shape[0]} cells x {traces.shape[1]} frames"
    with _ProgressBar(description, traces.shape[0], traces.size) as bar:
        return solve(traces, fs, tau_rise, tau_decay, lam, backend=backend, progress=bar.callback)


def _json_text(data: Any) -> str:
    from calab.loaders._common import jsonable

    return json.dumps(jsonable(data, "output"), indent=2)


def _write_files(files: Sequence[tuple[Path, Callable[[Any], object]]]) -> None:
    from calab._atomic import atomic_write_many

    atomic_write_many([(path, "wb", write) for path, write in files])


def _save_npy(array: np.ndarray) -> Callable[[Any], object]:
    return lambda handle: np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def _save_text(text: str) -> Callable[[Any], object]:
    return lambda handle: handle.write(text.encode("utf-8"))


def _bridge_function(name: str, command: str) -> Callable[..., Any]:
    import calab

    try:
        return getattr(calab, name)
    except AttributeError:
        raise CommandError(
            f"'calab {command}' needs the browser bridge (calab.{name}), which is not part of "
            "this calab build yet."
        ) from None


# --------------------------------------------------------------------------- tune / cadecon
def _cmd_tune(args: argparse.Namespace) -> int:
    traces, sidecar_fs, _ = _read_traces(args.file)
    fs = args.fs if args.fs is not None else sidecar_fs
    if fs is None:
        print("Error: --fs (sampling rate) is required", file=sys.stderr)
        return 1
    tune = _bridge_function("tune", "tune")
    params = tune(traces, fs, port=args.port, open_browser=not args.no_browser)
    if params is None:
        print("No parameters received.", file=sys.stderr)
        return 1
    print(json.dumps(params, indent=2))
    return 0


def _cmd_cadecon(args: argparse.Namespace) -> int:
    if args.out is not None:
        if not args.native:
            raise CommandError("--out (streamed output) runs the loop here: add --native")
        if args.output:
            raise CommandError("--out and --output are two kinds of output: pass one of them")
        return _cmd_cadecon_dataset(args)
    for flag, value in (("--resume", args.resume), ("--scheduler", args.scheduler),
                        ("--chunk-cells", args.chunk_cells), ("--format", args.source_format),
                        ("--sample-cells", args.sample_cells)):
        if value:
            raise CommandError(f"{flag} needs --native --out OUT.zarr (streamed output)")
    traces, sidecar_fs, npy_path = _read_traces(args.file)
    outputs: list[Path] = []
    if args.output:
        outputs = [Path(f"{args.output}_activity.npy"), Path(f"{args.output}_results.json")]
        for path in outputs:
            _check_output(path, args.force, [npy_path])
    fs = args.fs if args.fs is not None else (sidecar_fs if args.native and sidecar_fs else 30.0)
    if args.native:
        result = _run_native_cadecon(traces, fs, args)
    else:
        if not _has_bridge("decon"):
            raise CommandError("'calab cadecon' without --native needs the browser bridge (calab.decon), which is "
                               "not part of this calab build yet; pass --native to run the loop here.")
        decon = _bridge_function("decon", "cadecon")
        result = decon(traces, fs, port=args.port, open_browser=not args.no_browser)
    if result is None:
        print("No results received.", file=sys.stderr)
        return 1
    print(f"Activity shape: {tuple(result.activity.shape)}")
    print(f"Sampling rate: {result.fs} Hz")
    print(f"Alphas: {result.alphas!r}")
    print(f"Baselines: {result.baselines!r}")
    print(f"PVEs: {result.pves!r}")
    print(f"Kernel slow length: {len(result.kernel_slow)}")
    print(f"Kernel fast length: {len(result.kernel_fast)}")
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
        _write_files(
            [
                (outputs[0], _save_npy(np.asarray(result.activity, dtype=np.float32))),
                (outputs[1], _save_text(_json_text(summary))),
            ]
        )
        print(f"Saved to {outputs[0]} and {outputs[1]}")
    return 0


def _run_native_cadecon(traces: np.ndarray, fs: float, args: argparse.Namespace) -> Any:
    """``calab cadecon --native``: the automated loop in this process, with a progress bar."""
    from calab.cadecon import run_cadecon

    overrides = _cadecon_overrides(args)
    print(f"CaDecon (native) on {traces.shape[0]} cells x {traces.shape[1]} frames at {fs:g} Hz, "
          f"backend '{_resolve_backend_name(_backend_arg(args))}'", file=sys.stderr)
    result = run_cadecon(traces, fs, backend=_backend_arg(args), progress=None if _stderr_is_tty() else False,
                         **overrides)
    meta = result.metadata
    if meta["tau_rise"] is not None:
        print(f"Learned kernel: tau_rise {meta['tau_rise']:.4f} s, tau_decay {meta['tau_decay']:.4f} s "
              f"({_kernel_source(meta)})", file=sys.stderr)
    return result


def _kernel_source(meta: dict) -> str:
    """How run_cadecon found its kernel, in words (from its metadata)."""
    start = meta.get("initialization", {})
    if not start.get("refined", True) and start.get("method") == "bispectrum":
        return "fitted to the phase of the traces' bispectrum, no refinement rounds"
    converged = (f"converged at iteration {meta['converged_at_iteration']}" if meta["converged"]
                 else "not converged")
    return f"{start.get('method', 'given')} start, {meta['num_iterations']} refinement iterations, {converged}"


# --------------------------------------------------------------------------- deconvolve
def _cmd_deconvolve(args: argparse.Namespace) -> int:
    from calab.io import load_export_params

    traces, sidecar_fs, npy_path = _read_traces(args.file)
    params = load_export_params(args.params)
    output = Path(args.output)
    if output.suffix != ".npy":
        output = Path(f"{args.output}.npy")  # as numpy.save names it
    info_path = output.with_name(output.name[: -len(".npy")] + "_info.json")
    _check_output(output, args.force, [npy_path, Path(args.params)])
    if args.full:
        _check_output(info_path, args.force, [npy_path, Path(args.params)])

    fs = params["fs"]
    if sidecar_fs is not None and not math.isclose(sidecar_fs, fs, rel_tol=1e-6):
        print(
            f"Warning: the parameters were tuned at {fs} Hz but {npy_path} was recorded at "
            f"{sidecar_fs} Hz (its metadata); using {fs} Hz from {args.params}.",
            file=sys.stderr,
        )
    from calab.io import deconvolve_from_export

    backend = _backend_arg(args)
    description = f"deconvolving {traces.shape[0]} cells x {traces.shape[1]} frames"
    with _ProgressBar(description, traces.shape[0], traces.size) as bar:
        # The library function, filtering included: the command re-implements nothing.
        result = deconvolve_from_export(traces, args.params, return_full=args.full, backend=backend, progress=bar.callback)
    activity = result.activity if args.full else result
    files = [(output, _save_npy(activity))]
    if args.full:
        info = {
            "baseline": np.asarray(result.baseline).tolist(),
            "iterations": np.asarray(result.iterations).tolist(),
            "converged": np.asarray(result.converged).tolist(),
        }
        files.append((info_path, _save_text(json.dumps(info, indent=2))))
    _write_files(files)
    print(f"Saved activity to {output}")
    if args.full:
        print(f"Saved info to {info_path}")
    return 0


# --------------------------------------------------------------------------- convert
def _cmd_convert(args: argparse.Namespace) -> int:
    from calab.io import save_for_tuning, tuning_paths
    from calab.loaders import detect_format, load_any

    source = Path(args.file)
    fmt = args.format or detect_format(source)
    options: dict[str, Any] = {}
    if fmt == "suite2p":
        options = {"subtract_neuropil": not args.no_neuropil, "cells_only": not args.all_rois}
    elif args.no_neuropil or args.all_rois:
        raise CommandError("--no-neuropil and --all-rois apply to suite2p input only.")
    # Default stem: the input's name, written in the current directory (as published).
    # abspath (not resolve) normalises "." and ".." without following symlinks.
    stem = args.output or Path(os.path.abspath(source)).stem
    npy_path, json_path = tuning_paths(stem)
    for path in (npy_path, json_path):
        _check_output(path, args.force, [source])

    traces, meta = load_any(source, fmt, fs=args.fs, key=args.key, **options)
    fs = meta.get("sampling_rate_hz")
    if fs is None:
        print("Error: --fs is required (not found in source file)", file=sys.stderr)
        return 1
    save_for_tuning(traces, fs, stem, metadata={"source_format": fmt, **meta}, overwrite=args.force)
    print(f"Saved {traces.shape[0]} traces ({traces.shape[1]} timepoints) to {npy_path}")
    return 0


# --------------------------------------------------------------------------- info
def _npy_summary(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header only (fast for huge files, clear for bad ones)."""
    from calab.loaders._common import read_npy

    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                return shape, dtype
            if version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                return shape, dtype
        except (ValueError, SyntaxError, EOFError):
            pass
    array = read_npy(path)  # raises the descriptive error, or handles header v3
    return array.shape, array.dtype


def _cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"File not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy" and path.is_file():
        from calab.io import tuning_paths
        from calab.loaders._common import read_json_object

        shape, dtype = _npy_summary(path)
        nbytes = math.prod(shape) * dtype.itemsize
        print(f"File: {path}")
        print(f"  Shape: {shape}")
        print(f"  Dtype: {dtype}")
        print(f"  Size: {nbytes / 1024:.1f} KB")
        if len(shape) == 2:
            print(f"  Cells: {shape[0]}")
            print(f"  Timepoints: {shape[1]}")
        _, json_path = tuning_paths(path)
        if json_path.is_file():
            meta = read_json_object(json_path, "Metadata file")
            print(f"  Metadata: {json_path}")
            if "sampling_rate_hz" in meta:
                print(f"  Sampling rate: {meta['sampling_rate_hz']} Hz")
            if "schema_version" in meta:
                print(f"  Schema: v{meta['schema_version']}")
        return 0
    if suffix == ".json" and path.is_file():
        from calab.loaders._common import read_json_object

        data = read_json_object(path, "JSON file")
        print(f"File: {path}")
        if isinstance(data.get("parameters"), dict):
            print("  Type: CaTune export")
            if "schema_version" in data:
                print(f"  Schema: v{data['schema_version']}")
            for key, value in data["parameters"].items():
                print(f"  {key}: {value}")
        else:
            print(f"  Keys: {list(data)}")
        return 0

    from calab.loaders import detect_format, load_any

    try:
        fmt = detect_format(path)
    except ValueError:
        print(f"Unknown file type: {path.suffix or '(no extension)'}", file=sys.stderr)
        return 1
    options = {"cells_only": True} if fmt == "suite2p" else {}
    traces, meta = load_any(path, fmt, **options)
    print(f"File: {path}")
    print(f"  Format: {fmt}")
    print(f"  Shape: {traces.shape}")
    print(f"  Cells: {traces.shape[0]}")
    print(f"  Timepoints: {traces.shape[1]}")
    fs = meta.get("sampling_rate_hz")
    print(f"  Sampling rate: {fs} Hz" if fs else "  Sampling rate: unknown (pass --fs to calab convert)")
    if fs:
        print(f"  Duration: {traces.shape[1] / fs:.1f} s")
    return 0


# --------------------------------------------------------------------------- demo
def _binned(values: np.ndarray, width: int) -> np.ndarray:
    usable = values.shape[-1] // width * width
    return values[..., :usable].reshape(*values.shape[:-1], -1, width).sum(axis=-1)


def _rowwise_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=1) / np.where(denominator > 0, denominator, 1), np.nan)


def _demo_lambda(traces: np.ndarray) -> float:
    """A sparsity weight scaled to the data's noise (so the demo works for any size)."""
    noise = np.median(np.abs(np.diff(traces, axis=1)), axis=1) / (0.6745 * math.sqrt(2))
    return float(np.median(noise)) * _DEMO_LAMBDA_PER_NOISE


#: λ per unit of noise SD used by ``calab demo``: best of 0.01-5 on GCaMP6f simulations
#: (100 cells, seeds 42 and 7; median spike correlation 0.87-0.90, falling off above 2).
_DEMO_LAMBDA_PER_NOISE = 1.0


def _cmd_demo(args: argparse.Namespace) -> int:
    import calab

    try:
        simulate, presets = calab.simulate, calab.presets
    except (AttributeError, ImportError) as exc:
        raise CommandError(f"'calab demo' needs the simulator (calab.simulate): {exc}") from None
    if args.cells < 1 or args.frames < 16:
        raise CommandError("--cells must be >= 1 and --frames >= 16.")
    backend = _backend_arg(args)
    backend_name = _resolve_backend_name(backend)  # fail early on an unusable backend

    config = presets.gcamp6f(num_cells=args.cells, num_timepoints=args.frames, fs_hz=args.fs, seed=args.seed)
    fs = float(config.fs_hz)
    tau_rise, tau_decay = float(config.kernel.tau_rise_s), float(config.kernel.tau_decay_s)
    minutes = args.frames / fs / 60
    print(
        f"calab demo: {args.cells} simulated GCaMP6f cells x {args.frames} frames at {fs:g} Hz "
        f"({minutes:.1f} min each, seed {args.seed})"
    )
    started = time.perf_counter()
    simulation = simulate(config)
    simulate_s = time.perf_counter() - started
    traces = np.asarray(simulation.traces, dtype=np.float64)
    spikes = np.stack([np.asarray(cell.spikes, dtype=np.float64) for cell in simulation.ground_truth])
    print(f"  simulated in {simulate_s:.2f} s")

    from calab.backends import backend_info, get_backend

    lam = _demo_lambda(traces)
    print(f"Deconvolving on backend '{backend_name}' ({backend_info(backend_name).reason})")
    print(f"  kernel tau_rise {tau_rise} s, tau_decay {tau_decay} s; lambda {lam:.3g} (1 x noise SD)")
    compiled = get_backend(backend_name).compiles_per_shape
    if not compiled:
        # Numba kernels compile per dtype, not per shape: a tiny untimed call absorbs it.
        _solve(traces[:1, : min(256, traces.shape[1])], fs, tau_rise, tau_decay, lam, full=False, backend=backend)
    started = time.perf_counter()
    activity = _solve(traces, fs, tau_rise, tau_decay, lam, full=False, backend=backend, label="demo")
    solve_s = time.perf_counter() - started
    if compiled:
        # JAX/CuPy compile for each new shape; the second call shows the steady state a
        # user gets on every later call with data of this size.
        print(f"  first call {solve_s:.2f} s (includes one-time compilation for this shape)")
        started = time.perf_counter()
        activity = _solve(traces, fs, tau_rise, tau_decay, lam, full=False, backend=backend, label="demo")
        solve_s = time.perf_counter() - started

    width = max(1, round(0.1 * fs))  # 100 ms bins
    truth = _binned(spikes, width)
    decon_r = _rowwise_correlation(_binned(np.asarray(activity), width), truth)
    raw_r = _rowwise_correlation(_binned(traces, width), truth)
    with_spikes = int(np.isfinite(decon_r).sum())
    samples = traces.size
    recorded_s = args.frames / fs * args.cells
    print(f"  done in {solve_s:.2f} s: {samples / solve_s:,.0f} samples/s, "
          f"{args.cells / solve_s:,.1f} cells/s, {recorded_s / solve_s:,.0f}x real time")
    if with_spikes == 0:
        print("Accuracy: no simulated cell fired; run with more --frames.")
        return 0
    print(f"Accuracy vs ground truth ({with_spikes} cells with spikes, 100 ms bins, median over cells):")
    print(f"  correlation of inferred activity with true spikes: {np.nanmedian(decon_r):.3f}")
    print(f"  correlation of raw fluorescence with true spikes:  {np.nanmedian(raw_r):.3f}")
    if args.cadecon_cells > 0:
        _demo_cadecon(traces, spikes, fs, (tau_rise, tau_decay), decon_r, args.cadecon_cells, backend, width)
    print("Next: 'calab convert' brings in CaImAn/Minian/suite2p/NWB output; 'calab doctor' lists backends.")
    return 0


def _demo_cadecon(traces: np.ndarray, spikes: np.ndarray, fs: float, true_taus: tuple[float, float],
                  true_kernel_r: np.ndarray, max_cells: int, backend: str | None, width: int) -> None:
    """The automated path: learn the kernel with run_cadecon and compare it with the true one."""
    from calab.cadecon import run_cadecon
    from calab.cadecon.shape import tau_to_shape

    cells = min(max_cells, traces.shape[0])
    print(f"Automated deconvolution (CaDecon, kernel learned from the data) on {cells} cells:")
    started = time.perf_counter()
    result = run_cadecon(traces[:cells], fs, backend=backend, progress=None if _stderr_is_tty() else False)
    elapsed = time.perf_counter() - started
    meta = result.metadata
    if meta["tau_rise"] is None:
        print("  no kernel could be learned (see the warnings above)")
        return
    learned = (meta["tau_rise"], meta["tau_decay"])
    true_peak, learned_peak = tau_to_shape(*true_taus)[0], tau_to_shape(*learned)[0]
    print(f"  done in {elapsed:.1f} s (kernel {_kernel_source(meta)})")
    print(f"  kernel     true: tau_rise {true_taus[0]:.3f} s, tau_decay {true_taus[1]:.3f} s, peak at {1000 * true_peak:.0f} ms")
    print(f"          learned: tau_rise {learned[0]:.3f} s, tau_decay {learned[1]:.3f} s, peak at {1000 * learned_peak:.0f} ms "
          f"(decay {100 * (learned[1] / true_taus[1] - 1):+.1f}%, peak {100 * (learned_peak / true_peak - 1):+.1f}%)")
    truth = _binned(spikes[:cells], width)
    learned_r = _rowwise_correlation(_binned(np.asarray(result.activity, dtype=np.float64), width), truth)
    print(f"  correlation with true spikes ({meta['activity_kind']} at the learned kernel): {np.nanmedian(learned_r):.3f}"
          f"  vs FISTA with the true kernel: {np.nanmedian(true_kernel_r[:cells]):.3f}")


# --------------------------------------------------------------------------- doctor
_OPTIONAL = (
    ("jax", "jax", "pip install calab[jax]"),
    ("jaxlib", "jax", "pip install calab[jax]"),
    ("cupy", "cupy", "pip install calab[cuda12] or calab[cuda13]"),
    ("h5py", "h5py", "pip install calab[loaders]"),
    ("zarr", "zarr", "pip install calab[loaders]"),
    ("pynwb", "pynwb", "pip install calab[nwb] (optional: NWB files load without it)"),
    ("playwright", "playwright", "pip install calab[headless]"),
    ("dask", "dask", "pip install calab[dask]"),
    ("numba", "numba", "pip install numba (faster CPU backend)"),
)
_CORE = ("numpy", "scipy", "pydantic", "tqdm")


#: pip distributions that provide an import name, where they differ from it
_DISTRIBUTIONS = {"cupy": ("cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x")}


def _distribution_version(name: str) -> str | None:
    from importlib import metadata

    for candidate in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def _doctor_report() -> dict[str, Any]:
    import platform

    import calab
    from calab.backends import available_backends

    report: dict[str, Any] = {
        "calab": calab.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _distribution_version(name) for name in _CORE},
        "optional": {},
        "backends": {},
    }
    for name, distribution, hint in _OPTIONAL:
        version = _distribution_version(distribution if name != "jaxlib" else "jaxlib")
        report["optional"][name] = {"version": version, "install": None if version else hint}
    for name, info in available_backends(with_reasons=True).items():
        report["backends"][name] = {"usable": info.usable, "gpu": info.has_gpu, "detail": info.reason}
    try:
        report["default_backend"] = _resolve_backend_name(None)
    except Exception as exc:  # e.g. CALAB_BACKEND names an unusable backend
        report["default_backend"] = None
        report["default_backend_error"] = str(exc)
    report["calab_backend_env"] = os.environ.get("CALAB_BACKEND") or None
    return report


def _cmd_doctor(args: argparse.Namespace) -> int:
    report = _doctor_report()
    usable = [name for name, entry in report["backends"].items() if entry["usable"]]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if usable else 1
    print(f"calab {report['calab']} on Python {report['python']} ({report['platform']})")
    print("Packages:")
    for name, version in report["packages"].items():
        print(f"  {name:<11} {version or 'MISSING (pip install calab)'}")
    for name, entry in report["optional"].items():
        print(f"  {name:<11} {entry['version'] or 'not installed - ' + entry['install']}")
    print("Backends:")
    for name, entry in report["backends"].items():
        status = "usable" if entry["usable"] else "unavailable"
        kind = " (GPU)" if entry["gpu"] else ""
        print(f"  {name:<6} {status}{kind}: {entry['detail']}")
    if report.get("default_backend"):
        env = f" (CALAB_BACKEND={report['calab_backend_env']})" if report["calab_backend_env"] else ""
        print(f"Default backend: {report['default_backend']}{env}")
    else:
        print(f"Default backend: none usable: {report.get('default_backend_error')}")
    if not any(entry["gpu"] and entry["usable"] for entry in report["backends"].values()):
        print("No GPU backend is usable; calab runs on the CPU (NumPy). For a GPU install "
              "calab[cuda12] (CuPy) or jax[cuda12].")
    return 0 if usable else 1


# --------------------------------------------------------------------------- parser
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=_BACKEND_CHOICES, default=None,
        help="compute backend (default: CALAB_BACKEND or auto: CuPy GPU > JAX GPU > NumPy)",
    )


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _has_bridge(name: str) -> bool:
    import calab

    try:
        getattr(calab, name)
    except AttributeError:
        return False
    return True


def _add_tune_parser(commands: Any) -> None:
    tune = commands.add_parser("tune", help="Open CaTune for interactive tuning")
    tune.add_argument("file", help="Input .npy file or calab stem")
    tune.add_argument("--fs", type=_positive_float, help="Sampling rate (Hz)")
    tune.add_argument("--port", type=int, help="Server port")
    tune.add_argument("--no-browser", action="store_true", help="Don't open browser")
    tune.set_defaults(handler=_cmd_tune)


def _add_cadecon_parser(commands: Any) -> None:
    cadecon = commands.add_parser("cadecon", help="Automated deconvolution (CaDecon): learn the kernel from the data")
    cadecon.add_argument("file", help="Input .npy file or calab stem")
    cadecon.add_argument("--fs", type=_positive_float, default=None,
                         help="Sampling rate (Hz; default: the file's metadata with --native, else 30)")
    cadecon.add_argument("--port", type=int, help="Server port")
    cadecon.add_argument("--no-browser", action="store_true", help="Don't open browser")
    cadecon.add_argument("--output", "-o", help="Output path stem (writes STEM_activity.npy and STEM_results.json)")
    cadecon.add_argument("--native", action="store_true",
                         help="run the loop here in the terminal (no browser), on a compute backend")
    cadecon.add_argument("--max-iterations", type=int, default=None, help="--native: iteration cap (1-200)")
    cadecon.add_argument("--num-subsets", type=int, default=None, help="--native: number of subsets")
    cadecon.add_argument("--seed", type=int, default=None, help="--native: subset placement seed")
    _add_backend(cadecon)
    _add_force(cadecon)
    _add_dataset_options(cadecon, handler=False)
    cadecon.add_argument("--sample-cells", type=int, metavar="N", default=None,
                         help="--out: cells the kernel is learned from (default 1000, evenly spaced)")
    cadecon.set_defaults(handler=_cmd_cadecon)


def build_parser() -> argparse.ArgumentParser:
    """The ``calab`` argument parser (exposed for documentation and tests)."""
    import calab

    parser = argparse.ArgumentParser(
        prog="calab",
        description="CaLab: calcium imaging analysis tools (GPU-accelerated spike deconvolution).",
        epilog="Start with 'calab demo'; 'calab doctor' shows which backends work here.",
    )
    parser.add_argument("--version", action="version", version=f"calab {calab.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

    demo = commands.add_parser("demo", help="Simulate data, deconvolve it, report accuracy and speed")
    demo.add_argument("--cells", type=int, default=200, help="number of simulated cells (default 200)")
    demo.add_argument("--frames", type=int, default=9000, help="frames per cell (default 9000 = 5 min at 30 Hz)")
    demo.add_argument("--fs", type=_positive_float, default=30.0, help="frame rate in Hz (default 30)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    demo.add_argument("--cadecon-cells", type=int, default=50,
                      help="cells for the automated (kernel-learning) part; 0 skips it (default 50)")
    _add_backend(demo)
    demo.set_defaults(handler=_cmd_demo)

    deconvolve = commands.add_parser("deconvolve", help="Batch deconvolution")
    deconvolve.add_argument("file", help="Input .npy file (n_cells x n_timepoints) or calab stem")
    deconvolve.add_argument("--params", "-p", required=True, help="CaTune export JSON")
    deconvolve.add_argument("--output", "-o", default="activity.npy", help="Output file (default activity.npy)")
    deconvolve.add_argument("--full", action="store_true", help="Save full results (also <output>_info.json)")
    _add_backend(deconvolve)
    _add_force(deconvolve)
    deconvolve.set_defaults(handler=_cmd_deconvolve)
    _add_dataset_options(deconvolve)

    convert = commands.add_parser("convert", help="Convert to CaLab format")
    convert.add_argument("file", help="Input: CaImAn HDF5, Minian Zarr directory, suite2p plane folder or NWB file")
    convert.add_argument("--format", "-f", choices=("caiman", "minian", "suite2p", "nwb"),
                         help="input format (default: detected from the file)")
    convert.add_argument("--fs", type=_positive_float, help="Sampling rate (Hz)")
    convert.add_argument("--output", "-o", help="Output path stem (default: input name, in the current directory)")
    convert.add_argument("--key", help="trace key (CaImAn dataset path, Minian array) or NWB series name")
    convert.add_argument("--no-neuropil", action="store_true", help="suite2p: use raw F (no F - c*Fneu)")
    convert.add_argument("--all-rois", action="store_true", help="suite2p: keep ROIs that iscell rejects")
    _add_force(convert)
    convert.set_defaults(handler=_cmd_convert)

    info = commands.add_parser("info", help="Show file info")
    info.add_argument("file", help="Input file (.npy, .json, or a pipeline output)")
    info.set_defaults(handler=_cmd_info)

    doctor = commands.add_parser("doctor", help="Check backends, devices and installed versions")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_cmd_doctor)

    # The browser commands appear once calab has the bridge (calab.tune / calab.decon).
    if _has_bridge("tune"):
        _add_tune_parser(commands)
    # cadecon always exists: --native runs without the bridge.
    _add_cadecon_parser(commands)
    return parser


# --------------------------------------------------------------------------- whole datasets
def _add_dataset_options(deconvolve: argparse.ArgumentParser, handler: bool = True) -> None:
    """``calab deconvolve BIG --out OUT.zarr`` (and ``calab cadecon BIG --native --out``):
    stream a recording of any size (calab.datasets)."""
    group = deconvolve.add_argument_group(
        "whole datasets (streamed in chunks of cells to a Zarr store; any input format)"
    )
    group.add_argument("--out", metavar="OUT.zarr",
                       help="stream to this Zarr store instead of loading everything into memory")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted --out run (same parameters) where it stopped")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="solve chunks on a dask.distributed cluster (scheduler address, or 'local')")
    group.add_argument("--format", dest="source_format", choices=("zarr", "hdf5", "npy", "suite2p", "nwb"),
                       help="input format (default: detected)")
    group.add_argument("--key", help="Zarr array name, HDF5 dataset path (default estimates/C) or NWB series")
    group.add_argument("--chunk-cells", type=int, metavar="N", help="cells per chunk (default: from free memory)")
    if handler:
        deconvolve.set_defaults(handler=_cmd_deconvolve_any)


def _cmd_deconvolve_any(args: argparse.Namespace) -> int:
    if args.out is None:
        for flag, value in (("--resume", args.resume), ("--scheduler", args.scheduler),
                            ("--chunk-cells", args.chunk_cells), ("--format", args.source_format)):
            if value:
                raise CommandError(f"{flag} needs --out OUT.zarr (streamed output)")
        return _cmd_deconvolve(args)
    return _cmd_deconvolve_dataset(args)


def _dask_client(address: str | None) -> contextlib.AbstractContextManager:
    if address is None:
        return contextlib.nullcontext(None)
    from calab.loaders._common import require_module

    distributed = require_module("distributed", "use --scheduler", "pip install calab[dask]")
    if address == "local":
        return distributed.Client(distributed.LocalCluster())
    return distributed.Client(address)


def _cadecon_overrides(args: argparse.Namespace) -> dict:
    """The DeconConfig fields given on the command line."""
    return {name: getattr(args, name) for name in ("max_iterations", "num_subsets", "seed")
            if getattr(args, name, None) is not None}


def _stream_to_store(args: argparse.Namespace, stream: Any, **settings: Any) -> Any:
    """Run a ``calab.datasets`` streamer with the shared ``--out`` options and error reporting."""
    from calab.datasets import DatasetLockedError

    try:
        with _dask_client(args.scheduler) as client:
            return stream(
                args.file, args.out, key=args.key, fmt=args.source_format, backend=_backend_arg(args),
                chunk_cells=args.chunk_cells, resume=args.resume, overwrite=args.force,
                progress=None if _stderr_is_tty() else False, client=client, **settings,
            )
    except DatasetLockedError as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        if Path(args.out).is_dir():
            print(f"Stopped; finished chunks are kept in {args.out}: add --resume to continue.", file=sys.stderr)
        raise


def _cmd_deconvolve_dataset(args: argparse.Namespace) -> int:
    from calab.datasets import deconvolve_dataset
    from calab.io import load_export_params

    params = load_export_params(args.params)
    started = time.perf_counter()
    run = _stream_to_store(
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


def _cmd_cadecon_dataset(args: argparse.Namespace) -> int:
    """``calab cadecon BIG --native --out OUT.zarr``: learn the kernel on a sample, stream every cell."""
    from calab.datasets import cadecon_dataset
    from calab.datasets._cadecon import DEFAULT_SAMPLE_CELLS

    started = time.perf_counter()
    run = _stream_to_store(args, cadecon_dataset, fs=args.fs, sample_cells=args.sample_cells or DEFAULT_SAMPLE_CELLS,
                           **_cadecon_overrides(args))
    from calab.datasets._store import OutputStore

    parameters = OutputStore(run.output).read_manifest()["parameters"]
    seconds = time.perf_counter() - started
    resumed = f" ({run.chunks_resumed} of {run.chunks_total} chunks were already done)" if run.chunks_resumed else ""
    print(f"Learned kernel: tau_rise {parameters['tau_r']:.4f} s, tau_decay {parameters['tau_d']:.4f} s "
          f"(from {parameters['learned']['sample_cells']} of {run.n_cells} cells)")
    print(f"Deconvolved {run.n_cells} cells x {run.n_timepoints} frames in {seconds:.1f} s{resumed}")
    print(f"Saved to {run.output} (activity = spike counts, alpha, baseline, pve)")
    return 0


# --------------------------------------------------------------------------- entry point
_REPORTED_ERRORS = (CommandError, OSError, KeyError, ValueError, TypeError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``calab`` command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 for --help/--version
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `calab info x | head`: the reader left; not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    except _REPORTED_ERRORS as exc:
        if os.environ.get("CALAB_DEBUG"):
            traceback.print_exc()
        message = str(exc) if not isinstance(exc, KeyError) or len(exc.args) != 1 else str(exc.args[0])
        print(f"Error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
