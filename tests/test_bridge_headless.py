"""HeadlessBrowser never leaves a Chromium (or Playwright driver) process behind.

Child processes are counted from /proc before, during and after: a normal run, a failed
start, and a page that fails to load inside ``launch(headless=True)``.  A separate module
from the page tests because Playwright's sync API allows one driver per thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from calab.bridge.headless import HeadlessBrowser
from test_bridge_browser import _chromium_available

pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _chromium_available(), reason="no Chromium that Playwright can launch"),
]


def _descendants(pid: int | None = None) -> set[int]:
    """Live (non-zombie) descendant PIDs of this process, read from /proc."""
    pid = os.getpid() if pid is None else pid
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _wait_gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@needs_proc
def test_headless_browser_leaves_no_process_behind():
    baseline = _descendants()
    hb = HeadlessBrowser()
    with pytest.raises(RuntimeError, match="not started"):
        hb.navigate("about:blank")
    with pytest.raises(RuntimeError, match="Browser not started"):
        hb.page  # noqa: B018
    hb.close()  # safe before start
    with hb:
        assert hb.is_alive
        hb.navigate("data:text/html,<p>hello</p>")
        assert hb.page.inner_text("p") == "hello"
        started = _descendants() - baseline
        assert len(started) >= 2  # the Playwright driver and Chromium (+ its helpers)
    assert not hb.is_alive
    hb.close()  # idempotent
    assert _wait_gone(started) == set()


@needs_proc
def test_failed_start_leaves_no_process_behind(monkeypatch, tmp_path):
    baseline = _descendants()
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALAB_CHROMIUM", str(fake))
    hb = HeadlessBrowser()
    with pytest.raises(Exception):
        hb.start()
    assert not hb.is_alive
    assert _wait_gone(_descendants() - baseline) == set()


@needs_proc
def test_failed_page_leaves_no_process_and_closes_the_socket():
    import socket

    from calab.bridge.apps import launch

    baseline = _descendants()
    with socket.socket() as closed_port:  # a port nothing listens on
        closed_port.bind(("127.0.0.1", 0))
        dead = closed_port.getsockname()[1]
    seen: list = []
    original = HeadlessBrowser.navigate

    def spy(self, url):
        seen.append((url, _descendants() - baseline))
        return original(self, url)

    HeadlessBrowser.navigate = spy
    try:
        with pytest.raises(Exception):
            launch("catune", np.ones((1, 20)), 30.0, headless=True, timeout=5,
                   app_url=f"http://127.0.0.1:{dead}/nothing/")
    finally:
        HeadlessBrowser.navigate = original
    url, during = seen[0]
    assert len(during) >= 2
    assert _wait_gone(during) == set()
    port = int(url.split("bridge=http://127.0.0.1:")[1].split("&")[0])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


@needs_proc
def test_headless_browser_inside_a_running_event_loop():
    """A Jupyter kernel runs an asyncio loop, where Playwright's sync API refuses to work:
    HeadlessBrowser then drives Chromium from a worker thread, and launch() still works."""
    import asyncio

    from calab.bridge.apps import launch

    baseline = _descendants()
    seen = {}

    async def notebook_cell():
        with HeadlessBrowser() as hb:
            hb.navigate("data:text/html,<p>inside a loop</p>")
            seen["text"] = hb.run(lambda page: page.inner_text("p"))
            seen["during"] = _descendants() - baseline
            # the whole bridge path, as decon(headless=hb) would use it
            seen["result"] = launch("catune", np.ones((1, 30)), 30.0, headless=hb, timeout=1.5)
            seen["url"] = hb.run(lambda page: page.url)

    asyncio.run(notebook_cell())
    assert seen["text"] == "inside a loop" and len(seen["during"]) >= 2
    assert seen["result"] is None and "/pages/catune/index.html?bridge=" in seen["url"]
    assert _wait_gone(seen["during"]) == set()
