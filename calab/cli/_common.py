"""Pieces every command shares: reading traces, checking and writing outputs, progress, errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calab._progress import cell_bar


class CommandError(Exception):
    """An error the command reports as ``Error: <message>`` with exit status 1."""


def _package() -> Any:
    """:mod:`calab.cli`, read at call time.

    The terminal test and the progress threshold live on the package so that one
    replacement there (a test, an embedding application) reaches every command.
    """
    from calab import cli

    return cli


def terminal_progress() -> bool | None:
    """The ``progress`` argument for library calls: automatic on a terminal, off when piped."""
    return None if _package()._stderr_is_tty() else False


def backend_arg(args: argparse.Namespace) -> str | None:
    # None (not "auto") when the flag is absent, so CALAB_BACKEND still applies.
    return getattr(args, "backend", None)


def resolve_backend_name(backend: str | None) -> str:
    from calab.backends import resolve_backend

    return resolve_backend(backend).name


def check_output(path: Path, force: bool, inputs: Sequence[Path] = ()) -> Path:
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


def read_traces(path_text: str) -> tuple[np.ndarray, float | None, Path]:
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
    from calab._validate import transposed_message

    fix = f"save it with cells as rows: numpy.save('{npy_path}', numpy.load('{npy_path}').T)"
    looks_transposed = transposed_message(traces.shape, str(npy_path), fix=fix)
    if looks_transposed:
        print(f"Warning: {looks_transposed}", file=sys.stderr)
    fs = sidecar.get("sampling_rate_hz")
    fs = float(fs) if isinstance(fs, (int, float)) and not isinstance(fs, bool) and fs > 0 else None
    return traces, fs, npy_path


def sidecar_rate(path_text: str) -> float | None:
    """The sampling rate in the calab sidecar next to a ``.npy`` (or stem), if there is one."""
    from calab.io import tuning_paths
    from calab.loaders._common import read_json_object

    _, json_path = tuning_paths(Path(path_text))
    if not json_path.is_file():
        return None
    try:
        fs = read_json_object(json_path, "Metadata file").get("sampling_rate_hz")
    except ValueError:
        return None
    return float(fs) if isinstance(fs, (int, float)) and not isinstance(fs, bool) and fs > 0 else None


class ProgressBar:
    """The library's progress policy (:mod:`calab._progress`) with the command's label.

    Does nothing unless stderr is a terminal and the job is big enough to take a while.
    """

    def __init__(self, label: str, cells: int, samples: int) -> None:
        cli = _package()
        self.enabled = cli._stderr_is_tty() and samples >= cli._PROGRESS_MIN_SAMPLES
        self.label, self.cells = label, cells
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
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


def solve(
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

    run = run_deconvolution_full if full else run_deconvolution
    description = f"{label} {traces.shape[0]} cells x {traces.shape[1]} frames"
    with ProgressBar(description, traces.shape[0], traces.size) as bar:
        return run(traces, fs, tau_rise, tau_decay, lam, backend=backend, progress=bar.callback)


def json_text(data: Any) -> str:
    from calab.loaders._common import jsonable

    return json.dumps(jsonable(data, "output"), indent=2)


def write_files(files: Sequence[tuple[Path, Callable[[Any], object]]]) -> None:
    """Write all files or none (atomically, each through a temporary file)."""
    from calab._atomic import atomic_write_many

    atomic_write_many([(path, "wb", write) for path, write in files])


def save_npy(array: np.ndarray) -> Callable[[Any], object]:
    return lambda handle: np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def save_text(text: str) -> Callable[[Any], object]:
    return lambda handle: handle.write(text.encode("utf-8"))


def bridge_function(name: str, command: str) -> Callable[..., Any]:
    import calab

    try:
        return getattr(calab, name)
    except AttributeError:
        raise CommandError(
            f"'calab {command}' needs the browser bridge (calab.{name}), which is not part of "
            "this calab build yet."
        ) from None


def has_bridge(name: str) -> bool:
    import calab

    try:
        getattr(calab, name)
    except AttributeError:
        return False
    return True


def kernel_source(meta: dict) -> str:
    """How run_cadecon found its kernel, in words (from its metadata)."""
    from calab.cadecon.display import kernel_source as describe

    return describe(meta)


def plot_path(args: argparse.Namespace, inputs: Sequence[Path]) -> Path | None:
    """``--plot PATH``, checked before any work: writable, and matplotlib installed."""
    if not getattr(args, "plot", None):
        return None
    path = check_output(Path(args.plot), args.force, inputs)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError('--plot needs matplotlib: pip install "calab[plot]"') from None
    return path


def write_figure(figure: Any, path: Path, force: bool) -> None:
    from calab.plot import save_figure

    save_figure(figure, path, overwrite=force)
    print(f"Saved figure to {path}")
