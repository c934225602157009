"""The problem a caller hands to the solver: data, never code.

A :class:`Problem` says *what* is solved for every cell of a ``(n_cells, n)`` batch::

    minimise_s  ½‖y − R K s‖² + λ_c·G·‖s‖₁   subject to  s ∈ C

* ``K`` — the operator: causal convolution with free-form kernel taps
  (:class:`KernelTaps`) or the banded AR(2) recursion (:class:`AR2`), at the activity's
  rate;
* ``R`` — block reduction when the activity is upsampled ``u`` times relative to the
  data (``upsample > 1``): the mean of each run of ``u`` consecutive samples
  (spec ``indeca.md`` §1.5, average downsampling); the identity for ``u = 1``;
* ``G`` — the operator's L1 weight (its DC gain unless stated), ``λ_c`` per cell;
* ``C`` — ``"nonneg"`` (``s ≥ 0``) or ``"box01"`` (``0 ≤ s ≤ 1``; the projection is
  applied to the extrapolated point too, as in the reference);
* the baseline: ``baseline_window=None`` solves on the data as given (``b ≡ 0``, the
  InDeCa "filtered" traces); an integer subtracts the causal rolling 20th-percentile
  baseline of that window first and reports the CaTune offset and reconvolution
  (spec ``numerics.md`` §6, §9);
* :class:`StoppingRule` — tolerance, minimum iterations and cap.  The core has no rule
  built in: :meth:`StoppingRule.catune` and :meth:`StoppingRule.indeca` are the two
  rules of the reference.

Per-cell data (λ, warm start, ragged lengths) is passed to the solve with the batch, so
a problem is a small hashable value: compiled plans are cached by :attr:`Problem.key`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from calab.kernel import (
    _kernel_float64,
    _kernel_unchecked,
    ar2_coefficients,
    ar2_impulse_peak,
    ar2_lipschitz,
    compute_lipschitz,
    dc_gain,
)

__all__ = [
    "AR2",
    "CONSTRAINTS",
    "INT32_MAX",
    "KernelTaps",
    "OperatorSpec",
    "Problem",
    "StoppingRule",
]

CONSTRAINTS = ("nonneg", "box01")
#: iteration counters are int32 on every backend
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class StoppingRule:
    """When a cell stops iterating.

    A cell is *converged* after iteration ``k`` when ``k > min_iterations`` and
    ``‖x_k − x_{k−1}‖² < tolerance²·(‖x_{k−1}‖² + 1e-20)`` (float64 sums); it stops at
    convergence or at :attr:`cap` iterations, whichever comes first.

    Attributes
    ----------
    max_iterations : int
        Requested iteration budget (``>= 0``).
    tolerance : float
        Relative change tolerance (``>= 0``; 0 never converges).
    min_iterations : int
        Convergence is only tested once the iteration count exceeds this.
    granularity : int
        The reference runs whole chunks of this many iterations, so the effective cap is
        ``max_iterations`` rounded up to a multiple of it (1: no rounding).
    """

    max_iterations: int
    tolerance: float = 1e-4
    min_iterations: int = 5
    granularity: int = 1

    def __post_init__(self) -> None:
        if int(self.max_iterations) < 0:
            raise ValueError(f"max_iterations must be >= 0, got {self.max_iterations}")
        if not (math.isfinite(float(self.tolerance)) and float(self.tolerance) >= 0):
            raise ValueError(f"tolerance must be finite and >= 0, got {self.tolerance}")
        if int(self.min_iterations) < 0:
            raise ValueError(f"min_iterations must be >= 0, got {self.min_iterations}")
        if int(self.granularity) < 1:
            raise ValueError(f"granularity must be >= 1, got {self.granularity}")

    @property
    def cap(self) -> int:
        """Effective cap ``granularity·ceil(max_iterations/granularity)``, at most 2³¹ − 1."""
        step = int(self.granularity)
        return min(step * math.ceil(int(self.max_iterations) / step), INT32_MAX)

    @property
    def tolerance_squared(self) -> float:
        """``tol·tol`` in float64 (for 1e-4 the same double as the reference's ``1e-8``)."""
        return float(self.tolerance) * float(self.tolerance)

    @classmethod
    def catune(cls, max_iters: int = 2000) -> StoppingRule:
        """CaTune's rule (``numerics.md`` §7): tol 1e-4, ``k > 5``, cap rounded up to 100."""
        return cls(int(max_iters), 1e-4, 5, 100)

    @classmethod
    def indeca(cls, max_iters: int = 500, tol: float = 1e-4) -> StoppingRule:
        """InDeCa's rule (``indeca.md`` §1.6): ``k > 5``, cap ``50·ceil(max_iters/50)``."""
        return cls(int(max_iters), float(tol), 5, 50)


def _readonly_taps(values: np.ndarray) -> np.ndarray:
    taps = np.array(values, dtype=np.float32, copy=True).reshape(-1)
    taps.setflags(write=False)
    return taps


@dataclass(frozen=True, eq=False)
class KernelTaps:
    """Causal convolution with free-form kernel taps (FFT evaluation).

    ``(K s)_t = Σ_j taps[j]·s[t − j]``, truncated to the length of ``s``.

    Attributes
    ----------
    taps : numpy.ndarray
        ``(N_k,)`` float32 taps, any length ``>= 1``, finite.
    l1_weight : float or None
        ``G`` in ``λ·G·‖s‖₁``; None: ``Σ taps`` (float64 sum of the float32 taps).
    lipschitz : float or None
        Lipschitz constant of the gradient of ``½‖y − K s‖²``; None:
        :func:`calab.kernel.compute_lipschitz` (``(Σh)²`` for a non-negative kernel).
    exponentials : tuple of float or None
        ``(decay, rise, peak)`` when the taps are ``float32((decay**j − rise**j)/peak)``,
        a truncated difference of two exponentials (:meth:`from_taus`): a backend may then
        apply the operator by recursions instead of an FFT.  Checked against the taps.
    """

    taps: np.ndarray
    l1_weight: float | None = None
    lipschitz: float | None = None
    exponentials: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        taps = _readonly_taps(self.taps)
        if taps.size == 0:
            raise ValueError("kernel taps must not be empty")
        if not np.all(np.isfinite(taps)):
            raise ValueError("kernel taps contain a non-finite value (NaN or infinity)")
        object.__setattr__(self, "taps", taps)
        if self.exponentials is not None:
            decay, rise, peak = (float(v) for v in self.exponentials)
            j = np.arange(taps.size, dtype=np.float64)
            if not (0 <= rise < decay < 1 and peak > 0) or not np.allclose(
                (decay**j - rise**j) / peak, taps, rtol=1e-6, atol=1e-7
            ):
                raise ValueError("exponentials (decay, rise, peak) do not describe these kernel taps")
            object.__setattr__(self, "exponentials", (decay, rise, peak))

    @classmethod
    def from_taus(cls, tau_rise: float, tau_decay: float, fs: float) -> KernelTaps:
        """The CaTune kernel :func:`calab.build_kernel` (parameters assumed valid), with its
        :attr:`exponentials`."""
        h, decay, rise, peak = _kernel_float64(float(tau_rise), float(tau_decay), float(fs))
        return cls(h.astype(np.float32), exponentials=(decay, rise, peak))

    @property
    def conv_mode(self) -> str:
        return "fft"

    def resolved_l1_weight(self) -> float:
        return dc_gain(self.taps) if self.l1_weight is None else float(self.l1_weight)

    def resolved_lipschitz(self) -> float:
        return compute_lipschitz(self.taps) if self.lipschitz is None else float(self.lipschitz)

    @property
    def key(self) -> tuple:
        return ("taps", self.taps.tobytes(), self.l1_weight, self.lipschitz, self.exponentials)


@dataclass(frozen=True)
class AR2:
    """Banded AR(2) operator, normalised by ``1/peak`` (spec ``indeca.md`` §1.2).

    Forward: ``y[0] = 0``, ``y[1] = s[0]/P``, ``y[t] = g1·y[t−1] + g2·y[t−2] + s[t−1]/P``;
    the adjoint is its exact transpose.  Coefficients are rounded to float32 for the
    recursions, as in the reference.

    Attributes
    ----------
    g1, g2 : float
        Recursion coefficients (float64).
    peak : float
        ``P``; the input is scaled by ``1/P`` (1: unnormalised).
    l1_weight : float or None
        ``G``; None: the recursion's DC gain ``(1/P)/(1 − g1 − g2)``.
    lipschitz : float or None
        None: :func:`calab.kernel.ar2_lipschitz` (frequency-grid maximum).
    """

    g1: float
    g2: float
    peak: float = 1.0
    l1_weight: float | None = None
    lipschitz: float | None = None

    def __post_init__(self) -> None:
        for name in ("g1", "g2", "peak"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"AR(2) {name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if not self.peak > 0:
            raise ValueError(f"AR(2) peak must be > 0, got {self.peak}")

    @classmethod
    def from_taus(cls, tau_rise: float, tau_decay: float, fs: float) -> AR2:
        """The peak-normalised operator of InDeCa and of CaTune's banded mode at ``fs``.

        ``g1 = d + r``, ``g2 = −d·r`` (rise clamp applied), ``P`` the impulse peak of
        §1.2, and ``G = Σ build_kernel(τr, τd, fs)`` (the L1 weight both use).
        """
        g1, g2 = ar2_coefficients(float(tau_rise), float(tau_decay), float(fs))
        peak = ar2_impulse_peak(g1, g2, float(tau_decay), float(fs))
        gain = dc_gain(_kernel_unchecked(float(tau_rise), float(tau_decay), float(fs)))
        return cls(g1, g2, peak, gain)

    @property
    def conv_mode(self) -> str:
        return "banded"

    @property
    def coefficients32(self) -> tuple[np.float32, np.float32, np.float32]:
        """``(f32(g1), f32(g2), f32(1/P))`` used by the recursions."""
        return np.float32(self.g1), np.float32(self.g2), np.float32(1.0 / self.peak)

    def resolved_l1_weight(self) -> float:
        if self.l1_weight is not None:
            return float(self.l1_weight)
        denominator = 1.0 - self.g1 - self.g2
        return (1.0 / self.peak) / denominator if denominator > 0 else 1.0 / self.peak

    def resolved_lipschitz(self) -> float:
        if self.lipschitz is not None:
            return float(self.lipschitz)
        return ar2_lipschitz(self.g1, self.g2, self.peak)

    @property
    def key(self) -> tuple:
        return ("ar2", self.g1, self.g2, self.peak, self.l1_weight, self.lipschitz)


OperatorSpec = Union[KernelTaps, AR2]


@dataclass(frozen=True)
class Problem:
    """Everything about a solve that does not depend on the cells' data.

    Attributes
    ----------
    operator : KernelTaps or AR2
        The convolution at the activity's rate.
    stopping : StoppingRule
        When cells stop.
    constraint : str
        ``"nonneg"`` or ``"box01"``.
    upsample : int
        Activity samples per data sample (``>= 1``).  Data rows of length ``T`` give
        activity rows of length ``upsample·T``.
    baseline_window : int or None
        None: no baseline (``b ≡ 0``).  An integer ``W >= 1``: subtract the causal rolling
        20th percentile over ``W`` samples before solving (CaTune).
    reference_rounding : bool
        True: the banded AR(2) recursions run in the reference's sequential float32
        order.  False: a backend may evaluate them in segments
        (:mod:`calab.engine.segments`: the same operator, other float32 rounding, a much
        shorter dependency chain).  No calab function sets it: InDeCa keeps the
        reference's order, which its parity with 0.3.0 needs (bench/README.md, InDeCa).
    """

    operator: OperatorSpec
    stopping: StoppingRule
    constraint: str = "nonneg"
    upsample: int = 1
    baseline_window: int | None = None
    reference_rounding: bool = True
    _key: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.operator, (KernelTaps, AR2)):
            raise TypeError(f"operator must be KernelTaps or AR2, got {type(self.operator).__name__}")
        if not isinstance(self.stopping, StoppingRule):
            raise TypeError(f"stopping must be a StoppingRule, got {type(self.stopping).__name__}")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be 'nonneg' or 'box01', got {self.constraint!r}")
        if isinstance(self.upsample, bool) or int(self.upsample) != self.upsample or int(self.upsample) < 1:
            raise ValueError(f"upsample must be an integer >= 1, got {self.upsample!r}")
        object.__setattr__(self, "upsample", int(self.upsample))
        if self.baseline_window is not None:
            if int(self.baseline_window) < 1:
                raise ValueError(f"baseline_window must be >= 1 or None, got {self.baseline_window}")
            object.__setattr__(self, "baseline_window", int(self.baseline_window))
        object.__setattr__(self, "reference_rounding", bool(self.reference_rounding))
        key = (self.operator.key, self.stopping, self.constraint, self.upsample, self.baseline_window, self.reference_rounding)
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> tuple:
        """Hashable identity of the problem (plans and compiled programs are keyed by it)."""
        return self._key

    @classmethod
    def catune(
        cls,
        fs: float,
        tau_rise: float,
        tau_decay: float,
        *,
        max_iters: int = 2000,
        conv_mode: str = "fft",
        constraint: str = "nonneg",
    ) -> Problem:
        """The problem :func:`calab.run_deconvolution` solves (rolling baseline, CaTune rule)."""
        from calab.kernel import baseline_window

        operator: OperatorSpec
        if conv_mode == "fft":
            operator = KernelTaps.from_taus(tau_rise, tau_decay, fs)
        elif conv_mode == "banded":
            operator = AR2.from_taus(tau_rise, tau_decay, fs)
        else:
            raise ValueError(f"conv_mode must be 'fft' or 'banded', got {conv_mode!r}")
        return cls(
            operator,
            StoppingRule.catune(max_iters),
            constraint,
            1,
            baseline_window(float(tau_decay), float(fs)),
        )
