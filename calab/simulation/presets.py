"""Built-in indicator presets.

Each preset sets the kernel time constants and the SNR (``clean`` also turns drift and
alpha variation off); every other field keeps its :class:`SimulationConfig` default
(Markov spikes, random-walk drift, ``alpha_cv`` 0.3, 100 cells x 27000 frames).

Overrides are merged over the preset and validated (the reference raises ``TypeError`` when
an override names a field the preset sets, e.g. ``presets.gcamp6s(noise=...)``): a model
instance replaces the preset's sub-config, a dict patches it, unknown names and invalid
values raise :class:`pydantic.ValidationError`.
"""

from __future__ import annotations

from typing import Any, Callable

from calab.simulation.config import (
    KernelConfig,
    NoiseConfig,
    RandomWalkDrift,
    SimulationConfig,
    apply_overrides,
)

__all__ = ["presets", "PRESET_NAMES"]

#: Canonical preset order (the reference's ``presets::all()``).
PRESET_NAMES: tuple[str, ...] = ("gcamp6f", "gcamp6s", "gcamp6m", "jgcamp8f", "ogb1", "clean")


def _indicator(tau_rise_s: float, tau_decay_s: float, snr: float, **fields: Any) -> SimulationConfig:
    return SimulationConfig(
        kernel=KernelConfig(tau_rise_s=tau_rise_s, tau_decay_s=tau_decay_s),
        noise=NoiseConfig(snr=snr),
        **fields,
    )


class presets:  # noqa: N801  (lower-case namespace class: the reference's public name)
    """Built-in indicator presets.  Each method returns a :class:`SimulationConfig`.

    Every factory takes ``**overrides`` (see the module docstring for how they merge).

    Examples
    --------
    >>> cfg = presets.gcamp6s(num_cells=20, num_timepoints=3000, noise={"snr": 10.0})
    >>> cfg.kernel.tau_decay_s, cfg.noise.snr
    (1.8, 10.0)
    """

    @staticmethod
    def gcamp6f(**overrides: Any) -> SimulationConfig:
        """GCaMP6f: tau 0.1 s rise / 0.6 s decay, SNR 20 (Chen et al., 2013, Nature)."""
        return apply_overrides(_indicator(0.1, 0.6, 20.0), overrides)

    @staticmethod
    def gcamp6s(**overrides: Any) -> SimulationConfig:
        """GCaMP6s: slow kinetics (0.4 s / 1.8 s), SNR 25 (Chen et al., 2013)."""
        return apply_overrides(_indicator(0.4, 1.8, 25.0), overrides)

    @staticmethod
    def gcamp6m(**overrides: Any) -> SimulationConfig:
        """GCaMP6m: moderate kinetics (0.15 s / 0.9 s), SNR 22 (Chen et al., 2013)."""
        return apply_overrides(_indicator(0.15, 0.9, 22.0), overrides)

    @staticmethod
    def jgcamp8f(**overrides: Any) -> SimulationConfig:
        """jGCaMP8f: fast indicator (0.05 s / 0.3 s), noisier, SNR 12 (Zhang et al., 2023)."""
        return apply_overrides(_indicator(0.05, 0.3, 12.0), overrides)

    @staticmethod
    def ogb1(**overrides: Any) -> SimulationConfig:
        """OGB-1 synthetic dye: 0.05 s / 1.5 s, SNR 15 (Stosiek et al., 2003)."""
        return apply_overrides(_indicator(0.05, 1.5, 15.0), overrides)

    @staticmethod
    def clean(**overrides: Any) -> SimulationConfig:
        """Near-ideal traces for algorithm debugging: GCaMP6f kinetics, SNR 200, no drift,
        no alpha variation."""
        base = _indicator(
            0.1, 0.6, 200.0, drift=RandomWalkDrift(step_std_fraction=0.0), alpha_cv=0.0
        )
        return apply_overrides(base, overrides)

    @staticmethod
    def all(**overrides: Any) -> dict[str, SimulationConfig]:
        """Every preset, in canonical order (:data:`PRESET_NAMES`), with the same overrides.

        An extension: the reference exposes this list only to its web apps.
        """
        return {name: _FACTORIES[name](**overrides) for name in PRESET_NAMES}


_FACTORIES: dict[str, Callable[..., SimulationConfig]] = {
    name: getattr(presets, name) for name in PRESET_NAMES
}
