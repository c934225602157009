"""``calab.simulate``: synthetic calcium traces with full ground truth."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from calab.simulation.config import (
    MarkovConfig,
    RandomWalkDrift,
    SimulationConfig,
    apply_overrides,
)
from calab.simulation.results import CellGroundTruth, SimulationResult

__all__ = ["simulate", "resolve_config", "check_engine_limits", "estimate_memory"]

#: Bytes per simulated sample held at the end: traces, spikes and clean calcium, float32.
_BYTES_PER_SAMPLE = 3 * 4
#: Per-cell bookkeeping (parameters, ground-truth objects), generously rounded up.
_BYTES_PER_CELL = 4096
#: Working set of one chunk of cells (float64 temporaries, event arrays), rounded up.
_CHUNK_WORKING_SET = 256 * 1024**2


def resolve_config(
    config: SimulationConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> SimulationConfig:
    """The validated config :func:`simulate` runs: ``config`` (default config when ``None``)
    with ``overrides`` merged in (see :func:`~calab.simulation.config.apply_overrides`).

    Unlike the reference, the ``config`` + ``overrides`` path is validated too, and the
    given config itself is re-validated (assignments to a model are not validated).
    """
    if config is None:
        base = None
    elif isinstance(config, SimulationConfig):
        base = config
    elif isinstance(config, Mapping):
        base = SimulationConfig.model_validate(config)
    else:
        raise TypeError(
            "config must be a SimulationConfig, a mapping or None, "
            f"not {type(config).__name__}"
        )
    return apply_overrides(base, overrides)


def _engine_error(loc: tuple[str, ...], value: Any, message: str) -> dict[str, Any]:
    return {
        "type": PydanticCustomError("invalid_parameter", "invalid parameter: {message}", {
            "message": message
        }),
        "loc": loc,
        "input": value,
    }


def check_engine_limits(config: SimulationConfig) -> None:
    """Cross-field and size checks that the model bounds cannot express.

    The reference engine (0.3.0) makes the same checks (as ``ValueError("invalid parameter:
    ...")``); here they are a :class:`pydantic.ValidationError` (a ``ValueError`` subclass)
    whose ``loc`` names the field and whose message starts with ``invalid parameter:``.

    Checks: ``tau_rise_s < tau_decay_s``; the kernel ``ceil(ln(1e6) * tau_decay_s *
    spike_sim_hz)`` is at most 2^20 samples; every ``_cv`` is at most 10;
    ``num_timepoints * bins_per_frame`` is at most 2^26 high-resolution bins per cell.
    (The reference's limit ``num_cells * num_timepoints <= 2^26`` is *not* applied: cells
    are simulated in chunks.)

    Raises
    ------
    pydantic.ValidationError
    """
    from calab.simulation.engine import (
        LN_1E6,
        MAX_CV,
        MAX_HIGH_RES_BINS,
        MAX_KERNEL_SAMPLES,
        bins_per_frame,
    )

    errors: list[dict[str, Any]] = []
    kernel = config.kernel
    if kernel.tau_rise_s >= kernel.tau_decay_s:
        errors.append(
            _engine_error(
                ("kernel", "tau_rise_s"),
                kernel.tau_rise_s,
                f"tau_rise ({kernel.tau_rise_s} s) must be smaller than "
                f"tau_decay ({kernel.tau_decay_s} s)",
            )
        )
    kernel_samples = math.ceil(LN_1E6 * kernel.tau_decay_s * config.spike_sim_hz)
    if kernel_samples > MAX_KERNEL_SAMPLES:
        errors.append(
            _engine_error(
                ("kernel", "tau_decay_s"),
                kernel.tau_decay_s,
                f"kernel of {kernel_samples} samples (tau_decay {kernel.tau_decay_s} s at "
                f"{config.spike_sim_hz} Hz) exceeds {MAX_KERNEL_SAMPLES} samples",
            )
        )

    cv_fields: list[tuple[tuple[str, ...], float]] = [
        (("alpha_cv",), config.alpha_cv),
        (("kernel", "tau_rise_cv"), kernel.tau_rise_cv),
        (("kernel", "tau_decay_cv"), kernel.tau_decay_cv),
        (("photobleaching", "amplitude_cv"), config.photobleaching.amplitude_cv),
        (("saturation", "k_d_cv"), config.saturation.k_d_cv),
    ]
    if isinstance(config.spike_model, MarkovConfig):
        cv_fields.append(
            (("spike_model", "p_silent_to_active_cv"), config.spike_model.p_silent_to_active_cv)
        )
    if isinstance(config.drift, RandomWalkDrift):
        cv_fields.append((("drift", "step_std_cv"), config.drift.step_std_cv))
    else:
        cv_fields.append((("drift", "amplitude_cv"), config.drift.amplitude_cv))
    for loc, value in cv_fields:
        if value > MAX_CV:
            errors.append(_engine_error(loc, value, f"{loc[-1]} ({value}) must be <= {MAX_CV}"))

    b = bins_per_frame(config.fs_hz, config.spike_sim_hz)
    if config.num_timepoints * b > MAX_HIGH_RES_BINS:
        errors.append(
            _engine_error(
                ("num_timepoints",),
                config.num_timepoints,
                f"num_timepoints x bins per frame = {config.num_timepoints} x {b} exceeds "
                f"{MAX_HIGH_RES_BINS} high-resolution bins per cell",
            )
        )
    if errors:
        raise ValidationError.from_exception_data(SimulationConfig.__name__, errors)


def estimate_memory(config: SimulationConfig) -> int:
    """Estimated peak memory of :func:`simulate` for a validated config, in bytes.

    The outputs dominate: three float32 ``(num_cells, num_timepoints)`` arrays (traces,
    spikes, clean calcium; the ground-truth rows are views of them), plus per-cell
    bookkeeping and the bounded working set of one chunk of cells.
    """
    samples = config.num_cells * config.num_timepoints
    return samples * _BYTES_PER_SAMPLE + config.num_cells * _BYTES_PER_CELL + _CHUNK_WORKING_SET


def simulate(
    config: SimulationConfig | Mapping[str, Any] | None = None,
    *,
    max_memory: int | float | str | None = None,
    **kwargs: Any,
) -> SimulationResult:
    """Generate synthetic calcium imaging traces with full ground truth.

    Pipeline per cell: spikes at ``spike_sim_hz`` (Markov or Poisson) -> double-exponential
    kernel, averaged into frames at ``fs_hz`` -> times alpha -> saturation (optional) ->
    baseline drift (added) -> photobleaching (multiplicative) -> noise (Gaussian, plus
    optional shot noise), with ``noise SD = peak of the clean signal / snr``.  Vectorised
    over cells (NumPy/SciPy); see ``docs/differences.md`` for how the statistics relate to
    the published ``calab==0.3.0``.

    Parameters
    ----------
    config : SimulationConfig, optional
        Full configuration; ``None`` means the defaults.  A mapping is validated into one.
    max_memory : int, float or str, optional, keyword-only
        Memory allowance for this call: bytes, or a size such as ``"32GiB"``.  Default: the
        ``CALAB_MEMORY_LIMIT`` environment variable, else 8 GiB.  The estimate
        (:func:`estimate_memory`, about 12 bytes per cell and frame) is checked before
        anything is allocated.
    **kwargs
        Field overrides, e.g. ``num_cells=50, seed=123``, or ``noise={"snr": 4}`` to patch
        one sub-config field.  Validated: unknown names and out-of-range values raise.

    Returns
    -------
    SimulationResult
        ``traces`` float32 ``(num_cells, num_timepoints)``; ``ground_truth[c]`` with the
        spikes per frame, clean calcium, alpha, snr and taus of cell ``c``; ``config`` the
        effective config.  The same config (seed included) always gives the same arrays, and
        cell ``c`` does not depend on ``num_cells``.

    Raises
    ------
    pydantic.ValidationError
        Invalid or unknown fields, ``tau_rise_s >= tau_decay_s``, a ``_cv`` above 10, a
        kernel over 2^20 samples or more than 2^26 high-resolution bins per cell.
    calab._validate.MemoryLimitError
        (a ``MemoryError`` and a ``ValueError``) The estimated memory exceeds the
        allowance; the message gives both and how to raise the allowance.

    Examples
    --------
    >>> result = simulate(num_cells=3, num_timepoints=300, seed=1)
    >>> result.traces.shape, result.traces.dtype.name
    ((3, 300), 'float32')
    """
    from calab.simulation.engine import run  # SciPy is imported on first use only

    from calab._validate import check_memory

    effective = resolve_config(config, kwargs)
    check_engine_limits(effective)
    check_memory(
        estimate_memory(effective),
        f"simulate(num_cells={effective.num_cells}, num_timepoints={effective.num_timepoints})",
        limit=max_memory,
        how_to_raise="pass simulate(..., max_memory='{size}')",
    )
    arrays = run(effective)
    params = arrays.params
    alphas = params.alpha.tolist()
    snrs = params.snr.tolist()
    tau_rises = params.tau_rise.tolist()
    tau_decays = params.tau_decay.tolist()
    # model_construct: these values are produced here with the right types, and per-cell
    # validation would dominate the cost of small simulations.
    ground_truth = [
        CellGroundTruth.model_construct(
            spikes=arrays.spikes[c],
            clean_calcium=arrays.clean_calcium[c],
            alpha=alphas[c],
            snr=snrs[c],
            tau_rise_s=tau_rises[c],
            tau_decay_s=tau_decays[c],
        )
        for c in range(effective.num_cells)
    ]
    return SimulationResult.model_construct(
        traces=arrays.traces, ground_truth=ground_truth, config=effective
    )
