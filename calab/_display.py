"""Tables about results for a notebook: what ``DeconvolutionResult`` shows in Jupyter.

Pure string work on a result's arrays (NumPy only, no matplotlib), so a result displays
whether or not the plotting extra is installed.  CaDecon's words and tables build on
:func:`table` in :mod:`calab.cadecon.display`.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

__all__ = ["deconvolution_html", "host_values", "table"]


def table(title: str, rows: list[tuple[str, str]], notes: list[str] | None = None) -> str:
    cells = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    extra = ""
    if notes:
        items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
        extra = f"<div style='color:#a05a00'><b>Warnings</b><ul style='margin-top:0'>{items}</ul></div>"
    return f"<div><b>{html.escape(title)}</b><table>{cells}</table>{extra}</div>"


def deconvolution_html(result: Any) -> str:
    """The notebook display of a :class:`calab.DeconvolutionResult`: cells, iterations, convergence."""
    activity = result.activity
    shape = tuple(getattr(activity, "shape", np.shape(activity)))
    iterations = np.atleast_1d(np.asarray(host_values(result.iterations)))
    converged = np.atleast_1d(np.asarray(host_values(result.converged), dtype=bool))
    cells = 1 if len(shape) == 1 else shape[0]
    frames = shape[-1] if shape else 0
    rows = [
        ("cells", f"{cells} x {frames} frames"),
        ("iterations", f"median {np.median(iterations):.0f}, max {iterations.max(initial=0):.0f}" if iterations.size else "-"),
        ("converged", f"{int(converged.sum())} of {converged.size} cells"),
        ("activity", f"{type(activity).__module__.split('.')[0]} array, dtype {getattr(activity, 'dtype', '?')}"),
    ]
    notes = []
    if converged.size and not converged.all():
        notes.append(f"{int((~converged).sum())} cell(s) hit max_iters before converging: raise max_iters "
                     "or check those traces")
    return table("DeconvolutionResult", rows, notes)


def host_values(values: Any) -> Any:
    from calab._validate import _is_device, _to_host

    return _to_host(values) if _is_device(values) else values
