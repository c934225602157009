#!/usr/bin/env python
"""Create (if missing) the throw-away virtual environment holding the reference ``calab``.

The published ``calab==0.3.0`` is the yardstick our re-implementation is measured
against (golden fixtures in ``tests/golden/``, side-by-side timings in ``bench/``).  It
shares the import name ``calab`` with this package, so it can never be imported next to
ours: it lives in its own venv and is only ever *run* as a subprocess, with that venv's
interpreter.

Usage
-----
::

    python tools/reference_env.py            # create/check .venv-ref, print its python
    python tools/reference_env.py --venv DIR # somewhere else
    python tools/reference_env.py --check    # never create or install; exit 1 if absent

The venv location is, in order: ``--venv``, the ``CALAB_REFERENCE_VENV`` environment
variable, ``<repo root>/.venv-ref`` (git-ignored).  On success the script prints the
reference interpreter's path on stdout and nothing else, so other tools can capture it.

Other scripts import :func:`reference_python` (never creates anything) or
:func:`ensure_reference_python` (creates and installs when needed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

__all__ = [
    "REFERENCE_REQUIREMENT",
    "REFERENCE_VERSION",
    "ReferenceEnvError",
    "default_venv_dir",
    "ensure_reference_python",
    "reference_python",
    "reference_subprocess_env",
    "reference_version",
]

#: The exact published release the golden fixtures and benchmarks compare against.
REFERENCE_VERSION = "0.3.0"
REFERENCE_REQUIREMENT = f"calab=={REFERENCE_VERSION}"

#: Environment variable overriding the venv location.
VENV_ENV_VAR = "CALAB_REFERENCE_VENV"

REPO_ROOT = Path(__file__).resolve().parent.parent


class ReferenceEnvError(RuntimeError):
    """The reference venv could not be created, or ``calab==0.3.0`` could not be installed."""


def default_venv_dir(venv_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the reference venv directory.

    Parameters
    ----------
    venv_dir : path-like, optional
        Explicit location; wins over everything else.

    Returns
    -------
    Path
        ``venv_dir``, else ``$CALAB_REFERENCE_VENV``, else ``<repo>/.venv-ref``.
    """
    if venv_dir is not None:
        return Path(venv_dir).expanduser().resolve()
    from_env = os.environ.get(VENV_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser().resolve()
    return REPO_ROOT / ".venv-ref"


def _venv_python(venv_dir: Path) -> Path:
    # Windows venvs keep the interpreter under Scripts/, POSIX ones under bin/.
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def reference_version(python: str | os.PathLike[str]) -> str | None:
    """Return the ``calab`` version importable by ``python``, or None if it cannot import it.

    The check runs in a subprocess (the reference must never be imported into this
    process, where ``calab`` already means our package).
    """
    code = "import importlib.metadata as m; print(m.version('calab'))"
    try:
        proc = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            # Run outside the repository so an editable/working-tree ``calab`` cannot shadow it.
            cwd=str(Path(python).resolve().parent),
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def _clean_env() -> dict[str, str]:
    """Environment for reference subprocesses: drop variables that would leak our package in."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(key, None)
    # The reference is single-threaded anyway; keep any BLAS it pulls in from oversubscribing.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def reference_python(venv_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Path of a python that imports the reference ``calab==0.3.0``, or None.

    Never creates or installs anything; use :func:`ensure_reference_python` for that.

    Parameters
    ----------
    venv_dir : path-like, optional
        Venv location (default: see :func:`default_venv_dir`).

    Returns
    -------
    Path or None
        The interpreter path when the venv exists and holds exactly the reference
        version, else None.
    """
    python = _venv_python(default_venv_dir(venv_dir))
    if not python.exists():
        return None
    if reference_version(python) != REFERENCE_VERSION:
        return None
    return python


def ensure_reference_python(
    venv_dir: str | os.PathLike[str] | None = None, *, quiet: bool = False
) -> Path:
    """Return the reference interpreter, creating the venv and installing it if needed.

    Parameters
    ----------
    venv_dir : path-like, optional
        Venv location (default: see :func:`default_venv_dir`).
    quiet : bool
        Suppress pip's progress output (it goes to stderr either way).

    Returns
    -------
    Path
        Interpreter of a venv in which ``import calab`` gives version 0.3.0.

    Raises
    ------
    ReferenceEnvError
        If the venv cannot be created or the package cannot be installed (no network,
        no wheel for this platform/Python, ...).
    """
    target = default_venv_dir(venv_dir)
    python = _venv_python(target)
    if python.exists() and reference_version(python) == REFERENCE_VERSION:
        return python

    if not python.exists():
        print(f"[reference_env] creating venv {target}", file=sys.stderr)
        try:
            venv.EnvBuilder(with_pip=True, clear=False).create(target)
        except Exception as exc:  # venv/ensurepip failures come in many types
            raise ReferenceEnvError(f"could not create a venv at {target}: {exc}") from exc

    print(f"[reference_env] pip install {REFERENCE_REQUIREMENT} into {target}", file=sys.stderr)
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        cmd.append("--quiet")
    cmd.append(REFERENCE_REQUIREMENT)
    # pip's stdout is sent to our stderr so that stdout stays "just the python path".
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env=_clean_env())
    if proc.returncode != 0:
        raise ReferenceEnvError(
            f"`pip install {REFERENCE_REQUIREMENT}` failed in {target} (exit {proc.returncode}); "
            "it needs network access to PyPI and a wheel (or a Rust toolchain to build the "
            "sdist) for this platform and Python version"
        )
    version = reference_version(python)
    if version != REFERENCE_VERSION:
        raise ReferenceEnvError(
            f"after installing, {python} imports calab version {version!r}, "
            f"expected {REFERENCE_VERSION!r}"
        )
    return python


def reference_subprocess_env() -> dict[str, str]:
    """Environment to run reference-venv subprocesses with (no PYTHONPATH leaking our calab)."""
    return _clean_env()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--venv",
        default=None,
        help=f"venv directory (default: ${VENV_ENV_VAR} or <repo>/.venv-ref)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report; never create the venv or install anything",
    )
    parser.add_argument("--quiet", action="store_true", help="less pip output")
    args = parser.parse_args(argv)

    if args.check:
        python = reference_python(args.venv)
        if python is None:
            print(
                f"reference {REFERENCE_REQUIREMENT} not found in {default_venv_dir(args.venv)}",
                file=sys.stderr,
            )
            return 1
        print(python)
        return 0
    try:
        python = ensure_reference_python(args.venv, quiet=args.quiet)
    except ReferenceEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
