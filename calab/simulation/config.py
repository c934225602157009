"""Pydantic v2 configuration models of the calcium-trace simulator.

The models mirror the published ``calab==0.3.0`` field for field (names, types, defaults,
bounds, JSON key order and the ``model_type`` discriminated unions), see
``docs/differences.md`` for the two deliberate changes:

* every float field must be finite (the reference accepts ``inf`` for lower-bounded fields
  and then fails at simulate time, and such a config cannot round-trip through JSON);
* keyword overrides (:func:`apply_overrides`, used by ``simulate(config, **kw)`` and by the
  presets) are validated, reject unknown names and patch sub-configs given as dicts.

Model settings are otherwise the plain ``BaseModel`` ones, as in the reference: unknown
fields passed to a model's constructor are ignored, models are mutable (and therefore
unhashable) and assignments are *not* validated.  :func:`calab.simulate` re-validates the
whole config before running, so an invalid assignment is still caught there.

Per-cell ``_cv`` fields: ``alpha_cv`` is the true coefficient of variation of a log-normal
with mean ``alpha_mean``; every other ``_cv`` is the standard deviation of the natural log of
the per-cell value, whose median is the nominal value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "KernelConfig",
    "MarkovConfig",
    "PoissonConfig",
    "SpikeModel",
    "NoiseConfig",
    "SinusoidalDrift",
    "RandomWalkDrift",
    "DriftModel",
    "PhotobleachingConfig",
    "SaturationConfig",
    "SimulationConfig",
    "apply_overrides",
]

#: Largest seed: the published engine seeds a u32 generator.
MAX_SEED = 2**32 - 1


class _SimulationModel(BaseModel):
    """Common settings: plain BaseModel behaviour, except that floats must be finite."""

    # ``inf`` would serialise to JSON ``null`` and break the JSON round trip, and the
    # engine cannot use it anyway; NaN is rejected by the bounds already.
    model_config = ConfigDict(allow_inf_nan=False)


# --------------------------------------------------------------------------- kernel


class KernelConfig(_SimulationModel):
    """Double-exponential kernel: ``h(t) = exp(-t/tau_decay) - exp(-t/tau_rise)``, peak 1.

    ``tau_rise_s < tau_decay_s`` is not enforced by the model (as in the reference) but by
    :func:`calab.simulate`, which rejects it with a ``ValidationError`` on
    ``kernel.tau_rise_s``.
    """

    tau_rise_s: float = Field(0.1, gt=0, description="Rise time constant (s)")
    tau_decay_s: float = Field(0.6, gt=0, description="Decay time constant (s)")
    tau_rise_cv: float = Field(
        0.0, ge=0, description="Per-cell log-normal spread (SD of ln) of tau_rise; 0 = none"
    )
    tau_decay_cv: float = Field(
        0.0, ge=0, description="Per-cell log-normal spread (SD of ln) of tau_decay; 0 = none"
    )


# --------------------------------------------------------------------------- spikes


class MarkovConfig(_SimulationModel):
    """Two-state (silent/active) Markov spike generator with bursty firing.

    Transition probabilities are per *imaging frame* (converted to per high-resolution bin
    internally); spike probabilities are per *high-resolution bin* at ``spike_sim_hz``.
    The chain starts silent.
    """

    model_type: Literal["markov"] = "markov"
    p_silent_to_active: float = Field(
        0.005, ge=0, le=1, description="Silent->active transition probability per frame"
    )
    p_active_to_silent: float = Field(
        0.3, ge=0, le=1, description="Active->silent transition probability per frame"
    )
    p_spike_when_active: float = Field(
        0.5, ge=0, le=1, description="Spike probability per high-resolution bin while active"
    )
    p_spike_when_silent: float = Field(
        0.002, ge=0, le=1, description="Spike probability per high-resolution bin while silent"
    )
    p_silent_to_active_cv: float = Field(
        0.0,
        ge=0,
        description="Per-cell log-normal spread (SD of ln) of p_silent_to_active; 0 = none",
    )


class PoissonConfig(_SimulationModel):
    """Homogeneous Poisson generator (Bernoulli per high-resolution bin, p = rate/spike_sim_hz)."""

    model_type: Literal["poisson"] = "poisson"
    rate_hz: float = Field(1.0, gt=0, description="Mean firing rate (Hz)")


#: Spike generator: a :class:`MarkovConfig` or a :class:`PoissonConfig`, by ``model_type``.
SpikeModel = Annotated[Union[MarkovConfig, PoissonConfig], Field(discriminator="model_type")]


# --------------------------------------------------------------------------- noise


class NoiseConfig(_SimulationModel):
    """Gaussian noise plus optional signal-dependent Poisson (shot) noise.

    SNR definition: the noise SD of a cell is ``signal_max / snr`` where ``signal_max`` is the
    peak of the cell's noise-free signal (alpha-scaled, saturated) over the whole trace.
    """

    snr: float = Field(8.0, gt=0, description="Peak clean signal / noise SD")
    shot_noise_enabled: bool = Field(False, description="Add signal-dependent Poisson noise")
    shot_noise_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of the noise variance at the peak due to shot noise"
    )
    snr_spread: float = Field(
        0.0, ge=0, description="Per-cell additive uniform spread of snr (+/- this value)"
    )


# --------------------------------------------------------------------------- drift


class SinusoidalDrift(_SimulationModel):
    """Deterministic sinusoidal baseline drift (phase 0 at the first frame).

    A simple test signal rather than a physical model.  ``cycles_min > cycles_max`` is
    allowed (the draw then lands between the two).
    """

    model_type: Literal["sinusoidal"] = "sinusoidal"
    amplitude_fraction: float = Field(
        0.1, ge=0, description="Amplitude as a fraction of the cell's peak clean signal"
    )
    cycles_min: float = Field(2.0, gt=0, description="Minimum number of cycles over the trace")
    cycles_max: float = Field(4.0, gt=0, description="Maximum number of cycles over the trace")
    amplitude_cv: float = Field(
        0.0, ge=0, description="Per-cell log-normal spread (SD of ln) of the amplitude; 0 = none"
    )


class RandomWalkDrift(_SimulationModel):
    """Mean-reverting Gaussian random-walk baseline drift, an AR(1) process (the default).

    ``D[t] = (1 - mean_reversion) * D[t-1] + step * signal_max * N(0, 1)``.
    """

    model_type: Literal["random_walk"] = "random_walk"
    step_std_fraction: float = Field(
        0.002, ge=0, description="Per-frame innovation SD as a fraction of the peak clean signal"
    )
    mean_reversion: float = Field(
        0.001, ge=0, le=1, description="AR(1) pull toward 0 per frame (0 = pure walk, 1 = white)"
    )
    step_std_cv: float = Field(
        0.0, ge=0, description="Per-cell log-normal spread (SD of ln) of step_std; 0 = none"
    )


#: Baseline drift: a :class:`SinusoidalDrift` or a :class:`RandomWalkDrift`, by ``model_type``.
DriftModel = Annotated[
    Union[SinusoidalDrift, RandomWalkDrift], Field(discriminator="model_type")
]


# --------------------------------------------------------------------------- bleaching, saturation


class PhotobleachingConfig(_SimulationModel):
    """Multiplicative exponential bleaching: ``F(t) *= 1 - amp * (1 - exp(-t/tau))``."""

    enabled: bool = Field(False, description="Apply photobleaching")
    decay_time_constant_s: float = Field(600.0, gt=0, description="Bleaching time constant (s)")
    amplitude_fraction: float = Field(
        0.15, ge=0, le=1, description="Asymptotic fractional signal loss"
    )
    amplitude_cv: float = Field(
        0.0,
        ge=0,
        description="Per-cell log-normal spread (SD of ln) of the amplitude (capped at 1); 0 = none",
    )


class SaturationConfig(_SimulationModel):
    """Hill-equation indicator saturation: ``F_sat = F^n / (F^n + k_d^n)``, in [0, 1)."""

    enabled: bool = Field(False, description="Apply indicator saturation")
    hill_coefficient: float = Field(1.0, gt=0, description="Hill exponent n")
    k_d: float = Field(
        5.0, gt=0, description="Half-saturation level, in units of the alpha-scaled clean signal"
    )
    k_d_cv: float = Field(
        0.0, ge=0, description="Per-cell log-normal spread (SD of ln) of k_d; 0 = none"
    )


# --------------------------------------------------------------------------- top level


class SimulationConfig(_SimulationModel):
    """Complete configuration for synthetic calcium-trace generation.

    Per-cell variation (``_cv`` fields) lives on each sub-config next to the nominal value
    it modifies; alpha is here because it belongs to no single pipeline step.  Field order is
    the JSON key order of the reference.
    """

    fs_hz: float = Field(30.0, gt=0, description="Imaging frame rate (Hz)")
    num_timepoints: int = Field(27000, gt=0, description="Frames per cell")
    num_cells: int = Field(100, gt=0, description="Number of cells")
    kernel: KernelConfig = Field(default_factory=KernelConfig)
    spike_model: SpikeModel = Field(default_factory=MarkovConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    drift: DriftModel = Field(default_factory=RandomWalkDrift)
    photobleaching: PhotobleachingConfig = Field(default_factory=PhotobleachingConfig)
    saturation: SaturationConfig = Field(default_factory=SaturationConfig)
    alpha_mean: float = Field(1.0, gt=0, description="Mean per-cell amplitude factor")
    alpha_cv: float = Field(
        0.3, ge=0, description="Coefficient of variation of the log-normal alpha; 0 = none"
    )
    seed: int = Field(42, ge=0, le=MAX_SEED, description="RNG seed (0 <= seed < 2**32)")
    spike_sim_hz: float = Field(
        300.0, gt=0, description="Internal high-resolution spike simulation rate (Hz)"
    )


# --------------------------------------------------------------------------- overrides

# Sub-config fields and the model classes a dict for them may describe.  Unions are
# resolved by their ``model_type`` tag.
_SUBCONFIG_MODELS: dict[str, dict[str | None, type[BaseModel]]] = {
    "kernel": {None: KernelConfig},
    "noise": {None: NoiseConfig},
    "photobleaching": {None: PhotobleachingConfig},
    "saturation": {None: SaturationConfig},
    "spike_model": {"markov": MarkovConfig, "poisson": PoissonConfig},
    "drift": {"sinusoidal": SinusoidalDrift, "random_walk": RandomWalkDrift},
}


def apply_overrides(
    base: SimulationConfig | None, overrides: Mapping[str, Any]
) -> SimulationConfig:
    """Return a new, fully validated config: ``base`` with ``overrides`` applied.

    Parameters
    ----------
    base : SimulationConfig or None
        Starting config (``None`` means ``SimulationConfig()``).  It is not modified, and it
        is re-validated too, so values assigned to it without validation are checked.
    overrides : mapping of str to object
        Top-level field names to new values.  A model instance (or a dict carrying a
        different ``model_type``) replaces the sub-config; a dict patches it, keeping the
        fields it does not name (so ``noise={"snr": 5}`` on a preset keeps the preset's other
        noise settings).

    Returns
    -------
    SimulationConfig

    Raises
    ------
    pydantic.ValidationError
        For unknown field names (top level or inside a sub-config dict; error type
        ``extra_forbidden``) and for any value outside its bounds; each error names the
        field (``loc``).
    """
    data: dict[str, Any] = (base if base is not None else SimulationConfig()).model_dump()
    errors: list[dict[str, Any]] = []
    for key, value in overrides.items():
        if key not in SimulationConfig.model_fields:
            errors.append({"type": "extra_forbidden", "loc": (key,), "input": value})
            continue
        if key in _SUBCONFIG_MODELS:
            value, sub_errors = _resolve_subconfig(key, value, data[key])
            errors.extend(sub_errors)
        data[key] = value
    if errors:
        raise ValidationError.from_exception_data(SimulationConfig.__name__, errors)
    return SimulationConfig.model_validate(data)


def _resolve_subconfig(
    key: str, value: Any, current: dict[str, Any]
) -> tuple[Any, list[dict[str, Any]]]:
    """Turn a sub-config override into a dict, merged over ``current`` when it is a patch."""
    replace = isinstance(value, BaseModel)
    if replace:
        # Dump instances so that they are re-validated (assignment is not validated) and so
        # the new config never shares a mutable sub-config with the caller's object.
        value = value.model_dump()
    if not isinstance(value, Mapping):
        return value, []  # let pydantic report the wrong type
    value = dict(value)
    candidates = _SUBCONFIG_MODELS[key]
    tag = value.get("model_type", current.get("model_type"))
    model_cls = candidates.get(tag) if None not in candidates else candidates[None]
    if model_cls is None:
        return value, []  # unknown tag: pydantic's discriminator error names it
    errors = [
        {"type": "extra_forbidden", "loc": (key, name), "input": value[name]}
        for name in value
        if name not in model_cls.model_fields
    ]
    if not replace and tag == current.get("model_type"):
        value = {**current, **value}
    return value, errors
