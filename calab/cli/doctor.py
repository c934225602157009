"""``calab doctor``: which compute backends work here, why not, devices and versions."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from calab.cli._common import resolve_backend_name
from calab.cli._parsing import command_parser

EXAMPLES = """\
examples:
  calab doctor                      # what works here, in words
  CALAB_BACKEND=jax calab doctor    # what calab would use with that setting
  calab doctor --json > env.json    # the same, for a bug report
"""


def add_parser(commands: Any) -> None:
    doctor = command_parser(
        commands, "doctor", help="Check backends, devices and installed versions",
        description="Which compute backends work on this machine and why the others do not, the backend "
                    "calab uses by default (CALAB_BACKEND, else the fastest usable one), and the installed "
                    "versions. Exit status 1 when no backend is usable.",
        examples=EXAMPLES,
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=run)


#: optional packages: (import name, distribution, how to install)
_OPTIONAL = (
    ("jax", "jax", "pip install calab[jax]"),
    ("jaxlib", "jax", "pip install calab[jax]"),
    ("cupy", "cupy", "pip install calab[cuda12] or calab[cuda13]"),
    ("h5py", "h5py", "pip install calab[loaders]"),
    ("zarr", "zarr", "pip install calab[loaders]"),
    ("pynwb", "pynwb", "pip install calab[nwb] (optional: NWB files load without it)"),
    ("playwright", "playwright", "pip install calab[headless]"),
    ("dask", "dask", "pip install calab[dask]"),
    ("matplotlib", "matplotlib", "pip install calab[plot] (figures: result.plot, --plot)"),
    ("numba", "numba", "pip install numba (faster CPU backend)"),
)
_CORE = ("numpy", "scipy", "pydantic", "tqdm")


#: pip distributions that provide an import name, where they differ from it
_DISTRIBUTIONS = {"cupy": ("cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x")}


def distribution_version(name: str) -> str | None:
    from importlib import metadata

    for candidate in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def report() -> dict[str, Any]:
    """Versions, backends and the default backend, as the JSON ``calab doctor --json`` prints."""
    import platform

    import calab
    from calab.backends import available_backends

    found: dict[str, Any] = {
        "calab": calab.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: distribution_version(name) for name in _CORE},
        "optional": {},
        "backends": {},
    }
    for name, distribution, hint in _OPTIONAL:
        version = distribution_version(distribution if name != "jaxlib" else "jaxlib")
        found["optional"][name] = {"version": version, "install": None if version else hint}
    for name, info in available_backends(with_reasons=True).items():
        found["backends"][name] = {"usable": info.usable, "gpu": info.has_gpu, "detail": info.reason}
    try:
        found["default_backend"] = resolve_backend_name(None)
    except Exception as exc:  # e.g. CALAB_BACKEND names an unusable backend
        found["default_backend"] = None
        found["default_backend_error"] = str(exc)
    found["calab_backend_env"] = os.environ.get("CALAB_BACKEND") or None
    return found


def run(args: argparse.Namespace) -> int:
    summary = report()
    usable = [name for name, entry in summary["backends"].items() if entry["usable"]]
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if usable else 1
    print(f"calab {summary['calab']} on Python {summary['python']} ({summary['platform']})")
    print("Packages:")
    for name, version in summary["packages"].items():
        print(f"  {name:<11} {version or 'MISSING (pip install calab)'}")
    for name, entry in summary["optional"].items():
        print(f"  {name:<11} {entry['version'] or 'not installed - ' + entry['install']}")
    print("Backends:")
    for name, entry in summary["backends"].items():
        status = "usable" if entry["usable"] else "unavailable"
        kind = " (GPU)" if entry["gpu"] else ""
        print(f"  {name:<6} {status}{kind}: {entry['detail']}")
    if summary.get("default_backend"):
        env = f" (CALAB_BACKEND={summary['calab_backend_env']})" if summary["calab_backend_env"] else ""
        print(f"Default backend: {summary['default_backend']}{env}")
    else:
        print(f"Default backend: none usable: {summary.get('default_backend_error')}")
    default = summary.get("default_backend")
    on_gpu = bool(default) and bool(summary["backends"].get(default, {}).get("gpu"))
    if default and not on_gpu:
        names = {"numpy": "NumPy", "jax": "JAX", "cupy": "CuPy"}
        gpu_elsewhere = [name for name, entry in summary["backends"].items() if entry["gpu"] and entry["usable"]]
        if gpu_elsewhere:
            print(f"calab computes on the CPU ({names.get(default, default)}) by default here; a GPU backend is "
                  f"usable too: pass backend='{gpu_elsewhere[0]}' or set CALAB_BACKEND={gpu_elsewhere[0]}.")
        else:
            print(f"No GPU backend is usable here: calab computes on the CPU ({names.get(default, default)}). "
                  "For a GPU, install calab[cuda12] (CuPy) or jax[cuda12].")
    return 0 if usable else 1
