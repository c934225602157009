"""A hosted CaDecon client gets the same CaDeconResult from decon() as from calab 0.3.0.

The reference runs in its own venv as a subprocess; both sides get the same traces and
settings, the same hosted-app session (config, heartbeat, progress, activity .npy, then
schema-2 JSON, spec bridge-and-apps.md §1.8/§1.11), and must answer it identically and
assemble equal results (fields, dtypes, shapes and metadata).  Skipped without the venv.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading

import numpy as np
import pytest
from _bridge_client import BridgeClient
from test_bridge_reference import REF_PYTHON

import calab
from calab.bridge import apps

pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(not REF_PYTHON.exists(), reason=f"reference venv not found ({REF_PYTHON})"),
]

SCRIPT = """
import json, sys, numpy as np, calab
traces = np.load(sys.argv[1])
r = calab.decon(traces, 30.0, timeout=60, app_url="https://example.org/CaDecon/", open_browser=False,
                max_iterations=5, seed=3, num_subsets=4)
out = None if r is None else {name: (np.asarray(v).tolist() if name != "metadata" else v) for name, v in r._asdict().items()}
if r is not None:
    out["dtypes"] = {name: str(np.asarray(getattr(r, name)).dtype) for name in ("activity", "alphas", "kernel_slow", "kernel_fast")}
print("RESULT " + json.dumps(out), flush=True)
"""

ACTIVITY = (np.arange(600, dtype=np.float32).reshape(3, 200) % 4 == 0).astype(np.float32)
FULL = {"alphas": [1.5, 2.0, 0.5], "baselines": [0.1, 0.2, 0.0], "pves": [0.8, 0.7, 0.6], "fs": 30.0,
        "tau_rise": 0.05, "tau_decay": 0.4, "beta": 1.2, "tau_rise_fast": 0.01, "tau_decay_fast": 0.08,
        "beta_fast": 0.3, "residual": 0.01, "h_free": [0.0, 0.5, 1.0, 0.5], "num_iterations": 4,
        "converged": True, "converged_at_iteration": 2, "schema_version": 2,
        "export_date": "2026-01-01T00:00:00Z", "calab_version": "0.3.0"}
STOPPED = {**FULL, "tau_rise": None, "tau_decay": None, "beta": None, "tau_rise_fast": None,
           "tau_decay_fast": None, "beta_fast": None, "residual": None, "converged": False,
           "converged_at_iteration": None, "num_iterations": 1}


def hosted_cadecon(url: str, payload: dict) -> dict:
    client = BridgeClient(url)
    seen = {"traces": client.traces().tolist(), "metadata": client.json("/api/v1/metadata"),
            "config": client.json("/api/v1/config"), "heartbeat": client.json("/api/v1/heartbeat", raw=b""),
            "progress": client.json("/api/v1/progress", {"iteration": 1, "max_iterations": 5, "phase": "inference",
                                                         "phase_progress": 0.5, "tau_rise": 0.05, "tau_decay": 0.4,
                                                         "status": "running"})}
    buffer = io.BytesIO()
    np.save(buffer, ACTIVITY)
    seen["activity"] = client.call("/api/v1/results/activity", buffer.getvalue(),
                                   headers={"Content-Type": "application/octet-stream"})[0]
    seen["results"] = client.json("/api/v1/results", payload)
    return seen


def as_json(result) -> dict:
    out = {name: (np.asarray(v).tolist() if name != "metadata" else v) for name, v in result._asdict().items()}
    out["dtypes"] = {name: str(np.asarray(getattr(result, name)).dtype)
                     for name in ("activity", "alphas", "kernel_slow", "kernel_fast")}
    return json.loads(json.dumps(out))


@pytest.mark.parametrize("payload", [FULL, STOPPED], ids=["complete", "stopped-before-a-fit"])
def test_hosted_cadecon_gets_the_0_3_0_result(tmp_path, monkeypatch, payload):
    traces = np.random.default_rng(5).normal(size=(3, 200))
    np.save(tmp_path / "traces.npy", traces)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CALAB_APPS_MANIFEST"] = "off"
    proc = subprocess.Popen([str(REF_PYTHON), "-c", SCRIPT, str(tmp_path / "traces.npy")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("Opening CaDecon: "):
                break
        theirs_seen = hosted_cadecon(line.split(": ", 1)[1].strip(), payload)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    theirs = json.loads(rest.split("RESULT ", 1)[1].splitlines()[0])

    ours_seen: dict = {}
    clients: list = []

    def open_page(url):
        clients.append(threading.Thread(target=lambda: ours_seen.update(hosted_cadecon(url, payload)), daemon=True))
        clients[-1].start()

    monkeypatch.setattr(apps.webbrowser, "open", open_page)
    ours = as_json(calab.decon(traces, 30.0, timeout=60, app_url="https://example.org/CaDecon/",
                               max_iterations=5, seed=3, num_subsets=4))
    clients[0].join(30)  # decon returns as soon as the JSON arrives; the client records its reply after
    assert ours_seen == theirs_seen
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key]) if key in ("kernel_slow", "kernel_fast") else ours[key] == theirs[key], key
