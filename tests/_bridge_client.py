"""A minimal hosted-app client of the bridge protocol (spec bridge-and-apps.md §1.11).

It does what the hosted CaTune does, over plain HTTP: parse the launch URL, fetch traces
and metadata, beat, and post an export.  Shared by the protocol tests and the 0.3.0
equivalence test (which runs it against the reference package's server).
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import numpy as np


class BridgeClient:
    def __init__(self, url: str) -> None:
        query = parse_qs(urlsplit(url).query)
        self.origin = query["bridge"][0]
        self.secret = query.get("bridge_secret", [""])[0]

    def call(self, path: str, data: bytes | None = None, *, secret: str | None = None,
             method: str | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        sent = dict(headers or {})
        secret = self.secret if secret is None else secret
        if secret:
            sent["X-Bridge-Secret"] = secret
        request = urllib.request.Request(self.origin + path, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, path: str, value=None, raw: bytes | None = None, **kw) -> tuple[int, object]:
        data = raw if raw is not None else (None if value is None else json.dumps(value).encode())
        status, _, body = self.call(path, data, headers={"Content-Type": "application/json"} if data else None, **kw)
        return status, json.loads(body) if body else None

    def traces(self) -> np.ndarray:
        status, _, body = self.call("/api/v1/traces")
        assert status == 200
        return np.load(io.BytesIO(body), allow_pickle=False)


def catune_export(tau_rise=0.05, tau_decay=0.5, lam=0.25, fs=30.0, filter_enabled=True,
                  schema_version="1.2.0") -> dict:
    """An export document shaped like the hosted CaTune's (spec §1.7)."""
    dt = 1 / fs
    d, r = np.exp(-dt / tau_decay), np.exp(-dt / tau_rise)
    return {
        "schema_version": schema_version,
        "catune_version": "dev",
        "export_date": "2026-01-01T00:00:00.000Z",
        "parameters": {"tau_rise_s": tau_rise, "tau_decay_s": tau_decay, "t_peak_s": 0.1, "fwhm_s": 0.6,
                       "lambda": lam, "sampling_rate_hz": fs, "filter_enabled": filter_enabled},
        "ar2_coefficients": {"g1": d + r, "g2": -d * r, "decayRoot": d, "riseRoot": r, "dt": dt},
        "formulation": {},
        "metadata": {"num_cells": 3, "num_timepoints": 200},
    }


def hosted_catune_session(url: str, export: dict) -> dict:
    """Run the hosted CaTune's flow against the server at ``url``; return what it saw."""
    client = BridgeClient(url)
    traces = client.traces()
    _, metadata = client.json("/api/v1/metadata")
    beat, _ = client.json("/api/v1/heartbeat", raw=b"")
    status, reply = client.json("/api/v1/params", export)
    return {"traces": traces, "metadata": metadata, "heartbeat": beat, "status": status, "reply": reply}


def observe_protocol(url: str, export: dict) -> dict:
    """Everything a hosted app can observe of a CaTune session, ending with an export.

    The export is sent as schema 1.1.0 (compatible, so accepted with one warning); it
    completes the session.  Version strings are left out (they differ by design); all
    else must match 0.3.0.
    """
    client = BridgeClient(url)
    seen: dict = {}
    seen["health"] = client.call("/api/v1/health")[::2]
    seen["metadata"] = client.call("/api/v1/metadata")[::2]
    seen["config"] = client.json("/api/v1/config")
    status = client.json("/api/v1/status")
    seen["status"] = (status[0], {k: v for k, v in status[1].items() if not k.endswith("_version")})
    seen["traces"] = client.call("/api/v1/traces")[::2]
    seen["no_secret"] = client.json("/api/v1/metadata", secret="")
    seen["wrong_secret"] = client.json("/api/v1/traces", secret="f" * 64)
    code, headers, body = client.call("/api/v1/params", method="OPTIONS", secret="",
                                      headers={"Access-Control-Request-Private-Network": "true"})
    seen["preflight"] = (code, body, {k: v for k, v in headers.items() if k.startswith("Access-Control")})
    seen["heartbeat"] = client.json("/api/v1/heartbeat", raw=b"")
    seen["bad_json"] = client.json("/api/v1/params", raw=b"{oops")
    seen["not_object"] = client.json("/api/v1/results/catune", [1])
    seen["wrong_app"] = client.json("/api/v1/results/cadecon", export)
    seen["activity_alias"] = client.call("/api/v1/results/activity", b"x", method="POST")[0]
    warned = client.json("/api/v1/params", {**export, "schema_version": "1.1.0"})
    seen["compatible"] = (warned[0], warned[1]["status"], len(warned[1]["warnings"]))
    return seen
