"""The ``calab`` command line.

Commands
--------
``calab demo``        simulate a dataset, deconvolve it, report accuracy and speed
``calab deconvolve``  batch-deconvolve a ``.npy`` with parameters exported from CaTune
``calab convert``     CaImAn / Minian / suite2p / NWB output -> CaTune ``.npy`` + sidecar
``calab info``        summarise a ``.npy``, a JSON file or a pipeline output
``calab doctor``      which compute backends work here, why not, devices and versions
``calab tune``        open CaTune in the browser (listed once calab has ``calab.tune``)
``calab cadecon``     automated deconvolution: ``--native`` runs the loop here, else CaDecon in the browser

Each command is a module of this package with ``add_parser(commands)`` and ``run(args)``;
``_common`` and ``_parsing`` hold what several commands share.

Exit codes follow the published calab: 0 on success, 1 for errors the command reports
(printed as ``Error: ...`` on stderr, without a traceback), 2 for command-line usage
errors (argparse).  Set ``CALAB_DEBUG=1`` to get the full traceback of an error.

Outputs are written atomically and an existing file is never replaced unless
``--force`` is given.  Long computations show a progress bar when stderr is a
terminal and stay quiet when it is piped or redirected.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from calab._errors import one_line_message
from calab._progress import PROGRESS_MIN_SAMPLES as _PROGRESS_MIN_SAMPLES
from calab._progress import stderr_is_tty as _library_stderr_is_tty
from calab._validate import SuspiciousInputWarning
from calab.cli import cadecon, convert, deconvolve, demo, doctor, info, tune
from calab.cli._common import CommandError
from calab.cli._common import has_bridge as _has_bridge
from calab.cli._common import solve as _solve

__all__ = ["build_parser", "main"]



# The commands read _stderr_is_tty, _PROGRESS_MIN_SAMPLES and _has_bridge from this
# namespace when they run, so replacing one here (a test, an embedding application)
# changes every command.
def _stderr_is_tty() -> bool:
    return _library_stderr_is_tty()


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: object = None, line: str | None = None) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The ``calab`` argument parser (exposed for documentation and tests)."""
    import calab

    parser = argparse.ArgumentParser(
        prog="calab",
        description="CaLab: calcium imaging analysis tools (GPU-accelerated spike deconvolution).",
        epilog="Start with 'calab demo'; 'calab doctor' shows which backends work here.",
    )
    parser.add_argument("--version", action="version", version=f"calab {calab.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    for command in (demo, deconvolve, convert, info, doctor):
        command.add_parser(commands)
    # The browser commands appear once calab has the bridge (calab.tune / calab.decon).
    if _has_bridge("tune"):
        tune.add_parser(commands)
    # cadecon always exists: --native runs without the bridge.
    cadecon.add_parser(commands)
    return parser


_REPORTED_ERRORS = (CommandError, OSError, KeyError, ValueError, TypeError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``calab`` command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 for --help/--version
    try:
        with warnings.catch_warnings():
            # The library's warnings (a transposed-looking array, ...) as one plain line each.
            warnings.showwarning = _print_warning
            # The commands check the shape of what they read themselves, naming the file.
            warnings.filterwarnings("ignore", message=r"traces has shape \(", category=SuspiciousInputWarning)
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `calab info x | head`: the reader left; not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    except _REPORTED_ERRORS as exc:
        if os.environ.get("CALAB_DEBUG"):
            traceback.print_exc()
        message = one_line_message(exc) if not isinstance(exc, KeyError) or len(exc.args) != 1 else str(exc.args[0])
        print(f"Error: {message}", file=sys.stderr)
        return 1
