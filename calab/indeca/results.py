"""Result types of the InDeCa functions (the documented NamedTuples plus the batched forms)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["BiexpFitResult", "BiexpFitResults", "SeedResult", "SolveTraceResult", "SolveTracesResult"]


class SolveTraceResult(NamedTuple):
    """Result from a single-trace InDeCa solve.

    Attributes
    ----------
    s_counts : np.ndarray
        Spike counts at the original sampling rate, shape (n_timepoints,), float32.
    alpha : float
        Amplitude scaling factor (units of the filtered, floor-subtracted working trace).
    baseline : float
        Estimated baseline (a small residual offset of the working trace).
    threshold : float
        Spike threshold used.
    pve : float
        Proportion of variance explained (0–1).
    iterations : int
        Number of FISTA iterations run (in the scale round that was kept).
    converged : bool
        Whether the solver converged.
    """

    s_counts: np.ndarray
    alpha: float
    baseline: float
    threshold: float
    pve: float
    iterations: int
    converged: bool


class SolveTracesResult(NamedTuple):
    """Per-cell results of :func:`calab.solve_traces`.

    For a dense ``(n_cells, T)`` input the array fields are ``(n_cells, T)`` float32; for
    a list of ragged traces they are lists of 1-D float32 arrays, one per cell.

    Attributes
    ----------
    s_counts : np.ndarray or list of np.ndarray
        Spike counts at the original rate, float32 (integers ``0…u``).
    alpha, baseline, threshold, pve : np.ndarray
        ``(n_cells,)`` float64.
    iterations : np.ndarray
        ``(n_cells,)`` int64, FISTA iterations of the kept scale round.
    converged : np.ndarray
        ``(n_cells,)`` bool.
    filtered_trace : np.ndarray or list of np.ndarray
        The working trace (band-passed if enabled, rolling baseline removed) averaged back
        to the original rate, float32; what :func:`calab.estimate_kernel` needs.
    """

    s_counts: Any
    alpha: np.ndarray
    baseline: np.ndarray
    threshold: np.ndarray
    pve: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    filtered_trace: Any

    def cell(self, index: int) -> SolveTraceResult:
        """The documented single-cell result of cell ``index``."""
        return SolveTraceResult(
            np.asarray(self.s_counts[index]),
            float(self.alpha[index]),
            float(self.baseline[index]),
            float(self.threshold[index]),
            float(self.pve[index]),
            int(self.iterations[index]),
            bool(self.converged[index]),
        )


class BiexpFitResult(NamedTuple):
    """Result from bi-exponential kernel fitting.

    Attributes
    ----------
    tau_rise, tau_decay : float
        Slow-component rise and decay time constants (seconds).
    beta : float
        Slow-component amplitude (templates are not peak-normalised).
    residual : float
        Fit residual ``‖h − β T_s − β_f T_f‖²`` (lower is better).
    tau_rise_fast, tau_decay_fast : float
        Fast-component time constants (seconds), 0 if single-component.
    beta_fast : float
        Fast-component amplitude, 0 if single-component.
    fit_mode : str
        ``"SlowOnly"``, ``"TwoComponent"``, ``"Degenerate"`` or ``"Empty"``.
    """

    tau_rise: float
    tau_decay: float
    beta: float
    residual: float
    tau_rise_fast: float
    tau_decay_fast: float
    beta_fast: float
    fit_mode: str = "SlowOnly"


class BiexpFitResults(NamedTuple):
    """Fits of many kernels (:func:`calab.fit_biexponentials`): ``(n_kernels,)`` arrays.

    Float fields are float64; ``fit_mode`` is an object array of strings.
    """

    tau_rise: np.ndarray
    tau_decay: np.ndarray
    beta: np.ndarray
    residual: np.ndarray
    tau_rise_fast: np.ndarray
    tau_decay_fast: np.ndarray
    beta_fast: np.ndarray
    fit_mode: np.ndarray

    def fit(self, index: int) -> BiexpFitResult:
        """The documented single-kernel result of kernel ``index``."""
        return BiexpFitResult(
            *(float(getattr(self, name)[index]) for name in self._fields[:7]), str(self.fit_mode[index])
        )


class SeedResult(NamedTuple):
    """Peak-seeded detections (:func:`calab.seed_traces`).

    Attributes
    ----------
    s_counts : np.ndarray or list of np.ndarray
        1.0 at each detected onset, float32, shaped like the input.
    alpha : np.ndarray
        ``(n_cells,)`` float64, always 1.0.
    baseline : np.ndarray
        ``(n_cells,)`` float64, the median of each trace.
    """

    s_counts: Any
    alpha: np.ndarray
    baseline: np.ndarray
