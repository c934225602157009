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

from calab.simulation.results import (
    FORMAT,
    FORMAT_VERSION,
    load_result,
    save_result,
    save_traces_for_tuning,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "save_result", "load_result", "save_traces_for_tuning"]
