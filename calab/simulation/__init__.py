"""Synthetic calcium-imaging traces with ground truth (``calab.simulate``).

Public names (re-exported by :mod:`calab`):

* :func:`simulate` — run a simulation, returns a :class:`SimulationResult`;
* :class:`presets` — indicator presets (``gcamp6f``, ``gcamp6s``, ``gcamp6m``,
  ``jgcamp8f``, ``ogb1``, ``clean``), each returning a :class:`SimulationConfig`;
* configs: :class:`SimulationConfig`, :class:`KernelConfig`, :class:`NoiseConfig`,
  :class:`PhotobleachingConfig`, :class:`SaturationConfig`, the spike models
  :class:`MarkovConfig` / :class:`PoissonConfig` (union :data:`SpikeModel`) and the drift
  models :class:`RandomWalkDrift` / :class:`SinusoidalDrift` (union :data:`DriftModel`);
* results: :class:`SimulationResult`, :class:`CellGroundTruth`.

Importing this package loads pydantic and NumPy only (SciPy on the first simulation; never
CuPy or JAX).
"""

from __future__ import annotations

from calab.simulation.config import (
    DriftModel,
    KernelConfig,
    MarkovConfig,
    NoiseConfig,
    PhotobleachingConfig,
    PoissonConfig,
    RandomWalkDrift,
    SaturationConfig,
    SimulationConfig,
    SinusoidalDrift,
    SpikeModel,
)
from calab.simulation.presets import PRESET_NAMES, presets
from calab.simulation.results import CellGroundTruth, SimulationResult
from calab.simulation.simulate import simulate

__all__ = [
    "simulate",
    "presets",
    "PRESET_NAMES",
    "SimulationConfig",
    "KernelConfig",
    "NoiseConfig",
    "PhotobleachingConfig",
    "SaturationConfig",
    "PoissonConfig",
    "MarkovConfig",
    "RandomWalkDrift",
    "SinusoidalDrift",
    "DriftModel",
    "SpikeModel",
    "SimulationResult",
    "CellGroundTruth",
]
