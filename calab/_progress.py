"""One progress policy and one bar factory for the library and the command line.

A bar appears automatically only where someone watches: stderr is a terminal, or the code
runs in a Jupyter kernel (:func:`show_by_default`), and, for a deconvolution, the solve
is big enough to take a while (:data:`PROGRESS_MIN_SAMPLES` cells × frames).  A callable
given by the caller is fed instead; nothing otherwise.  Every bar is made by
:func:`progress_bar` with ``tqdm.auto``: a text bar on stderr in a terminal, a widget in a
notebook.  The NumPy engine's results do not depend on how cells are batched, so the finer
chunks a display asks for never change the numbers.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = [
    "PROGRESS_MIN_SAMPLES",
    "PROGRESS_STEPS",
    "cell_bar",
    "in_notebook",
    "progress_bar",
    "progress_reporter",
    "show_by_default",
    "stderr_is_tty",
]

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


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (read from loaded modules; imports nothing)."""
    return "ipykernel.zmqshell" in sys.modules


def show_by_default() -> bool:
    """Where an automatic (``progress=None``) display appears: a terminal or a notebook."""
    return stderr_is_tty() or in_notebook()


def progress_bar(
    total: int,
    label: str,
    *,
    unit: str = "cell",
    initial: int = 0,
    unit_scale: bool = False,
    smoothing: float = 0.3,
    leave: bool = False,
) -> Any:
    """A ``tqdm.auto`` bar: text on stderr in a terminal, a widget in a notebook.

    Parameters
    ----------
    total : int
        Units of work (cells, iterations).
    label : str
        Description shown before the bar.
    unit, unit_scale, smoothing, leave
        As :class:`tqdm.tqdm`.
    initial : int
        Units already done (a resumed run).
    """
    import shutil

    from tqdm.auto import tqdm

    options: dict[str, Any] = dict(total=total, initial=initial, desc=label, unit=unit, unit_scale=unit_scale,
                                   smoothing=smoothing, leave=leave)
    if not any("notebook" in cls.__module__ for cls in tqdm.__mro__):
        # Explicit size: a pseudo-terminal reporting 0x0 (e.g. under `script`) makes tqdm
        # draw nothing at all.
        size = shutil.get_terminal_size((80, 24))
        options.update(file=sys.stderr, ncols=size.columns if size.columns > 0 else 80,
                       nrows=size.lines if size.lines > 0 else 24)
    return tqdm(**options)


def cell_bar(total: int, label: str) -> Any:
    """A bar counting cells (:func:`progress_bar` with the solver's settings)."""
    return progress_bar(total, label)


def progress_reporter(
    progress: bool | Callable[[int], object] | None,
    n_cells: int,
    samples: int,
    label: str = "calab deconvolution",
) -> tuple[Callable[[int], object] | None, Callable[[], object] | None]:
    """``(advance, close)`` for a ``progress`` argument, or ``(None, None)`` when silent.

    ``advance(k)`` reports ``k`` more finished cells.  None means automatic: a bar on a
    terminal or in a notebook for solves of at least :data:`PROGRESS_MIN_SAMPLES` samples.
    """
    if callable(progress):
        return progress, None
    if progress is None:
        progress = samples >= PROGRESS_MIN_SAMPLES and show_by_default()
    if not progress:
        return None, None
    bar = cell_bar(n_cells, label)
    return bar.update, bar.close
