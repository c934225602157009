"""``calab convert SOURCE``: CaImAn / Minian / suite2p / NWB output to a CaTune ``.npy`` and sidecar."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from calab.cli._common import CommandError, check_output
from calab.cli._parsing import add_force, command_parser, positive_float


def add_parser(commands: Any) -> None:
    convert = command_parser(
        commands, "convert", help="Convert to CaLab format",
        description="Read the traces of a CaImAn, Minian, suite2p or NWB output and write them as "
                    "STEM.npy (n_cells x n_timepoints) with a STEM_metadata.json sidecar holding the "
                    "sampling rate, which every other calab command reads.",
        examples="""\
examples:
  calab convert caiman_results.hdf5 -o rec          # writes rec.npy and rec_metadata.json
  calab convert suite2p/plane0 --fs 30 -o rec       # suite2p: F - 0.7 x Fneu of the accepted ROIs
  calab convert minian_output --fs 20 -o rec
  calab cadecon rec --native                        # then learn the kernel and deconvolve
""",
    )
    convert.add_argument("file", help="Input: CaImAn HDF5, Minian Zarr directory, suite2p plane folder or NWB file")
    convert.add_argument("--format", "-f", choices=("caiman", "minian", "suite2p", "nwb"),
                         help="input format (default: detected from the file)")
    convert.add_argument("--fs", type=positive_float, help="Sampling rate (Hz)")
    convert.add_argument("--output", "-o", help="Output path stem (default: input name, in the current directory)")
    convert.add_argument("--key", help="trace key (CaImAn dataset path, Minian array) or NWB series name")
    convert.add_argument("--no-neuropil", action="store_true", help="suite2p: use raw F (no F - c*Fneu)")
    convert.add_argument("--all-rois", action="store_true", help="suite2p: keep ROIs that iscell rejects")
    add_force(convert)
    convert.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from calab.io import save_for_tuning, tuning_paths
    from calab.loaders import detect_format, load_any

    source = Path(args.file)
    fmt = args.format or detect_format(source)
    options: dict[str, Any] = {}
    if fmt == "suite2p":
        options = {"subtract_neuropil": not args.no_neuropil, "cells_only": not args.all_rois}
    elif args.no_neuropil or args.all_rois:
        raise CommandError("--no-neuropil and --all-rois apply to suite2p input only.")
    # Default stem: the input's name, written in the current directory (as published).
    # abspath (not resolve) normalises "." and ".." without following symlinks.
    stem = args.output or Path(os.path.abspath(source)).stem
    npy_path, json_path = tuning_paths(stem)
    for path in (npy_path, json_path):
        check_output(path, args.force, [source])

    traces, meta = load_any(source, fmt, fs=args.fs, key=args.key, **options)
    fs = meta.get("sampling_rate_hz")
    if fs is None:
        print("Error: --fs is required (not found in source file)", file=sys.stderr)
        return 1
    save_for_tuning(traces, fs, stem, metadata={"source_format": fmt, **meta}, overwrite=args.force)
    print(f"Saved {traces.shape[0]} traces ({traces.shape[1]} timepoints) to {npy_path}")
    return 0
