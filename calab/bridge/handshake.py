"""Version handshake on results payloads (spec ``bridge-and-apps.md`` §1.9).

A payload's schema version must be compatible with the one calab registered for the app
under Cargo's caret rule (same major; same minor too while the major is 0).  A compatible
but different version is accepted with a :class:`BridgeVersionWarning`; an incompatible or
unreadable one is refused with :class:`BridgeVersionError`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "BridgeVersionError",
    "BridgeVersionWarning",
    "check_payload",
    "compatible",
    "parse_version",
]

_VERSION = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-+].*)?\s*$")


class BridgeVersionError(RuntimeError):
    """The web app and this calab speak incompatible result-format versions."""


class BridgeVersionWarning(UserWarning):
    """The web app's result-format version differs from calab's but is compatible."""


def parse_version(value: Any) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` from an int ≥ 0 or a ``v1.2.3-suffix`` string; None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, 0, 0) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _VERSION.match(value)
    if match is None:
        return None
    return tuple(int(part) if part is not None else 0 for part in match.groups())  # type: ignore[return-value]


def compatible(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Cargo's caret rule: same major, and the same minor while the major is 0."""
    if a[0] != b[0]:
        return False
    return a[0] != 0 or a[1] == b[1]


def _fmt(version: tuple[int, int, int]) -> str:
    return ".".join(str(part) for part in version)


def _compare(what: str, app_name: str, sent: Any, expected: Any) -> str | None:
    """None for an exact match, a warning string when compatible; raises otherwise."""
    theirs, ours = parse_version(sent), parse_version(expected)
    if theirs is None:
        raise BridgeVersionError(
            f"{app_name} sent an unreadable {what} {sent!r}; calab expects {expected!r}. "
            "Use a CaLab app release that matches this calab."
        )
    if ours is None or theirs == ours:
        return None
    if compatible(theirs, ours):
        return (
            f"{app_name} {what} {_fmt(theirs)} differs from calab's {_fmt(ours)} but is compatible; "
            "consider matching versions (pip install --upgrade calab, or a matching app build)."
        )
    if theirs > ours:
        fix = "The app is newer than this calab: pip install --upgrade calab"
    else:
        fix = ("The app is older than this calab: rebuild the app passed via app_url= or "
               "install a calab release that matches it")
    raise BridgeVersionError(
        f"{app_name} sent {what} {_fmt(theirs)}, but this calab expects {_fmt(ours)}, which is "
        f"incompatible. {fix}."
    )


def check_payload(app: Any, payload: dict[str, Any], solver_version: str | None) -> list[str]:
    """Check a results payload of ``app`` (an AppSpec); return the warnings.

    Raises
    ------
    BridgeVersionError
        Missing, unreadable or incompatible schema version (or solver version, when both
        the payload and this calab state one).
    """
    field = app.schema.version_field
    if field not in payload:
        raise BridgeVersionError(
            f"{app.display_name} sent results without a '{field}' field; this calab expects "
            f"{app.schema.name} version {app.schema.version!r}. Use a CaLab app release that "
            "matches this calab."
        )
    warnings = []
    message = _compare(field, app.display_name, payload[field], app.schema.version)
    if message:
        warnings.append(message)
    if "solver_version" in payload and solver_version is not None:
        message = _compare("solver_version", app.display_name, payload["solver_version"], solver_version)
        if message:
            warnings.append(message)
    return warnings
