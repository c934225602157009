"""``DeconConfig``: the settings of automated deconvolution (:func:`calab.run_cadecon`, CaDecon).

The ten documented fields map 1:1 to the browser app's ``BridgeConfig``: ``None`` means
"use the default", which for the browser is the app's own default and for
:func:`calab.run_cadecon` is the value in :data:`NATIVE_DEFAULTS` below.  The remaining fields steer only the native loop (the
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
    """Settings of automated deconvolution: how the kernel is learned and the cells solved.

    Pass one to :func:`calab.run_cadecon` (``config=``) or :func:`calab.decon`, or give the
    same names as keywords (``calab.run_cadecon(traces, fs, max_iterations=5)``).  Every
    field but ``autorun`` defaults to None, meaning "the default": for ``run_cadecon`` the value in
    ``calab.cadecon.NATIVE_DEFAULTS``, for the browser app its own.  The first ten fields
    are the ones the browser app understands (``bridge_dict()`` sends only those); the rest
    steer ``run_cadecon`` alone.  A misspelt name is an error naming the closest setting.
    Every field and its meaning is listed below (also in ``DeconConfig.model_json_schema()``).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    # ---- the documented bridge fields (0.3.0 names, bounds and descriptions)
    autorun: bool = Field(False, description="Browser app: start the run as soon as the traces are loaded")
    upsample_target: int | None = Field(None, gt=0, description="Rate (Hz) the spikes are inferred at: the frame rate times a whole factor reaching about this (finer spike timing, slower)")
    hp_filter_enabled: bool | None = Field(None, description="Remove slow drift from the traces before inferring spikes")
    lp_filter_enabled: bool | None = Field(None, description="Remove noise faster than the kernel's rise before inferring spikes")
    max_iterations: int | None = Field(None, gt=0, le=200, description="Most refinement rounds of the kernel (1-200); the default bispectral kernel needs none")
    convergence_tol: float | None = Field(None, gt=0, lt=1, description="Refinement stops when the kernel's shape changes less than this between rounds (0-1)")
    num_subsets: int | None = Field(None, gt=0, description="Number of windows (groups of cells x stretches of time) the kernel is refined on")
    target_coverage: float | None = Field(None, gt=0, le=1, description="Fraction of the recording those windows cover together (0-1]")
    aspect_ratio: float | None = Field(None, gt=0, description="Shape of each window: >1 more time and fewer cells, <1 the reverse")
    seed: int | None = Field(None, description="Seed of the window placement (same seed, same result)")

    # ---- native-loop settings (not sent to a browser app)
    initialization: Literal["bispectrum", "autocovariance", "peaks"] | None = Field(
        None,
        description="How the kernel is first estimated when no taus are given: 'bispectrum' (default: "
        "both time constants fitted to the shape the traces' transients share, with no spike "
        "inference; falls back to 'autocovariance' when the data show none), 'autocovariance' (fitted "
        "to how each trace correlates with itself over time) or 'peaks' (the browser app's method: "
        "kernels measured around detected events)",
    )
    refine: bool | None = Field(
        None,
        description="Refine the first estimate by rounds of spike inference and kernel fitting. "
        "Default: not after the bispectral estimate, which the rounds make worse on simulated data "
        "(docs/cadecon.md); always after given taus and the other estimates",
    )
    tau_rise: float | None = Field(None, gt=0, description="Rise time constant (s) to start from instead of estimating one (give tau_decay too)")
    tau_decay: float | None = Field(
        None, gt=0, validate_default=True,
        description="Decay time constant (s) to start from instead of estimating one (give tau_rise too)",
    )
    patience: int | None = Field(None, ge=1, le=10, description="Rounds in a row with a stable kernel that count as converged")
    min_iterations: int | None = Field(None, ge=0, le=10, description="Rounds before any can count as stable")
    selection_window: int | None = Field(None, ge=1, le=20, description="The final kernel is the median shape of this many last rounds")
    noise_constrained: bool | None = Field(None, description="Count events above the noise floor (the app's default) instead of where the fit explains the most variance")
    activity: Literal["counts", "continuous"] | None = Field(
        None,
        description="What CaDeconResult.activity holds: 'continuous' (default: non-negative activity at "
        "the learned kernel, λ = each cell's noise SD) or 'counts' (whole events per frame, as the app "
        "exports); the other one is in metadata",
    )
    counts: bool | None = Field(
        None,
        description="Also count whole events in every cell (the app's final pass) when activity is "
        "'continuous': they go in metadata['counts'] and alphas/baselines/pves then describe them. "
        "Default: only for activity='counts' (the continuous activity alone is several times cheaper)",
    )
    lambda_: float | None = Field(None, ge=0, description="Sparsity weight of the event-counting solves (not of the continuous activity)")
    trace_max_iters: int | None = Field(None, ge=1, le=100_000, description="Most solver iterations per trace solve")
    trace_tol: float | None = Field(None, ge=0, lt=1, description="Relative tolerance that ends a trace solve")
    kernel_max_iters: int | None = Field(None, ge=1, le=100_000, description="Most solver iterations of a kernel fit")
    kernel_tol: float | None = Field(None, ge=0, lt=1, description="Relative tolerance that ends a kernel fit")
    kernel_smooth_lambda: float | None = Field(None, ge=0, description="Smoothness weight of the measured kernels")

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

    @field_validator("counts")
    @classmethod
    def _counts_for_counts_activity(cls, counts: bool | None, info: ValidationInfo) -> bool | None:
        if counts is False and info.data.get("activity") == "counts":
            raise ValueError("activity='counts' needs the counts solve; drop counts=False or use activity='continuous'")
        return counts

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


def _field_docs(model: type[BaseModel]) -> str:
    """The ``Attributes`` section of a model's docstring, from its fields' descriptions."""
    import textwrap

    lines = ["", "    Attributes", "    ----------"]
    for name, field in model.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        lines.append(f"    {name} : {kind}")
        lines.extend(textwrap.wrap(field.description or "", 84, initial_indent="        ", subsequent_indent="        "))
    return "\n".join(lines) + "\n"


# help(DeconConfig) shows the class docstring, not pydantic's field metadata.
DeconConfig.__doc__ = (DeconConfig.__doc__ or "").rstrip() + "\n" + _field_docs(DeconConfig)


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
    "counts": None,  # "auto": solved when activity="counts"
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
    counts: bool | None
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

    @property
    def solve_counts(self) -> bool:
        """Whether the finalisation solves InDeCa event counts (always for ``activity="counts"``)."""
        return self.activity == "counts" or bool(self.counts)
