"""Progress events, a terminal bar, and cooperative pause / resume / stop for ``run_cadecon``.

The loop reports a :class:`CaDeconProgress` at every phase boundary (and between
finalisation chunks) and, at the same points, consults an optional :class:`CaDeconControl`:
a paused run blocks there until resumed; a stopped run ends at the next checkpoint
(finalising with the best kernel so far, or returning the subset-stage results).  Work is
never interrupted in the middle of a solve, so a pause takes effect within one phase.

Ctrl-C (``KeyboardInterrupt``) is not caught: it propagates out of ``run_cadecon`` and
nothing is returned or written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from calab._progress import progress_bar, show_by_default

__all__ = ["PHASES", "CaDeconControl", "CaDeconProgress", "make_reporter"]

#: Phases in the order a run goes through them (the bridge's progress names plus the start and end).
PHASES = ("initialization", "inference", "kernel-update", "merge", "finalization", "done")


class CaDeconProgress(NamedTuple):
    """One progress report of a CaDecon run.

    Attributes
    ----------
    iteration : int
        Current refinement iteration (0 during initialization, the last one run during
        finalization).
    max_iterations : int
        The iteration cap.
    phase : str
        One of :data:`PHASES`.
    phase_progress : float
        Fraction of the current phase done, in [0, 1].
    tau_rise, tau_decay : float or None
        Current kernel (s); None before the first estimate.
    kernel_rmse : float or None
        Shape change of the last merge (fraction of peak; None before the first).
    status : str
        ``"running"``, ``"paused"``, ``"stopping"``, ``"converged"`` or ``"done"``.
    history : list of dict
        The per-iteration records so far (the same dicts as ``metadata["history"]``; the
        record of an iteration is present from its ``merge`` event with
        ``phase_progress == 1``).  A tuple snapshot; the records themselves are shared.
    subsets : list of dict
        The subset rectangles (``t_start, t_stop, cell_start, cell_stop``).
    """

    iteration: int
    max_iterations: int
    phase: str
    phase_progress: float
    tau_rise: float | None
    tau_decay: float | None
    kernel_rmse: float | None
    status: str
    history: Sequence[dict] = ()
    subsets: Sequence[dict] = ()


class StopRequested(Exception):
    """Raised inside the loop at a checkpoint after :meth:`CaDeconControl.stop`."""


class CaDeconControl:
    """Pause, resume or stop a running ``run_cadecon`` from another thread.

    Examples
    --------
    >>> control = CaDeconControl()
    >>> # thread A: result = calab.run_cadecon(traces, fs, control=control)
    >>> # thread B: control.pause(); ...; control.resume(); control.stop()
    """

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self.finalize_on_stop = True

    def pause(self) -> None:
        """Hold the run at its next checkpoint until :meth:`resume` or :meth:`stop`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self, finalize: bool = True) -> None:
        """End the run at its next checkpoint.

        Parameters
        ----------
        finalize : bool
            True: skip the remaining iterations and solve every cell with the best kernel
            so far (a complete result, ``metadata["stopped"] = True``).  False: return at
            once with the subset-stage results (``metadata["finalized"] = False``; cells
            never in a subset have NaN scalars and zero activity).
        """
        self.finalize_on_stop = bool(finalize)
        self._stop.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set() and not self._stop.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def checkpoint(self, on_pause: Callable[[], None] | None = None) -> None:
        """Block while paused; raise :class:`StopRequested` once stopped."""
        if not self._running.is_set() and not self._stop.is_set():
            if on_pause is not None:
                on_pause()
            while not self._running.wait(0.1):
                pass
        if self._stop.is_set():
            raise StopRequested


class _TerminalBar:
    """tqdm bar over iterations, showing the phase and the current taus."""

    def __init__(self, max_iterations: int) -> None:
        self.bar = progress_bar(max_iterations, "CaDecon", unit="it")

    def __call__(self, event: CaDeconProgress) -> None:
        if event.max_iterations != self.bar.total:  # no refinement rounds after a bispectral start
            self.bar.total = event.max_iterations
        if event.iteration > self.bar.n and event.phase != "finalization":
            self.bar.update(event.iteration - self.bar.n)
        taus = "" if event.tau_rise is None else f" tau_r {event.tau_rise:.3f}s tau_d {event.tau_decay:.3f}s"
        rmse = "" if event.kernel_rmse is None else f" rmse {event.kernel_rmse:.4f}"
        done = f" {100 * event.phase_progress:.0f}%" if event.phase == "finalization" else ""
        self.bar.set_description_str(f"CaDecon {event.phase}{done}", refresh=False)
        self.bar.set_postfix_str(f"{taus}{rmse}".strip(), refresh=True)

    def close(self) -> None:
        self.bar.close()


def make_reporter(progress: Any, max_iterations: int) -> tuple[Callable[[CaDeconProgress], None] | None, Callable[[], None]]:
    """``(report, close)`` for ``run_cadecon``'s ``progress`` argument.

    ``progress``: a callable receiving :class:`CaDeconProgress`; True for a bar;
    False for silence; None for a bar only on a terminal or in a notebook.
    """
    if callable(progress):
        return progress, lambda: None
    if progress is None:
        progress = show_by_default()
    if not progress:
        return None, lambda: None
    bar = _TerminalBar(max_iterations)
    return bar, bar.close
