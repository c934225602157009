"""Argument types and option groups shared by several commands."""

from __future__ import annotations

import argparse
import math
from typing import Any

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


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_plot(parser: argparse.ArgumentParser) -> None:
    """``--plot PNG``: a figure of the most active cells (needs matplotlib: calab[plot])."""
    parser.add_argument("--plot", metavar="PNG",
                        help="also save a figure of the most active cells: raw trace, fit and inferred "
                             "activity (.png, .svg or .pdf; needs pip install \"calab[plot]\")")
    parser.add_argument("--plot-cells", type=positive_int, default=3, metavar="N",
                        help="cells in the --plot figure (default 3)")


def example_epilog(examples: str) -> str:
    """A command's ``--help`` epilog: worked examples (kept verbatim by RawDescriptionHelpFormatter)."""
    return examples.rstrip() + "\n"


def command_parser(commands: Any, name: str, *, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with worked examples (kept as written)."""
    import textwrap

    return commands.add_parser(
        name, help=help, description=textwrap.fill(description, 88),
        epilog=example_epilog(examples), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
