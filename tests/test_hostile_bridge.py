"""The bridge server against hostile requests: parameter bounds, JSON bombs, a busy server.

Every numeric query or body parameter has a bound (``calab.bridge.limits.BOUNDS``); a
value outside it, of the wrong type or not finite gets 400 naming the bound before any
work starts.  JSON bodies nested 200,000 levels deep or holding ``NaN``/``Infinity`` get
400, never a dropped connection or a 500.  All requests go to the real server on loopback.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from _bridge_client import BridgeClient, catune_export

import calab
from calab.bridge import apps
from calab.bridge import server as server_module
from calab.bridge.limits import (BOUNDS, MAX_JSON_DEPTH, Bound, RequestError, bounds_table, json_nesting_depth,
                                 parse_json)
from calab.bridge.registry import APPS, AppSpec, ComputeRoute, ResultSchema, get_app, register_app
from calab.bridge.server import BridgeServer, BridgeSession, json_response

TRACES = np.random.default_rng(3).normal(size=(4, 300))
DOCS = Path(__file__).resolve().parents[1] / "docs" / "security.md"
DEEP = b"[" * 200_000 + b"]" * 200_000
DEEP_OBJECT = b'{"a":' * 200_000 + b"1" + b"}" * 200_000


def _serve(app: str, config: dict | None = None):
    apps._builtin_apps()
    session = BridgeSession(TRACES, 30.0, get_app(app), config)
    server = BridgeServer(session)
    server.start()
    return server, BridgeClient(f"x?bridge={server.origin}&bridge_secret={session.secret}")


@pytest.fixture
def catune():
    server, client = _serve("catune")
    with server:
        yield client


@pytest.fixture
def cadecon():
    server, client = _serve("cadecon")
    with server:
        yield client


SOLVE = {"cells": [0, 2], "start": 40, "stop": 120, "tau_rise": 0.05, "tau_decay": 0.4, "lambda": 0.1,
         "filter_enabled": False, "points": 400, "max_iters": 50}


def _refused(reply: tuple[int, object], *fragments: str) -> None:
    status, body = reply
    assert status == 400, (status, body)
    message = body["error"]
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# --------------------------------------------------------------------------- query parameters
@pytest.mark.parametrize("query, fragments", [
    ("num_subsets=100000000", ("'num_subsets' must be an integer in [1, 1000]", "100000000")),
    ("num_subsets=0", ("[1, 1000]",)),
    ("num_subsets=1e3", ("'num_subsets' must be an integer",)),
    ("num_subsets=abc", ("'num_subsets' must be an integer",)),
    ("num_subsets=" + "9" * 5000, ("'num_subsets' must be an integer",)),   # beyond int()'s digit limit
    ("target_coverage=1e-9", ("'target_coverage' must be a number in [0.01, 1]",)),
    ("target_coverage=nan", ("'target_coverage' must be a number in [0.01, 1]",)),
    ("target_coverage=inf", ("'target_coverage'",)),
    ("target_coverage=1e999", ("'target_coverage'",)),
    ("aspect_ratio=1e300", ("'aspect_ratio' must be a number in [0.01, 100]",)),
    ("aspect_ratio=-1", ("'aspect_ratio'",)),
    ("seed=99999999999999999999999", ("'seed' must be an integer",)),
    ("seed=1.5", ("'seed' must be an integer",)),
])
def test_subsets_parameters_out_of_bounds_get_400_naming_the_bound(cadecon, query, fragments):
    # Before the bounds, num_subsets=100000000 drove the server to 2.5 GB without a reply.
    _refused(cadecon.json(f"/calab/v1/cadecon/subsets?{query}"), *fragments)


def test_subsets_within_bounds_still_answer(cadecon):
    status, body = cadecon.json("/calab/v1/cadecon/subsets?num_subsets=1000&target_coverage=0.01&aspect_ratio=100&seed=-3")
    assert status == 200 and len(body["subsets"]) == 1000


@pytest.mark.parametrize("path, fragments", [
    ("/calab/v1/cadecon/raster?rows=601", ("'rows' must be an integer in [1, 600]",)),
    ("/calab/v1/cadecon/raster?cols=0", ("'cols' must be an integer in [1, 1600]",)),
    ("/calab/v1/cadecon/raster?rows=1.5", ("'rows'",)),
    ("/calab/v1/cadecon/trace?cell=4", ("'cell' must be an integer in [0, 3]",)),
    ("/calab/v1/cadecon/trace?cell=-1", ("'cell' must be an integer in [0, 3]",)),
    ("/calab/v1/cadecon/trace", ("'cell' is required",)),
    ("/calab/v1/cadecon/trace?cell=0&start=300", ("'start' must be an integer in [0, 299]",)),
    ("/calab/v1/cadecon/trace?cell=0&start=10&stop=10", ("'stop' must be an integer in [11, 300]",)),
    ("/calab/v1/cadecon/trace?cell=0&points=100000000", ("'points' must be an integer in [50, 8192]",)),
    ("/calab/v1/cadecon/trace?cell=0&solve=yes", ("'solve' must be 0 or 1",)),
])
def test_cadecon_query_parameters_out_of_bounds(cadecon, path, fragments):
    _refused(cadecon.json(path), *fragments)


@pytest.mark.parametrize("path, fragments", [
    ("/calab/v1/catune/minimap?cell=4", ("'cell' must be an integer in [0, 3]",)),
    ("/calab/v1/catune/minimap?cell=0&bins=4001", ("'bins' must be an integer in [1, 4000]",)),
    ("/calab/v1/catune/minimap?cell=0&bins=-5", ("'bins'",)),
    ("/calab/v1/catune/minimap?cell=%EF%BC%91", ("'cell' must be an integer",)),   # a full-width digit
    ("/calab/v1/catune/spectrum?cells=0,9", ("'cells' must be an integer in [0, 3]",)),
    ("/calab/v1/catune/spectrum?cells=" + ",".join(["0"] * 65), ("'len(cells)' must be an integer in [1, 64]",)),
    ("/calab/v1/catune/spectrum?cells=", ("'len(cells)'",)),
])
def test_catune_query_parameters_out_of_bounds(catune, path, fragments):
    _refused(catune.json(path), *fragments)


# --------------------------------------------------------------------------- body parameters
@pytest.mark.parametrize("change, fragments", [
    ({"points": 10**9}, ("'points' must be an integer in [16, 8192]",)),
    ({"max_iters": 10**9}, ("'max_iters' must be an integer in [1, 10000]",)),
    ({"max_iters": True}, ("'max_iters' must be an integer",)),
    ({"max_iters": "2000"}, ("'max_iters' must be an integer",)),
    ({"points": 100.5}, ("'points' must be an integer",)),
    ({"cells": [0] * 65}, ("'len(cells)' must be an integer in [1, 64]",)),
    ({"cells": [4]}, ("'cells' must be an integer in [0, 3]",)),
    ({"cells": [True]}, ("'cells' must be an integer",)),
    ({"cells": "0"}, ("'cells' must be a list",)),
    ({"start": -1}, ("'start' must be an integer in [0, 298]",)),
    ({"stop": 301}, ("'stop' must be an integer in [42, 300]",)),
    ({"tau_rise": 0}, ("'tau_rise' must be a number in (0, 100]",)),
    ({"tau_decay": 1e6}, ("'tau_decay' must be a number in (0, 100]",)),
    ({"tau_rise": 0.5}, ("'tau_decay' (0.4 s) must exceed 'tau_rise' (0.5 s)",)),
    ({"lambda": -1}, ("'lambda' must be a number in [0, 1000000]",)),
    ({"lambda": None}, ("'lambda' is required",)),
    ({"filter_enabled": "false"}, ("'filter_enabled' must be true or false",)),
    ({"padded_series": 1}, ("'padded_series' must be true or false",)),
])
def test_solve_body_out_of_bounds(catune, change, fragments):
    _refused(catune.json("/calab/v1/catune/solve", {**SOLVE, **change}), *fragments)


@pytest.mark.parametrize("name", ["points", "max_iters", "tau_rise", "lambda", "start"])
@pytest.mark.parametrize("constant", [b"Infinity", b"-Infinity", b"NaN", b"1e999"])
def test_non_finite_numbers_in_a_solve_request_get_400(catune, name, constant):
    # Python's json accepts these; before, Infinity in points/max_iters gave a 500.
    body = json.dumps({**SOLVE, name: 12345}).replace("12345", constant.decode()).encode()
    _refused(catune.json("/calab/v1/catune/solve", raw=body), "Invalid JSON", constant.decode().lstrip("-"))


def test_a_valid_solve_still_answers(catune):
    status, body = catune.json("/calab/v1/catune/solve", {**SOLVE, "start": 0.0, "stop": 300})
    assert status == 200 and [c["cell"] for c in body["cells"]] == [0, 2] and body["stop"] == 300


@pytest.mark.parametrize("config, fragments", [
    ({"num_subsets": 100_000_000}, ("'config.num_subsets' must be an integer in [1, 1000]",)),
    ({"upsample_target": 10**6}, ("'config.upsample_target' must be an integer in [1, 10000]",)),
    ({"target_coverage": 1e-9}, ("'config.target_coverage' must be a number in [0.01, 1]",)),
    ({"aspect_ratio": 1e9}, ("'config.aspect_ratio'",)),
    ({"max_iterations": "5"}, ("'config.max_iterations' must be an integer",)),
    ({"max_iterations": 2.5}, ("'config.max_iterations' must be an integer",)),
    ({"max_iterations": 500}, ("max_iterations", "200")),          # DeconConfig's own bound, one line
    ({"trace_tol": "0.1"}, ("'config.trace_tol' must be a number",)),
    ({"hp_filter_enabled": "no"}, ("'config.hp_filter_enabled' must be true or false",)),
    ({"patience": True}, ("'config.patience' must be an integer",)),
    ({"no_such_setting": 1}, ("no_such_setting",)),
])
def test_cadecon_start_config_out_of_bounds(cadecon, config, fragments):
    reply = cadecon.json("/calab/v1/cadecon/start", {"config": config})
    _refused(reply, *fragments)
    assert "\n" not in reply[1]["error"]
    assert cadecon.json("/calab/v1/cadecon/state")[1]["status"] == "idle"  # nothing started


def test_cadecon_stop_finalize_must_be_a_flag(cadecon):
    _refused(cadecon.json("/calab/v1/cadecon/stop", {"finalize": "false"}), "'finalize' must be true or false")


def test_decon_refuses_a_setting_beyond_the_bridge_caps_before_serving():
    with pytest.raises(ValueError, match=r"'config.num_subsets' must be an integer in \[1, 1000\]"):
        calab.decon(TRACES, 30.0, num_subsets=5000, open_browser=False, timeout=0.1)


@pytest.mark.parametrize("progress, fragments", [
    ({"iteration": -1}, ("'iteration' must be an integer in [0, 1000000]",)),
    ({"phase_progress": 2.0}, ("'phase_progress' must be a number in [0, 1]",)),
    ({"tau_rise": "fast"}, ("'tau_rise' must be a number",)),
    ({"status": "exploded"}, ("'status' must be one of",)),
    ([1, 2], ("progress must be a JSON object",)),
])
def test_progress_out_of_bounds(cadecon, progress, fragments):
    _refused(cadecon.json("/api/v1/progress", progress), *fragments)


def test_progress_within_bounds_is_stored(cadecon):
    progress = {"iteration": 0, "max_iterations": 5, "phase": "idle", "phase_progress": None,
                "tau_rise": None, "tau_decay": None, "status": "idle"}
    assert cadecon.json("/api/v1/progress", progress) == (200, {"status": "ok"})


# --------------------------------------------------------------------------- deep JSON
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
@pytest.mark.parametrize("path", ["/api/v1/params", "/api/v1/progress", "/api/v1/results/catune",
                                  "/calab/v1/catune/solve"])
def test_deeply_nested_json_gets_400_on_catune_routes(catune, path, body):
    # Before: /params, /progress and /results/catune dropped the connection, /solve gave 500.
    _refused(catune.json(path, raw=body), f"nested deeper than {MAX_JSON_DEPTH} levels")
    assert catune.call("/api/v1/health")[0] == 200


@pytest.mark.parametrize("path", ["/api/v1/results", "/api/v1/results/cadecon", "/calab/v1/cadecon/start",
                                  "/calab/v1/cadecon/stop"])
def test_deeply_nested_json_gets_400_on_cadecon_routes(cadecon, path):
    _refused(cadecon.json(path, raw=DEEP), f"nested deeper than {MAX_JSON_DEPTH} levels")


def test_non_finite_numbers_in_an_export_get_400(catune):
    raw = json.dumps(catune_export()).replace('"lambda": 0.25', '"lambda": NaN').encode()
    _refused(catune.json("/api/v1/params", raw=raw), "NaN is not a JSON number")


def test_json_nesting_depth_ignores_brackets_in_strings_and_escapes():
    document = {"a": ["[[[", {"b": '\\"{{{'}, "\\\\"], "c": [[["]]]"]]]}
    assert json_nesting_depth(json.dumps(document).encode()) == 4
    assert json_nesting_depth(b"[]" * 10) == 1
    assert json_nesting_depth(DEEP) == 200_000
    # exactly the limit is accepted, one more is refused
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(RequestError, match="nested deeper"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    # the depth scan runs in blocks: a string that spans a block boundary keeps its brackets out
    long_string = json.dumps(["x" * ((1 << 20) - 3) + "[" * 100]).encode()
    assert json_nesting_depth(long_string) == 1


# --------------------------------------------------------------------------- the server stays up
def test_server_answers_other_requests_while_a_long_cpu_bound_request_runs():
    """A handler that keeps the interpreter busy (holding the GIL between switches) must not
    stop the server from answering: the reply to /health arrives while the handler runs."""
    running, release, finished = threading.Event(), threading.Event(), threading.Event()

    def busy(session, query, body):
        running.set()
        total = 0
        while not release.is_set():  # pure-Python work until the test has its answer
            total += sum(range(1000))
            if release.wait(0) or total > 10**12:
                break
        finished.set()
        return json_response(200, {"done": True})

    spec = register_app(AppSpec("busyapp", "Busy", "Busy", ResultSchema("busy", "1.0.0"),
                                compute={"work": ComputeRoute("POST", busy)}))
    try:
        session = BridgeSession(TRACES, 30.0, spec)
        with BridgeServer(session) as server:
            server.start()
            client = BridgeClient(f"x?bridge={server.origin}&bridge_secret={session.secret}")
            worker = threading.Thread(target=client.json, args=("/calab/v1/busyapp/work", {}), daemon=True)
            worker.start()
            assert running.wait(10)
            assert client.call("/api/v1/health")[::2] == (200, b"ok")
            assert client.json("/api/v1/metadata")[0] == 200
            assert not finished.is_set()  # both answers came while the handler was still busy
            release.set()
            worker.join(10)
            assert finished.is_set()
    finally:
        APPS.pop("busyapp")


def test_an_unexpected_failure_is_a_json_500_not_a_dropped_connection(catune, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("handshake exploded")

    monkeypatch.setattr(server_module, "check_payload", broken)
    status, body = catune.json("/api/v1/params", catune_export())
    assert status == 500 and "handshake exploded" in body["error"]


# --------------------------------------------------------------------------- the table itself
def test_every_bound_is_in_the_security_docs():
    assert bounds_table() in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("key", list(BOUNDS), ids=[f"{r} {n}" for r, n in BOUNDS])
def test_each_bound_accepts_its_limits_and_refuses_just_outside(key):
    spec: Bound = BOUNDS[key]
    low, high = (spec.low, spec.high) if spec.high > spec.low else (0, 10)  # session limits: try [0, 10]
    limits = {} if spec.high > spec.low else {"low": low, "high": high}
    step = 1 if spec.integer else max(1e-9, abs(high - low) * 1e-6)
    for value, ok in [(low, not spec.low_open), (high, not spec.high_open), (low - step, False),
                      (high + step, False), ((low + high) / 2 if not spec.integer else (low + high) // 2, True)]:
        if ok:
            assert spec.check(value, **limits) == value
        else:
            with pytest.raises(RequestError, match=re.escape(f"'{spec.name}' must be")):
                spec.check(value, **limits)
    for bad in [True, "1", None, float("nan"), float("inf"), [1]]:
        with pytest.raises(RequestError):
            spec.check(bad, **limits)
