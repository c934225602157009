"""One validation layer for every public entry point: numbers, arrays, ranges, JSON, memory.

Every public function of calab checks its arguments here *before* any work, so bad input
fails the same way everywhere: with an exception of the documented type whose message
names the argument, shows the offending value and says how to fix it.  Nothing is ever
silently coerced into a different answer.

Policy (also in ``docs/differences.md``):

* **Scalars** (``fs``, time constants, ``lam``, tolerances...) are real numbers: Python
  ``int``/``float`` (and other :class:`numbers.Real`), NumPy integer/float scalars, or
  0-d real arrays of any array library.  ``bool``, ``str``, ``bytes``, ``complex``, None
  (unless the parameter is optional) and arrays with more than one element raise
  :class:`TypeError`; NaN, infinities and out-of-range values raise :class:`ValueError`.
* **Integers** (iteration counts, sizes, seeds) must be integers: a float, even a whole
  one, raises :class:`TypeError` (as in calab 0.3.0); out of range raises
  :class:`IntegerRangeError` (both an ``OverflowError``, as in 0.3.0, and a ``ValueError``).
* **Arrays**: real integer and float dtypes are accepted; ``bool``, complex, object,
  string, bytes, datetime and structured dtypes raise :class:`TypeError` naming the
  explicit conversion to use.  Inputs are never modified.
* **Dynamic range**: the solvers work in float32; data so large that the FFT sums inside a
  solve would overflow float32 raise :class:`ValueError` asking the user to rescale
  (:func:`check_dynamic_range`).
* **JSON**: values written to JSON files must be finite (:func:`to_json_value`), because
  ``NaN``/``Infinity`` are not JSON and browsers refuse such files.
* **Memory**: requests whose estimated size exceeds an allowance raise
  :class:`MemoryLimitError` before anything is allocated (:func:`check_memory`).

This module imports only the standard library and NumPy (and, inside functions,
:mod:`calab.backends` to recognise device arrays), so any calab module can use it without
import cycles.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Callable

import numpy as np

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "DYNAMIC_RANGE_HEADROOM",
    "F32_MAX",
    "IntegerRangeError",
    "MAX_ITERATIONS",
    "MAX_KERNEL_SAMPLES",
    "MEMORY_LIMIT_ENV",
    "MemoryLimitError",
    "FlatTraceWarning",
    "MAX_UPSAMPLED_RATE_HZ",
    "SuspiciousInputWarning",
    "TRANSPOSED_RATIO",
    "check_bool",
    "check_catune_export",
    "check_choice",
    "check_instance",
    "check_progress",
    "check_upsampling",
    "describe_indices",
    "flat_rows",
    "normalise_rows",
    "power_of_two_scales",
    "check_dynamic_range",
    "check_integer",
    "check_iterations",
    "check_kernel_parameters",
    "check_lambda",
    "check_memory",
    "check_nonnegative_scalar",
    "check_per_cell",
    "check_positive_scalar",
    "check_real_array",
    "check_reference_range",
    "check_rows",
    "check_real_dtype",
    "check_real_scalar",
    "check_resolution_floor",
    "dynamic_range_limit",
    "format_bytes",
    "format_number",
    "memory_limit",
    "millisecond_taus_message",
    "parse_bytes",
    "to_json_value",
    "transposed_message",
    "unknown_names_message",
    "warn_if_milliseconds",
    "warn_if_transposed",
]

#: Largest finite float32: the solvers' working precision.
F32_MAX = float(np.finfo(np.float32).max)
#: Safety factor between the dynamic-range limit and float32 overflow.  It covers what a
#: simple bound does not see: FISTA's momentum extrapolation, the residual, the rolling
#: baseline and rounding.  Measured (NumPy backend): NaN first appears about 200x above
#: the limit.
DYNAMIC_RANGE_HEADROOM = 64.0
#: Largest iteration count (the published calab stores it in a u32).
MAX_ITERATIONS = 2**32 - 1
#: Longest kernel the solver accepts (a guard against tau/fs given in the wrong units).
MAX_KERNEL_SAMPLES = 1 << 20
#: -ln(1e-6): the kernel is truncated where the decay has fallen to 1e-6 of its peak.
_KERNEL_LENGTH_CONSTANT = 13.815510557964274
#: Default allowance for one request's estimated memory (see :func:`memory_limit`).
DEFAULT_MEMORY_LIMIT = 8 * 1024**3
#: Environment variable that raises (or lowers) the memory allowance, e.g. ``"32GiB"``.
MEMORY_LIMIT_ENV = "CALAB_MEMORY_LIMIT"
#: Highest rate (Hz) the InDeCa solve may upsample to: 0.1 ms bins.  Finer bins resolve
#: nothing a calcium kernel carries, and every upsampling step multiplies the solve's time
#: and memory (``upsample_factor=10**6`` at 30 Hz ran for minutes on 60 frames).
MAX_UPSAMPLED_RATE_HZ = 10_000.0
#: Float32's relative resolution: a trace whose spread is below this fraction of its
#: magnitude is constant in the float32 solvers.
_F32_EPS = float(np.finfo(np.float32).eps)
#: Rows whose largest deviation from their median is below this are multiplied by a
#: power of two (exactly) before a scale-free float32 solve; see :func:`normalise_rows`.
_SMALLEST_UNSCALED = 2.0**-16
#: Smallest usable deviation of a row from its median: float32's smallest normal number
#: times 2**24, so values and results keep float32's full precision (about 2e-31).
SMALLEST_DEVIATION = 2.0**-102

#: dtype kinds accepted as numeric data: signed/unsigned integers and floats.
_REAL_KINDS = "iuf"


class IntegerRangeError(OverflowError, ValueError):
    """An integer argument outside its allowed range.

    An :class:`OverflowError` (what calab 0.3.0 raised for ``max_iters``) and a
    :class:`ValueError` (what the value is), so either ``except`` clause catches it.
    """


class FlatTraceWarning(UserWarning):
    """Traces with no variation were given: they carry no activity and get none."""


class MemoryLimitError(MemoryError, ValueError):
    """A request whose estimated memory exceeds the allowance; nothing was allocated.

    Both a :class:`MemoryError` and a :class:`ValueError` (the request is too large for
    the configured allowance, which :func:`memory_limit` explains how to raise).
    """


# --------------------------------------------------------------------------- formatting
def format_number(value: float) -> str:
    """Format a float like the reference's (Rust ``Display``) error messages.

    Whole numbers print without ``.0``, NaN as ``NaN``, infinities as ``inf``/``-inf``,
    everything else in shortest round-trip form without exponent notation.
    """
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _describe(value: Any) -> str:
    """``type value`` for messages, short even for big arrays."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_device(value: Any) -> bool:
    """Whether ``value`` is an array of an accelerator library (checked where it lives).

    Detection goes through :func:`calab.backends.array_library`, which reads the type's
    module name and never imports an accelerator library.
    """
    from calab.backends import array_library

    return array_library(value) not in (None, "numpy")


def _to_host(value: Any) -> np.ndarray:
    """A NumPy version of any array-like (device arrays through their backend)."""
    if _is_device(value):
        from calab.backends import array_library, get_backend

        return get_backend(array_library(value)).to_numpy(value)
    return np.asarray(value)


# --------------------------------------------------------------------------- dtypes
def check_real_dtype(dtype: Any, what: str) -> None:
    """Reject dtypes that are not real integers or floats.

    Parameters
    ----------
    dtype : numpy.dtype or dtype-like
        The dtype to check (NumPy, CuPy and JAX dtypes are NumPy dtypes).
    what : str
        Name of the data in the message, e.g. ``"traces"``.

    Raises
    ------
    TypeError
        For bool, complex, object, string, bytes, datetime, structured or void dtypes;
        the message names the explicit conversion to use.
    """
    dtype = np.dtype(dtype)
    kind = dtype.kind
    if kind in _REAL_KINDS:
        return
    if kind == "b":
        raise TypeError(
            f"{what} has boolean dtype; it must hold numbers. If the booleans are meant as "
            "0/1 values, convert explicitly: np.asarray(data, dtype=float)."
        )
    if kind == "c":
        raise TypeError(
            f"{what} has complex dtype {dtype}; calcium traces must be real numbers. "
            "Pass np.real(data) or np.abs(data) explicitly."
        )
    if kind == "O":
        raise TypeError(
            f"{what} has object dtype (non-numeric Python objects, or numbers stored as "
            "objects). Convert it to a numeric array first: np.asarray(data, dtype=float)."
        )
    if kind in "US":
        raise TypeError(
            f"{what} has non-numeric dtype {dtype} (text); calcium data must be a real-valued "
            "numeric array. Parse the numbers first, e.g. np.asarray(data, dtype=float)."
        )
    raise TypeError(
        f"{what} has non-numeric dtype {dtype} (kind {kind!r}); calcium data must be a "
        "real-valued numeric array (integer or float)."
    )


def check_real_array(
    value: Any,
    what: str = "traces",
    *,
    ndim: int | tuple[int, ...] | None = (1, 2),
    allow_empty: bool = True,
    finite: bool = False,
    dtype: Any = None,
    lazy: bool = False,
) -> Any:
    """Check an array argument's type, dtype, rank and (optionally) finiteness.

    Parameters
    ----------
    value : array_like
        NumPy array, list, or any object NumPy converts (pandas, xarray...); CuPy and JAX
        arrays are checked where they are and returned unchanged (no transfer).
    what : str
        Name in messages (``"traces"``, ``"kernel"``...).
    ndim : int or tuple of int or None
        Allowed ranks; None allows any.  For ``(1, 2)`` the message is the published
        calab's: ``"{what} must be 1-D (n_timepoints,) or 2-D (n_cells, n_timepoints);
        got an array with shape ..."``.
    allow_empty : bool
        If False, an array with no elements raises ValueError.
    finite : bool
        If True, NaN/inf raise ValueError naming the first bad index (host arrays only;
        device arrays are checked by the engine).
    dtype : dtype-like, optional
        Convert host arrays to this dtype (e.g. ``np.float64``), without copying when the
        array already has it.
    lazy : bool
        Objects that declare ``dtype`` and ``shape`` without being NumPy arrays (h5py
        datasets, Zarr and Dask arrays, memory maps) are checked from those attributes
        only and returned unchanged: nothing is read.  ``finite`` and ``dtype`` then do
        not apply (the caller converts and checks block by block).

    Returns
    -------
    numpy.ndarray or device array
        Host input as a NumPy array (the caller's own object when no conversion was
        needed: treat it as read-only), device input unchanged.

    Raises
    ------
    TypeError
        Non-numeric, bool, complex or object data; a scalar given where an array is
        expected is *not* a TypeError but a rank (ValueError) problem.
    ValueError
        Ragged nested lists, wrong rank, empty (when not allowed), NaN/inf (when
        ``finite``).
    """
    # pandas objects declare dtypes NumPy may not know (categories, nullable ints):
    # they are converted like lists.
    declared = (
        hasattr(value, "dtype")
        and hasattr(value, "shape")
        and not isinstance(value, np.generic)
        and not type(value).__module__.startswith("pandas")
    )
    if _is_device(value) or (lazy and declared and not isinstance(value, np.ndarray)):
        array = value
        if lazy and not _is_device(value):
            check_real_dtype(value.dtype, what)
            _check_rank(tuple(value.shape), what, ndim)
            if not allow_empty and math.prod(value.shape) == 0:
                raise ValueError(f"{what} is empty (shape {tuple(value.shape)}); pass at least one value.")
            return value
    else:
        if isinstance(value, (str, bytes)):
            raise TypeError(
                f"{what} must be a numeric array, got {_describe(value)}; load or parse the "
                "numbers first (e.g. np.load(path) or np.asarray(values, dtype=float))."
            )
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged nested sequences
            raise ValueError(
                f"{what} could not be turned into an array ({exc}); every row must have the "
                "same number of timepoints."
            ) from None
    check_real_dtype(array.dtype, what)
    _check_rank(tuple(array.shape), what, ndim)
    if not allow_empty and array.size == 0:
        raise ValueError(f"{what} is empty (shape {tuple(array.shape)}); pass at least one value.")
    if dtype is not None and not _is_device(array):
        array = array.astype(dtype, copy=False)
    if finite and not _is_device(array):
        bad = np.argwhere(~np.isfinite(array))
        if bad.size:
            index = tuple(int(i) for i in bad[0])
            where = index[0] if len(index) == 1 else index
            raise ValueError(
                f"{what} contains a non-finite value (NaN or infinity) at index {where}; "
                "replace or drop NaN/inf samples (e.g. numpy.nan_to_num or interpolation) first"
            )
    return array


def check_rows(
    values: Any,
    what: str = "traces",
    *,
    dtype: Any = np.float64,
    allow_empty_rows: bool = False,
    sum_length: Callable[[int], int] | None = None,
) -> tuple[list[np.ndarray], bool]:
    """A batch given as rows: a 2-D array, a 1-D array (one row) or a list of 1-D arrays.

    Every row goes through :func:`check_real_array` (real dtype, 1-D, finite) and
    :func:`check_dynamic_range` (float32 solvers), so the batched functions of
    :mod:`calab.indeca` reject what :func:`calab.run_deconvolution` rejects, with the same
    messages.

    Parameters
    ----------
    values : array_like (n_rows, T) or (T,), or sequence of 1-D array_like
    what : str
        Name in messages; rows of a batch are named ``what[i]``.
    dtype : dtype-like
        Host dtype of the returned rows.
    allow_empty_rows : bool
        Allow rows with no samples.
    sum_length : callable, optional
        ``sum_length(T)`` is the length of the float32 sums the solver forms over a row
        of ``T`` samples (default ``T``), for the dynamic-range check.

    Returns
    -------
    rows : list of numpy.ndarray
        1-D host arrays of ``dtype`` (device input is copied to the host).
    ragged : bool
        Whether ``values`` was a list/tuple (results then come back as lists).
    """
    ragged = isinstance(values, (list, tuple))
    if ragged:
        rows = [check_real_array(_to_host(v) if _is_device(v) else v, f"{what}[{i}]", ndim=1) for i, v in enumerate(values)]
    else:
        block = check_real_array(_to_host(values) if _is_device(values) else values, what, ndim=(1, 2))
        if block.ndim == 1:
            block = block[None, :]
        rows = list(block)
    out = []
    for i, row in enumerate(rows):
        name = f"{what}[{i}]" if len(rows) > 1 or ragged else what
        row = check_real_array(row, name, ndim=1, allow_empty=allow_empty_rows, finite=True)
        terms = sum_length(row.size) if sum_length is not None else row.size
        check_dynamic_range(row, name, n_terms=max(int(terms), 1))  # before a float32 cast
        check_resolution_floor(row, name)
        out.append(row.astype(dtype, copy=False))
    return out, ragged


def _check_rank(shape: tuple[int, ...], what: str, ndim: int | tuple[int, ...] | None) -> None:
    if ndim is None:
        return
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) in allowed:
        return
    if allowed == (1, 2):
        raise ValueError(
            f"{what} must be 1-D (n_timepoints,) or 2-D (n_cells, n_timepoints); "
            f"got an array with shape {shape}"
        )
    names = " or ".join(f"{n}-D" for n in allowed)
    raise ValueError(f"{what} must be {names}; got an array with shape {shape}")


# --------------------------------------------------------------------------- scalars
def _scalar_value(value: Any, name: str, *, integer: bool) -> Any:
    """The Python number inside ``value``, or TypeError naming the fix."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be a number, got bool {value!r}; pass a number, not a boolean"
        )
    if value is None:
        raise TypeError(f"{name} must be a number, got None")
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a number, got {_describe(value)}; convert text explicitly "
            f"(e.g. {'int' if integer else 'float'}({value!r}))"
        )
    if isinstance(value, (complex, np.complexfloating)):
        raise TypeError(
            f"{name} must be a real number, got complex {value!r}; pass the real part "
            "explicitly if that is what you mean"
        )
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
        # 0-d arrays of any library stand for their value; larger arrays do not.
        if tuple(value.shape) != ():
            raise TypeError(
                f"{name} must be a single number, got an array with shape {tuple(value.shape)}"
            )
        check_real_dtype(value.dtype, name)
        value = _to_host(value).item()
        return _scalar_value(value, name, integer=integer)
    if isinstance(value, np.generic):
        check_real_dtype(value.dtype, name)
        return value.item()
    if isinstance(value, numbers.Real):
        return value
    raise TypeError(f"{name} must be a real number, got {_describe(value)}")


def check_real_scalar(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
    finite: bool = True,
    allow_none: bool = False,
    unit: str = "",
) -> float | None:
    """Check a real-number argument given in any form a user can pass it.

    Parameters
    ----------
    value : number, NumPy scalar, 0-d array, or None
    name : str
        Argument name for messages.
    minimum, maximum : float, optional
        Allowed range (inclusive unless ``strict_minimum``/``strict_maximum``).
    finite : bool
        Reject NaN and infinities (default).
    allow_none : bool
        Return None for None instead of raising TypeError.
    unit : str
        Unit appended to bounds in messages, e.g. ``" Hz"``.

    Returns
    -------
    float or None

    Raises
    ------
    TypeError
        bool, str, bytes, complex, None (unless allowed), multi-element arrays, non-real
        dtypes and other non-numbers.
    ValueError
        NaN/inf (when ``finite``) or a value outside the range.
    """
    if value is None and allow_none:
        return None
    number = float(_scalar_value(value, name, integer=False))
    if finite and not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {format_number(number)}")
    if math.isnan(number):
        return number
    if minimum is not None and (number < minimum or (strict_minimum and number == minimum)):
        op = ">" if strict_minimum else ">="
        raise ValueError(f"{name} must be {op} {format_number(minimum)}{unit}, got {format_number(number)}")
    if maximum is not None and (number > maximum or (strict_maximum and number == maximum)):
        op = "<" if strict_maximum else "<="
        raise ValueError(f"{name} must be {op} {format_number(maximum)}{unit}, got {format_number(number)}")
    return number


def check_positive_scalar(value: Any, name: str, *, allow_none: bool = False, unit: str = "") -> float | None:
    """A finite number ``> 0`` (sampling rates, time constants).  See :func:`check_real_scalar`."""
    return check_real_scalar(
        value, name, minimum=0.0, strict_minimum=True, allow_none=allow_none, unit=unit
    )


def check_nonnegative_scalar(value: Any, name: str, *, allow_none: bool = False, unit: str = "") -> float | None:
    """A finite number ``>= 0`` (penalties, tolerances).  See :func:`check_real_scalar`."""
    return check_real_scalar(value, name, minimum=0.0, allow_none=allow_none, unit=unit)


def check_integer(
    value: Any,
    name: str,
    *,
    minimum: int | None = 0,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Check an integer argument (counts, sizes, seeds).

    Python ints, NumPy integer scalars and 0-d integer arrays are accepted.  Floats are
    rejected even when whole (``100.0``), as calab 0.3.0 does for ``max_iters``.

    Returns
    -------
    int or None

    Raises
    ------
    TypeError
        Not an integer (float, bool, str, None unless ``allow_none``...).
    IntegerRangeError
        Outside ``[minimum, maximum]`` (an OverflowError and a ValueError).
    """
    if value is None and allow_none:
        return None
    raw = _scalar_value(value, name, integer=True)
    if not isinstance(raw, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer, got {_describe(raw)}; pass a whole number such as "
            f"{int(raw) if isinstance(raw, float) and math.isfinite(raw) else 100} (an int, not a float)"
        )
    number = int(raw)
    if minimum is not None and maximum is not None and not minimum <= number <= maximum:
        raise IntegerRangeError(f"{name} must be between {minimum} and {maximum}, got {number}")
    if minimum is not None and number < minimum:
        raise IntegerRangeError(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise IntegerRangeError(f"{name} must be <= {maximum}, got {number}")
    return number


def check_reference_range(value: Any, name: str, requirement: str, *, integer: bool = False, accept: Callable[[float], bool]) -> Any:
    """A number whose range error keeps calab 0.3.0's wording.

    The type rules are this module's (:func:`check_integer` / :func:`check_real_scalar`:
    ``TypeError`` for bool, str, None, complex, arrays); a value outside the range raises
    ``ValueError("invalid parameter: {name} must be {requirement}, got {value}")``, the
    message of the published binding.

    Parameters
    ----------
    accept : callable
        ``accept(number) -> bool``, True when the value is in range.
    """
    number = check_integer(value, name, minimum=None) if integer else check_real_scalar(value, name, finite=False)
    if not accept(number):
        shown = str(number) if integer else format_number(number)
        raise ValueError(f"invalid parameter: {name} must be {requirement}, got {shown}")
    return number


def check_iterations(value: Any, name: str = "max_iters", *, maximum: int = MAX_ITERATIONS) -> int:
    """An iteration count in ``[0, maximum]`` (default ``2**32 - 1``).

    Raises
    ------
    TypeError
        Not an integer (floats included, as in calab 0.3.0).
    IntegerRangeError
        Negative or above ``maximum`` (OverflowError as in 0.3.0, and ValueError).
    """
    return check_integer(value, name, minimum=0, maximum=maximum)


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """A flag: ``True``/``False`` (or NumPy bool); numbers and strings raise TypeError."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_describe(value)}")


def check_choice(value: Any, name: str, choices: Iterable[str], *, message: str | None = None) -> str:
    """One of a fixed set of strings, matched exactly (case-sensitive).

    Raises
    ------
    ValueError
        ``message`` if given, else ``"{name} must be one of ..., got ..."``.
    """
    options = tuple(choices)
    if isinstance(value, str) and value in options:
        return value
    if message is None:
        listed = " or ".join(repr(c) for c in options)
        message = f"{name} must be {listed}"
    raise ValueError(f"{message}, got {value!r}")


def check_progress(value: Any, name: str = "progress") -> Any:
    """A ``progress`` argument: None (automatic), True/False, or a callable receiving events.

    Raises
    ------
    TypeError
        Anything else (a string such as ``"yes"`` is not silently taken as True).
    """
    if value is None or callable(value):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"{name} must be True, False, None or a callable receiving progress events, got {_describe(value)}"
    )


def check_instance(value: Any, name: str, kind: type, *, allow_none: bool = True, hint: str = "") -> Any:
    """An object of a given class (or None), e.g. a ``CaDeconControl``.

    Raises
    ------
    TypeError
        ``"{name} must be a {kind} (or None), got ..."`` plus ``hint``.
    """
    if (value is None and allow_none) or isinstance(value, kind):
        return value
    label = f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"
    optional = " (or None)" if allow_none else ""
    raise TypeError(f"{name} must be a {label}{optional}, got {_describe(value)}{'; ' + hint if hint else ''}")


# --------------------------------------------------------------------------- domain rules
def check_catune_export(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parameters a CaTune page exported, checked before ``tune()`` returns them.

    ``params`` is ``tune()``'s dict (``tau_rise``, ``tau_decay``, ``lambda_``, ``fs``,
    ``filter_enabled``); a key the page did not send is None and stays None (as in
    0.3.0).  Present values follow :func:`check_kernel_parameters` (finite ``fs > 0``,
    ``0 < tau_rise < tau_decay``, finite ``lambda_ >= 0``) and ``filter_enabled`` is a bool.

    Raises
    ------
    ValueError
        ``"the CaTune page exported unusable parameters: ..."`` with the rule broken, for
        wrong types (``fs='abc'``) as well: the page, not the caller, sent them.
    """
    def fail(problem: str) -> None:
        raise ValueError(
            f"the CaTune page exported unusable parameters ({problem}); nothing was returned. "
            "Re-export from the page, or pass the values you meant explicitly."
        ) from None

    try:
        fs = check_positive_scalar(params.get("fs"), "fs", allow_none=True, unit=" Hz")
        tau_rise = check_positive_scalar(params.get("tau_rise"), "tau_rise", allow_none=True, unit=" s")
        tau_decay = check_positive_scalar(params.get("tau_decay"), "tau_decay", allow_none=True, unit=" s")
        lam = check_nonnegative_scalar(params.get("lambda_"), "lambda_", allow_none=True)
        check_bool(params.get("filter_enabled"), "filter_enabled", allow_none=True)
        if None not in (fs, tau_rise, tau_decay):  # the pair and kernel-length rules
            check_kernel_parameters(fs, tau_rise, tau_decay, lam or 0.0)
    except (TypeError, ValueError) as exc:
        fail(str(exc).removeprefix("invalid parameter: "))
    return params


def check_kernel_parameters(
    fs: Any, tau_rise: Any, tau_decay: Any, lam: Any = 0.0
) -> tuple[float, float, float, float]:
    """Sampling rate, time constants and scalar λ, with calab 0.3.0's rules and messages.

    Types are checked first (TypeError for bool, str, None, complex, arrays); then, in the
    reference's order, each failure raising ``ValueError("invalid parameter: ...")``:
    ``fs`` finite > 0, ``tau_rise`` finite > 0, ``tau_decay`` finite > 0,
    ``tau_rise < tau_decay``, ``lam`` finite >= 0, kernel ``ceil(13.8155 tau_decay fs)``
    at most 2**20 samples.

    Returns
    -------
    tuple of float
        ``(fs, tau_rise, tau_decay, lam)``.
    """
    values = []
    for name, value in (("fs", fs), ("tau_rise", tau_rise), ("tau_decay", tau_decay), ("lambda", lam)):
        try:
            values.append(float(_scalar_value(value, name, integer=False)))
        except TypeError as exc:
            raise TypeError(f"invalid parameter: {exc}") from None
    fs, tau_rise, tau_decay, lam = values
    fmt = format_number
    if not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"invalid parameter: fs must be a finite sampling rate > 0 Hz, got {fmt(fs)}")
    if not (math.isfinite(tau_rise) and tau_rise > 0):
        raise ValueError(f"invalid parameter: tau_rise must be finite and > 0 s, got {fmt(tau_rise)}")
    if not (math.isfinite(tau_decay) and tau_decay > 0):
        raise ValueError(f"invalid parameter: tau_decay must be finite and > 0 s, got {fmt(tau_decay)}")
    if not tau_rise < tau_decay:
        raise ValueError(
            f"invalid parameter: tau_rise ({fmt(tau_rise)} s) must be smaller than "
            f"tau_decay ({fmt(tau_decay)} s)"
        )
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"invalid parameter: lambda must be finite and >= 0, got {fmt(lam)}")
    length = _KERNEL_LENGTH_CONSTANT * tau_decay * fs  # inf when the product overflows
    if not length <= MAX_KERNEL_SAMPLES:
        samples = str(math.ceil(length)) if math.isfinite(length) else "inf"
        raise ValueError(
            f"invalid parameter: tau_decay * fs = {fmt(tau_decay * fs)} s·Hz implies a "
            f"{samples}-sample kernel, above the {MAX_KERNEL_SAMPLES}-sample limit; check the "
            "units of tau_decay (s) and fs (Hz)"
        )
    return fs, tau_rise, tau_decay, lam


def check_lambda(lam: Any, n_cells: int | None = None, *, name: str = "lambda") -> float | np.ndarray:
    """The L1 penalty λ: one number for all cells, or one per cell.

    Parameters
    ----------
    lam : number, NumPy scalar, 0-d array, or array_like of shape ``(n_cells,)``
    n_cells : int, optional
        Number of cells; None means only a scalar is allowed.
    name : str
        Name in messages (the reference says ``lambda``).

    Returns
    -------
    float or numpy.ndarray
        A float for scalar forms; a ``(n_cells,)`` float64 array for per-cell values.

    Raises
    ------
    TypeError
        None, bool, str, complex, non-real dtypes; an array when ``n_cells`` is None.
    ValueError
        ``"invalid parameter: lambda must be finite and >= 0, got X"`` (with ``for cell i``
        for per-cell values), or a per-cell array of the wrong shape.
    """
    shape = getattr(lam, "shape", None)
    is_sequence = isinstance(lam, (list, tuple))
    if (shape is None or tuple(shape) == ()) and not is_sequence:
        try:
            value = float(_scalar_value(lam, name, integer=False))
        except TypeError as exc:
            raise TypeError(f"invalid parameter: {exc}") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"invalid parameter: {name} must be finite and >= 0, got {format_number(value)}")
        return value
    if n_cells is None:
        raise TypeError(f"invalid parameter: {name} must be a single number here, got an array")
    array = _to_host(lam) if shape is not None else np.asarray(lam)
    check_real_dtype(array.dtype, name)
    if array.shape != (n_cells,):
        raise ValueError(
            f"invalid parameter: {name} must be a number or one value per cell "
            f"(shape ({n_cells},)), got shape {array.shape}"
        )
    values = array.astype(np.float64)  # always a copy: callers may not alias user data
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        raise ValueError(
            f"invalid parameter: {name} must be finite and >= 0, got "
            f"{format_number(values[bad[0]])} for cell {bad[0]}"
        )
    return values


def check_per_cell(
    values: Any,
    n_cells: int,
    name: str,
    *,
    minimum: float | None = None,
    strict_minimum: bool = False,
    maximum: float | None = None,
    unit: str = "",
) -> np.ndarray:
    """A per-cell parameter (taus, alphas...): one number for all cells, or ``(n_cells,)``.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` float64, always a new array.

    Raises
    ------
    TypeError
        Non-numeric forms (see :func:`check_real_scalar`) or non-real dtypes.
    ValueError
        Wrong shape, NaN/inf, or a value out of range (naming the cell).
    """
    shape = getattr(values, "shape", None)
    if (shape is None or tuple(shape) == ()) and not isinstance(values, (list, tuple)):
        number = check_real_scalar(
            values, name, minimum=minimum, strict_minimum=strict_minimum, maximum=maximum, unit=unit
        )
        return np.full(n_cells, number, dtype=np.float64)
    array = _to_host(values) if shape is not None else np.asarray(values)
    check_real_dtype(array.dtype, name)
    if array.shape != (n_cells,):
        raise ValueError(
            f"{name} must be a number or one value per cell (shape ({n_cells},)), got shape {array.shape}"
        )
    out = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise ValueError(f"{name} must be finite, got {format_number(out[bad[0]])} for cell {bad[0]}")
    if minimum is not None:
        low = out <= minimum if strict_minimum else out < minimum
        if low.any():
            cell = int(np.flatnonzero(low)[0])
            op = ">" if strict_minimum else ">="
            raise ValueError(
                f"{name} must be {op} {format_number(minimum)}{unit}, got {format_number(out[cell])} for cell {cell}"
            )
    if maximum is not None and (out > maximum).any():
        cell = int(np.flatnonzero(out > maximum)[0])
        raise ValueError(
            f"{name} must be <= {format_number(maximum)}{unit}, got {format_number(out[cell])} for cell {cell}"
        )
    return out


def check_upsampling(fs: float, factor: int, setting: str | None = None) -> None:
    """Refuse an upsampling factor that takes the solve above :data:`MAX_UPSAMPLED_RATE_HZ`.

    The InDeCa solve works on ``T·u`` samples per trace, so ``u`` multiplies its time and
    memory; beyond 10 kHz (0.1 ms bins) finer bins carry no information about a calcium
    kernel.  A factor of 1 is always accepted, whatever ``fs``.

    Parameters
    ----------
    fs : float
        Sampling rate (Hz).
    factor : int
        Upsampling factor.
    setting : str, optional
        The setting as the user gave it, for the message (default ``upsample_factor=u``).

    Raises
    ------
    ValueError
        Naming the rate, the largest usable factor at this ``fs`` and why.
    """
    if factor <= 1 or fs * factor <= MAX_UPSAMPLED_RATE_HZ:
        return
    largest = max(1, int(MAX_UPSAMPLED_RATE_HZ // fs))
    setting = setting or f"upsample_factor={factor}"
    raise ValueError(
        f"invalid parameter: {setting} at fs = {format_number(fs)} Hz means a solve at "
        f"{format_number(fs * factor)} Hz; above {format_number(MAX_UPSAMPLED_RATE_HZ)} Hz (0.1 ms bins) "
        "upsampling resolves nothing a calcium kernel carries, and it multiplies the solve's time and "
        f"memory by the factor ({factor}). Use an upsampling factor of at most {largest} at this fs "
        f"(a target rate of at most {format_number(MAX_UPSAMPLED_RATE_HZ)} Hz)."
    )


def describe_indices(indices: Iterable[int], limit: int = 10) -> str:
    """``"0, 3 and 7"`` (or ``"0, 1, ... and 988 more"``) for messages naming cells."""
    items = [str(int(i)) for i in indices]
    if len(items) > limit:
        return f"{', '.join(items[:limit])} and {len(items) - limit} more"
    if len(items) > 1:
        return f"{', '.join(items[:-1])} and {items[-1]}"
    return items[0] if items else "none"


def flat_rows(rows: Iterable[Any]) -> list[int]:
    """Indices of rows with no variation the float32 solvers can see.

    A row is flat when ``max - min <= eps32 · max|x|`` (``eps32 = 2**-23``): its float32
    copy is constant (or all zero), so every activity found in it would be rounding.
    Empty rows are not flat.
    """
    flat = []
    for index, row in enumerate(rows):
        values = np.asarray(row)
        if values.size == 0:
            continue
        high, low = float(values.max()), float(values.min())
        if high - low <= _F32_EPS * max(abs(high), abs(low)):
            flat.append(index)
    return flat


def power_of_two_scales(rows: Iterable[Any]) -> np.ndarray:
    """The exact power of two each row is multiplied by before a scale-free float32 solve.

    1 for a row whose largest deviation from its median is at least ``2**-16`` (almost all
    data), for empty and flat rows; otherwise the power of two that brings that deviation
    to ``[1, 2)``.  Multiplying by a power of two loses no digit, even for values below
    float32's smallest normal number (1e-300 data; down to float64's, 2.2e-308), so the solvers' absolute thresholds
    (``1e-10`` of the working trace) never swallow every event of a tiny-valued trace.
    """
    rows = list(rows)
    flat = set(flat_rows(rows))
    scales = np.ones(len(rows))
    for index, row in enumerate(rows):
        values = np.asarray(row, dtype=np.float64)
        if values.size == 0 or index in flat:
            continue
        peak = float(np.max(np.abs(values - np.median(values))))
        if 0 < peak < _SMALLEST_UNSCALED:
            # capped so the scale stays a finite float64 (subnormal-only rows stay small)
            scales[index] = math.ldexp(1.0, min(1 - math.frexp(peak)[1], 1023))
    return scales


def normalise_rows(rows: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Rows ready for an offset- and scale-free float32 solve, with the exact scale used.

    Each float64 row loses its median (a float64 subtraction: a level far above the
    variation costs no float32 precision, and a constant row becomes exactly zero);
    flat rows (:func:`flat_rows`) become zeros; rows are multiplied by
    :func:`power_of_two_scales`.  The InDeCa solve is invariant to the offset and
    equivariant to the scale, so its amplitude outputs are divided by ``scales``
    afterwards and its counts need nothing.

    Returns
    -------
    rows : list of numpy.ndarray
        New float64 rows (the inputs are not modified).
    scales : numpy.ndarray, shape (n_rows,)
        The power of two each row was multiplied by (1 for most data).
    flat : list of int
        Indices of the flat rows.
    """
    flat = flat_rows(rows)
    scales = power_of_two_scales(rows)
    out = []
    for index, row in enumerate(rows):
        values = np.asarray(row, dtype=np.float64)
        if values.size == 0 or index in flat:
            out.append(np.zeros(values.shape, dtype=np.float64))
            continue
        centred = values - np.median(values)
        out.append(np.ldexp(centred, int(math.frexp(scales[index])[1]) - 1) if scales[index] != 1.0 else centred)
    return out, scales, flat


# --------------------------------------------------------------------------- dynamic range
def dynamic_range_limit(n_terms: int, gain: float = 1.0, *, squares: bool = False) -> float:
    """Largest ``max|x|`` a float32 computation over ``n_terms`` samples handles safely.

    ``F32_MAX / (HEADROOM * n_terms * max(gain, 1))`` bounds sums (FFT bins are sums of
    up to ``n_terms`` samples, scaled by a kernel's DC ``gain``); with ``squares`` the
    bound ``sqrt(F32_MAX / (HEADROOM * n_terms))`` for float32 sums of squares applies
    too.
    """
    terms = max(int(n_terms), 1)
    limit = F32_MAX / (DYNAMIC_RANGE_HEADROOM * terms * max(float(gain), 1.0))
    if squares:
        limit = min(limit, math.sqrt(F32_MAX / (DYNAMIC_RANGE_HEADROOM * terms)))
    return limit


#: Elements read at a time from a lazy source (h5py/Zarr) by the dynamic-range check.
_LAZY_BLOCK_ELEMENTS = 1 << 24


def _peak_magnitude(array: Any) -> float:
    """``max|x|`` without a temporary copy of the array (NaN if any value is NaN).

    Lazy sources (h5py datasets, Zarr arrays) are read in row blocks of about 16 M
    elements, never whole.
    """
    shape = tuple(getattr(array, "shape", ()))
    if shape and math.prod(shape) == 0:
        return 0.0
    if _is_device(array):
        return max(abs(float(array.max())), abs(float(array.min())))
    if isinstance(array, np.ndarray) or not shape:
        host = np.asarray(array)
        with np.errstate(invalid="ignore"):
            return max(abs(float(host.max())), abs(float(host.min())))
    rows = max(1, _LAZY_BLOCK_ELEMENTS // max(1, math.prod(shape[1:])))
    peak = 0.0
    for start in range(0, shape[0], rows):
        block = np.asarray(array[start : start + rows])
        with np.errstate(invalid="ignore"):
            peak = max(peak, abs(float(block.max())), abs(float(block.min())))
        if math.isnan(peak):
            return peak
    return peak


def check_dynamic_range(
    array: Any,
    what: str = "traces",
    *,
    n_terms: int | None = None,
    gain: float = 1.0,
    squares: bool = False,
) -> None:
    """Reject data so large that float32 sums inside a solver would overflow.

    The solvers compute in float32 (as calab 0.3.0 does): FFT bins are sums of up to
    ``n_terms`` samples, multiplied by a kernel spectrum bounded by its DC ``gain``.
    Finite data near float32's limit (about 1e34 for a 20000-sample trace) would
    overflow there and come back as NaN.  Values above :func:`dynamic_range_limit` are
    therefore refused; NaN/inf are left to the finiteness check (this check ignores
    them).  The check reads the array once (max and min), without copying it.

    Parameters
    ----------
    array : array_like
        Data, any array library.
    what : str
        Name in messages.
    n_terms : int, optional
        Length of the sums (e.g. ``n_timepoints + kernel length``); default: the last
        axis length.
    gain : float
        Largest amplification applied to the data (a kernel's DC gain).
    squares : bool
        Also bound float32 sums of squares (for solvers that reduce in float32).

    Raises
    ------
    ValueError
        The message gives the largest magnitude found, the limit, and the fix: divide the
        data (and ``lam``) by a power of ten and multiply the result back.
    """
    terms = n_terms if n_terms is not None else (array.shape[-1] if getattr(array, "ndim", 0) else 1)
    peak = _peak_magnitude(array)
    if not math.isfinite(peak):
        return  # NaN/inf: reported by the finiteness check with its index
    limit = dynamic_range_limit(terms, gain, squares=squares)
    if peak <= limit:
        return
    factor = 10.0 ** math.ceil(math.log10(peak / limit) + 1)
    if peak > F32_MAX:
        problem = "beyond the float32 range: they would become non-finite (inf) in the float32 solver"
    else:
        problem = f"too large for the float32 solver: sums over {terms} samples would overflow float32 and return NaN"
    raise ValueError(
        f"{what} has values up to {peak:.3g}, {problem}. The largest usable "
        f"magnitude here is {limit:.3g}. Rescale first, e.g. divide {what} by {factor:.0e} "
        "(and a fixed lam by the same factor: the activity then scales by exactly that "
        "factor, multiply it back)."
    )


def check_resolution_floor(row: Any, what: str = "traces") -> None:
    """Reject a 1-D row whose variation lies below float32's normal range (the low end).

    The counterpart of :func:`check_dynamic_range`: the solvers and their float32 results
    (activity, working traces) cannot hold values below about 1.2e-38, so a row whose
    largest deviation from its median is under :data:`SMALLEST_DEVIATION` (about 2e-31)
    would lose its events or come back as zeros.  Flat rows (no variation at all) are
    left alone: they have no events to lose.  Rows between this floor and ``2**-16`` are
    handled exactly by the scale-free solvers (see :func:`power_of_two_scales`).

    Raises
    ------
    ValueError
        Giving the deviation found and an exact power-of-two factor to multiply by.
    """
    values = np.asarray(row, dtype=np.float64)
    if values.size == 0 or flat_rows([values]):
        return
    peak = float(np.max(np.abs(values - np.median(values))))
    if peak >= SMALLEST_DEVIATION or not math.isfinite(peak):
        return
    exponent = 1 - math.frexp(peak)[1]
    raise ValueError(
        f"{what} varies by at most {peak:.3g} around its median, below {SMALLEST_DEVIATION:.2g} where float32 "
        f"(the solvers' precision and that of the results) loses digits and underflows to zero. Rescale first, "
        f"e.g. multiply {what} by 2**{exponent} (exact: a power of two), and divide the amplitudes (alpha, "
        "baseline, activity) by the same factor."
    )


# --------------------------------------------------------------------------- JSON
def to_json_value(value: Any, key: str = "metadata") -> Any:
    """Convert a value to JSON-native types, refusing what JSON cannot represent.

    NumPy scalars and arrays become numbers and lists, tuples lists, paths strings.

    Raises
    ------
    ValueError
        For NaN or infinite numbers (not valid JSON: the CaTune page's ``JSON.parse``
        rejects ``NaN``/``Infinity``); the message names the key.
    TypeError
        For values JSON cannot represent, naming the key.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{key} = {value!r} cannot be written to JSON (NaN and infinities are not valid "
                "JSON and the CaTune page cannot read them); use None or a finite number."
            )
        return float(value)
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{key} = {value!r} ({value.dtype}) cannot be written to JSON.")
        return to_json_value(value.item(), key)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufUO":
            raise TypeError(f"{key} is an array of dtype {value.dtype}, which cannot be written to JSON.")
        return to_json_value(value.tolist(), key)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for sub_key, sub_value in value.items():
            if not isinstance(sub_key, str):
                raise TypeError(f"{key}: JSON object keys must be strings, got {sub_key!r}.")
            out[sub_key] = to_json_value(sub_value, f"{key}[{sub_key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{key}[{index}]") for index, item in enumerate(value)]
    raise TypeError(
        f"{key} = {value!r} ({type(value).__name__}) cannot be written to JSON; "
        "convert it to a string, number, list or dict."
    )


# --------------------------------------------------------------------------- memory
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_bytes(value: Any, name: str = "memory limit") -> int:
    """A byte count from an int/float or a string such as ``"16GiB"``, ``"500 MB"``.

    Raises
    ------
    TypeError
        Not a number or string.
    ValueError
        Unparseable, not positive or not finite.
    """
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"{name} {value!r} is not a size; write e.g. '16GiB', '500MB' or a number of bytes"
            )
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        number = check_real_scalar(value, name, minimum=0.0, strict_minimum=True, unit=" bytes")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive size, got {value!r}")
    return int(number)


def format_bytes(n_bytes: float) -> str:
    """``1.5 GiB``-style size for messages."""
    size = float(n_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            if unit == "bytes":
                return f"{size:.0f} {unit}"
            return f"{size:.1f} {unit}" if size < 1e6 else f"{size:.2g} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def memory_limit(limit: Any = None) -> int:
    """The memory allowance for one request, in bytes.

    In order: ``limit`` if given; the ``CALAB_MEMORY_LIMIT`` environment variable
    (e.g. ``"32GiB"``); :data:`DEFAULT_MEMORY_LIMIT` (8 GiB).
    """
    if limit is not None:
        return parse_bytes(limit, "memory limit")
    env = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if env:
        return parse_bytes(env, f"{MEMORY_LIMIT_ENV}")
    return DEFAULT_MEMORY_LIMIT


def check_memory(
    estimated_bytes: float | Mapping[str, float],
    what: str,
    *,
    limit: Any = None,
    how_to_raise: str = "",
    advice: str = "fewer cells or timepoints, or process it in parts",
) -> None:
    """Refuse a request whose estimated memory exceeds the allowance, before allocating.

    The one memory check of calab: every entry point whose settings multiply memory
    (``simulate``'s sizes, ``run_cadecon``'s subset count, sampling rate and upsampling,
    the InDeCa functions' kernel lengths) estimates its peak and calls this first.

    Parameters
    ----------
    estimated_bytes : float or mapping of str to float
        Estimated peak memory of the request, or its parts by name (summed; the message
        names the largest, so the user knows which setting to change).
    what : str
        The request, e.g. ``"simulate(num_cells=100000, num_timepoints=1000000)"``.
    limit : int, float or str, optional
        Explicit allowance (bytes or ``"16GiB"``); default :func:`memory_limit`.
    how_to_raise : str
        How the caller raises the allowance, with ``{size}`` standing for the suggested
        size (e.g. ``"pass max_memory='{size}'"``); the environment variable is always
        mentioned.
    advice : str
        How to make the request smaller (which setting to change).

    Raises
    ------
    MemoryLimitError
        A MemoryError and a ValueError; the message gives the estimate and the limit.
    """
    allowance = memory_limit(limit)
    largest = ""
    if isinstance(estimated_bytes, Mapping):
        parts = {name: float(value) for name, value in estimated_bytes.items()}
        estimated_bytes = math.fsum(parts.values()) if parts else 0.0
        if parts and estimated_bytes > allowance:
            name = max(parts, key=parts.__getitem__)
            largest = f" (mostly {name}: {format_bytes(parts[name])})"
    if estimated_bytes <= allowance:
        return
    size = f"{math.ceil(estimated_bytes / 1024**3)}GiB" if math.isfinite(estimated_bytes) else "more"
    raise_hint = f"{how_to_raise.format(size=size)}, or set " if how_to_raise else "set "
    raise MemoryLimitError(
        f"{what} needs about {format_bytes(estimated_bytes)} of memory{largest}, above the limit of "
        f"{format_bytes(allowance)} ({allowance} bytes). Make the request smaller ({advice}), "
        f"or, if the machine has that much memory, "
        f"{raise_hint}the environment variable {MEMORY_LIMIT_ENV}={size}."
    )


# --------------------------------------------------------------------------- likely mistakes
# Input that is valid but probably not what the caller meant.  These warn (the call still
# runs: a recording of 300 frames from 2000 cells exists) with the fix in the message;
# the command line, which has no published behaviour to keep, refuses them instead.
class SuspiciousInputWarning(UserWarning):
    """Input that is probably a mistake (a transposed array, time constants in milliseconds).

    The call goes on with the input as given; the message says how to fix it.  Silence a
    case you have checked with ``warnings.filterwarnings("ignore",
    category=calab.SuspiciousInputWarning)``.
    """


#: An array with more than this many times as many rows as columns looks transposed:
#: recordings have thousands of frames and rarely more cells than frames.
TRANSPOSED_RATIO = 4
#: A rise time constant of a second or more is not a calcium indicator's (they rise in
#: 2-200 ms): such values were almost certainly given in milliseconds.
MILLISECOND_RISE_S = 1.0
#: Likewise a decay time constant of 20 s or more (indicators decay in 0.05-5 s).
MILLISECOND_DECAY_S = 20.0


def transposed_message(shape: tuple[int, ...], what: str = "traces", fix: str | None = None) -> str | None:
    """Why a ``(n_cells, n_timepoints)`` array of ``shape`` looks transposed, or None.

    It does when it has more than :data:`TRANSPOSED_RATIO` times as many rows (cells) as
    columns (frames), e.g. a ``(3000, 20)`` array that is really 20 cells of 3000 frames.
    ``fix`` says what to do instead (default: pass ``what.T``).
    """
    if len(shape) != 2:
        return None
    n_cells, n_timepoints = (int(v) for v in shape)
    if n_timepoints == 0 or n_cells <= TRANSPOSED_RATIO * n_timepoints:
        return None
    return (
        f"{what} has shape ({n_cells}, {n_timepoints}): {n_cells} cells of only {n_timepoints} "
        f"frames each. calab expects (n_cells, n_timepoints); if this is {n_timepoints} cells "
        f"of {n_cells} frames, {fix or f'pass {what}.T'}"
    )


def warn_if_transposed(shape: tuple[int, ...], what: str = "traces", fix: str | None = None, *,
                       stacklevel: int = 3) -> None:
    """Warn (:class:`SuspiciousInputWarning`) when :func:`transposed_message` finds a problem."""
    import warnings

    message = transposed_message(tuple(shape), what, fix)
    if message is not None:
        warnings.warn(message, SuspiciousInputWarning, stacklevel=stacklevel)


def millisecond_taus_message(tau_rise: Any, tau_decay: Any, names: tuple[str, str] = ("tau_rise", "tau_decay")) -> str | None:
    """Why ``tau_rise``/``tau_decay`` (seconds) look like milliseconds, or None.

    They do when the rise is at least :data:`MILLISECOND_RISE_S` or the decay at least
    :data:`MILLISECOND_DECAY_S`.  Values that are not positive finite numbers are left to
    the checks that reject them.
    """
    values = []
    for value in (tau_rise, tau_decay):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        if not (math.isfinite(number) and number > 0):
            return None
        values.append(number)
    rise, decay = values
    if rise < MILLISECOND_RISE_S and decay < MILLISECOND_DECAY_S:
        return None
    return (
        f"{names[0]}={format_number(rise)} and {names[1]}={format_number(decay)} look like milliseconds: "
        f"calab's time constants are in seconds (calcium indicators rise in 0.002-0.2 s and decay in "
        f"0.05-5 s). Did you mean {names[0]}={format_number(rise / 1000)}, {names[1]}={format_number(decay / 1000)}?"
    )


def warn_if_milliseconds(tau_rise: Any, tau_decay: Any, names: tuple[str, str] = ("tau_rise", "tau_decay"),
                         *, stacklevel: int = 3) -> None:
    """Warn (:class:`SuspiciousInputWarning`) when :func:`millisecond_taus_message` finds a problem."""
    import warnings

    message = millisecond_taus_message(tau_rise, tau_decay, names)
    if message is not None:
        warnings.warn(message, SuspiciousInputWarning, stacklevel=stacklevel)


def unknown_names_message(given: Iterable[str], valid: Iterable[str], what: str = "setting") -> str | None:
    """A message naming each unknown name in ``given`` with the closest valid one, or None.

    ``unknown_names_message(["max_iteration"], fields)`` gives ``"unknown setting
    'max_iteration': did you mean 'max_iterations'?"``; a name with no close match lists
    the valid names instead.
    """
    import difflib

    valid = list(valid)
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"valid {what}s are {', '.join(sorted(valid))}"
        parts.append(f"unknown {what} {name!r}: {hint}")
    return "; ".join(parts)
