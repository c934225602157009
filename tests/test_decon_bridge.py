"""decon() and the built-in CaDecon page's server side, over plain HTTP (no browser).

* A hosted CaDecon following spec bridge-and-apps.md §1.8/§1.11 (config, progress POSTs,
  activity .npy then schema-2 JSON) gets 0.3.0's CaDeconResult assembly.
* The page's compute routes start / pause / resume / stop a run_cadecon session; the
  server-side export hands back exactly what run_cadecon returns for the same settings.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from _bridge_client import BridgeClient

import calab
from calab.bridge import apps
from calab.bridge.decon import assemble_cadecon_result

FS = 30.0
#: small enough for a 2-core CI: a few seconds per run
SETTINGS = dict(seed=5, max_iterations=2, num_subsets=2, upsample_target=30)


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    sim = calab.simulate(num_cells=6, num_timepoints=600, fs_hz=FS, seed=11)
    return np.asarray(sim.traces, dtype=np.float64)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def run_decon(page, traces, *, timeout=60.0, **kwargs):
    """calab.decon in this thread with ``page(client)`` playing the browser in another."""
    threads = []

    def opened(url):
        thread = threading.Thread(target=page, args=(BridgeClient(url),), daemon=True)
        thread.start()
        threads.append(thread)
        return True

    original = apps.webbrowser.open
    apps.webbrowser.open = opened
    try:
        result = calab.decon(traces, FS, timeout=timeout, **kwargs)
    finally:
        apps.webbrowser.open = original
    for thread in threads:
        thread.join(30)
    return result


# --------------------------------------------------------------------------- hosted app (0.3.0)
HOSTED_PAYLOAD = {
    "alphas": [1.5, 2.0], "baselines": [0.1, 0.2], "pves": [0.8, 0.7], "fs": FS,
    "tau_rise": 0.05, "tau_decay": 0.4, "beta": 1.2, "tau_rise_fast": 0.0, "tau_decay_fast": 0.0,
    "beta_fast": 0.0, "residual": 0.01, "h_free": [0.0, 0.5, 1.0, 0.5], "num_iterations": 4,
    "converged": True, "converged_at_iteration": 2, "schema_version": 2, "export_date": "2026-01-01T00:00:00Z",
}


def test_hosted_app_two_post_export_gives_the_0_3_0_assembly(capsys):
    traces = np.random.default_rng(0).normal(size=(2, 120))
    seen = {}
    activity = np.arange(240, dtype=np.float32).reshape(2, 120) % 3

    def hosted(client):
        seen["traces"] = client.traces()
        seen["config"] = client.json("/api/v1/config")[1]
        client.json("/api/v1/heartbeat", raw=b"")
        client.json("/api/v1/progress", {"iteration": 1, "max_iterations": 5, "phase": "inference",
                                         "phase_progress": 0.5, "tau_rise": 0.05, "tau_decay": 0.4,
                                         "status": "running"})
        seen["activity"] = client.call("/api/v1/results/activity", _npy(activity),
                                       headers={"Content-Type": "application/octet-stream"})[0]
        seen["results"] = client.json("/api/v1/results", HOSTED_PAYLOAD)

    result = run_decon(hosted, traces, app_url="https://example.org/CaDecon/", max_iterations=5, seed=3,
                       tau_rise=0.05, tau_decay=0.5)
    assert np.array_equal(seen["traces"], traces)
    # Only the 0.3.0 keys reach a hosted app, in the reference's order, nulls left out.
    assert seen["config"] == {"autorun": False, "max_iterations": 5, "seed": 3}
    assert list(seen["config"]) == ["autorun", "max_iterations", "seed"]
    assert seen["activity"] == 200 and seen["results"] == (200, {"status": "ok", "warnings": []})
    assert isinstance(result, calab.CaDeconResult)
    assert result.activity.dtype == np.float32 and np.array_equal(result.activity, activity)
    assert result.alphas.dtype == np.float64 and result.alphas.tolist() == [1.5, 2.0]
    assert result.fs == FS
    t = np.arange(int(5 * 0.4 * FS)) / FS
    assert np.allclose(result.kernel_slow, 1.2 * (np.exp(-t / 0.4) - np.exp(-t / 0.05)), atol=1e-6)
    assert result.kernel_fast.size == 0  # beta_fast 0
    assert set(result.metadata) == {"tau_rise", "tau_decay", "beta", "tau_rise_fast", "tau_decay_fast",
                                    "beta_fast", "residual", "h_free", "num_iterations", "converged",
                                    "converged_at_iteration", "schema_version", "export_date"}
    assert result.metadata["h_free"] == [0.0, 0.5, 1.0, 0.5]


def test_assembly_of_a_run_stopped_before_any_fit(capsys):
    payload = {**HOSTED_PAYLOAD, "tau_rise": None, "tau_decay": None, "beta": None, "solver_version": "0.1.0"}
    result = assemble_cadecon_result(payload, {"activity": np.zeros((2, 5))}, FS)
    assert result.kernel_slow.size == 0 and result.metadata["tau_rise"] is None
    assert result.metadata["solver_version"] == "0.1.0"
    assert "no bi-exponential" in capsys.readouterr().out
    assert assemble_cadecon_result(payload, {}, FS) is None
    assert "activity matrix was missing" in capsys.readouterr().out


def test_bad_settings_fail_before_a_server_starts():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_iterations"):
        calab.decon(np.zeros((2, 50)), FS, max_iterations=0, open_browser=False)
    with pytest.raises(ValidationError, match="not_a_setting"):
        calab.decon(np.zeros((2, 50)), FS, not_a_setting=1, open_browser=False)


# --------------------------------------------------------------------------- built-in page's routes
def _wait_state(client, predicate, limit=120.0):
    began = time.monotonic()
    while time.monotonic() - began < limit:
        status, state = client.json("/calab/v1/cadecon/state")
        assert status == 200
        if predicate(state):
            return state
        client.json("/api/v1/heartbeat", raw=b"")
        time.sleep(0.05)
    raise AssertionError(f"state never reached: {state}")


def test_server_run_and_export_equal_run_cadecon(recording):
    expected = calab.run_cadecon(recording, FS, progress=False, **SETTINGS)
    seen = {}

    def page(client):
        seen["info"] = client.json("/calab/v1/cadecon/info")[1]
        status, raster = client.json("/calab/v1/cadecon/raster?rows=4&cols=50")
        seen["raster"] = (status, raster["rows"], raster["cols"])
        seen["subsets"] = client.json("/calab/v1/cadecon/subsets?num_subsets=3")[1]
        seen["early_export"] = client.json("/calab/v1/cadecon/export", raw=b"{}")[0]
        seen["start"] = client.json("/calab/v1/cadecon/start", {"config": {}})
        seen["second_start"] = client.json("/calab/v1/cadecon/start", {"config": {}})[0]
        state = _wait_state(client, lambda s: s["status"] == "complete")
        seen["state"] = state
        seen["trace"] = client.json("/calab/v1/cadecon/trace?cell=1&start=100&stop=400&points=200&minimap=1")[1]
        status, headers, body = client.call("/calab/v1/cadecon/results.zip")
        seen["zip"] = (status, headers.get("Content-Type"), body)
        seen["export"] = client.json("/calab/v1/cadecon/export", raw=b"{}")

    result = run_decon(page, recording, **SETTINGS)
    assert seen["info"]["num_cells"] == 6 and seen["info"]["config"]["seed"] == 5
    assert seen["raster"] == (200, 4, 50)
    assert len(seen["subsets"]["subsets"]) == 3
    assert seen["early_export"] == 409 and seen["second_start"] == 409
    assert seen["start"][0] == 200
    assert seen["export"] == (200, {"status": "ok", "warnings": []})
    # The exported result is run_cadecon's, field by field (export_date aside).
    assert isinstance(result, calab.CaDeconResult)
    assert np.array_equal(result.activity, expected.activity)
    for name in ("alphas", "baselines", "pves", "kernel_slow", "kernel_fast"):
        assert np.array_equal(getattr(result, name), getattr(expected, name)), name
    assert result.metadata["tau_rise"] == expected.metadata["tau_rise"]
    assert result.metadata["tau_decay"] == expected.metadata["tau_decay"]
    assert result.metadata["history"] == expected.metadata["history"]
    # What the page showed: one record per iteration, the trace window, the ZIP.
    state = seen["state"]
    assert len(state["iterations"]) == expected.metadata["num_iterations"]
    assert state["summary"]["tau_decay"] == expected.metadata["tau_decay"]
    trace = seen["trace"]
    assert set(trace["series"]) == {"raw", "filtered", "fit", "deconv"}
    assert trace["cell_stats"]["spikes"] == float(expected.activity[1].sum())
    assert len(trace["minimap"]["values"]) > 0
    import json
    import zipfile

    status, content_type, body = seen["zip"]
    assert status == 200 and content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert np.array_equal(np.load(io.BytesIO(archive.read("activity.npy"))), expected.activity)
        saved = json.loads(archive.read("results.json"))
    assert saved["schema_version"] == 2 and saved["tau_decay"] == expected.metadata["tau_decay"]
    assert set(saved["field_descriptions"]) >= {"alphas", "tau_rise", "h_free"}


def test_pause_resume_stop_without_finalisation(recording):
    seen = {}

    def page(client):
        # refine: the refinement iterations are what can be paused and stopped part-way
        client.json("/calab/v1/cadecon/start", {"config": {"max_iterations": 20, "convergence_tol": 1e-6, "refine": True}})
        seen["pause"] = client.json("/calab/v1/cadecon/pause", raw=b"{}")[0]
        seen["paused"] = _wait_state(client, lambda s: s["progress"] is not None and s["progress"]["status"] == "paused")
        time.sleep(0.5)
        seen["still"] = client.json("/calab/v1/cadecon/state")[1]["progress"]
        seen["resume"] = client.json("/calab/v1/cadecon/resume", raw=b"{}")[0]
        _wait_state(client, lambda s: len(s["iterations"]) >= 1)
        seen["stop"] = client.json("/calab/v1/cadecon/stop", {"finalize": False})[0]
        seen["done"] = _wait_state(client, lambda s: s["status"] == "complete")
        client.json("/calab/v1/cadecon/export", raw=b"{}")

    result = run_decon(page, recording, **{**SETTINGS, "max_iterations": None})
    assert seen["pause"] == 200 and seen["resume"] == 200 and seen["stop"] == 200
    assert seen["still"] == seen["paused"]["progress"]  # nothing moved while paused
    meta = result.metadata
    # Stopped before finalisation: subset-stage results, cells outside subsets are NaN.
    assert meta["stopped"] is True and meta["finalized"] is False
    assert 1 <= meta["num_iterations"] < 20
    assert seen["done"]["summary"]["stopped"] is True
    cells = meta["cells_with_results"]
    assert np.isfinite(result.alphas[cells]).all()
    assert result.activity.shape == recording.shape


def test_session_end_stops_the_run(recording):
    """Timeout (or heartbeat loss) returns None and ends the server-side run."""
    before = {t.ident for t in threading.enumerate()}

    def page(client):
        client.json("/calab/v1/cadecon/start", {"config": {"max_iterations": 50, "convergence_tol": 1e-6}})

    assert run_decon(page, recording, timeout=1.0, **{**SETTINGS, "max_iterations": None}) is None
    left = [t for t in threading.enumerate() if t.ident not in before and t.name == "calab-cadecon-run"]
    assert not left


# --------------------------------------------------------------------------- command line
def test_cli_cadecon_on_the_built_in_page(recording, tmp_path, monkeypatch, capsys):
    """`calab cadecon FILE --no-browser -o STEM`: the user presses Start, then Export."""
    import json

    from test_bridge_protocol import _serve_and_answer

    from calab import cli

    np.save(tmp_path / "rec.npy", recording)

    def user(url):
        client = BridgeClient(url)
        client.json("/calab/v1/cadecon/start", {"config": SETTINGS})
        _wait_state(client, lambda s: s["status"] == "complete")
        client.json("/calab/v1/cadecon/export", raw=b"{}")

    _serve_and_answer(monkeypatch, user)
    assert cli.main(["cadecon", str(tmp_path / "rec.npy"), "--no-browser", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    expected = calab.run_cadecon(recording, FS, progress=False, **SETTINGS)
    assert "CaDecon page: http://127.0.0.1:" in out and "/pages/cadecon/index.html?bridge=" in out
    assert "Cells: 6 x 600 frames at 30 Hz" in out
    assert f"Kernel: tau_rise {expected.metadata['tau_rise']:.4f} s, tau_decay {expected.metadata['tau_decay']:.4f} s" in out
    assert np.array_equal(np.load(tmp_path / "out_activity.npy"), expected.activity)
    saved = json.loads((tmp_path / "out_results.json").read_text())
    assert saved["alphas"] == expected.alphas.tolist() and saved["metadata"]["tau_decay"] == expected.metadata["tau_decay"]
    assert "Saved to " in out


def test_cli_cadecon_without_results_exits_1(recording, tmp_path, monkeypatch, capsys):
    from test_bridge_protocol import _serve_and_answer

    from calab import cli

    np.save(tmp_path / "rec.npy", recording[:2, :100])
    monkeypatch.setattr(apps, "HEARTBEAT_TIMEOUT", 0.3)
    _serve_and_answer(monkeypatch, lambda url: BridgeClient(url).json("/api/v1/heartbeat", raw=b""))
    assert cli.main(["cadecon", str(tmp_path / "rec.npy"), "--no-browser", "-o", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == "No results received."
    assert not list(tmp_path.glob("o_*"))  # nothing half-written
