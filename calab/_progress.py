"""One progress policy for the library and the command line.

A cells-done bar on stderr appears only when stderr is a terminal and the solve is big
enough to take a while (:data:`PROGRESS_MIN_SAMPLES` cells × frames); a callable given
by the caller is fed instead; nothing otherwise.  The NumPy engine's results do not
depend on how cells are batched, so the finer chunks a display asks for never change the
numbers.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["PROGRESS_MIN_SAMPLES", "PROGRESS_STEPS", "cell_bar", "progress_reporter", "stderr_is_tty"]

#: Solves smaller than this many samples (cells x frames) take about a second on a CPU:
#: no automatic progress display for them.
PROGRESS_MIN_SAMPLES = 2_000_000
#: With a progress display, a batch is split into at least this many chunks.
PROGRESS_STEPS = 20


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def cell_bar(total: int, label: str) -> Any:
    """A tqdm bar counting cells on stderr."""
    import shutil

    from tqdm import tqdm

    # Explicit size: a pseudo-terminal reporting 0x0 (e.g. under `script`) makes tqdm
    # draw nothing at all.
    size = shutil.get_terminal_size((80, 24))
    return tqdm(
        total=total, desc=label, unit="cell", file=sys.stderr, leave=False,
        ncols=size.columns if size.columns > 0 else 80, nrows=size.lines if size.lines > 0 else 24,
    )  # fmt: skip


def progress_reporter(
    progress: bool | Callable[[int], object] | None,
    n_cells: int,
    samples: int,
    label: str = "calab deconvolution",
) -> tuple[Callable[[int], object] | None, Callable[[], object] | None]:
    """``(advance, close)`` for a ``progress`` argument, or ``(None, None)`` when silent.

    ``advance(k)`` reports ``k`` more finished cells.  None means automatic: a bar on a
    terminal for solves of at least :data:`PROGRESS_MIN_SAMPLES` samples.
    """
    if callable(progress):
        return progress, None
    if progress is None:
        progress = samples >= PROGRESS_MIN_SAMPLES and stderr_is_tty()
    if not progress:
        return None, None
    bar = cell_bar(n_cells, label)
    return bar.update, bar.close
