"""``CaDeconResult``: what automated deconvolution returns (native loop and browser bridge alike)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CaDeconResult", "SCHEMA_VERSION", "biexp_waveform"]

#: Results schema of 0.3.0's CaDecon export (nulls allowed, ``solver_version`` key).
SCHEMA_VERSION = 2


class CaDeconResult(NamedTuple):
    """What automated deconvolution returns: the learned kernel and every cell's activity.

    The learned time constants are ``metadata["tau_rise"]`` and ``metadata["tau_decay"]``
    (seconds); ``metadata["warnings"]`` says what deserves a look.  In Jupyter the result
    displays as a summary table; ``plot(traces)`` draws the kernel and a few cells.

    Attributes
    ----------
    activity : np.ndarray
        Deconvolved activity matrix, shape ``(n_cells, n_timepoints)``, float32.  From
        ``run_cadecon`` by default the continuous (non-negative FISTA) solution at the
        learned kernel; ``DeconConfig(activity="counts")`` puts the finalisation pass's
        thresholded event counts per frame here instead, as the browser app exports them
        (the other one is in ``metadata``, see ``metadata["activity_kind"]``).  For a list
        of recordings of different lengths: a list of 1-D float32 arrays.
    alphas : np.ndarray
        Per-cell scaling factors, shape ``(n_cells,)``, float64: the least-squares factor
        between ``K·activity`` and the solver's working trace.  For the event counts (the
        browser app, ``activity="counts"`` or ``counts=True``) the amplitude of one event, as
        in 0.3.0; for ``run_cadecon``'s default continuous activity, which is already in
        trace units, about 1 (``metadata["alphas_source"]`` says which).
    baselines : np.ndarray
        Per-cell baseline estimates, shape ``(n_cells,)``, float64 (in the units of the
        working trace, as in 0.3.0: a small residual offset).
    pves : np.ndarray
        Per-cell fraction of the working trace's variance that fit explains, shape
        ``(n_cells,)``, float64: near 1 for clear transients, near 0 for noise.
    kernel_slow : np.ndarray
        Slow biexponential kernel waveform ``beta·(exp(-t/tau_decay) - exp(-t/tau_rise))``
        at ``t = k/fs``, ``k < int(5·tau_decay·fs)``, float32.  Empty when the run
        produced no bi-exponential fit (see ``metadata``).
    kernel_fast : np.ndarray
        Fast biexponential kernel waveform, float32 (empty if single-component).
    fs : float
        Sampling rate in Hz.
    metadata : dict
        Extensible dict with biexp params, convergence info, ``h_free``, etc.

        ``tau_rise``, ``tau_decay``, ``beta`` and ``residual`` are ``None`` when the run
        stopped before completing an iteration, so no fit was ever made.  See
        ``docs/cadecon.md`` for every key the native loop adds (per-iteration
        ``history``, the starting kernel, warnings, the settings used).
    """

    activity: np.ndarray
    alphas: np.ndarray
    baselines: np.ndarray
    pves: np.ndarray
    kernel_slow: np.ndarray
    kernel_fast: np.ndarray
    fs: float
    metadata: dict

    def reconvolve(self, traces: Any, *, backend: str | None = None) -> np.ndarray:
        """The model's fit to ``traces``: the continuous solution at the learned kernel, reconvolved.

        Solves ``traces`` (some or all of the cells given to ``run_cadecon``, as rows) with
        non-negative FISTA at the learned kernel with the λ and operator ``run_cadecon`` used
        for its continuous activity (``metadata["continuous_lambda_per_noise"]`` times each
        trace's noise, ``metadata["continuous_conv_mode"]``), and returns ``kernel * activity + baseline``: the curve to lay
        over the raw trace.  Meant for a few cells (figures); it costs one solve.

        Parameters
        ----------
        traces : array_like, shape (n_cells, n_timepoints) or (n_timepoints,)
        backend : str, optional
            Compute backend of the solve.

        Returns
        -------
        numpy.ndarray
            Same shape as ``traces``, float64 (for NumPy input).
        """
        from calab.cadecon.initialization import noise_sigma
        from calab.deconvolution import run_deconvolution_full

        meta = self.metadata
        if meta.get("tau_rise") is None:
            raise ValueError("this result has no learned kernel (metadata['tau_rise'] is None): nothing to reconvolve")
        rows = np.atleast_2d(np.asarray(traces, dtype=np.float64))
        lam = float(meta.get("continuous_lambda_per_noise", 1.0)) * noise_sigma(rows)
        full = run_deconvolution_full(rows, self.fs, meta["tau_rise"], meta["tau_decay"], lam,
                                      conv_mode=meta.get("continuous_conv_mode", "fft"), backend=backend,
                                      progress=False)
        fit = np.asarray(full.reconvolution)
        return fit if np.ndim(traces) == 2 else fit[0]

    def plot(self, traces: Any, **options: Any) -> Any:
        """Figure of the learned kernel and a few cells' raw trace, fit and activity.

        ``traces`` are the traces given to ``run_cadecon``.  Options (``cells``, ``count``,
        ``window``, ``given_taus``, ``path``, ...) are those of :func:`calab.cadecon.figure.plot_cadecon`.
        Needs matplotlib (``pip install "calab[plot]"``).  Returns a matplotlib Figure.
        """
        from calab.cadecon.figure import plot_cadecon

        return plot_cadecon(traces, self, **options)

    def _repr_html_(self) -> str:
        # Jupyter's display: kernel, cells, warnings and timing instead of raw arrays.
        from calab.cadecon.display import cadecon_html

        return cadecon_html(self)


def biexp_waveform(tau_rise: Any, tau_decay: Any, beta: Any, fs: float) -> np.ndarray:
    """``beta·(exp(-t/τd) - exp(-t/τr))`` at ``t = k/fs`` for ``k < int(5·τd·fs)``, float32.

    Empty when a parameter is missing or the length is not positive (0.3.0's assembly).
    """
    if tau_rise is None or tau_decay is None or beta is None:
        return np.zeros(0, dtype=np.float32)
    tau_rise, tau_decay, beta = float(tau_rise), float(tau_decay), float(beta)
    if not (tau_rise > 0 and tau_decay > 0) or not all(map(math.isfinite, (tau_rise, tau_decay, beta))):
        return np.zeros(0, dtype=np.float32)
    length = int(5 * tau_decay * fs)
    if length <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(length) / fs
    return (beta * (np.exp(-t / tau_decay) - np.exp(-t / tau_rise))).astype(np.float32)
