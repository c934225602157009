"""Saving and loading simulation results.

Two formats:

* :func:`save_result` / :func:`load_result`: one ``.npz`` file with the traces, the
  ground-truth arrays, the per-cell scalars and the config as a JSON string — a lossless
  round trip of a :class:`~calab.simulation.results.SimulationResult`.  Only plain arrays are
  stored (no pickles), so loading never executes code.
* :func:`save_traces_for_tuning`: the traces in the CaTune format of
  :func:`calab.save_for_tuning` (``{path}.npy`` + ``{path}_metadata.json``), with the
  simulation config in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from calab.simulation.config import SimulationConfig
from calab.simulation.results import CellGroundTruth, SimulationResult

__all__ = ["FORMAT", "FORMAT_VERSION", "save_result", "load_result", "save_traces_for_tuning"]

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
