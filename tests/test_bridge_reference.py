"""A hosted-app client sees the same protocol from our server as from calab 0.3.0.

The reference package runs in its own venv as a subprocess (it has the same import name);
``tune()`` there and here is given the same traces and the same client session, and every
observation (status codes, JSON bodies, ``.npy`` bytes, CORS headers) and the returned
dict must be equal.  Skipped without the reference venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _bridge_client import catune_export, observe_protocol

import calab
from calab.bridge import apps

ROOT = Path(__file__).resolve().parents[1]
_VENV = os.environ.get("CALAB_REFERENCE_VENV")
REF_PYTHON = Path(os.environ.get("CALAB_REF_PYTHON")
                  or (Path(_VENV) / "bin" / "python" if _VENV else ROOT / ".venv-ref" / "bin" / "python"))

pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(not REF_PYTHON.exists(), reason=f"reference venv not found ({REF_PYTHON})"),
]

SCRIPT = """
import json, sys, numpy as np, calab
traces = np.load(sys.argv[1])
params = calab.tune(traces, 30.0, timeout=60, app_url="https://example.org/CaTune/", open_browser=False)
print("RESULT " + json.dumps(params), flush=True)
"""


def test_hosted_client_sees_the_same_protocol_as_with_0_3_0(tmp_path, monkeypatch):
    traces = np.random.default_rng(3).normal(size=(3, 200))
    np.save(tmp_path / "traces.npy", traces)
    export = catune_export(tau_rise=0.03, tau_decay=0.7, lam=1.5, filter_enabled=False)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["CALAB_APPS_MANIFEST"] = "off"
    proc = subprocess.Popen([str(REF_PYTHON), "-c", SCRIPT, str(tmp_path / "traces.npy")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Opening CaTune: "):
                break
        theirs = observe_protocol(line.split(": ", 1)[1].strip(), export)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    their_params = json.loads(rest.split("RESULT ", 1)[1])

    seen, clients = {}, []

    def open_page(url):
        clients.append(threading.Thread(target=lambda: seen.update(observe_protocol(url, export)), daemon=True))
        clients[-1].start()

    monkeypatch.setattr(apps.webbrowser, "open", open_page)
    with pytest.warns(calab.BridgeVersionWarning):
        our_params = calab.tune(traces, 30.0, timeout=60, app_url="https://example.org/CaTune/")
    clients[0].join(30)  # tune returns as soon as the export arrives; the client records its reply after

    assert seen.keys() == theirs.keys()
    for key in theirs:
        assert seen[key] == theirs[key], key
    assert our_params == their_params
