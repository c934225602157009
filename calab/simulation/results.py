"""Result models of :func:`calab.simulate`: the traces and per-cell ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from calab.simulation.config import SimulationConfig

__all__ = ["CellGroundTruth", "SimulationResult"]


class CellGroundTruth(BaseModel):
    """Ground truth for a single simulated cell.

    Attributes
    ----------
    spikes : ndarray of float32, shape (num_timepoints,)
        Spikes per imaging frame: how many high-resolution bins of the frame spiked, an
        integer in ``[0, b]`` (``b = round(spike_sim_hz / fs_hz)``) stored as float32.
    clean_calcium : ndarray of float32, shape (num_timepoints,)
        Noise-free signal at the imaging rate: kernel response (peak 1 per isolated spike)
        times ``alpha``, then saturation if enabled.  No drift, bleaching or noise.
    alpha : float
        The cell's amplitude factor.
    snr : float
        The cell's *configured* SNR (after ``snr_spread`` and its clamp at 1), not a
        measured value.
    tau_rise_s, tau_decay_s : float
        The cell's kernel time constants after per-cell variation and clamping.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spikes: np.ndarray
    clean_calcium: np.ndarray
    alpha: float
    snr: float
    tau_rise_s: float
    tau_decay_s: float


class SimulationResult(BaseModel):
    """Complete simulation result: observed traces and per-cell ground truth.

    Attributes
    ----------
    traces : ndarray of float32, shape (num_cells, num_timepoints), C-contiguous
        Observed fluorescence.
    ground_truth : list of CellGroundTruth, length num_cells
        One entry per cell, in order.  Their ``spikes`` / ``clean_calcium`` are row views of
        two ``(num_cells, num_timepoints)`` arrays (see :attr:`spikes`,
        :attr:`clean_calcium`), separate from ``traces``.
    config : SimulationConfig
        The effective (validated) config.  A dict is accepted and validated.

    Notes
    -----
    ``model_dump_json()`` raises, as in the reference (arrays have no JSON form); use
    :meth:`save` / :meth:`load` or :meth:`save_for_tuning`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    traces: np.ndarray
    ground_truth: list[CellGroundTruth]
    config: SimulationConfig

    # ------------------------------------------------------------------ conveniences

    @property
    def spikes(self) -> np.ndarray:
        """Spikes per frame of all cells, float32 ``(num_cells, num_timepoints)``.

        This is the array the ground-truth rows are views of (so writes show in both) when
        they still are; otherwise a stacked copy.
        """
        return _stack_rows([gt.spikes for gt in self.ground_truth], self.traces.shape)

    @property
    def clean_calcium(self) -> np.ndarray:
        """Clean calcium of all cells, float32 ``(num_cells, num_timepoints)``."""
        return _stack_rows([gt.clean_calcium for gt in self.ground_truth], self.traces.shape)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Save to one ``.npz`` file (arrays, per-cell scalars and the config as JSON).

        Parameters
        ----------
        path : str or Path
            Target file; ``.npz`` is appended when missing.

        Returns
        -------
        Path
            The file written.
        """
        from calab.simulation.io import save_result

        return save_result(self, path)

    @classmethod
    def load(cls, path: str | Path) -> SimulationResult:
        """Load a result written by :meth:`save`."""
        from calab.simulation.io import load_result

        return load_result(path)

    def save_for_tuning(
        self, path: str | Path, metadata: dict[str, Any] | None = None
    ) -> None:
        """Save the traces in CaTune format via :func:`calab.save_for_tuning`.

        Writes ``{path}.npy`` and ``{path}_metadata.json``; the metadata records the
        simulation config under ``"simulation_config"`` (user ``metadata`` keys are added).
        Ground truth is not part of that format; use :meth:`save` to keep it.
        """
        from calab.simulation.io import save_traces_for_tuning

        save_traces_for_tuning(self, path, metadata)


def _stack_rows(rows: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The 2-D array whose rows ``rows`` are, if they view one in order; else a stack."""
    if not rows:
        return np.empty(shape, dtype=np.float32)
    base = rows[0].base
    if isinstance(base, np.ndarray) and base.ndim == 2 and base.shape[0] == len(rows):
        start, row_stride = base.ctypes.data, base.strides[0]
        if all(
            row.base is base
            and row.shape == base.shape[1:]
            and row.strides == base.strides[1:]
            and row.ctypes.data == start + i * row_stride
            for i, row in enumerate(rows)
        ):
            return base
    return np.stack(rows)
