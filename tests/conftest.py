"""Shared pytest fixtures: every numeric test runs on every usable backend."""

from __future__ import annotations

import pytest

from calab.backends import BACKEND_NAMES, backend_info


def _backend_param(name: str):
    info = backend_info(name)
    marks = [pytest.mark.gpu] if name == "cupy" else []
    if not info.usable:
        marks.append(pytest.mark.skip(reason=f"backend {name!r} unusable here: {info.reason}"))
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_NAMES])
def backend(request) -> str:
    """Name of a usable backend; unusable ones are reported as skipped with the reason."""
    return request.param


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_NAMES if name != "numpy"])
def accelerated_backend(request) -> str:
    """A non-NumPy backend, for parity tests against the NumPy oracle."""
    return request.param
