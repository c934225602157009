"""``decon()``: CaDecon in the browser, with the loop running natively on the bridge server.

The built-in page (the default) starts, pauses, resumes and stops a
:func:`calab.run_cadecon` run on the server's backend and shows its progress; its Export
to Python (or the automatic export of ``autorun=True``) hands back that run's
:class:`~calab.cadecon.CaDeconResult` unchanged.  A hosted CaDecon given with
``app_url=`` computes in its own workers and posts activity + schema-2 JSON, which is
assembled into a ``CaDeconResult`` as calab 0.3.0 does (spec ``bridge-and-apps.md`` §1.8).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calab.bridge.headless import HeadlessBrowser

__all__ = ["assemble_cadecon_result", "decon"]


def assemble_cadecon_result(payload: dict, arrays: dict, fs: float) -> Any:
    """A :class:`CaDeconResult` from a hosted app's two-POST export (0.3.0's assembly, §1.8).

    Returns None (with 0.3.0's printed warning) when the activity array never arrived.
    """
    from calab.cadecon import CaDeconResult
    from calab.cadecon.result import biexp_waveform

    activity = arrays.get("activity")
    if activity is None:
        print("Warning: results received but activity matrix was missing.")
        return None
    fs = payload.get("fs", fs)
    slow = (payload.get("tau_rise"), payload.get("tau_decay"), payload.get("beta"))
    if any(value is None for value in slow):
        print("Warning: CaDecon reported no bi-exponential kernel fit (the run stopped before a fit); "
              "kernel_slow and kernel_fast are empty.")
        kernel_slow = np.zeros(0, dtype=np.float32)
    else:
        kernel_slow = biexp_waveform(*slow, fs)
    fast = (payload.get("tau_rise_fast"), payload.get("tau_decay_fast"), payload.get("beta_fast"))
    kernel_fast = np.zeros(0, dtype=np.float32)
    if all(value is not None for value in fast) and fast[1] > 0 and fast[2] != 0:
        kernel_fast = biexp_waveform(*fast, fs)
    metadata: dict[str, Any] = {key: payload.get(key) for key in
                                ("tau_rise", "tau_decay", "beta", "tau_rise_fast", "tau_decay_fast", "beta_fast")}
    for key in ("residual", "h_free", "num_iterations", "converged", "converged_at_iteration",
                "schema_version", "calab_version", "solver_version", "export_date"):
        if key in payload:
            metadata[key] = list(payload[key]) if key == "h_free" and payload[key] is not None else payload[key]
    return CaDeconResult(
        activity=np.asarray(activity, dtype=np.float32),
        alphas=np.asarray(payload.get("alphas", []), dtype=np.float64),
        baselines=np.asarray(payload.get("baselines", []), dtype=np.float64),
        pves=np.asarray(payload.get("pves", []), dtype=np.float64),
        kernel_slow=kernel_slow,
        kernel_fast=kernel_fast,
        fs=fs,
        metadata=metadata,
    )


def decon(
    traces: np.ndarray,
    fs: float = 30.0,
    timeout: float | None = None,
    port: int | None = None,
    app_url: str | None = None,
    open_browser: bool = True,
    headless: HeadlessBrowser | bool | None = None,
    *,
    autorun: bool = False,
    upsample_target: int | None = None,
    hp_filter_enabled: bool | None = None,
    lp_filter_enabled: bool | None = None,
    max_iterations: int | None = None,
    convergence_tol: float | None = None,
    num_subsets: int | None = None,
    target_coverage: float | None = None,
    aspect_ratio: float | None = None,
    seed: int | None = None,
    backend: str | None = None,
    **settings: Any,
) -> Any:
    """Open CaDecon in the browser for automated deconvolution.

    Starts a localhost HTTP server serving the provided traces, opens CaDecon with a
    ``?bridge=`` parameter pointing to the server, and waits for the browser to export
    deconvolution results back.  The default page is calab's built-in CaDecon, served by
    the same server: it runs :func:`calab.run_cadecon` on the server's backend, so the
    exported result is exactly what ``run_cadecon`` returns for the same settings.

    Parameters
    ----------
    traces : np.ndarray
        Calcium traces, shape ``(n_cells, n_timepoints)`` or ``(n_timepoints,)``.
    fs : float
        Sampling rate in Hz. Default: 30.0.
    timeout : float, optional
        Seconds to wait for results. None = wait forever (until Ctrl-C or heartbeat loss).
    port : int, optional
        Port to bind to (on 127.0.0.1 only). None = auto-assign.
    app_url : str, optional
        Override the CaDecon URL (e.g. the hosted app
        ``https://miniscope.github.io/CaLab/CaDecon/``).  Default: the built-in page.
    open_browser : bool
        Whether to auto-open the browser (inline output in a notebook). Default: True.
    headless : HeadlessBrowser or bool or None
        None/False: default (use webbrowser.open). True: create a temporary headless
        browser for this call. HeadlessBrowser: reuse an existing browser instance (for batch).
    autorun : bool
        Auto-start the solver once the traces are loaded, and export automatically.
    upsample_target, hp_filter_enabled, lp_filter_enabled, max_iterations, convergence_tol,
    num_subsets, target_coverage, aspect_ratio, seed
        :class:`~calab.DeconConfig` fields; None uses the defaults.
    backend : str, optional
        Compute backend of the built-in page's run (as for :func:`calab.run_cadecon`).
    **settings
        Any other :class:`~calab.DeconConfig` field (native-loop settings such as
        ``tau_rise``/``tau_decay``, ``initialization``, ``patience``); used by the
        built-in page only (a hosted app never sees them).

    Returns
    -------
    CaDeconResult or None
        Full CaDecon result if received, None if timeout/cancelled/disconnected.

    Raises
    ------
    pydantic.ValidationError
        A bad setting (names the field), before any server is started.
    ValueError
        Traces that are not 1-D/2-D, empty or hold NaN/inf; a non-positive ``fs``; a
        ``port`` outside 0-65535; a setting beyond the bridge's caps (``docs/security.md``: e.g. ``num_subsets`` above
        1000), before any server is started.
    BridgeVersionError
        A hosted app exported an incompatible results schema.
    """
    from calab.bridge.apps import launch
    from calab.cadecon import DeconConfig

    config = DeconConfig(
        autorun=autorun, upsample_target=upsample_target, hp_filter_enabled=hp_filter_enabled,
        lp_filter_enabled=lp_filter_enabled, max_iterations=max_iterations, convergence_tol=convergence_tol,
        num_subsets=num_subsets, target_coverage=target_coverage, aspect_ratio=aspect_ratio, seed=seed,
        **settings,
    )
    import calab.bridge.cadecon as server_side
    from calab.bridge.limits import RequestError

    try:  # the built-in page's server refuses these; say so before any server starts
        server_side.checked_start_config(config.model_dump())
    except RequestError as exc:
        raise ValueError(f"{exc} (a cap of the browser bridge, docs/security.md)") from None

    sessions: list[Any] = []

    def attach(session: Any) -> None:
        session.cache[server_side.CONFIG_KEY] = config
        session.cache[server_side.BACKEND_KEY] = backend
        sessions.append(session)

    try:
        received = launch("cadecon", traces, fs, config=config.bridge_dict(), timeout=timeout, port=port,
                          app_url=app_url, open_browser=open_browser, headless=headless,
                          show_progress=autorun, on_session=attach)
    finally:
        for session in sessions:  # the page is gone: end its run, leave no thread behind
            runner = session.cache.get("cadecon.runner")
            if runner is not None:
                runner.shutdown()
    if received is None:
        return None
    runner = sessions[0].cache.get("cadecon.runner") if sessions else None
    if runner is not None and runner.result is not None and received.payload.get("calab_run") == runner.run_id:
        return runner.result
    return assemble_cadecon_result(received.payload, received.arrays, sessions[0].fs if sessions else fs)
