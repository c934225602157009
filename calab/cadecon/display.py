"""Words about a :class:`CaDeconResult`: how its kernel was found, the ``calab cadecon``
summary and the table a notebook shows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calab._display import table

__all__ = ["cadecon_html", "cadecon_summary", "kernel_source"]


def kernel_source(meta: dict) -> str:
    """How :func:`calab.run_cadecon` found its kernel, in words (from its metadata)."""
    start = meta.get("initialization")
    if start is None:  # a result exported by the hosted CaDecon app
        rounds = meta.get("num_iterations")
        ending = "converged" if meta.get("converged") else "not converged"
        return f"learned by the CaDecon app in {rounds} round{'s' if rounds != 1 else ''}, {ending}"
    method = start.get("method", "given")
    if not start.get("refined", True) and method == "bispectrum":
        return "fitted to the traces' bispectrum, no refinement rounds"
    names = {"bispectrum": "bispectral", "autocovariance": "autocovariance", "peaks": "peak-seeded",
             "given": "given"}
    rounds = meta.get("num_iterations", 0)
    if meta.get("converged") and meta.get("converged_at_iteration"):
        ending = f"converged at round {meta['converged_at_iteration']}"
    elif meta.get("stopped"):
        ending = "stopped early"
    else:
        ending = "not converged: the kernel was still changing"
    return f"{names.get(method, method)} start, {rounds} refinement round{'s' if rounds != 1 else ''}, {ending}"


def _peak_ms(tau_rise: float | None, tau_decay: float | None) -> float | None:
    if tau_rise is None or tau_decay is None or not 0 < tau_rise < tau_decay:
        return None
    from calab.cadecon.shape import peak_time

    return 1000 * peak_time(tau_rise, tau_decay)


def _activity_per_cell(result: Any) -> tuple[str, float | None]:
    """What one cell's activity adds up to (median over cells), and in which words."""
    activity = result.activity
    kind = result.metadata.get("activity_kind", "counts")
    rows = activity if isinstance(activity, list) else list(np.asarray(activity))
    if not rows:
        return kind, None
    totals = [float(np.asarray(row, dtype=np.float64).sum()) for row in rows]
    return kind, float(np.median(totals))


def cadecon_summary(result: Any, traces_shape: tuple[int, ...] | None = None) -> list[str]:
    """A few lines for a person: the kernel and where it came from, cells, activity, warnings."""
    meta = result.metadata
    lines = []
    if meta.get("tau_rise") is None:
        lines.append("Kernel: none could be learned (see the warnings below).")
    else:
        peak = _peak_ms(meta["tau_rise"], meta["tau_decay"])
        peak_text = f", peak {peak:.0f} ms after a spike" if peak is not None else ""
        lines.append(f"Kernel: tau_rise {meta['tau_rise']:.4f} s, tau_decay {meta['tau_decay']:.4f} s{peak_text}")
        lines.append(f"        ({kernel_source(meta)})")
    n_cells = len(result.activity)
    frames = traces_shape[-1] if traces_shape else (np.shape(result.activity[0])[-1] if n_cells else 0)
    lines.append(f"Cells: {n_cells} x {frames} frames at {result.fs:g} Hz"
                 + (f", on {meta['backend']}" if meta.get("backend") else "")
                 + (f", {meta['elapsed_s']:.1f} s" if isinstance(meta.get("elapsed_s"), (int, float)) else ""))
    kind, per_cell = _activity_per_cell(result)
    if per_cell is not None:
        counts = meta.get("counts") if kind == "continuous" else result.activity
        if counts is not None and not isinstance(counts, list):
            spikes = np.asarray(counts, dtype=np.float64).sum(axis=1)
            lines.append(f"Spikes per cell (thresholded events): median {np.median(spikes):.0f}, "
                         f"range {spikes.min():.0f}-{spikes.max():.0f}")
        elif counts is None and kind == "continuous":
            lines.append("Spikes per cell: not counted (counts=True, or --counts, counts whole events; "
                         "several times slower)")
        if kind == "continuous":
            lines.append(f"Activity: continuous (non-negative FISTA at the learned kernel), median sum per cell "
                         f"{per_cell:.3g} in trace units")
    pves = np.asarray(result.pves, dtype=np.float64)
    if pves.size and np.isfinite(pves).any():
        lines.append(f"Fit: median {100 * np.nanmedian(pves):.0f}% of each trace's variance explained")
    warnings = meta.get("warnings") or []
    lines.append("Warnings: none" if not warnings else f"Warnings ({len(warnings)}):")
    lines.extend(f"  - {message}" for message in warnings)
    return lines


def cadecon_html(result: Any) -> str:
    """The notebook display of a :class:`calab.CaDeconResult`: kernel, cells, warnings, timing."""
    meta = result.metadata
    rows: list[tuple[str, str]] = []
    if meta.get("tau_rise") is None:
        rows.append(("kernel", "none learned"))
    else:
        peak = _peak_ms(meta["tau_rise"], meta["tau_decay"])
        rows.append(("kernel", f"tau_rise {meta['tau_rise']:.4f} s, tau_decay {meta['tau_decay']:.4f} s"
                     + (f", peak {peak:.0f} ms" if peak is not None else "")))
        rows.append(("found by", kernel_source(meta)))
        rows.append(("where", "result.metadata['tau_rise'], result.metadata['tau_decay']"))
    n_cells = len(result.activity)
    frames = np.shape(result.activity[0])[-1] if n_cells else 0
    rows.append(("cells", f"{n_cells} x {frames} frames at {result.fs:g} Hz"))
    kind, per_cell = _activity_per_cell(result)
    rows.append(("activity", f"{kind}" + (f", median sum per cell {per_cell:.3g}" if per_cell is not None else "")))
    pves = np.asarray(result.pves, dtype=np.float64)
    if pves.size and np.isfinite(pves).any():
        rows.append(("variance explained", f"median {100 * np.nanmedian(pves):.0f}%"))
    timing = meta.get("elapsed_s")
    rows.append(("time", (f"{timing:.1f} s" if isinstance(timing, (int, float)) and math.isfinite(timing) else "-")
                 + (f" on {meta['backend']}" if meta.get("backend") else "")))
    rows.append(("warnings", str(len(meta.get("warnings") or []))))
    return table("CaDeconResult", rows, list(meta.get("warnings") or []))
