"""``tune()`` and the generic ``launch()`` that runs one bridge session end to end.

Lifecycle (spec ``bridge-and-apps.md`` §1.1, §1.10): bind a loopback server holding the
traces, print where it runs, open the page (browser tab, inline notebook output, or a
:class:`HeadlessBrowser`), wait for the page's results POST, then shut the server down and
turn the payload into the return value.  The wait ends early on ``timeout``, on Ctrl-C,
or when heartbeats stop for :data:`HEARTBEAT_TIMEOUT` seconds after the first one.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from calab._validate import check_catune_export, warn_if_transposed
from calab.bridge.handshake import BridgeVersionWarning
from calab.bridge.headless import HeadlessBrowser
from calab.bridge.registry import PAGES_PREFIX, AppSpec, resolve_app
from calab.bridge.server import BridgeServer, BridgeSession

__all__ = ["HEARTBEAT_TIMEOUT", "BridgeResult", "app_url", "catune_params", "launch", "page_url", "tune"]

#: seconds without a heartbeat (after the first) before the page counts as gone
HEARTBEAT_TIMEOUT = 10.0
#: how often the wait loop checks timeout / heartbeat / progress
_TICK_S = 0.2


@dataclass
class BridgeResult:
    """What a finished session received: the results JSON, uploaded arrays, warnings."""

    payload: dict
    arrays: dict
    warnings: list


def _builtin_apps() -> None:
    # Registering the compute routes needs NumPy code paths only; import lazily so that
    # `import calab` stays cheap.
    import calab.bridge.catune  # noqa: F401
    import calab.bridge.cadecon  # noqa: F401


def page_url(app: str | AppSpec, server: BridgeServer | None = None) -> str:
    """The page URL for ``app``: the built-in page on ``server`` when there is one, else hosted."""
    _builtin_apps()
    spec = resolve_app(app) if isinstance(app, str) else app
    if spec.page_dir is not None and server is not None:
        return f"{server.origin}{PAGES_PREFIX}/{spec.page_dir}/index.html"
    return spec.hosted_url


#: 0.3.0's name for :func:`page_url`
app_url = page_url


def _launch_url(base: str, server: BridgeServer) -> str:
    # 0.3.0 always appended "?...", which breaks a URL that already has a query.
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}bridge={server.origin}&bridge_secret={server.session.secret}"


def _check_traces(traces: Any, fs: Any) -> tuple[np.ndarray, float]:
    try:
        array = np.asarray(traces, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"traces must be a numeric array, got {type(traces).__name__}") from None
    array = np.atleast_2d(array)
    if array.ndim != 2:
        raise ValueError(f"traces must be 1-D (T,) or 2-D (n_cells, T); got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"traces is empty (shape {array.shape}); pass at least one non-empty trace")
    warn_if_transposed(array.shape, stacklevel=5)  # _check_traces < launch < tune/decon < caller
    if not np.isfinite(array).all():
        row, col = (int(v[0]) for v in np.nonzero(~np.isfinite(array)))
        raise ValueError(
            f"traces contains NaN or infinity (cell {row}, frame {col}); replace them (e.g. "
            "numpy.nan_to_num or interpolation) before tuning"
        )
    if isinstance(fs, bool) or not isinstance(fs, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(fs)) or fs <= 0:
        raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs!r}")
    # NumPy scalars become Python numbers (JSON); a Python int or float is echoed as given
    if isinstance(fs, np.integer):
        fs = int(fs)
    elif isinstance(fs, np.floating):
        fs = float(fs)
    return array, fs


def _check_port(port: Any) -> int | None:
    """A port to bind: None/0 (any free port) or 1-65535; anything else a ValueError/TypeError."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)):
        raise TypeError(f"port must be an integer from 0 to 65535 (0 or None: any free port), got {port!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535 (0 or None: any free port), got {int(port)}")
    return int(port)


@contextlib.contextmanager
def _page_opener(headless: HeadlessBrowser | bool | None) -> Iterator[HeadlessBrowser | None]:
    """The headless browser to use (temporary ones are closed on exit), or None."""
    if headless is True:
        browser = HeadlessBrowser()
        try:
            browser.start()
            yield browser
        finally:
            browser.close()
    elif isinstance(headless, HeadlessBrowser):
        if not headless.is_alive:
            headless.start()
        yield headless
    else:
        yield None


def _format_progress(progress: dict) -> str:
    def num(key: str) -> Any:
        value = progress.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    parts = [f"iter {num('iteration') if num('iteration') is not None else '?'}/"
             f"{num('max_iterations') if num('max_iterations') is not None else '?'}"]
    phase = progress.get("phase") or ""
    if phase:
        parts.append(f"{phase} {(num('phase_progress') or 0):.0%}")
    if num("tau_rise") is not None and num("tau_decay") is not None:
        parts.append(f"τr={num('tau_rise'):.4f} τd={num('tau_decay'):.4f}")
    status = progress.get("status")
    if status and status != "running":
        parts.append(f"[{status}]")
    return "  ".join(parts)


def _open_in_browser(url: str, port: int) -> None:
    """Open ``url`` in the user's browser, and say whether that worked."""
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:  # no usable browser: the URL is printed, the session goes on
        opened = False
    if opened:
        print("Opened it in your web browser.")
    else:
        print("No web browser could be opened here: open that URL yourself. On a remote machine, forward "
              f"the port first (ssh -L {port}:127.0.0.1:{port} HOST) and open it on your own computer.")


def _wait(session: BridgeSession, timeout: float | None, show_progress: bool) -> bool:
    """Block until results arrive (True) or the session ends otherwise (False)."""
    began = time.monotonic()
    shown_key: Any = None
    progress_shown = False

    def show(progress: Any) -> None:
        nonlocal shown_key, progress_shown
        if show_progress and isinstance(progress, dict):
            key = (progress.get("iteration"), progress.get("phase_progress"), progress.get("status"))
            if key != shown_key:
                shown_key, progress_shown = key, True
                sys.stdout.write("\r\x1b[2K" + _format_progress(progress))
                sys.stdout.flush()

    try:
        while True:
            if session.done.wait(_TICK_S):
                # A run shorter than a tick still ends on its final line (the learned taus).
                show(session.progress)
                return True
            now = time.monotonic()
            show(session.progress)
            if timeout is not None and now - began >= timeout:
                print(("\n" if progress_shown else "") + f"Nothing was exported within {timeout:g} s: returning "
                      "None. Pass a longer timeout= (or None to wait until Ctrl-C).")
                progress_shown = False
                return False
            beat = session.last_heartbeat
            if beat is not None and now - beat > HEARTBEAT_TIMEOUT:
                print(("\n" if progress_shown else "") + "Browser disconnected (heartbeat timeout).")
                progress_shown = False
                return False
    except KeyboardInterrupt:
        print(("\n" if progress_shown else "") + "Bridge cancelled by user.")
        progress_shown = False
        return False
    finally:
        if progress_shown:
            print()


def launch(
    app: str,
    traces: np.ndarray,
    fs: float = 30.0,
    *,
    config: dict | None = None,
    timeout: float | None = None,
    port: int | None = None,
    app_url: str | None = None,
    open_browser: bool = True,
    headless: HeadlessBrowser | bool | None = None,
    show_progress: bool = False,
    on_ready: Callable[[str], Any] | None = None,
    on_session: Callable[[BridgeSession], Any] | None = None,
) -> BridgeResult | None:
    """Serve ``traces`` to the web app ``app`` and wait for its results.

    Parameters
    ----------
    app : str
        App slug (``"catune"``, ``"cadecon"``).
    traces : numpy.ndarray
        ``(n_cells, T)`` or ``(T,)`` traces (converted to float64).
    fs : float
        Sampling rate in Hz.
    config : dict, optional
        Served at ``/api/v1/config`` (default ``{"autorun": False}``).
    timeout : float, optional
        Seconds to wait; None waits until results, Ctrl-C or heartbeat loss.
    port : int, optional
        Port to bind on 127.0.0.1; None or 0 = any free port.
    app_url : str, optional
        Page to open instead of the built-in one (e.g. the hosted app).
    open_browser : bool
        Open a browser tab (inline output in a notebook); False only prints the URL.
    headless : HeadlessBrowser or bool, optional
        True: a temporary headless Chromium for this call; an instance: reuse it.
    show_progress : bool
        Print the page's progress POSTs on one terminal line.
    on_ready : callable, optional
        Called with the launch URL once the server is up (for tools and tests).
    on_session : callable, optional
        Called with the :class:`BridgeSession` before the server binds, so an app's
        wrapper (``decon()``) can attach settings to it and read its state afterwards.

    Returns
    -------
    BridgeResult or None
        None on timeout, Ctrl-C or disconnect.

    Raises
    ------
    ValueError
        Bad traces or ``fs``; a ``port`` outside 0-65535.
    BridgeVersionError
        The page posted results in an incompatible format version.
    """
    _builtin_apps()
    spec = resolve_app(app)
    array, fs = _check_traces(traces, fs)
    port = _check_port(port)
    session = BridgeSession(array, fs, spec, config)
    if on_session is not None:
        on_session(session)
    kind = None
    if open_browser and not headless:
        from calab.bridge.notebook import notebook_kind

        kind = notebook_kind()
    # The server is a context manager from the moment it binds, so the socket is closed
    # whatever fails afterwards (browser start-up included).  In Colab the page reaches the
    # kernel's loopback only through Colab's authenticated port proxy, which rewrites Host
    # and Origin; everywhere else both must be loopback (or the hosted app's origin).
    with BridgeServer(session, port, allowed_origins=[app_url] if app_url else (),
                      check_host=kind != "colab") as server:
        server.start()
        base = app_url if app_url is not None else page_url(spec, server)
        url = _launch_url(base, server)
        print(f"Bridge server running on {server.origin}")
        print(f"{spec.display_name} page: {url}")
        with _page_opener(headless) as browser:
            if browser is not None:
                browser.navigate(url)
                print("Opened it in a headless browser.")
            elif open_browser:
                from calab.bridge.notebook import display_inline

                if kind is not None:
                    same_origin = url[len(server.origin):] if url.startswith(server.origin) else url
                    if kind == "colab":
                        same_origin = same_origin.replace(f"bridge={server.origin}&", "")
                    display_inline(kind, url, server.port, same_origin)
                    print("The page is shown below.")
                else:
                    _open_in_browser(url, server.port)
            else:
                print("Open that URL in a web browser on this machine.")
            if on_ready is not None:
                on_ready(url)
            limit = f"; giving up after {timeout:g} s" if timeout is not None else ""
            print(f"Waiting for Export to Python on the page (Ctrl-C cancels{limit})...", flush=True)
            received = _wait(session, timeout, show_progress)
    if not received:
        return None
    with session.lock:
        error, payload = session.error, session.payload
        arrays, warns = dict(session.arrays), list(session.warnings)
    if error is not None:
        raise error
    if payload is None:
        return None
    for message in warns:
        warnings.warn(message, BridgeVersionWarning, stacklevel=3)
    return BridgeResult(payload, arrays, warns)


def catune_params(payload: dict, fs: float) -> dict:
    """``tune()``'s return value from a CaTune export payload (spec §1.7)."""
    params = payload.get("parameters", payload)
    if not isinstance(params, dict):
        params = {}

    def pick(*keys: str, default: Any = None) -> Any:
        for key in keys:
            if key in params:
                return params[key]
        return default

    return {
        "tau_rise": pick("tau_rise_s", "tau_rise"),
        "tau_decay": pick("tau_decay_s", "tau_decay"),
        "lambda_": pick("lambda", "lambda_"),
        "fs": pick("sampling_rate_hz", "fs", default=fs),
        "filter_enabled": pick("filter_enabled", default=False),
    }


def tune(
    traces: np.ndarray,
    fs: float = 30.0,
    timeout: float | None = None,
    port: int | None = None,
    app_url: str | None = None,
    open_browser: bool = True,
) -> dict | None:
    """Open CaTune in the browser for interactive parameter tuning.

    Starts a localhost HTTP server serving the provided traces, opens CaTune with a
    ``?bridge=`` parameter pointing to the server, and waits for the user to export
    parameters from the web app.  The default page is calab's built-in CaTune, served by
    the same server, whose live re-solves run on calab's own backend; in Jupyter or Colab
    it appears inline in the output cell.  It opens at the data's own kernel: the time
    constants :func:`calab.run_cadecon` would learn, λ = the traces' noise SD and the
    noise filter on, as ``run_cadecon`` filters; the sliders move from there.

    It prints the page's URL, whether a browser was opened (with ``open_browser=False``,
    or when no browser can be started, open the URL yourself), and, when ``timeout``
    passes without an export, that it returns None.

    Parameters
    ----------
    traces : np.ndarray
        Calcium traces, shape ``(n_cells, n_timepoints)`` or ``(n_timepoints,)``.
    fs : float
        Sampling rate in Hz. Default: 30.0.
    timeout : float, optional
        Seconds to wait for params. None = wait forever (until Ctrl-C).
    port : int, optional
        Port to bind to (on 127.0.0.1 only). None = auto-assign.
    app_url : str, optional
        Override the CaTune URL (e.g. the hosted app
        ``https://miniscope.github.io/CaLab/CaTune/`` or a dev build).  Default: the
        built-in page.
    open_browser : bool
        Whether to auto-open the browser. Default: True.

    Returns
    -------
    dict or None
        Exported parameters dict if received, None if timeout/cancelled.  Keys:
        ``tau_rise``, ``tau_decay``, ``lambda_``, ``fs``, ``filter_enabled``.

    Raises
    ------
    ValueError
        Traces that are not 1-D/2-D, empty, or hold NaN/inf; a non-positive ``fs``; a
        ``port`` outside 0-65535; an export from the page with unusable values (NaN or
        negative taus, ``tau_rise >= tau_decay``, ``lambda < 0``, a non-numeric ``fs``).
    BridgeVersionError
        The page exported an incompatible schema version.
    """
    def learn_opening(session: BridgeSession) -> None:
        # The built-in page opens at the kernel learned from the data; start on it now so
        # it is ready (or nearly) when the page asks.
        from calab.bridge.catune import start_opening

        start_opening(session)

    result = launch("catune", traces, fs, timeout=timeout, port=port, app_url=app_url,
                    open_browser=open_browser, on_session=None if app_url else learn_opening)
    if result is None:
        return None
    return check_catune_export(catune_params(result.payload, fs))  # a page's NaN or 'abc' is not returned
