"""What tune() says while it waits: the URL it serves, whether a browser was opened (and
never that one was when it was not), and that it gave up on a timeout."""

from __future__ import annotations

import numpy as np
import pytest

import calab
from calab.bridge import apps

TRACES = np.random.default_rng(0).standard_normal((3, 200))


def _lines(capsys) -> str:
    return capsys.readouterr().out


def test_without_opening_a_browser_it_says_to_open_the_url(monkeypatch, capsys):
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: pytest.fail("no browser was asked for"))
    assert calab.tune(TRACES, 30.0, timeout=0.2, open_browser=False) is None
    out = _lines(capsys)
    assert "CaTune page: http://127.0.0.1:" in out and "bridge_secret=" in out
    assert "Open that URL in a web browser on this machine." in out
    assert "Waiting for Export to Python on the page (Ctrl-C cancels; giving up after 0.2 s)" in out
    assert "Nothing was exported within 0.2 s: returning None" in out
    assert "Opening" not in out and "Opened" not in out


@pytest.mark.parametrize("outcome", [False, "raise"])
def test_when_no_browser_can_be_opened_it_says_so(monkeypatch, capsys, outcome):
    def no_browser(url):
        if outcome == "raise":
            raise apps.webbrowser.Error("could not locate runnable browser")
        return False

    monkeypatch.setattr(apps.webbrowser, "open", no_browser)
    assert calab.tune(TRACES, 30.0, timeout=0.2) is None
    out = _lines(capsys)
    assert "No web browser could be opened here: open that URL yourself" in out
    assert "ssh -L" in out and "Opened it" not in out


def test_an_opened_browser_is_reported(monkeypatch, capsys):
    opened = []
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: opened.append(url) or True)
    assert calab.tune(TRACES, 30.0, timeout=0.2) is None
    out = _lines(capsys)
    assert opened and f"CaTune page: {opened[0]}" in out and "Opened it in your web browser." in out
