#!/usr/bin/env python
"""Regenerate the InDeCa golden fixtures in ``tests/golden/indeca/`` from ``calab==0.3.0``.

Sibling of ``make_golden.py`` (same reference venv handling, same input generator):
runs ``tools/_indeca_golden_worker.py`` with the reference interpreter, from a working
directory outside the repository, and replaces ``tests/golden/indeca/``::

    python tools/make_indeca_golden.py [--venv /path/to/ref-venv] [--no-install]

The fixtures are the independent truth for ``tests/test_indeca_golden.py``; never edit
them by hand and never produce them with our own implementation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TOOLS_DIR.parent
sys.path.insert(0, str(TOOLS_DIR))

import reference_env  # noqa: E402

WORKER = TOOLS_DIR / "_indeca_golden_worker.py"
DEFAULT_OUT = REPO_ROOT / "tests" / "golden" / "indeca"
SIZE_BUDGET_BYTES = 1_500_000


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description="Regenerate tests/golden/indeca from calab==0.3.0")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--venv", default=None, help="reference venv (default $CALAB_REFERENCE_VENV or .venv-ref)")
    parser.add_argument("--no-install", action="store_true", help="fail instead of creating the reference venv")
    args = parser.parse_args(argv)
    if args.no_install:
        python = reference_env.reference_python(args.venv)
        if python is None:
            print("error: no reference venv; run without --no-install or set CALAB_REFERENCE_VENV", file=sys.stderr)
            return 2
    else:
        python = reference_env.ensure_reference_python(args.venv, quiet=True)
    with tempfile.TemporaryDirectory(prefix="calab-indeca-golden-") as tmpdir:
        tmp = Path(tmpdir)
        proc = subprocess.run([str(python), str(WORKER), str(tmp)], cwd=str(tmp),
                              env=reference_env.reference_subprocess_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return 1
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(tmp / "indeca", args.out)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {summary} cases to {args.out}, {size / 1e3:.1f} kB")
    if size > SIZE_BUDGET_BYTES:
        print(f"warning: fixtures exceed the {SIZE_BUDGET_BYTES / 1e6:.1f} MB budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
