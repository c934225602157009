"""The bridge server as a hosted app uses it: 0.3.0 endpoints, status codes, shapes, security.

Everything here is plain HTTP against the real server (no browser): every protocol error
case, the secret on every data endpoint, loopback-only binding, the watchdog, timeout and
Ctrl-C, and the extensions (threads, compute prefix, JSON 404s, body limit).
"""

from __future__ import annotations

import _thread
import io
import json
import signal
import socket
import threading
import time
import warnings

import numpy as np
import pytest
from _bridge_client import BridgeClient, catune_export, hosted_catune_session

import calab
from calab.bridge import apps, server as server_module
from calab.bridge.apps import catune_params, launch
from calab.bridge.handshake import BridgeVersionError, BridgeVersionWarning, compatible, parse_version
from calab.bridge.registry import APPS, AppSpec, ComputeRoute, ResultSchema, get_app, register_app
from calab.bridge.server import BridgeServer, BridgeSession, json_response

TRACES = np.random.default_rng(7).normal(size=(3, 200))


@pytest.fixture
def catune_server():
    apps._builtin_apps()
    session = BridgeSession(TRACES, 30.0, get_app("catune"))
    with BridgeServer(session) as srv:
        srv.start()
        yield srv, BridgeClient(f"x?bridge={srv.origin}&bridge_secret={session.secret}")


@pytest.fixture
def cadecon_server():
    session = BridgeSession(TRACES, 30.0, get_app("cadecon"), {"autorun": True, "max_iterations": 5})
    with BridgeServer(session) as srv:
        srv.start()
        yield srv, BridgeClient(f"x?bridge={srv.origin}&bridge_secret={session.secret}")


def run_launch(client_flow, *, timeout=20.0, **kwargs):
    """launch('catune') in this thread with ``client_flow(url)`` as the page, in a thread."""
    threads = []

    def ready(url):
        thread = threading.Thread(target=client_flow, args=(url,), daemon=True)
        thread.start()
        threads.append(thread)

    kwargs.setdefault("open_browser", False)
    result = launch(kwargs.pop("app", "catune"), kwargs.pop("traces", TRACES), 30.0, timeout=timeout,
                    on_ready=ready, **kwargs)
    for thread in threads:
        thread.join(10)
    return result


# --------------------------------------------------------------------------- GET endpoints
def test_get_endpoints_shapes(catune_server):
    srv, client = catune_server
    assert client.call("/api/v1/health")[::2] == (200, b"ok")
    assert client.call("/api/v1/metadata")[2] == b'{"sampling_rate_hz": 30.0, "num_cells": 3, "num_timepoints": 200}'
    assert client.json("/api/v1/config") == (200, {"autorun": False})
    status, body = client.json("/api/v1/status")
    assert status == 200 and body["ready"] is True and body["app"] == "catune"
    assert body["results"] == {"path": "/api/v1/results/catune", "arrays": {}, "schema": "catune-export",
                               "schema_version": "1.2.0"}
    assert body["calab_version"] == calab.__version__
    code, headers, raw = client.call("/api/v1/traces")
    expected = io.BytesIO()
    np.save(expected, TRACES)  # np.save writes the same v1.0 '<f8' C-order file
    assert code == 200 and headers["Content-Type"] == "application/octet-stream" and raw == expected.getvalue()


def test_cadecon_status_and_config(cadecon_server):
    _, client = cadecon_server
    assert client.json("/api/v1/config") == (200, {"autorun": True, "max_iterations": 5})
    results = client.json("/api/v1/status")[1]["results"]
    assert results == {"path": "/api/v1/results/cadecon", "arrays": {"activity": "/api/v1/results/cadecon/activity"},
                       "schema": "cadecon-results", "schema_version": 2}


def test_one_dimensional_traces_become_one_row():
    session = BridgeSession(np.arange(5.0), 10, get_app("catune"))
    assert session.traces.shape == (1, 5) and session.traces.dtype == np.float64


# --------------------------------------------------------------------------- security
DATA_ENDPOINTS = [
    ("GET", "/api/v1/health"), ("GET", "/api/v1/status"), ("GET", "/api/v1/metadata"),
    ("GET", "/api/v1/config"), ("GET", "/api/v1/traces"), ("POST", "/api/v1/heartbeat"),
    ("POST", "/api/v1/progress"), ("POST", "/api/v1/params"), ("POST", "/api/v1/results/catune"),
    ("GET", "/calab/v1/catune/overview"), ("GET", "/calab/v1/catune/minimap?cell=0"),
    ("POST", "/calab/v1/catune/solve"), ("GET", "/no/such/path"),
]


@pytest.mark.parametrize("secret", ["", "0" * 64, "wrong"], ids=["missing", "zeros", "short"])
def test_no_data_endpoint_answers_without_the_secret(catune_server, secret):
    srv, client = catune_server
    for method, path in DATA_ENDPOINTS:
        data = b"{}" if method == "POST" else None
        status, headers, body = client.call(path, data, secret=secret, method=method)
        assert status == 401, (method, path)
        assert json.loads(body) == {"error": "invalid or missing bridge secret"}
        assert headers["Access-Control-Allow-Origin"] == "*"
    session = srv.session
    assert session.last_heartbeat is None and session.payload is None and not session.done.is_set()


def test_preflight_cors_and_private_network_access(catune_server):
    _, client = catune_server
    status, headers, body = client.call("/api/v1/traces", method="OPTIONS", secret="")
    assert status == 200 and body == b"" and headers["Content-Length"] == "0"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, X-Bridge-Secret"
    assert "Access-Control-Allow-Private-Network" not in headers
    status, headers, _ = client.call("/anything", method="OPTIONS", secret="",
                                     headers={"Access-Control-Request-Private-Network": "TRUE"})
    assert status == 200 and headers["Access-Control-Allow-Private-Network"] == "true"


def test_unknown_paths_get_json_404_with_cors(catune_server):
    _, client = catune_server
    for method, path in [("GET", "/api/v1/nope"), ("POST", "/api/v1/results"), ("POST", "/api/v1/results/activity"),
                         ("POST", "/api/v1/results/nosuchapp"), ("POST", "/api/v1/results/catune/activity"),
                         ("GET", "/calab/v1/catune/nope"), ("PUT", "/api/v1/params"), ("GET", "/elsewhere")]:
        status, headers, body = client.call(path, b"{}" if method != "GET" else None, method=method)
        assert status == 404, (method, path)
        assert headers["Access-Control-Allow-Origin"] == "*" and "error" in json.loads(body)


def test_server_binds_loopback_only(catune_server):
    srv, _ = catune_server
    assert srv.server_address[0] == "127.0.0.1" and srv.socket.getsockname()[0] == "127.0.0.1"
    # Any non-loopback address of this machine must refuse the port.
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        addresses = set()
    for address in addresses - {"127.0.0.1"}:
        if address.startswith("127."):
            continue
        with pytest.raises(OSError):
            socket.create_connection((address, srv.port), timeout=1).close()


def test_busy_port_raises_and_port_zero_lets_the_os_choose():
    session = BridgeSession(TRACES, 30.0, get_app("catune"))
    with BridgeServer(session, 0) as first:
        assert first.port > 0
        with pytest.raises(OSError):
            BridgeServer(session, first.port)


def test_static_pages_need_no_secret_but_hold_no_data(catune_server):
    _, client = catune_server
    status, headers, body = client.call("/pages/catune/index.html", secret="")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"CaTune" in body
    status, headers, _ = client.call("/pages/catune/js/app.js", secret="")
    assert status == 200 and headers["Content-Type"] == "text/javascript"
    assert client.call("/pages/vendor/uplot/uPlot.iife.min.js", secret="")[0] == 200
    for path in ["/pages/../server.py", "/pages/%2e%2e/server.py", "/pages/catune/../../registry.py",
                 "/pages/catune/nope.js"]:
        assert client.call(path, secret="")[0] == 404, path


# --------------------------------------------------------------------------- results route
def test_results_errors(catune_server):
    srv, client = catune_server
    assert client.json("/api/v1/params", raw=b"{not json") == (400, {"error": "Invalid JSON"})
    assert client.json("/api/v1/params", raw=b"\xff\xfe") == (400, {"error": "Invalid JSON"})
    assert client.json("/api/v1/results/catune", [1, 2]) == (400, {"error": "Results must be a JSON object"})
    assert client.json("/api/v1/progress", raw=b"nope") == (400, {"error": "Invalid JSON"})
    assert client.json("/api/v1/results/cadecon", {}) == (
        409, {"error": "this bridge session is serving 'catune', not 'cadecon'"})
    assert not srv.session.done.is_set()


def test_handshake_outcomes(catune_server):
    srv, client = catune_server
    status, body = client.json("/api/v1/params", catune_export(schema_version="1.3.5"))
    assert status == 200 and body["status"] == "ok" and len(body["warnings"]) == 1
    for bad in ["2.0.0", "0.9.0", "abc", None]:
        export = catune_export(schema_version=bad)
        if bad is None:
            del export["schema_version"]
        status, body = client.json("/api/v1/results/catune", export)
        assert status == 409 and "schema_version" in body["error"], bad
        assert isinstance(srv.session.error, BridgeVersionError) and srv.session.done.is_set()
    status, body = client.json("/api/v1/params", catune_export())
    assert (status, body) == (200, {"status": "ok", "warnings": []}) and srv.session.error is None


def test_version_parsing_and_caret_rule():
    assert parse_version(1) == (1, 0, 0) and parse_version(" v1.2-beta ") == (1, 2, 0)
    assert parse_version(True) is None and parse_version("x1") is None and parse_version(-1) is None
    assert compatible((1, 2, 0), (1, 9, 9)) and not compatible((2, 0, 0), (1, 2, 0))
    assert compatible((0, 3, 1), (0, 3, 0)) and not compatible((0, 4, 0), (0, 3, 0))


def test_array_uploads_on_a_cadecon_session(cadecon_server):
    srv, client = cadecon_server
    good = io.BytesIO()
    np.save(good, np.ones((3, 200), np.float32))
    for path in ["/api/v1/results/activity", "/api/v1/results/cadecon/activity"]:
        assert client.json(path, raw=good.getvalue()) == (200, {"status": "ok"})
    assert srv.session.arrays["activity"].shape == (3, 200)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for bad in [b"garbage", pickled.getvalue(), b""]:
        assert client.json("/api/v1/results/activity", raw=bad) == (400, {"error": "Invalid .npy data"})
    assert client.json("/api/v1/params", {"schema_version": 2})[0] == 404  # CaTune's alias only
    assert client.json("/api/v1/results/cadecon/nope", raw=good.getvalue())[0] == 404
    assert client.json("/api/v1/results", {"schema_version": 2}) == (200, {"status": "ok", "warnings": []})


def test_body_size_limit(catune_server, monkeypatch):
    srv, client = catune_server
    monkeypatch.setattr(server_module, "MAX_JSON_BYTES", 0)
    limit = srv.session.max_body_bytes
    # Announce a body over the limit: refused before a byte of it is read.
    with socket.create_connection(("127.0.0.1", srv.port)) as conn:
        conn.sendall((f"POST /api/v1/params HTTP/1.0\r\nX-Bridge-Secret: {srv.session.secret}\r\n"
                      f"Content-Length: {limit + 1}\r\n\r\n").encode())
        reply = conn.recv(65536).decode()
    assert reply.startswith("HTTP/1.0 413") and "Access-Control-Allow-Origin: *" in reply


# --------------------------------------------------------------------------- threads, compute
def test_a_long_compute_request_does_not_starve_heartbeats():
    started = threading.Event()

    def slow(session, query, body):
        started.set()
        time.sleep(1.5)
        return json_response(200, {"slept": True})

    spec = register_app(AppSpec("slowapp", "Slow", "Slow", ResultSchema("slow", "1.0.0"),
                                compute={"work": ComputeRoute("POST", slow)}))
    try:
        session = BridgeSession(TRACES, 30.0, spec)
        with BridgeServer(session) as srv:
            srv.start()
            client = BridgeClient(f"x?bridge={srv.origin}&bridge_secret={session.secret}")
            worker = threading.Thread(target=client.json, args=("/calab/v1/slowapp/work", {}))
            worker.start()
            assert started.wait(5)
            began = time.monotonic()
            assert client.json("/api/v1/heartbeat", raw=b"") == (200, {"status": "ok"})
            assert time.monotonic() - began < 1.0  # answered while the solve still runs
            worker.join()
            # compute routes of another registered app are refused like results routes
            assert client.json("/calab/v1/catune/overview")[0] == 409
    finally:
        APPS.pop("slowapp")


def test_solve_endpoint_matches_run_deconvolution_on_the_padded_window(catune_server):
    from calab.bridge.catune import padded_window

    _, client = catune_server
    request = {"cells": [2, 0], "start": 50, "stop": 110, "tau_rise": 0.05, "tau_decay": 0.4,
               "lambda": 0.1, "filter_enabled": False, "points": 1000, "max_iters": 300}
    status, reply = client.json("/calab/v1/catune/solve", request)
    assert status == 200 and reply["start"] == 50 and reply["stop"] == 110
    a, b = padded_window(50, 110, 200, 0.4, 30.0)
    assert reply["padded"] == [a, b] == [0, 170]
    expected = calab.run_deconvolution_full(TRACES[[2, 0], a:b], 30.0, 0.05, 0.4, 0.1, max_iters=300,
                                            conv_mode="banded")
    assert reply["index"] == list(range(50, 110))
    for i, cell in enumerate(reply["cells"]):
        assert cell["cell"] == [2, 0][i] and cell["filtered"] is None
        np.testing.assert_allclose(cell["raw"], TRACES[cell["cell"], 50:110], rtol=1e-6)
        np.testing.assert_allclose(cell["deconv"], expected.activity[i, 50 - a:110 - a], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cell["fit"], expected.reconvolution[i, 50 - a:110 - a], rtol=1e-5, atol=1e-6)
    for bad in [{**request, "cells": [3]}, {**request, "cells": "0"}, {**request, "tau_rise": "x"},
                {**request, "stop": 50}, {**request, "tau_rise": 0.5}]:
        status, body = client.json("/calab/v1/catune/solve", bad)
        assert status == 400 and body["error"], bad
    assert client.json("/calab/v1/catune/solve", raw=b"{")[0] == 400


def test_overview_ranks_by_variance_and_minimap_keeps_extremes(catune_server):
    _, client = catune_server
    scaled = client.json("/calab/v1/catune/overview")[1]
    assert scaled["ranking"] == list(np.argsort(-TRACES.var(axis=1), kind="stable"))
    status, minimap = client.json("/calab/v1/catune/minimap?cell=1&bins=10")
    assert status == 200 and len(minimap["values"]) <= 20
    assert max(minimap["values"]) == pytest.approx(TRACES[1].max(), rel=1e-6)
    assert min(minimap["values"]) == pytest.approx(TRACES[1].min(), rel=1e-6)
    assert client.json("/calab/v1/catune/minimap?cell=9")[0] == 400


def test_decimation_preserves_every_bin_extreme():
    from calab.bridge.catune import decimate_minmax

    values = np.random.default_rng(0).normal(size=(2, 1001))
    index, out = decimate_minmax(values, 100)
    assert out.shape[1] <= 102 and index.shape[0] == out.shape[1]
    assert out.max(axis=1) == pytest.approx(values.max(axis=1)) and out.min(axis=1) == pytest.approx(values.min(axis=1))
    same_index, same = decimate_minmax(values, 5000)
    assert same is values and same_index.tolist() == list(range(1001))


# --------------------------------------------------------------------------- launch / tune
def test_tune_returns_the_documented_dict_from_a_hosted_client(capsys):
    seen = {}
    export = catune_export()
    result = run_launch(lambda url: seen.update(hosted_catune_session(url, export)))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Bridge server running on http://127.0.0.1:")
    assert out[1].startswith("CaTune page: http://127.0.0.1:") and "bridge_secret=" in out[1]
    np.testing.assert_array_equal(seen["traces"], TRACES)
    assert seen["metadata"] == {"sampling_rate_hz": 30.0, "num_cells": 3, "num_timepoints": 200}
    assert catune_params(result.payload, 30.0) == {"tau_rise": 0.05, "tau_decay": 0.5, "lambda_": 0.25,
                                                   "fs": 30.0, "filter_enabled": True}


def test_tune_itself_with_a_hosted_app_url(monkeypatch):
    opened = []
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: opened.append(url) or threading.Thread(
        target=hosted_catune_session, args=(url, catune_export(lam=0.75)), daemon=True).start())
    params = calab.tune(TRACES, 30.0, timeout=20, app_url="https://example.org/CaTune/?x=1")
    assert opened[0].startswith("https://example.org/CaTune/?x=1&bridge=http://127.0.0.1:")
    assert params == {"tau_rise": 0.05, "tau_decay": 0.5, "lambda_": 0.75, "fs": 30.0, "filter_enabled": True}


def test_compatible_version_warns_and_incompatible_raises():
    with pytest.warns(BridgeVersionWarning):
        result = run_launch(lambda url: hosted_catune_session(url, catune_export(schema_version="1.1.0")))
    assert result.warnings
    with pytest.raises(BridgeVersionError, match="pip install --upgrade calab"):
        run_launch(lambda url: hosted_catune_session(url, catune_export(schema_version="2.0.0")))


def test_catune_params_key_fallbacks():
    assert catune_params({"tau_rise": 0.1, "lambda_": 2, "filter_enabled": True}, 20.0) == {
        "tau_rise": 0.1, "tau_decay": None, "lambda_": 2, "fs": 20.0, "filter_enabled": True}
    assert catune_params({"parameters": {"tau_rise_s": 0.0, "fs": 0}}, 20.0)["fs"] == 0  # presence, not truth


def test_heartbeat_loss_returns_none_after_the_watchdog(monkeypatch, capsys):
    monkeypatch.setattr(apps, "HEARTBEAT_TIMEOUT", 0.6)
    began = time.monotonic()
    result = run_launch(lambda url: BridgeClient(url).json("/api/v1/heartbeat", raw=b""), timeout=30)
    assert result is None and time.monotonic() - began < 10
    assert "Browser disconnected (heartbeat timeout)." in capsys.readouterr().out


def test_watchdog_not_armed_before_the_first_heartbeat(monkeypatch):
    monkeypatch.setattr(apps, "HEARTBEAT_TIMEOUT", 0.1)
    began = time.monotonic()
    assert run_launch(lambda url: None, timeout=1.0) is None
    assert time.monotonic() - began >= 1.0  # only the timeout ended it


def test_ctrl_c_cancels_and_closes_the_socket(capsys):
    # interrupt_main() only simulates Ctrl-C when SIGINT has Python's default handler; a
    # library used by an earlier test (a Dask cluster, a kernel client) may have replaced it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_cancels_and_closes_the_socket(capsys)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_cancels_and_closes_the_socket(capsys):
    ports = []

    def interrupt(url):
        ports.append(int(url.split("bridge=http://127.0.0.1:")[1].split("&")[0]))
        time.sleep(0.3)
        _thread.interrupt_main()

    assert run_launch(interrupt, timeout=30) is None
    assert "Bridge cancelled by user." in capsys.readouterr().out
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", ports[0]))


def test_socket_closed_when_opening_the_page_fails(monkeypatch):
    ports = []

    def broken_open(url):
        ports.append(int(url.split("bridge=http://127.0.0.1:")[1].split("&")[0]))
        raise RuntimeError("no browser")

    monkeypatch.setattr(apps.webbrowser, "open", broken_open)
    with pytest.raises(RuntimeError, match="no browser"):
        calab.tune(TRACES, 30.0, timeout=5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", ports[0]))


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 3, 4)), ValueError), (np.zeros((0, 5)), ValueError),
    (np.array([[1.0, np.nan]]), ValueError), ("abc", TypeError),
])
def test_bad_traces_are_refused_before_binding(bad, error):
    with pytest.raises(error):
        calab.tune(bad, 30.0, open_browser=False, timeout=1)


@pytest.mark.parametrize("fs", [0, -1, float("nan"), True, "30"])
def test_bad_sampling_rate(fs):
    with pytest.raises(ValueError, match="fs"):
        calab.tune(TRACES, fs, open_browser=False, timeout=1)


@pytest.mark.parametrize("fs, shown", [(np.int64(20), b"20"), (np.float32(12.5), b"12.5"), (25, b"25")])
def test_numpy_sampling_rates_are_served_as_json_numbers(fs, shown):
    seen, sessions = {}, []

    def start_session(url):
        # the page's export ends launch() before this thread has stored what it saw: join it
        session = threading.Thread(target=lambda: seen.update(
            hosted_catune_session(url, {**catune_export(), "parameters": {}})), daemon=True)
        sessions.append(session)
        session.start()

    result = launch("catune", TRACES, fs, open_browser=False, timeout=20, on_ready=start_session)
    sessions[0].join(timeout=20)
    assert json.dumps(seen["metadata"]["sampling_rate_hz"]).encode() == shown
    assert catune_params(result.payload, fs)["fs"] == fs


def test_unknown_and_unlaunchable_apps():
    with pytest.raises(ValueError, match="known apps: .*catune"):
        launch("nope", TRACES)
    with pytest.raises(ValueError, match="does not support the Python bridge"):
        launch("carank", TRACES)


def test_progress_line(monkeypatch, capsys):
    def flow(url):
        client = BridgeClient(url)
        client.json("/api/v1/progress", {"iteration": 2, "max_iterations": 5, "phase": "inference",
                                         "phase_progress": 0.5, "tau_rise": 0.1, "tau_decay": 0.6,
                                         "status": "paused"})
        time.sleep(0.5)
        client.json("/api/v1/params", catune_export())

    run_launch(flow, show_progress=True)
    assert "iter 2/5  inference 50%  τr=0.1000 τd=0.6000  [paused]" in capsys.readouterr().out


# --------------------------------------------------------------------------- notebooks, import
def test_inline_display_in_a_jupyter_kernel(monkeypatch):
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from calab.bridge import notebook

    shown = []
    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: pytest.fail("a notebook must not open a tab"))
    assert notebook.notebook_kind() == "jupyter"
    assert run_launch(lambda url: hosted_catune_session(url, catune_export()), open_browser=True)
    iframe = shown[0]
    assert iframe.src.startswith("http://127.0.0.1:") and "/pages/catune/index.html?bridge=" in iframe.src
    assert "<iframe" in iframe._repr_html_()


def test_colab_goes_through_the_port_proxy(monkeypatch):
    pytest.importorskip("IPython")
    import sys
    import types

    from IPython.core.interactiveshell import InteractiveShell

    served = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(
        serve_kernel_port_as_iframe=lambda port, path, height: served.append((port, path)))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    InteractiveShell.instance()
    run_launch(lambda url: hosted_catune_session(url, catune_export()), open_browser=True)
    port, path = served[0]
    assert path.startswith("/pages/catune/index.html?bridge_secret=") and "bridge=" not in path.replace("bridge_secret", "")


def test_import_calab_stays_light():
    import subprocess
    import sys

    code = ("import sys, calab; calab.tune; calab.HeadlessBrowser; "
            "print(sorted(m for m in ('playwright', 'IPython', 'cupy', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert calab.BridgeVersionError.__mro__[1] is RuntimeError and issubclass(calab.BridgeVersionWarning, UserWarning)
    warnings.simplefilter("default")


def test_headless_browser_without_playwright(monkeypatch):
    import sys

    from calab.bridge.headless import HeadlessBrowser

    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    with pytest.raises(ImportError, match=r"pip install calab\[headless\]") as info:
        HeadlessBrowser()
    assert info.value.__suppress_context__


# --------------------------------------------------------------------------- command line
def _serve_and_answer(monkeypatch, flow):
    """Make every BridgeServer run ``flow(url)`` in a thread once it starts serving."""
    original = BridgeServer.start

    def start(self):
        original(self)
        url = f"x?bridge={self.origin}&bridge_secret={self.session.secret}"
        threading.Thread(target=flow, args=(url,), daemon=True).start()

    monkeypatch.setattr(BridgeServer, "start", start)


def test_cli_tune_prints_the_params_as_json(tmp_path, monkeypatch, capsys):
    from calab import cli

    calab.save_for_tuning(TRACES, 25.0, tmp_path / "rec")
    _serve_and_answer(monkeypatch, lambda url: hosted_catune_session(url, catune_export(fs=25.0)))
    assert cli.main(["tune", str(tmp_path / "rec"), "--no-browser"]) == 0
    out = capsys.readouterr().out
    assert "Bridge server running on http://127.0.0.1:" in out
    assert json.loads(out[out.index("{"):]) == {"tau_rise": 0.05, "tau_decay": 0.5, "lambda_": 0.25,
                                                "fs": 25.0, "filter_enabled": True}


def test_cli_tune_without_params_exits_1(tmp_path, monkeypatch, capsys):
    from calab import cli

    np.save(tmp_path / "t.npy", TRACES)
    monkeypatch.setattr(apps, "HEARTBEAT_TIMEOUT", 0.3)
    _serve_and_answer(monkeypatch, lambda url: BridgeClient(url).json("/api/v1/heartbeat", raw=b""))
    assert cli.main(["tune", str(tmp_path / "t.npy"), "--fs", "30", "--no-browser", "--port", "0"]) == 1
    assert capsys.readouterr().err.strip() == "No parameters received."


def test_cli_tune_is_listed():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "calab", "tune", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--no-browser" in out.stdout and "--fs" in out.stdout
