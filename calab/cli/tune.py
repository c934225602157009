"""``calab tune FILE``: open CaTune in the browser and print the parameters it sends back."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from calab.cli._common import bridge_function, read_traces
from calab.cli._parsing import positive_float


def add_parser(commands: Any) -> None:
    tune = commands.add_parser("tune", help="Open CaTune for interactive tuning")
    tune.add_argument("file", help="Input .npy file or calab stem")
    tune.add_argument("--fs", type=positive_float, help="Sampling rate (Hz)")
    tune.add_argument("--port", type=int, help="Server port (0-65535; default: any free port)")
    tune.add_argument("--no-browser", action="store_true", help="Don't open browser")
    tune.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    traces, sidecar_fs, _ = read_traces(args.file)
    fs = args.fs if args.fs is not None else sidecar_fs
    if fs is None:
        print("Error: --fs (sampling rate) is required", file=sys.stderr)
        return 1
    tune = bridge_function("tune", "tune")
    params = tune(traces, fs, port=args.port, open_browser=not args.no_browser)
    if params is None:
        print("No parameters received.", file=sys.stderr)
        return 1
    print(json.dumps(params, indent=2))
    return 0
