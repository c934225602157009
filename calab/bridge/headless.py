"""``HeadlessBrowser``: a Playwright-driven Chromium for unattended bridge runs.

Playwright is imported only when a :class:`HeadlessBrowser` is constructed, never at
``import calab``.  Chromium is, in order: ``CALAB_CHROMIUM`` (a path), Playwright's own
download when it is installed, or a system ``chromium`` / ``chromium-browser`` /
``google-chrome`` on ``PATH`` (Debian's package, for instance).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

__all__ = ["HeadlessBrowser", "chromium_launch_options"]


def _event_loop_running() -> bool:
    """True inside a running asyncio loop (a Jupyter kernel), where Playwright's sync API refuses to run."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

#: flags for a system Chromium in a container or CI: no GPU, no sandbox as root, nothing
#: phoning home
_SYSTEM_CHROMIUM_ARGS = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
_SYSTEM_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _import_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ImportError(
            "HeadlessBrowser requires Playwright. Install it with: pip install calab[headless] "
            "and then either `playwright install chromium` or your system's chromium package."
        ) from None
    return sync_playwright


def chromium_launch_options(playwright: Any, headless: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``playwright.chromium.launch``: which Chromium, which flags."""
    options: dict[str, Any] = {"headless": headless}
    explicit = os.environ.get("CALAB_CHROMIUM", "").strip()
    executable = None
    if explicit:
        executable = explicit
    else:
        try:
            bundled = playwright.chromium.executable_path
        except Exception:  # noqa: BLE001 - an unknown/unsupported platform
            bundled = ""
        if not (bundled and os.path.exists(bundled)):
            executable = next((p for p in map(shutil.which, _SYSTEM_CHROMIUM_NAMES) if p), None)
    if executable is not None:
        options["executable_path"] = executable
        args = list(_SYSTEM_CHROMIUM_ARGS)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start as root otherwise
        options["args"] = args
    return options


class HeadlessBrowser:
    """Manages a Playwright browser for headless CaDecon / CaTune runs.

    Can be used as a context manager for single runs, or kept alive across multiple
    ``decon()`` / ``tune()`` calls for batch processing.

    Parameters
    ----------
    visible : bool
        Show a real browser window (for debugging) instead of running headless.

    Raises
    ------
    ImportError
        Playwright is not installed (the message says what to install).

    Examples
    --------
    >>> with HeadlessBrowser() as hb:                                   # doctest: +SKIP
    ...     result = calab.decon(traces, fs, headless=hb, autorun=True)
    """

    def __init__(self, *, visible: bool = False) -> None:
        self._sync_playwright = _import_playwright()
        self.visible = bool(visible)
        self._pw: Any = None
        self._browser: Any = None
        self._context: Any = None
        self._page: Any = None
        # Inside a running asyncio loop (Jupyter) Playwright's sync API runs on a thread of
        # its own; every call below is handed to that thread.
        self._worker: ThreadPoolExecutor | None = None

    def _call(self, fn: Callable[[], T]) -> T:
        if self._worker is None:
            return fn()
        return self._worker.submit(fn).result()

    def start(self) -> None:
        """Start Playwright, launch Chromium, open one page.

        Any failure closes whatever was already started before the exception propagates,
        so a failed start never leaves a driver or a Chromium process behind.
        """
        if self._page is not None:
            return
        if self._worker is None and _event_loop_running():
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="calab-playwright")

        def launch() -> None:
            self._pw = self._sync_playwright().start()
            self._browser = self._pw.chromium.launch(**chromium_launch_options(self._pw, not self.visible))
            self._context = self._browser.new_context()
            self._page = self._context.new_page()

        try:
            self._call(launch)
        except BaseException:
            self.close()
            raise

    def navigate(self, url: str) -> None:
        """Navigate the managed page to ``url`` (the same tab is reused)."""
        if self._page is None:
            raise RuntimeError("HeadlessBrowser not started. Call start() or use it as a context manager.")
        self._call(lambda: self._page.goto(url, wait_until="domcontentloaded"))

    def run(self, fn: Callable[[Any], T]) -> T:
        """Call ``fn(page)`` on the thread that owns the browser and return its result.

        Use this instead of :attr:`page` inside a notebook, where Playwright runs on a
        worker thread (``hb.run(lambda page: page.title())``).
        """
        page = self.page
        return self._call(lambda: fn(page))

    def close(self) -> None:
        """Shut down page, context, browser, and Playwright.

        Each teardown runs in its own try/except so a crashed browser (where
        ``context.close()`` raises) still lets ``browser.close()`` and ``pw.stop()`` run,
        leaving no orphaned Chromium process.  Safe to call twice or before :meth:`start`.
        """
        try:
            self._call(self._teardown)
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None

    def _teardown(self) -> None:
        for handle in (self._context, self._browser):
            if handle is not None:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - keep tearing down
                    pass
        if self._pw is not None:
            try:
                self._pw.stop()
            except Exception:  # noqa: BLE001
                pass
        self._pw = self._browser = self._context = self._page = None

    @property
    def page(self) -> Any:
        """The Playwright page (in a notebook it belongs to a worker thread: use :meth:`run`)."""
        if self._page is None:
            raise RuntimeError("Browser not started.")
        return self._page

    @property
    def is_alive(self) -> bool:
        """True while the browser is running and connected."""
        if self._browser is None:
            return False
        try:
            return bool(self._call(self._browser.is_connected))
        except Exception:  # noqa: BLE001
            return False

    def __enter__(self) -> HeadlessBrowser:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
