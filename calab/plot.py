"""Figures of a deconvolution: the raw trace, the model's fit and the inferred activity.

Needs matplotlib, the optional extra ``pip install "calab[plot]"``; importing
:mod:`calab` never imports it, and this module only imports it when a figure is drawn.
Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot), so drawing
one never opens a window or needs a display; a notebook shows the returned figure inline.

Most users call the result's own method::

    result = calab.run_cadecon(traces, fs)
    result.plot(traces)                       # CaDeconResult.plot (calab.cadecon.figure)
    full = calab.run_deconvolution_full(traces, fs, 0.1, 0.6, lam)
    full.plot(traces, fs, path="fit.png")     # DeconvolutionResult.plot (plot_deconvolution)

This module draws what any deconvolution has (trace, fit, activity); the CaDecon figure,
which adds the learned kernel, is :func:`calab.cadecon.figure.plot_cadecon`.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_CELLS",
    "FULL_VIEW_S",
    "most_active_cells",
    "plot_deconvolution",
    "save_figure",
]

#: How many cells a figure shows when none are chosen.
DEFAULT_CELLS = 3
#: Recordings up to this long are drawn whole; longer ones show a :data:`ZOOM_S` window.
FULL_VIEW_S = 180.0
#: Width of the default window on a long recording, centred on the first cell's largest event.
ZOOM_S = 120.0
#: Colours shared with the CaTune page (colour-blind safe): raw, fit, activity, kernel start.
COLOURS = {"raw": "#0072b2", "fit": "#e69f00", "activity": "#009e73", "start": "#888888", "given": "#cc79a7"}


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            'calab\'s figures need matplotlib: pip install "calab[plot]" (or pip install matplotlib)'
        ) from None
    return matplotlib


def host_rows(array: Any, name: str) -> np.ndarray:
    """A float64 NumPy copy of a NumPy, CuPy or JAX array, at least 2-D (cells as rows)."""
    from calab._validate import _is_device, _to_host

    host = _to_host(array) if _is_device(array) else np.asarray(array)
    host = np.asarray(host, dtype=np.float64)
    if host.ndim == 1:
        host = host[None, :]
    if host.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_cells, n_timepoints), got shape {host.shape}")
    return host


def most_active_cells(traces: Any, activity: Any, count: int = DEFAULT_CELLS) -> np.ndarray:
    """The ``count`` cells with the most inferred activity relative to their noise.

    The score is a cell's summed activity divided by its noise SD (:func:`calab.noise_sd`):
    activity is in the trace's units, so this favours cells with many clear events over
    cells that are merely bright or noisy.  Returns 0-based indices, best first.
    """
    from calab.noise import noise_sd

    rows, inferred = host_rows(traces, "traces"), host_rows(activity, "activity")
    noise = np.atleast_1d(noise_sd(rows))
    score = np.abs(inferred).sum(axis=1) / np.where(noise > 0, noise, np.inf)
    order = np.argsort(-score, kind="stable")
    return order[: max(1, int(count))]


def choose_cells(cells: Any, n_cells: int, traces: np.ndarray, activity: np.ndarray, count: int) -> np.ndarray:
    if cells is None:
        return most_active_cells(traces, activity, count)
    chosen = np.atleast_1d(np.asarray(cells))
    if chosen.dtype.kind not in "iu" or chosen.ndim != 1 or chosen.size == 0:
        raise TypeError(f"cells must be a list of 0-based cell indices, got {cells!r}")
    bad = [int(c) for c in chosen if not 0 <= c < n_cells]
    if bad:
        raise ValueError(f"cells {bad} are out of range: the recording has cells 0..{n_cells - 1}")
    return chosen.astype(int)


def visible_frames(window: Any, n_timepoints: int, fs: float, focus: np.ndarray) -> slice:
    """Frames to draw: ``window=(start_s, stop_s)``, else all or :data:`ZOOM_S` s around the largest event."""
    duration = n_timepoints / fs
    if window is not None:
        start_s, stop_s = (float(v) for v in window)
        if not (0 <= start_s < stop_s):
            raise ValueError(f"window must be (start_s, stop_s) with 0 <= start_s < stop_s, got {window!r}")
        return slice(int(start_s * fs), max(int(start_s * fs) + 2, min(n_timepoints, math.ceil(stop_s * fs))))
    if duration <= FULL_VIEW_S:
        return slice(0, n_timepoints)
    width = int(ZOOM_S * fs)
    centre = int(np.argmax(focus)) if focus.size else 0
    start = min(max(0, centre - width // 2), max(0, n_timepoints - width))
    return slice(start, start + width)


def _show_figures_inline() -> None:
    """In a notebook, make sure a returned Figure displays as a picture in its cell.

    Jupyter registers that display when pyplot first draws; a figure made without pyplot
    (as here) would otherwise show as ``<Figure size ...>``.  ``%matplotlib inline`` is
    what a user would type, and Jupyter's default anyway.
    """
    from calab._progress import in_notebook

    if not in_notebook():
        return
    from matplotlib.figure import Figure

    shell = sys.modules["IPython"].get_ipython()
    formatter = shell.display_formatter.formatters.get("image/png")
    if formatter is None:
        return
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        shell.run_line_magic("matplotlib", "inline")


def new_figure(rows: int, heights: list[float], width: float = 11.0) -> tuple[Any, Any]:
    _matplotlib()
    from matplotlib.figure import Figure

    _show_figures_inline()

    figure = Figure(figsize=(width, sum(heights) + 0.6), layout="constrained")
    grid = figure.add_gridspec(rows, 1, height_ratios=heights)
    return figure, grid


def draw_cells(figure: Any, grid: Any, first_row: int, traces: np.ndarray, fit: np.ndarray | None,
                activity: np.ndarray, cells: np.ndarray, fs: float, frames: slice, trace_label: str,
                activity_label: str) -> None:
    time = np.arange(frames.start, frames.stop) / fs
    shared = None
    for position, cell in enumerate(cells):
        top = figure.add_subplot(grid[first_row + 2 * position], sharex=shared)
        shared = shared or top
        bottom = figure.add_subplot(grid[first_row + 2 * position + 1], sharex=shared)
        top.plot(time, traces[cell, frames], color=COLOURS["raw"], lw=0.7, label=trace_label)
        if fit is not None:
            top.plot(time, fit[position, frames], color=COLOURS["fit"], lw=1.2, label="fit (kernel * activity + baseline)")
        top.set_ylabel(f"cell {cell}")
        top.tick_params(labelbottom=False)
        values = activity[cell, frames]
        # a line as well as the fill: one-frame events are thinner than a pixel otherwise
        bottom.fill_between(time, 0, values, color=COLOURS["activity"], lw=0, alpha=0.5)
        bottom.plot(time, values, color=COLOURS["activity"], lw=0.9)
        bottom.set_ylabel("activity", fontsize=8)
        bottom.set_ylim(bottom=0, top=max(float(values.max(initial=0.0)) * 1.1, 1e-12))
        if position == 0:
            top.legend(loc="upper right", fontsize=8, frameon=False, ncols=2)
            bottom.text(0.995, 0.92, activity_label, transform=bottom.transAxes, ha="right", va="top", fontsize=8,
                        color=COLOURS["activity"])
        if position < len(cells) - 1:
            bottom.tick_params(labelbottom=False)
    if shared is not None:
        figure.axes[-1].set_xlabel("time (s)")


def save_figure(figure: Any, path: str | os.PathLike[str], *, overwrite: bool = False, dpi: int = 120) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix: .png, .svg, .pdf), atomically.

    An existing file is never replaced unless ``overwrite=True`` (FileExistsError); a
    failed write leaves no partial file.
    """
    from calab._atomic import atomic_write_many, check_writable

    path = check_writable(Path(path), overwrite=overwrite)
    suffix = path.suffix.lower().lstrip(".") or "png"
    atomic_write_many([(path, "wb", lambda handle: figure.savefig(handle, format=suffix, dpi=dpi))])
    return path


def plot_deconvolution(
    traces: Any,
    result: Any,
    fs: float,
    *,
    cells: Any = None,
    count: int = DEFAULT_CELLS,
    window: tuple[float, float] | None = None,
    title: str | None = None,
    trace_label: str = "trace",
    path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Any:
    """Trace, fit and inferred activity of a few cells of a :func:`calab.run_deconvolution_full` result.

    Parameters
    ----------
    traces : array_like, shape (n_cells, n_timepoints) or (n_timepoints,)
        The traces that were deconvolved (the band-passed ones if filtering was on, so
        that the fit lies on them).
    result : DeconvolutionResult
        What :func:`calab.run_deconvolution_full` returned for ``traces``.
    fs : float
        Sampling rate in Hz (for the time axis).
    cells : sequence of int, optional
        0-based cells to draw; default the ``count`` most active (:func:`most_active_cells`).
    count : int
        How many cells to draw when ``cells`` is not given (default 3).
    window : (start_s, stop_s), optional
        Time range to draw; default the whole recording up to 3 minutes, else the two
        minutes around the first cell's largest event.
    title : str, optional
        Figure title.
    trace_label : str
        Legend label of the trace.
    path : str or os.PathLike, optional
        Also save the figure there (PNG, SVG or PDF by suffix; see :func:`save_figure`).
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        One pair of panels per cell: the trace with the fit on top, the activity below.
    """
    rows = host_rows(traces, "traces")
    activity = host_rows(result.activity, "result.activity")
    fit_all = host_rows(result.reconvolution, "result.reconvolution")
    if activity.shape != rows.shape or fit_all.shape != rows.shape:
        raise ValueError(f"traces have shape {rows.shape} but the result's activity {activity.shape}: "
                         "pass the traces that were deconvolved")
    fs = float(fs)
    chosen = choose_cells(cells, rows.shape[0], rows, activity, count)
    frames = visible_frames(window, rows.shape[1], fs, activity[chosen[0]])
    figure, grid = new_figure(2 * len(chosen), [2.0, 0.8] * len(chosen))
    draw_cells(figure, grid, 0, rows, fit_all[chosen], activity, chosen, fs, frames, trace_label, "inferred activity")
    figure.suptitle(title or f"FISTA deconvolution: {len(chosen)} of {rows.shape[0]} cells", fontsize=11)
    if path is not None:
        save_figure(figure, path, overwrite=overwrite)
    return figure
