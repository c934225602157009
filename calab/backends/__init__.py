"""Backend registry and resolution.

A *backend* is the array library a computation runs on: ``"numpy"`` (NumPy + SciPy on
the CPU, always present), ``"jax"`` (XLA on CPU or GPU) or ``"cupy"`` (CUDA).

Resolution order for every compute function (first match wins):

1. the explicit ``backend=`` argument;
2. the innermost :func:`use_backend` context;
3. the ``CALAB_BACKEND`` environment variable;
4. the library of the input array (a CuPy or JAX array stays on its device);
5. ``"auto"``: CuPy if a CUDA device is usable, else JAX if it sees a GPU, else NumPy.

Nothing here imports CuPy or JAX at module import, and availability probes never raise:
they return a :class:`BackendInfo` whose ``reason`` says what is missing.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from calab.backends.base import Backend

__all__ = [
    "BACKEND_NAMES",
    "BackendInfo",
    "BackendUnavailableError",
    "array_library",
    "available_backends",
    "backend_info",
    "get_backend",
    "is_dask_array",
    "resolve_backend",
    "use_backend",
]

#: Registered backends in auto-selection preference order, with the module and class
#: that implement them and the pip extra that installs their library.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "cupy": ("calab.backends.cuda", "CupyBackend", "cuda12"),
    "jax": ("calab.backends.jax", "JaxBackend", "jax"),
    "numpy": ("calab.backends.cpu", "NumpyBackend", ""),
}
BACKEND_NAMES: tuple[str, ...] = tuple(_REGISTRY)
_ALIASES = {"cpu": "numpy", "np": "numpy", "cuda": "cupy", "cp": "cupy", "xla": "jax"}

_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "calab_backend", default=None
)
_instances: dict[str, Backend] = {}
_probe_cache: dict[str, BackendInfo] = {}


class BackendUnavailableError(ImportError):
    """A requested backend's library is not installed or cannot reach its device."""


class BackendInfo(NamedTuple):
    """Whether a backend can run here, and why not when it cannot.

    Attributes
    ----------
    name : str
        Backend name (``"numpy"``, ``"jax"`` or ``"cupy"``).
    usable : bool
        True when computations can run on it now.
    reason : str
        Human-readable explanation: the device used, or what is missing and how to fix it.
    has_gpu : bool
        True when the backend computes on a GPU.
    """

    name: str
    usable: bool
    reason: str
    has_gpu: bool = False


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string such as 'numpy', 'jax' or 'cupy', got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key != "auto" and key not in _REGISTRY:
        choices = ", ".join(repr(n) for n in (*BACKEND_NAMES, "auto"))
        raise ValueError(f"unknown backend {name!r}; choose one of {choices}")
    return key


def _backend_class(name: str) -> type[Backend]:
    module_name, class_name, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module_name), class_name)


def backend_info(name: str, *, refresh: bool = False) -> BackendInfo:
    """Probe one backend without raising.

    Parameters
    ----------
    name : str
        Backend name or alias.
    refresh : bool
        Re-run the probe instead of returning the cached answer.

    Returns
    -------
    BackendInfo
    """
    key = _canonical_name(name)
    if key == "auto":
        key = _auto_choice()
    if refresh or key not in _probe_cache:
        try:
            info = _backend_class(key).probe()
        except Exception as exc:  # a probe must never take the caller down
            info = BackendInfo(key, False, f"probe failed: {type(exc).__name__}: {exc}")
        _probe_cache[key] = info
    return _probe_cache[key]


def available_backends(*, with_reasons: bool = False) -> list[str] | dict[str, BackendInfo]:
    """List the backends that can run on this machine.

    Parameters
    ----------
    with_reasons : bool
        If False (default) return the usable backend names, best first.  If True return a
        dict mapping *every* registered backend to its :class:`BackendInfo`, including the
        reason an unusable one cannot run (library missing, no driver, no device...).

    Returns
    -------
    list of str or dict of str to BackendInfo
    """
    infos = {name: backend_info(name) for name in BACKEND_NAMES}
    if with_reasons:
        return infos
    return [name for name, info in infos.items() if info.usable]


def _auto_choice() -> str:
    cupy = backend_info("cupy")
    if cupy.usable:
        return "cupy"
    jax = backend_info("jax")
    if jax.usable and jax.has_gpu:
        return "jax"
    return "numpy"


def get_backend(name: str) -> Backend:
    """Return the (cached) backend instance for ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a known backend.
    BackendUnavailableError
        If the backend's library is missing or cannot run here; the message names the
        extra to install.
    """
    key = _canonical_name(name)
    if key == "auto":
        key = _auto_choice()
    if key not in _instances:
        info = backend_info(key)
        if not info.usable:
            raise BackendUnavailableError(f"backend {key!r} is not usable: {info.reason}")
        _instances[key] = _backend_class(key)()
    return _instances[key]


def array_library(array: Any) -> str | None:
    """Name the library an array belongs to (``"numpy"``, ``"cupy"``, ``"jax"``) or None.

    Detection reads the array type's module name, so it never imports CuPy or JAX.
    """
    module = type(array).__module__.split(".", 1)[0]
    if module == "numpy":
        return "numpy"
    if module == "cupy":
        return "cupy"
    if module in ("jax", "jaxlib"):
        return "jax"
    return None


def is_dask_array(array: Any) -> bool:
    """Whether ``array`` is a ``dask.array.Array`` (read from its type's module; Dask is
    never imported)."""
    return type(array).__module__.split(".", 1)[0] == "dask" and hasattr(array, "chunks")


def resolve_backend(backend: str | None = None, *arrays: Any) -> Backend:
    """Pick the backend for a call, following the documented resolution order.

    Parameters
    ----------
    backend : str or None
        Explicit choice; None means "resolve".
    *arrays
        Input arrays; the first CuPy or JAX array decides the backend when nothing
        earlier in the order did.
    """
    if backend is None:
        backend = _context_backend.get()
    if backend is None:
        env = os.environ.get("CALAB_BACKEND", "").strip()
        if env:
            try:
                backend = _canonical_name(env)
            except ValueError as exc:
                raise ValueError(f"CALAB_BACKEND environment variable: {exc}") from None
    if backend is None:
        for array in arrays:
            library = array_library(array)
            if library in ("cupy", "jax"):
                backend = library
                break
    return get_backend("auto" if backend is None else backend)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Run the enclosed calab calls on one backend.

    Parameters
    ----------
    name : str
        ``"numpy"``, ``"jax"``, ``"cupy"`` or ``"auto"``.

    Examples
    --------
    >>> with calab.use_backend("jax"):
    ...     activity = calab.run_deconvolution(traces, 30.0, 0.1, 0.6, 0.5)
    """
    backend = get_backend(name)  # fail now, not inside the first call
    token = _context_backend.set(backend.name)
    try:
        yield backend
    finally:
        _context_backend.reset(token)


def module_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(name: str) -> str:
    """The pip command that installs a backend's library."""
    extra = _REGISTRY[_canonical_name(name)][2]
    if name == "cupy":
        return "pip install calab[cuda12] (CUDA 12) or calab[cuda13] (CUDA 13)"
    return f"pip install calab[{extra}]" if extra else "pip install calab"
