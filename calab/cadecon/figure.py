"""The CaDecon figure: the learned kernel against the starting one, and a few cells.

Built on the drawing helpers of :mod:`calab.plot` (matplotlib, the extra ``calab[plot]``,
imported only when a figure is drawn).  :meth:`CaDeconResult.plot` calls
:func:`plot_cadecon`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from calab.plot import (
    COLOURS,
    DEFAULT_CELLS,
    choose_cells,
    draw_cells,
    host_rows,
    new_figure,
    save_figure,
    visible_frames,
)

__all__ = ["plot_cadecon"]


def _kernel_curve(tau_rise: float, tau_decay: float, times: np.ndarray) -> np.ndarray:
    curve = np.exp(-times / tau_decay) - np.exp(-times / tau_rise)
    return curve / curve.max()


def _draw_kernel(axes: Any, meta: dict, given: tuple[float, float] | None) -> None:
    from calab.cadecon.shape import tau_to_shape

    learned = (meta["tau_rise"], meta["tau_decay"])
    start = (meta.get("start_tau_rise"), meta.get("start_tau_decay"))
    longest = max(v for v in (learned[1], start[1] or 0, (given or (0, 0))[1]) if v)
    times = np.linspace(0, 4 * longest, 600)
    peak, fwhm = tau_to_shape(*learned)
    axes.plot(times, _kernel_curve(*learned, times), color=COLOURS["fit"], lw=2,
              label=f"learned: rise {1000 * learned[0]:.0f} ms, decay {1000 * learned[1]:.0f} ms")
    same_start = start[0] is not None and all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(start, learned))
    if start[0] is not None and not same_start:
        axes.plot(times, _kernel_curve(*start, times), color=COLOURS["start"], lw=1.2, ls="--",
                  label=f"starting: rise {1000 * start[0]:.0f} ms, decay {1000 * start[1]:.0f} ms")
    if given is not None:
        axes.plot(times, _kernel_curve(*given, times), color=COLOURS["given"], lw=1.5, ls=":", zorder=3,
                  label=f"given: rise {1000 * given[0]:.0f} ms, decay {1000 * given[1]:.0f} ms")
    axes.axvline(peak, color=COLOURS["fit"], lw=0.8, ls="-.")
    axes.annotate(f"peak {1000 * peak:.0f} ms", (peak, 1.0), xytext=(6, -4), textcoords="offset points",
                  fontsize=8, va="top", color="#444444")
    from calab.cadecon.display import kernel_source

    note = kernel_source(meta) + ("; learned = starting kernel" if same_start else "")
    axes.set_title(f"calcium kernel ({note}; FWHM {1000 * fwhm:.0f} ms)", fontsize=9, loc="left")
    axes.set_xlabel("time after a spike (s)")
    axes.set_ylabel("normalised")
    axes.set_ylim(-0.05, 1.12)
    axes.legend(loc="upper right", fontsize=8, frameon=False)


def plot_cadecon(
    traces: Any,
    result: Any,
    *,
    cells: Any = None,
    count: int = DEFAULT_CELLS,
    window: tuple[float, float] | None = None,
    given_taus: tuple[float, float] | None = None,
    title: str | None = None,
    backend: str | None = None,
    path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Any:
    """The learned kernel and a few cells' trace, fit and activity of a :func:`calab.run_cadecon` result.

    The top panel draws the learned kernel (peak-normalised, its peak time marked) against
    the kernel the run started from, and ``given_taus`` when given (for example the true
    kernel of simulated data).  Below it, each chosen cell's raw trace with the fit, and
    its inferred activity.  The fit is :meth:`CaDeconResult.reconvolve` of the chosen cells:
    they are solved again at the learned kernel with the λ ``run_cadecon`` used (a few
    cells, so it is quick).

    Parameters
    ----------
    traces : array_like, shape (n_cells, n_timepoints)
        The traces given to :func:`calab.run_cadecon`.
    result : CaDeconResult
        Its result.
    cells, count, window, title, path, overwrite
        As in :func:`calab.plot.plot_deconvolution`.
    given_taus : (tau_rise, tau_decay), optional
        A kernel to compare with, in seconds.
    backend : str, optional
        Backend for the few re-solves (default: the usual resolution order).

    Returns
    -------
    matplotlib.figure.Figure
    """
    meta = result.metadata
    if meta.get("tau_rise") is None or isinstance(result.activity, list):
        raise ValueError("this result has no learned kernel or holds recordings of different lengths: "
                         "plot_cadecon needs a finished run on a (n_cells, n_timepoints) array")
    rows = host_rows(traces, "traces")
    activity = host_rows(result.activity, "result.activity")
    if activity.shape != rows.shape:
        raise ValueError(f"traces have shape {rows.shape} but the result's activity {activity.shape}: "
                         "pass the traces given to run_cadecon")
    fs = float(result.fs)
    chosen = choose_cells(cells, rows.shape[0], rows, activity, count)
    fit = host_rows(result.reconvolve(rows[chosen], backend=backend), "reconvolution")
    frames = visible_frames(window, rows.shape[1], fs, activity[chosen[0]])
    figure, grid = new_figure(1 + 2 * len(chosen), [1.8] + [2.0, 0.8] * len(chosen))
    _draw_kernel(figure.add_subplot(grid[0]), meta, given_taus)
    kind = "event counts per frame" if meta.get("activity_kind") == "counts" else "inferred activity"
    draw_cells(figure, grid, 1, rows, fit, activity, chosen, fs, frames, "raw trace", kind)
    figure.suptitle(title or f"CaDecon: kernel learned from {rows.shape[0]} cells; {len(chosen)} shown", fontsize=11)
    if path is not None:
        save_figure(figure, path, overwrite=overwrite)
    return figure
