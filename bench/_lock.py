"""An optional machine-wide lock, so that timings on a shared machine never overlap.

Every benchmark takes ``--lock PATH`` (default: the ``CALAB_BENCH_LOCK`` environment
variable; no lock when neither is set).  With a path, the benchmark waits for an
exclusive ``flock`` on that file before it measures anything and holds it until it exits:
the same lock the ``flock(1)`` command takes, so both kinds of runs queue behind each other.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

__all__ = ["ENV_VAR", "add_lock_option", "hold_lock"]

ENV_VAR = "CALAB_BENCH_LOCK"
_held: list[IO[str]] = []  # open handles keep their locks until the process exits


def add_lock_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--lock PATH`` (default ``$CALAB_BENCH_LOCK``) to a benchmark's parser."""
    parser.add_argument(
        "--lock", metavar="PATH", default=os.environ.get(ENV_VAR) or None,
        help=f"wait for an exclusive flock on PATH and hold it while measuring (default: ${ENV_VAR}; none)",
    )


def hold_lock(path: str | None) -> None:
    """Block until this process holds an exclusive lock on ``path`` (nothing when None)."""
    if not path:
        return
    import fcntl

    handle = open(path, "a")  # noqa: SIM115 - held open (and locked) until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for the benchmark lock {path} ...", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    _held.append(handle)
