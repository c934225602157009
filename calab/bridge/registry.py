"""Apps the bridge can serve: slug, display name, result schema, arrays, legacy routes.

The table mirrors calab 0.3.0's registry (spec ``bridge-and-apps.md`` §1.5) so hosted
apps keep working, and adds what calab's own server needs: the built-in page directory
and a per-app set of compute routes (served under :data:`COMPUTE_PREFIX`).  Another app
(CaDecon) joins by calling :func:`register_app` with its own
:class:`AppSpec`; nothing in the server is specific to one app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "APPS",
    "API_PREFIX",
    "COMPUTE_PREFIX",
    "PAGES_PREFIX",
    "RESERVED_SLUGS",
    "AppSpec",
    "ComputeRoute",
    "HOSTED_BASE_URL",
    "ResultSchema",
    "get_app",
    "register_app",
    "resolve_app",
]

#: the 0.3.0 protocol lives here; hosted apps only know these routes
API_PREFIX = "/api/v1"
#: calab's own secret-protected compute endpoints: ``/calab/v1/<slug>/<name>``
COMPUTE_PREFIX = "/calab/v1"
#: built-in pages as static files (no data in them, so no secret): ``/pages/<dir>/...``
PAGES_PREFIX = "/pages"
#: where 0.3.0 opened the apps (still reachable with ``app_url=``)
HOSTED_BASE_URL = "https://miniscope.github.io/CaLab/"
#: path segments that can never be app slugs (array upload aliases)
RESERVED_SLUGS = frozenset({"activity"})
_SLUG = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class ResultSchema:
    """What an app posts back: schema name, version and the payload field holding it."""

    name: str
    version: str | int
    version_field: str = "schema_version"


@dataclass(frozen=True)
class ComputeRoute:
    """One compute endpoint of an app.

    ``handler(session, query, body)`` returns ``(status, content_type, body_bytes)``;
    ``query`` is the parsed query string (name -> last value) and ``body`` the raw request
    body (``b""`` for GET).  ``session`` is the :class:`~calab.bridge.server.BridgeSession`.
    """

    method: str
    handler: Callable[[Any, dict[str, str], bytes], tuple[int, str, bytes]]


@dataclass(frozen=True)
class AppSpec:
    """One app the bridge can serve.

    Attributes
    ----------
    slug : str
        Lowercase identifier used in routes (``catune``).
    display_name : str
        Shown in the "Opening <name>: <url>" line.
    pages_path : str
        Path segment of the hosted app (``https://miniscope.github.io/CaLab/<pages_path>/``).
    schema : ResultSchema or None
        Result schema; None means the app cannot be launched from Python.
    arrays : tuple of str
        Names of ``.npy`` arrays the app uploads before its JSON results.
    legacy_json_routes : tuple of str
        0.3.0's fixed JSON results paths that alias ``/api/v1/results/<slug>``.
    page_dir : str or None
        Directory under ``calab/bridge/pages/`` holding the built-in page (None: none).
    compute : dict
        ``name -> ComputeRoute`` served at ``/calab/v1/<slug>/<name>`` (secret required).
    """

    slug: str
    display_name: str
    pages_path: str
    schema: ResultSchema | None = None
    arrays: tuple[str, ...] = ()
    legacy_json_routes: tuple[str, ...] = ()
    page_dir: str | None = None
    compute: dict[str, ComputeRoute] = field(default_factory=dict)

    @property
    def results_path(self) -> str:
        return f"{API_PREFIX}/results/{self.slug}"

    @property
    def hosted_url(self) -> str:
        return f"{HOSTED_BASE_URL}{self.pages_path}/"


#: slug -> AppSpec; extend with :func:`register_app`
APPS: dict[str, AppSpec] = {}


def register_app(spec: AppSpec, *, replace: bool = False) -> AppSpec:
    """Add an app to :data:`APPS` (``replace=True`` to update an existing entry)."""
    if not _SLUG.match(spec.slug) or spec.slug in RESERVED_SLUGS:
        raise ValueError(f"invalid app slug {spec.slug!r}: use lowercase [a-z][a-z0-9-]*, not 'activity'")
    if spec.slug in APPS and not replace:
        raise ValueError(f"app {spec.slug!r} is already registered (pass replace=True to update it)")
    reserved_arrays = {a for a in spec.arrays if not _SLUG.match(a)}
    if reserved_arrays:
        raise ValueError(f"invalid array names {sorted(reserved_arrays)} for app {spec.slug!r}")
    APPS[spec.slug] = spec
    return spec


def get_app(slug: str) -> AppSpec:
    """The registered app ``slug`` (case-insensitive).

    Raises
    ------
    ValueError
        Unknown slug (the message lists the known apps).
    """
    spec = APPS.get(str(slug).lower())
    if spec is None:
        known = ", ".join(sorted(APPS))
        raise ValueError(
            f"Unknown CaLab app {slug!r}; known apps: {known}. A newer app may need a newer "
            "calab: pip install --upgrade calab"
        )
    return spec


def resolve_app(slug: str) -> AppSpec:
    """Like :func:`get_app`, but also refuses apps that cannot talk to Python."""
    spec = get_app(slug)
    if spec.schema is None:
        raise ValueError(f"{spec.display_name} does not support the Python bridge yet.")
    return spec


# 0.3.0's apps.  CaTune's compute routes are added by calab.bridge.catune; CaDecon's
# page and compute routes by the CaDecon work (register_app(..., replace=True)).
register_app(AppSpec(
    slug="catune", display_name="CaTune", pages_path="CaTune",
    schema=ResultSchema("catune-export", "1.2.0"),
    legacy_json_routes=(f"{API_PREFIX}/params",),
))
register_app(AppSpec(
    slug="cadecon", display_name="CaDecon", pages_path="CaDecon",
    schema=ResultSchema("cadecon-results", 2), arrays=("activity",),
    legacy_json_routes=(f"{API_PREFIX}/results",),
))
register_app(AppSpec(slug="carank", display_name="CaRank", pages_path="CaRank"))
