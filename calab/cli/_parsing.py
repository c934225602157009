"""Argument types and option groups shared by several commands."""

from __future__ import annotations

import argparse
import math

BACKEND_CHOICES = ("auto", "numpy", "jax", "cupy")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default=None,
        help="compute backend (default: CALAB_BACKEND or auto: CuPy GPU > JAX GPU > NumPy)",
    )


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """``calab deconvolve BIG --out OUT.zarr`` (and ``calab cadecon BIG --native --out``):
    stream a recording of any size (calab.datasets)."""
    group = parser.add_argument_group(
        "whole datasets (streamed in chunks of cells to a Zarr store; any input format)"
    )
    group.add_argument("--out", metavar="OUT.zarr",
                       help="stream to this Zarr store instead of loading everything into memory")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted --out run (same parameters) where it stopped")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="solve chunks on a dask.distributed cluster (scheduler address, or 'local')")
    group.add_argument("--format", dest="source_format", choices=("zarr", "hdf5", "npy", "suite2p", "nwb"),
                       help="input format (default: detected)")
    group.add_argument("--key", help="Zarr array name, HDF5 dataset path (default estimates/C) or NWB series")
    group.add_argument("--chunk-cells", type=int, metavar="N", help="cells per chunk (default: from free memory)")
