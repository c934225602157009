"""``DeconConfig``: the settings of automated deconvolution (CaDecon / InDeCa outer loop).

The ten documented fields map 1:1 to the browser app's ``BridgeConfig`` (spec
``indeca.md`` §6.1): ``None`` means "use the default", which for the browser is the
app's own default and for :func:`calab.run_cadecon` is the value in
:data:`NATIVE_DEFAULTS` below.  The remaining fields steer only the native loop (the
browser app does not expose them); :meth:`DeconConfig.bridge_dict` leaves them out, so a
hosted 0.3.0 app never sees a key it does not know.

Bad values raise :class:`pydantic.ValidationError` naming the field, at construction and
when ``run_cadecon(..., **overrides)`` applies keyword overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from calab._validate import unknown_names_message

__all__ = ["BRIDGE_FIELDS", "NATIVE_DEFAULTS", "DeconConfig", "ResolvedConfig"]

#: The fields a hosted CaDecon app understands (0.3.0 ``BridgeConfig``), in the reference's order.
BRIDGE_FIELDS = (
    "autorun",
    "upsample_target",
    "hp_filter_enabled",
    "lp_filter_enabled",
    "max_iterations",
    "convergence_tol",
    "num_subsets",
    "target_coverage",
    "aspect_ratio",
    "seed",
)


class DeconConfig(BaseModel):
    """Configuration for automated CaDecon deconvolution.

    Used by :func:`calab.run_cadecon` (native loop) and by :func:`calab.decon` (the
    browser bridge).  Fields map 1:1 to the BridgeConfig TypeScript interface in
    ``@calab/io``; only ``autorun`` is always serialized for the bridge, all other fields
    use ``exclude_none=True`` so absent values fall through to the app's defaults
    (see :meth:`bridge_dict`).  Fields after ``seed`` are native-loop settings.

    Unknown field names are rejected (a typo would otherwise be silently ignored).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    # ---- the documented bridge fields (0.3.0 names, bounds and descriptions)
    autorun: bool = Field(False, description="Auto-start solver after loading traces")
    upsample_target: int | None = Field(None, gt=0, description="Target sampling rate (Hz) for upsampling")
    hp_filter_enabled: bool | None = Field(None, description="Enable high-pass filter")
    lp_filter_enabled: bool | None = Field(None, description="Enable low-pass filter")
    max_iterations: int | None = Field(None, gt=0, le=200, description="Maximum solver iterations (1-200)")
    convergence_tol: float | None = Field(None, gt=0, lt=1, description="Convergence tolerance (0-1 exclusive)")
    num_subsets: int | None = Field(None, gt=0, description="Number of random subsets for optimization")
    target_coverage: float | None = Field(None, gt=0, le=1, description="Fraction of data covered by subsets (0-1]")
    aspect_ratio: float | None = Field(None, gt=0, description="Subset aspect ratio (>1 = wider, <1 = taller)")
    seed: int | None = Field(None, description="Random seed for subset placement")

    # ---- native-loop settings (not sent to a browser app)
    initialization: Literal["bispectrum", "autocovariance", "peaks"] | None = Field(
        None,
        description="Starting kernel when no taus are given: 'bispectrum' (both taus fitted to the "
        "phase of the traces' third-order spectrum; falls back to 'autocovariance' when the data "
        "carry no third-order signal), 'autocovariance' (AR(2) fit of the traces' autocovariance, "
        "noise removed at lag 0) or 'peaks' (the app's peak-seeded free kernel, spec §6.3)",
    )
    refine: bool | None = Field(
        None,
        description="Run the free-kernel refinement iterations (spec §6.4) after the starting kernel. "
        "Default: not after a bispectral start, which they pull away from the truth "
        "(docs/cadecon.md); always after given taus and the other starts",
    )
    tau_rise: float | None = Field(None, gt=0, description="Starting rise time constant (s); skips the data-driven start")
    tau_decay: float | None = Field(
        None, gt=0, validate_default=True,
        description="Starting decay time constant (s); skips the data-driven start",
    )
    patience: int | None = Field(None, ge=1, le=10, description="Consecutive stable iterations that declare convergence")
    min_iterations: int | None = Field(None, ge=0, le=10, description="Iterations before one can count as stable")
    selection_window: int | None = Field(None, ge=1, le=20, description="Last iterations whose kernel shapes are median-combined")
    noise_constrained: bool | None = Field(None, description="Threshold at the noise floor (app default) instead of maximum PVE")
    activity: Literal["counts", "continuous"] | None = Field(
        None,
        description="What CaDeconResult.activity holds: thresholded event counts per frame (as the "
        "app exports) or the continuous solution at the learned kernel; the other goes in metadata",
    )
    lambda_: float | None = Field(None, ge=0, description="L1 sparsity weight of the trace solves")
    trace_max_iters: int | None = Field(None, ge=1, le=100_000, description="FISTA iteration cap per trace solve")
    trace_tol: float | None = Field(None, ge=0, lt=1, description="FISTA relative tolerance of the trace solves")
    kernel_max_iters: int | None = Field(None, ge=1, le=100_000, description="FISTA iteration cap of kernel estimation")
    kernel_tol: float | None = Field(None, ge=0, lt=1, description="FISTA relative tolerance of kernel estimation")
    kernel_smooth_lambda: float | None = Field(None, ge=0, description="Total-variation weight of kernel estimation")

    @field_validator(
        "upsample_target", "max_iterations", "convergence_tol", "num_subsets", "target_coverage", "aspect_ratio",
        "seed", "tau_rise", "tau_decay", "patience", "min_iterations", "selection_window", "lambda_",
        "trace_max_iters", "trace_tol", "kernel_max_iters", "kernel_tol", "kernel_smooth_lambda", mode="before",
    )
    @classmethod
    def _numbers_are_not_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads True as 1; calab's validation never does (True is a flag)
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            raise ValueError(f"{info.field_name} must be a number, got {value!r}; a boolean is not a count or amount")
        return value

    @model_validator(mode="before")
    @classmethod
    def _known_settings(cls, data: Any) -> Any:
        # A misspelt setting names the closest real one instead of pydantic's bare
        # "Extra inputs are not permitted".
        if isinstance(data, dict):
            message = unknown_names_message([str(key) for key in data], cls.model_fields, "DeconConfig setting")
            if message is not None:
                raise PydanticCustomError("unknown_setting", "{message}", {"message": message})
        return data

    @field_validator("tau_decay")
    @classmethod
    def _starting_kernel(cls, tau_decay: float | None, info: ValidationInfo) -> float | None:
        tau_rise = info.data.get("tau_rise")
        if (tau_rise is None) != (tau_decay is None) and "tau_rise" in info.data:
            raise ValueError("give both tau_rise and tau_decay as the starting kernel, or neither")
        if tau_rise is not None and tau_decay is not None and not tau_rise < tau_decay:
            raise ValueError(f"the starting tau_decay ({tau_decay} s) must exceed tau_rise ({tau_rise} s)")
        return tau_decay

    def bridge_dict(self) -> dict[str, Any]:
        """The dict a browser app receives: ``autorun`` plus every documented field that is set."""
        data = self.model_dump(include=set(BRIDGE_FIELDS), exclude_none=True)
        data["autorun"] = self.autorun
        return {name: data[name] for name in BRIDGE_FIELDS if name in data}

    def resolved(self) -> ResolvedConfig:
        """Every setting with ``None`` replaced by the native default."""
        checked = type(self).model_validate(self.model_dump())  # assignments may have broken a pair rule
        values = {name: getattr(checked, name) for name in NATIVE_DEFAULTS}
        for name, default in NATIVE_DEFAULTS.items():
            if values[name] is None:
                values[name] = default
        return ResolvedConfig(**values, tau_rise=checked.tau_rise, tau_decay=checked.tau_decay)


#: What ``None`` means in the native loop.  The documented fields keep the browser app's
#: defaults (spec §6.1) except ``num_subsets``, which is fixed instead of depending on the
#: machine's CPU count (quirk (e), docs/differences.md).  Values marked "evidence" were
#: chosen on simulated populations (docs/cadecon.md).
NATIVE_DEFAULTS: dict[str, Any] = {
    "upsample_target": 100,  # evidence (app: 300)
    "hp_filter_enabled": True,
    "lp_filter_enabled": True,
    "max_iterations": 10,  # evidence (app: 20)
    "convergence_tol": 0.01,  # evidence (app: 0.005)
    "num_subsets": 8,
    "target_coverage": 0.25,
    "aspect_ratio": 1.0,
    "seed": 42,
    "initialization": "bispectrum",  # evidence
    "refine": None,  # "auto": decided by the start actually used (False after a bispectral one: evidence)
    "patience": 3,
    "min_iterations": 2,
    "selection_window": 3,  # evidence (app: 5)
    "noise_constrained": True,
    "activity": "continuous",  # evidence (app exports counts)
    "lambda_": 0.0,
    "trace_max_iters": 500,
    "trace_tol": 1e-4,
    "kernel_max_iters": 200,
    "kernel_tol": 1e-4,
    "kernel_smooth_lambda": 0.0,
}


@dataclass(frozen=True)
class ResolvedConfig:
    """All loop settings with defaults filled in (what the loop actually runs with)."""

    upsample_target: int
    hp_filter_enabled: bool
    lp_filter_enabled: bool
    max_iterations: int
    convergence_tol: float
    num_subsets: int
    target_coverage: float
    aspect_ratio: float
    seed: int
    initialization: str
    refine: bool | None
    patience: int
    min_iterations: int
    selection_window: int
    noise_constrained: bool
    activity: str
    lambda_: float
    trace_max_iters: int
    trace_tol: float
    kernel_max_iters: int
    kernel_tol: float
    kernel_smooth_lambda: float
    tau_rise: float | None
    tau_decay: float | None

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
