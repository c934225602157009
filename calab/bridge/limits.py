"""What the bridge server accepts in a request: JSON limits and parameter bounds.

Every numeric query or body parameter of every route has an entry in :data:`BOUNDS`
(rendered into ``docs/security.md`` by :func:`bounds_table`).  A value outside its bound,
of the wrong type, or not finite is answered with 400 and a message naming the bound,
before any work starts, so no single request can ask the server for unbounded memory or
time.  JSON bodies are parsed by :func:`parse_json`, which refuses nesting deeper than
:data:`MAX_JSON_DEPTH` (checked without recursion, before decoding) and the non-standard
``NaN``/``Infinity`` constants and overflowing literals (``1e999``) that Python's
:mod:`json` would otherwise accept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BOUNDS",
    "Bound",
    "MAX_CELLS_PER_REQUEST",
    "MAX_JSON_DEPTH",
    "RequestError",
    "bound",
    "bounds_table",
    "check_flag",
    "json_nesting_depth",
    "parse_json",
]

#: JSON bodies nested deeper than this (arrays and objects) are refused; the documents of
#: calab's pages and of the hosted apps nest a few levels at most
MAX_JSON_DEPTH = 64
#: at most this many cells per CaTune solve or spectrum request (the page shows up to 20)
MAX_CELLS_PER_REQUEST = 64
#: longest query-string number accepted (digits beyond any bound are refused unparsed)
_MAX_NUMBER_CHARS = 40
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: scan JSON for nesting in blocks of this many bytes (bounded temporary memory)
_SCAN_BLOCK = 1 << 20
_MISSING: Any = object()


class RequestError(ValueError):
    """A request the bridge refuses with 400; the message names what to fix."""


# ------------------------------------------------------------------ JSON
def json_nesting_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in the JSON text ``data``, without recursion.

    Brackets inside strings do not count.  Escapes are removed first (``\\\\`` pairs,
    then ``\\"``), so every remaining quote opens or closes a string.  Text that is not
    JSON gets some depth; :func:`json.loads` refuses it afterwards anyway.  Linear time,
    a few MiB of temporary memory whatever the size of ``data``.
    """
    text = np.frombuffer(data.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    depth, deepest, in_string = 0, 0, False
    for begin in range(0, text.size, _SCAN_BLOCK):
        block = text[begin:begin + _SCAN_BLOCK]
        quotes = np.cumsum(block == ord('"'), dtype=np.int32)
        inside = (quotes & 1).astype(bool) ^ in_string
        step = ((block == ord("[")) | (block == ord("{"))).astype(np.int32)
        step -= (block == ord("]")) | (block == ord("}"))
        step[inside] = 0
        profile = np.cumsum(step, dtype=np.int64) + depth
        deepest = max(deepest, int(profile.max()))
        depth = int(profile[-1])
        in_string ^= bool(quotes[-1] & 1)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise RequestError(f"Invalid JSON: {name} is not a JSON number; send finite numbers (or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(f"Invalid JSON: the number {text[:_MAX_NUMBER_CHARS]} overflows a float; "
                           "send finite numbers")
    return value


def parse_json(body: bytes) -> Any:
    """Decode a JSON request body, refusing what no calab client sends.

    Raises
    ------
    RequestError
        ``"Invalid JSON"`` for text that is not JSON (or not UTF-8); ``"Invalid JSON: ..."``
        naming the limit for nesting deeper than :data:`MAX_JSON_DEPTH`, ``NaN``,
        ``Infinity`` and number literals that overflow a float.
    """
    # Only a body with more opening brackets than the limit can nest deeper than it.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_nesting_depth(body) > MAX_JSON_DEPTH:
        raise RequestError(f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except RequestError:
        raise
    except RecursionError:  # a nesting the scan missed in malformed text: still a 400
        raise RequestError(f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise RequestError("Invalid JSON") from None


# ------------------------------------------------------------------ parameter bounds
def _number_text(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_NUMBER_CHARS else text[:_MAX_NUMBER_CHARS] + "..."


@dataclass(frozen=True)
class Bound:
    """The accepted values of one numeric request parameter.

    Attributes
    ----------
    route : str
        Where the parameter is sent, e.g. ``"GET /calab/v1/cadecon/subsets"``.
    name : str
        Query or body key.
    integer : bool
        Whole numbers only (a JSON number with an integral value, or decimal digits in a
        query string); otherwise any finite number.
    low, high : float
        Inclusive limits unless ``low_open`` / ``high_open``.
    low_text, high_text : str, optional
        How the docs write a limit that depends on the session (``"n_cells − 1"``).
    """

    route: str
    name: str
    integer: bool
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    low_text: str | None = None
    high_text: str | None = None

    def describe(self, low: float | None = None, high: float | None = None, *, for_docs: bool = False) -> str:
        """``an integer in [1, 1000]`` / ``a number in (0, 1]`` (with session limits when given)."""
        lo = self.low_text if for_docs and self.low_text else _number_text(self.low if low is None else low)
        hi = self.high_text if for_docs and self.high_text else _number_text(self.high if high is None else high)
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"

    def _refuse(self, got: str, low: float | None, high: float | None) -> RequestError:
        return RequestError(f"'{self.name}' must be {self.describe(low, high)}, got {got}")

    def check(self, value: Any, *, low: float | None = None, high: float | None = None) -> int | float:
        """A JSON body value, checked; ``low``/``high`` replace session-dependent limits."""
        lo, hi = (self.low if low is None else low), (self.high if high is None else high)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._refuse(_shown(value), low, high)
        if isinstance(value, float):
            if not math.isfinite(value) or (self.integer and not value.is_integer()):
                raise self._refuse(_shown(value), low, high)
            if self.integer:
                value = int(value)
        below = value <= lo if self.low_open else value < lo
        above = value >= hi if self.high_open else value > hi
        if below or above:
            raise self._refuse(_shown(value), low, high)
        return int(value) if self.integer else float(value)

    def parse(self, text: str, *, low: float | None = None, high: float | None = None) -> int | float:
        """A query-string value (decimal text), checked."""
        text = text.strip()
        pattern = _INTEGER_TEXT if self.integer else _FLOAT_TEXT
        if len(text) > _MAX_NUMBER_CHARS or not pattern.fullmatch(text):
            raise self._refuse(_shown(text), low, high)
        return self.check(int(text) if self.integer else float(text), low=low, high=high)

    def from_query(self, query: Mapping[str, str], default: Any = _MISSING, **limits: float) -> Any:
        """The parameter from a parsed query string (``default`` when absent; required without one)."""
        if self.name not in query:
            if default is _MISSING:
                raise RequestError(f"'{self.name}' is required: {self.describe(**limits)}")
            return default
        return self.parse(query[self.name], **limits)

    def from_body(self, request: Mapping[str, Any], default: Any = _MISSING, **limits: float) -> Any:
        """The parameter from a decoded JSON object (``null`` counts as absent)."""
        value = request.get(self.name)
        if value is None:
            if default is _MISSING:
                raise RequestError(f"'{self.name}' is required: {self.describe(**limits)}")
            return default
        return self.check(value, **limits)


#: every bounded parameter, by (route, name); docs/security.md shows :func:`bounds_table`
BOUNDS: dict[tuple[str, str], Bound] = {}


def _add(route: str, name: str, integer: bool, low: float = 0, high: float = 0, **kw: Any) -> None:
    BOUNDS[(route, name)] = Bound(route, name, integer, low, high, **kw)


def bound(route: str, name: str) -> Bound:
    """The bound of parameter ``name`` on ``route`` (a ``KeyError`` is a programming error)."""
    return BOUNDS[(route, name)]


def check_flag(request: Mapping[str, Any], name: str, default: bool) -> bool:
    """A JSON ``true``/``false`` body value (``null`` or absent: ``default``)."""
    value = request.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false, got {_shown(value)}")
    return value


def bounds_table() -> str:
    """The Markdown table of :data:`BOUNDS` that ``docs/security.md`` carries."""
    lines = ["| route | parameter | accepted values |", "|---|---|---|"]
    for (route, name), spec in BOUNDS.items():
        lines.append(f"| `{route}` | `{name}` | {spec.describe(for_docs=True)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the table
_CATUNE = "/calab/v1/catune"
_CADECON = "/calab/v1/cadecon"
_CELL = {"high_text": "n_cells − 1"}
_INT64 = {"low": -(2**63), "high": 2**63 - 1, "low_text": "−2⁶³", "high_text": "2⁶³ − 1"}

_add(f"GET {_CATUNE}/minimap", "cell", True, 0, 0, **_CELL)
_add(f"GET {_CATUNE}/minimap", "bins", True, 1, 4000)
_add(f"GET {_CATUNE}/spectrum", "cells", True, 0, 0, **_CELL)
_add(f"GET {_CATUNE}/spectrum", "len(cells)", True, 1, MAX_CELLS_PER_REQUEST)
_add(f"POST {_CATUNE}/solve", "cells", True, 0, 0, **_CELL)
_add(f"POST {_CATUNE}/solve", "len(cells)", True, 1, MAX_CELLS_PER_REQUEST)
_add(f"POST {_CATUNE}/solve", "start", True, 0, 0, high_text="n_timepoints − 2")
_add(f"POST {_CATUNE}/solve", "stop", True, 2, 0, low_text="start + 2", high_text="n_timepoints")
_add(f"POST {_CATUNE}/solve", "tau_rise", False, 0, 100, low_open=True)
_add(f"POST {_CATUNE}/solve", "tau_decay", False, 0, 100, low_open=True)
_add(f"POST {_CATUNE}/solve", "lambda", False, 0, 1e6)
_add(f"POST {_CATUNE}/solve", "points", True, 16, 8192)
_add(f"POST {_CATUNE}/solve", "max_iters", True, 1, 10_000)
_add(f"GET {_CADECON}/subsets", "num_subsets", True, 1, 1000)
_add(f"GET {_CADECON}/subsets", "target_coverage", False, 0.01, 1)
_add(f"GET {_CADECON}/subsets", "aspect_ratio", False, 0.01, 100)
_add(f"GET {_CADECON}/subsets", "seed", True, **_INT64)
_add(f"GET {_CADECON}/raster", "rows", True, 1, 600)
_add(f"GET {_CADECON}/raster", "cols", True, 1, 1600)
_add(f"GET {_CADECON}/trace", "cell", True, 0, 0, **_CELL)
_add(f"GET {_CADECON}/trace", "start", True, 0, 0, high_text="n_timepoints − 1")
_add(f"GET {_CADECON}/trace", "stop", True, 1, 0, low_text="start + 1", high_text="n_timepoints")
_add(f"GET {_CADECON}/trace", "points", True, 50, 8192)
# The run's settings: the bridge's caps on the settings that multiply work; every other
# DeconConfig field must be a number of the right kind and then meets DeconConfig's bounds.
_add(f"POST {_CADECON}/start", "config.upsample_target", True, 1, 10_000)
_add(f"POST {_CADECON}/start", "config.num_subsets", True, 1, 1000)
_add(f"POST {_CADECON}/start", "config.target_coverage", False, 0.01, 1)
_add(f"POST {_CADECON}/start", "config.aspect_ratio", False, 0.01, 100)
_add(f"POST {_CADECON}/start", "config.seed", True, **_INT64)
_add(f"POST {_CADECON}/start", "config.tau_rise", False, 0, 100, low_open=True)
_add(f"POST {_CADECON}/start", "config.tau_decay", False, 0, 100, low_open=True)
_add(f"POST {_CADECON}/start", "config.lambda_", False, 0, 1e6)
_add(f"POST {_CADECON}/start", "config.kernel_smooth_lambda", False, 0, 1e6)
# The 0.3.0 progress POST (spec bridge-and-apps.md §1.10); null is allowed for each.
_add("POST /api/v1/progress", "iteration", True, 0, 1_000_000)
_add("POST /api/v1/progress", "max_iterations", True, 0, 1_000_000)
_add("POST /api/v1/progress", "phase_progress", False, 0, 1)
_add("POST /api/v1/progress", "tau_rise", False, 0, 1000)
_add("POST /api/v1/progress", "tau_decay", False, 0, 1000)
