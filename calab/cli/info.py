"""``calab info FILE``: summarise a ``.npy``, a JSON file (CaTune export) or a pipeline output."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from calab.cli._parsing import command_parser


def add_parser(commands: Any) -> None:
    info = command_parser(
        commands, "info", help="Show file info",
        description="Summarise a file without changing it: the shape, dtype and sampling rate of a .npy "
                    "(and its calab sidecar), the parameters in a JSON file, or what a CaImAn, Minian, "
                    "suite2p or NWB output holds.",
        examples="""\
examples:
  calab info traces.npy                 # cells, frames, dtype, sampling rate
  calab info export.json                # the parameters of a CaTune export
  calab info suite2p/plane0             # what a pipeline output holds
""",
    )
    info.add_argument("file", help="Input file (.npy, .json, or a pipeline output)")
    info.set_defaults(handler=run)


def npy_summary(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header only (fast for huge files, clear for bad ones)."""
    from calab.loaders._common import read_npy

    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                return shape, dtype
            if version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                return shape, dtype
        except (ValueError, SyntaxError, EOFError):
            pass
    array = read_npy(path)  # raises the descriptive error, or handles header v3
    return array.shape, array.dtype


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"File not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy" and path.is_file():
        from calab.io import tuning_paths
        from calab.loaders._common import read_json_object

        shape, dtype = npy_summary(path)
        nbytes = math.prod(shape) * dtype.itemsize
        print(f"File: {path}")
        print(f"  Shape: {shape}")
        print(f"  Dtype: {dtype}")
        print(f"  Size: {nbytes / 1024:.1f} KB")
        if len(shape) == 2:
            print(f"  Cells: {shape[0]}")
            print(f"  Timepoints: {shape[1]}")
        _, json_path = tuning_paths(path)
        if json_path.is_file():
            meta = read_json_object(json_path, "Metadata file")
            print(f"  Metadata: {json_path}")
            if "sampling_rate_hz" in meta:
                print(f"  Sampling rate: {meta['sampling_rate_hz']} Hz")
            if "schema_version" in meta:
                print(f"  Schema: v{meta['schema_version']}")
        return 0
    if suffix == ".json" and path.is_file():
        from calab.loaders._common import read_json_object

        data = read_json_object(path, "JSON file")
        print(f"File: {path}")
        if isinstance(data.get("parameters"), dict):
            print("  Type: CaTune export")
            if "schema_version" in data:
                print(f"  Schema: v{data['schema_version']}")
            for key, value in data["parameters"].items():
                print(f"  {key}: {value}")
        else:
            print(f"  Keys: {list(data)}")
        return 0

    from calab.loaders import detect_format, load_any

    try:
        fmt = detect_format(path)
    except ValueError:
        print(f"Unknown file type: {path.suffix or '(no extension)'}", file=sys.stderr)
        return 1
    options = {"cells_only": True} if fmt == "suite2p" else {}
    traces, meta = load_any(path, fmt, **options)
    print(f"File: {path}")
    print(f"  Format: {fmt}")
    print(f"  Shape: {traces.shape}")
    print(f"  Cells: {traces.shape[0]}")
    print(f"  Timepoints: {traces.shape[1]}")
    fs = meta.get("sampling_rate_hz")
    print(f"  Sampling rate: {fs} Hz" if fs else "  Sampling rate: unknown (pass --fs to calab convert)")
    if fs:
        print(f"  Duration: {traces.shape[1] / fs:.1f} s")
    return 0
