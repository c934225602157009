"""``--out OUT.zarr``: running a :mod:`calab.datasets` streamer from a command, locally or on Dask."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from calab.cli._common import CommandError, backend_arg, terminal_progress


def dask_client(address: str | None) -> contextlib.AbstractContextManager:
    """A dask.distributed client for ``--scheduler ADDRESS`` ('local' starts a local cluster), or none."""
    if address is None:
        return contextlib.nullcontext(None)
    from calab.loaders._common import require_module

    distributed = require_module("distributed", "use --scheduler", "pip install calab[dask]")
    if address == "local":
        return distributed.Client(distributed.LocalCluster())
    return distributed.Client(address)


def stream_to_store(args: argparse.Namespace, stream: Any, **settings: Any) -> Any:
    """Run a ``calab.datasets`` streamer with the shared ``--out`` options and error reporting."""
    from calab.datasets import DatasetLockedError

    try:
        with dask_client(args.scheduler) as client:
            return stream(
                args.file, args.out, key=args.key, fmt=args.source_format, backend=backend_arg(args),
                chunk_cells=args.chunk_cells, resume=args.resume, overwrite=args.force,
                progress=terminal_progress(), client=client, **settings,
            )
    except DatasetLockedError as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        if Path(args.out).is_dir():
            print(f"Stopped; finished chunks are kept in {args.out}: add --resume to continue.", file=sys.stderr)
        raise
