"""The Python ⇄ browser bridge: ``tune()``, ``HeadlessBrowser``, the server and its pages.

Importing this package is cheap: Playwright is only imported when a
:class:`HeadlessBrowser` is created, and CaTune's compute routes when a session starts.
"""

from __future__ import annotations

from calab.bridge.apps import BridgeResult, app_url, launch, page_url, tune
from calab.bridge.decon import decon
from calab.bridge.handshake import BridgeVersionError, BridgeVersionWarning
from calab.bridge.headless import HeadlessBrowser
from calab.bridge.registry import APPS, AppSpec, ComputeRoute, ResultSchema, get_app, register_app, resolve_app

__all__ = [
    "APPS",
    "AppSpec",
    "BridgeResult",
    "BridgeVersionError",
    "BridgeVersionWarning",
    "ComputeRoute",
    "HeadlessBrowser",
    "ResultSchema",
    "app_url",
    "decon",
    "get_app",
    "launch",
    "page_url",
    "register_app",
    "resolve_app",
    "tune",
]
