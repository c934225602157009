"""Result models of :func:`calab.simulate`: the traces and per-cell ground truth."""

from __future__ import annotations

import json
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
        return save_result(self, path)

    @classmethod
    def load(cls, path: str | Path) -> SimulationResult:
        """Load a result written by :meth:`save`."""
        return load_result(path)

    def save_for_tuning(
        self, path: str | Path, metadata: dict[str, Any] | None = None
    ) -> None:
        """Save the traces in CaTune format via :func:`calab.save_for_tuning`.

        Writes ``{path}.npy`` and ``{path}_metadata.json``; the metadata records the
        simulation config under ``"simulation_config"`` (user ``metadata`` keys are added).
        Ground truth is not part of that format; use :meth:`save` to keep it.
        """
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


# --------------------------------------------------------------------------- storage
# The file formats live next to the classes they store (calab.simulation.io re-exports
# them), so that neither module imports the other.

#: Identifies our ``.npz`` files (stored under the key ``format``).
FORMAT = "calab.simulation_result"
#: Bumped on incompatible layout changes; :func:`load_result` rejects newer versions.
FORMAT_VERSION = 1

_SCALARS = ("alpha", "snr", "tau_rise_s", "tau_decay_s")


def _npz_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_result(result: SimulationResult, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (``.npz`` appended when missing).

    Parameters
    ----------
    result : SimulationResult
    path : str or Path

    Returns
    -------
    Path
        The file written.
    """
    target = _npz_path(path)
    ground_truth = result.ground_truth
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "config_json": np.array(result.config.model_dump_json()),
        "traces": np.asarray(result.traces),
        "spikes": np.asarray(result.spikes),
        "clean_calcium": np.asarray(result.clean_calcium),
    }
    for name in _SCALARS:
        arrays[name] = np.array([getattr(gt, name) for gt in ground_truth], dtype=np.float64)
    with open(target, "wb") as handle:  # an open handle: np.savez must not rename the file
        np.savez(handle, **arrays)
    return target


def load_result(path: str | Path) -> SimulationResult:
    """Read a result written by :func:`save_result`.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file (the suffix may be omitted).

    Returns
    -------
    SimulationResult
        ``traces``, ``spikes`` and ``clean_calcium`` as float32 arrays; the ground-truth rows
        are views of the loaded ``(num_cells, num_timepoints)`` arrays, as after
        :func:`calab.simulate`.

    Raises
    ------
    ValueError
        If the file is not a simulation result of a supported version.
    pydantic.ValidationError
        If the stored config is invalid.
    """
    source = Path(path)
    if not source.exists():
        source = _npz_path(source)
    with np.load(source, allow_pickle=False) as data:
        if "format" not in data.files or str(data["format"]) != FORMAT:
            raise ValueError(f"{source} is not a calab simulation result (.npz by save_result)")
        version = int(data["format_version"])
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{source} has format version {version}; this calab reads up to {FORMAT_VERSION}"
            )
        config = SimulationConfig.model_validate_json(str(data["config_json"]))
        traces = np.ascontiguousarray(data["traces"], dtype=np.float32)
        spikes = np.ascontiguousarray(data["spikes"], dtype=np.float32)
        clean = np.ascontiguousarray(data["clean_calcium"], dtype=np.float32)
        scalars = {name: data[name].tolist() for name in _SCALARS}
    if not (traces.shape == spikes.shape == clean.shape) or traces.ndim != 2:
        raise ValueError(f"{source}: traces/spikes/clean_calcium shapes disagree")
    ground_truth = [
        CellGroundTruth(
            spikes=spikes[i],
            clean_calcium=clean[i],
            **{name: scalars[name][i] for name in _SCALARS},
        )
        for i in range(traces.shape[0])
    ]
    return SimulationResult(traces=traces, ground_truth=ground_truth, config=config)


def save_traces_for_tuning(
    result: SimulationResult, path: str | Path, metadata: dict[str, Any] | None = None
) -> None:
    """Save ``result.traces`` in CaTune format with :func:`calab.io.save_for_tuning`.

    Parameters
    ----------
    result : SimulationResult
    path : str or Path
        Output stem: writes ``{path}.npy`` and ``{path}_metadata.json``.
    metadata : dict, optional
        Extra metadata; merged over ours (``source``, ``simulation_config``).
    """
    from calab.io import save_for_tuning  # lazy: calab.io pulls in file-format modules

    merged: dict[str, Any] = {
        "source": "calab.simulate",
        "simulation_config": json.loads(result.config.model_dump_json()),
    }
    merged.update(metadata or {})
    save_for_tuning(result.traces, result.config.fs_hz, path, metadata=merged)
