"""``calab tune FILE``: open CaTune in the browser and print (or save) the parameters it sends back."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from calab.cli._common import bridge_function, check_output, read_traces, save_text, write_files
from calab.cli._parsing import add_force, command_parser, positive_float

EXAMPLES = """\
examples:
  # the sliders open at the kernel learned from the data; Export to Python ends the session
  calab tune traces.npy --fs 30 -o params.json
  calab deconvolve traces.npy -p params.json --plot fit.png

  # on a remote machine: no browser is opened, forward the printed port and open the URL
  calab tune traces.npy --fs 30 --no-browser --port 8765 -o params.json
"""


def add_parser(commands: Any) -> None:
    tune = command_parser(
        commands, "tune", help="Open CaTune for interactive tuning",
        description="Serve the traces to calab's CaTune page and wait until its Export to Python sends the "
                    "chosen kernel and lambda back; they are printed as JSON (and saved with -o). The page "
                    "opens at the kernel learned from the data.",
        examples=EXAMPLES,
    )
    tune.add_argument("file", help="Input .npy file or calab stem")
    tune.add_argument("--fs", type=positive_float, help="Sampling rate (Hz)")
    tune.add_argument("--port", type=int, help="Server port (0-65535; default: any free port)")
    tune.add_argument("--no-browser", action="store_true", help="Don't open browser")
    tune.add_argument("--output", "-o", metavar="JSON",
                      help="also save the parameters here (for 'calab deconvolve -p JSON')")
    add_force(tune)
    tune.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    traces, sidecar_fs, npy_path = read_traces(args.file)
    fs = args.fs if args.fs is not None else sidecar_fs
    if fs is None:
        print("Error: --fs (sampling rate) is required", file=sys.stderr)
        return 1
    output = check_output(Path(args.output), args.force, [npy_path]) if args.output else None
    tune = bridge_function("tune", "tune")
    params = tune(traces, fs, port=args.port, open_browser=not args.no_browser)
    if params is None:
        print("No parameters received.", file=sys.stderr)
        return 1
    text = json.dumps(params, indent=2)
    print(text)
    if output is not None:
        write_files([(output, save_text(text + "\n"))])
        print(f"Saved parameters to {output} (use them: calab deconvolve {args.file} -p {output})")
    return 0
