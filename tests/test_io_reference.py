"""Live cross-check against the published ``calab==0.3.0`` (skipped without its venv).

Runs ``tools/make_io_golden.py --check``: our writer's bytes equal the reference's for
every golden case; files we write load in the reference (arrays bit for bit, metadata
equal, its ``calab info`` accepts them); the reference's files load in ours.  CI without
the reference venv relies on the committed golden files instead (``test_io.py``,
``test_cli.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = Path(os.environ.get("CALAB_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))

pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(not REF_PYTHON.exists(), reason=f"reference venv not found ({REF_PYTHON})"),
]


def test_files_round_trip_with_the_reference_both_ways():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_io_golden.py"), "--check"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK:"), result.stdout
