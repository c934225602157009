"""The loopback HTTP server between Python and a CaLab web page.

Protocol (spec ``bridge-and-apps.md`` §1): the 0.3.0 endpoints under ``/api/v1`` with
their aliases, status codes and JSON shapes, the ``X-Bridge-Secret`` header, CORS and
Private-Network-Access preflights.  Beyond 0.3.0:

* a thread per request (:class:`http.server.ThreadingHTTPServer`), so a long solve never
  starves the heartbeats;
* the built-in pages as static files under ``/pages/`` (they hold no data, so no secret):
  only regular files that resolve inside the packaged ``pages/`` folder are served;
* every request must name a loopback host (``Host``) and, when a browser sends an
  ``Origin``, come from a loopback page or the hosted app the session opened (DNS
  rebinding and cross-site requests get 403);
* per-app compute endpoints under ``/calab/v1/<app>/<name>``, secret-protected;
* 404s (and every other error) as JSON with CORS headers;
* request bodies capped (413), malformed JSON / ``.npy`` answered with 400; JSON bodies
  are parsed by :func:`calab.bridge.limits.parse_json` (nesting depth limited before
  decoding, no ``NaN``/``Infinity``), every numeric parameter is checked against its
  bound in :data:`calab.bridge.limits.BOUNDS` (400 naming the bound), and an unexpected
  failure is answered with a JSON 500 instead of a dropped connection;
* bound to ``127.0.0.1`` only, whatever the caller asks.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import mimetypes
import secrets
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from calab._errors import one_line_message
from calab.bridge.handshake import BridgeVersionError, check_payload
from calab.bridge.limits import RequestError, bound, parse_json
from calab.bridge.registry import API_PREFIX, APPS, COMPUTE_PREFIX, PAGES_PREFIX, RESERVED_SLUGS, AppSpec

__all__ = ["BridgeServer", "BridgeSession", "LOOPBACK_HOST", "json_response", "origin_of"]

#: the only address the server binds
LOOPBACK_HOST = "127.0.0.1"
#: JSON bodies (results, progress, compute requests) larger than this get 413
MAX_JSON_BYTES = 64 * 1024 * 1024
#: solver version announced in /status; calab has no separate compiled solver crate
SOLVER_VERSION: str | None = None

_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, X-Bridge-Secret"),
)
#: host names (besides loopback IP literals) a request may name in ``Host``
_LOOPBACK_NAMES = frozenset({"localhost"})
_STATIC_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                 ".html": "text/html; charset=utf-8", ".json": "application/json",
                 ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}


def json_response(status: int, obj: Any) -> tuple[int, str, bytes]:
    """A compute handler's reply with a JSON body."""
    return status, "application/json", json.dumps(obj).encode()


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lower-cased; None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _is_loopback_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of_header(value: str) -> str | None:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``)."""
    value = value.strip()
    if not value or any(c in value for c in "/@?# \t"):
        return None
    try:
        parts = urlsplit(f"//{value}")
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    return parts.hostname


def _pages_root() -> Path | None:
    """The packaged ``pages/`` folder as a resolved filesystem path (None inside a zip)."""
    root = resources.files("calab.bridge").joinpath("pages")
    return Path(str(root)).resolve() if isinstance(root, Path) else None


def resolve_page_file(rel: str) -> Path | None:
    """The packaged page file that the URL path ``rel`` (after ``/pages``) names, or None.

    Only a regular file that, after percent-decoding and symlink resolution, lies inside
    the packaged ``pages/`` folder qualifies.  Empty segments (``//``: an absolute path),
    ``.``/``..``, dot-files, encoded slashes or backslashes, drive letters and NUL bytes
    are refused outright rather than normalised, so no spelling of a path outside the
    folder can reach the filesystem.
    """
    if not rel or rel == "/":
        return None
    if not rel.startswith("/"):
        return None
    raw_segments = rel[1:].split("/")
    if raw_segments and raw_segments[-1] == "":
        raw_segments = raw_segments[:-1] + ["index.html"]  # "/pages/catune/" -> its index
    segments = []
    for raw in raw_segments:
        segment = unquote(raw, errors="strict") if "%" in raw else raw
        if (not segment or segment in (".", "..") or segment.startswith(".")
                or any(c in segment for c in "/\\:\x00") or segment != segment.strip()):
            return None
        segments.append(segment)
    root = _pages_root()
    if root is None:  # a zipped install: no symlinks, the segment checks suffice
        return None
    candidate = root.joinpath(*segments)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if resolved.is_dir():
        resolved = (resolved / "index.html").resolve()
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved


class BridgeSession:
    """Everything one ``tune()`` / ``decon()`` call shares with its page.

    Attributes
    ----------
    traces : numpy.ndarray
        ``(n_cells, n_timepoints)`` float64, C-contiguous.
    fs : float
        Sampling rate in Hz (echoed in ``/metadata`` as given).
    app : AppSpec
        The app this session serves.
    config : dict
        Served verbatim by ``/config``.
    secret : str
        64 hex characters; every data request must carry it in ``X-Bridge-Secret``.
    done : threading.Event
        Set by the results JSON POST (accepted or refused).
    """

    def __init__(self, traces: np.ndarray, fs: float, app: AppSpec, config: dict | None = None,
                 secret: str | None = None) -> None:
        self.traces = np.ascontiguousarray(np.atleast_2d(np.asarray(traces, dtype=np.float64)))
        self.fs = fs
        self.app = app
        self.config = {"autorun": False} if config is None else config
        self.secret = secret or secrets.token_hex(32)
        self.done = threading.Event()
        self.payload: dict | None = None
        self.arrays: dict[str, np.ndarray] = {}
        self.warnings: list[str] = []
        self.error: BridgeVersionError | None = None
        self.last_heartbeat: float | None = None
        self.progress: dict | None = None
        self.lock = threading.Lock()
        #: per-app scratch space for compute handlers (cached rankings, minimaps, ...)
        self.cache: dict[str, Any] = {}

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted: JSON cap, or room for a float64 copy of the traces."""
        return max(MAX_JSON_BYTES, self.traces.nbytes + (1 << 20))

    def status(self) -> dict:
        import calab

        body: dict[str, Any] = {"ready": True, "app": self.app.slug,
                                "calab_version": calab.__version__, "solver_version": SOLVER_VERSION}
        if self.app.schema is not None:
            body["results"] = {
                "path": self.app.results_path,
                "arrays": {name: f"{self.app.results_path}/{name}" for name in self.app.arrays},
                "schema": self.app.schema.name,
                "schema_version": self.app.schema.version,
            }
        return body

    def npy_header(self) -> bytes:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buffer, {"descr": "<f8", "fortran_order": False, "shape": self.traces.shape})
        return buffer.getvalue()


class _BodyTooLarge(Exception):
    """args[0]: the limit that the announced body exceeds."""


_PROGRESS_TEXT = {"phase": ("idle", "inference", "kernel-update", "merge", "finalization"),
                  "status": ("idle", "running", "paused", "stopping", "complete")}


def _checked_progress(progress: Any) -> dict:
    """A progress POST (spec §1.10) with its numbers within bounds; RequestError otherwise."""
    if not isinstance(progress, dict):
        raise RequestError("progress must be a JSON object")
    route = f"POST {API_PREFIX}/progress"
    for name in ("iteration", "max_iterations", "phase_progress", "tau_rise", "tau_decay"):
        bound(route, name).from_body(progress, None)
    for name, choices in _PROGRESS_TEXT.items():
        value = progress.get(name)
        if value is not None and value not in choices:
            raise RequestError(f"'{name}' must be one of {', '.join(choices)} (or null), got {value!r:.40}")
    return progress


class _Handler(BaseHTTPRequestHandler):
    server: BridgeServer
    server_version = "calab-bridge"
    # HTTP/1.0: one request per connection, as in 0.3.0 (no keep-alive bookkeeping).

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # ------------------------------------------------------------------ replies
    def _send(self, status: int, content_type: str, body: bytes, extra: tuple = (), *,
              cors: bool = True) -> None:
        self.send_response(status)
        if cors:
            for name, value in _CORS:
                self.send_header(name, value)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, "application/json", json.dumps(obj).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # ------------------------------------------------------------------ helpers
    @property
    def session(self) -> BridgeSession:
        return self.server.session

    def _authorised(self) -> bool:
        sent = self.headers.get("X-Bridge-Secret", "")
        return hmac.compare_digest(sent.encode("utf-8", "replace"), self.session.secret.encode())

    def _body(self, limit: int | None = None) -> bytes:
        """The request body; more than ``limit`` (default: the session's cap) bytes is a 413."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > (self.session.max_body_bytes if limit is None else limit):
            raise _BodyTooLarge(self.session.max_body_bytes if limit is None else limit)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self) -> Any:
        """The body decoded as JSON (at most :data:`MAX_JSON_BYTES`); RequestError if it is not."""
        return parse_json(self._body(MAX_JSON_BYTES))

    # ------------------------------------------------------------------ methods
    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib naming
        extra = ()
        if self.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            extra = (("Access-Control-Allow-Private-Network", "true"),)
        self._send(200, "text/plain", b"", extra)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _foreign_request(self) -> str | None:
        """Why this request comes from outside the session's pages, or None if it does not."""
        if self.server.check_host:
            # Browsers always send Host; only a client already on this machine (HTTP/1.0
            # tools) may leave it out, and it could reach the loopback port anyway.
            header = self.headers.get("Host")
            host = None if header is None else _host_of_header(header)
            if header is not None and (host is None or not _is_loopback_name(host)):
                return "requests must address the bridge by a loopback name (Host header)"
            origin = self.headers.get("Origin")
            if origin is not None and not self.server.origin_allowed(origin):
                return f"origin {origin!r} may not call this bridge"
        return None

    def _dispatch(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
        except ValueError:
            return self._error(400, "malformed request target")
        path = url.path
        try:
            refused = self._foreign_request()
            if refused is not None:
                return self._error(403, refused)
            if method == "GET" and (path == PAGES_PREFIX or path.startswith(PAGES_PREFIX + "/")):
                return self._static(path[len(PAGES_PREFIX):])
            if not self._authorised():
                return self._error(401, "invalid or missing bridge secret")
            if path.startswith(API_PREFIX + "/"):
                return self._protocol(method, path)
            if path.startswith(COMPUTE_PREFIX + "/"):
                return self._compute(method, path[len(COMPUTE_PREFIX) + 1:], dict(parse_qsl(url.query)))
            return self._error(404, f"no such endpoint: {method} {path}")
        except _BodyTooLarge as exc:
            return self._error(413, f"request body larger than {exc.args[0]} bytes")
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as exc:  # noqa: BLE001 - a reply, never a dropped connection
            return self._error(500, f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ static pages
    def _static(self, rel: str) -> None:
        try:
            node = resolve_page_file(rel)
        except UnicodeDecodeError:
            node = None
        if node is None:
            # Static replies carry no CORS header: another site has no business reading them.
            return self._send(404, "application/json", json.dumps({"error": "no such page"}).encode(),
                              cors=False)
        suffix = PurePosixPath(node.name).suffix
        content_type = _STATIC_TYPES.get(suffix) or mimetypes.guess_type(node.name)[0] or "application/octet-stream"
        self._send(200, content_type, node.read_bytes(),
                   (("Cache-Control", "no-cache"), ("Referrer-Policy", "no-referrer"),
                    ("X-Content-Type-Options", "nosniff")), cors=False)

    # ------------------------------------------------------------------ 0.3.0 protocol
    def _protocol(self, method: str, path: str) -> None:
        s = self.session
        if method == "GET":
            if path == f"{API_PREFIX}/health":
                return self._send(200, "text/plain", b"ok")
            if path == f"{API_PREFIX}/status":
                return self._json(200, s.status())
            if path == f"{API_PREFIX}/metadata":
                n_cells, n_timepoints = s.traces.shape[0], s.traces.shape[1]
                return self._json(200, {"sampling_rate_hz": s.fs, "num_cells": int(n_cells),
                                        "num_timepoints": int(n_timepoints)})
            if path == f"{API_PREFIX}/config":
                return self._json(200, s.config)
            if path == f"{API_PREFIX}/traces":
                return self._traces()
            return self._error(404, f"no such endpoint: GET {path}")
        if method != "POST":
            return self._error(404, f"no such endpoint: {method} {path}")
        if path == f"{API_PREFIX}/heartbeat":
            self._body(MAX_JSON_BYTES)
            s.last_heartbeat = time.monotonic()
            return self._json(200, {"status": "ok"})
        if path == f"{API_PREFIX}/progress":
            try:
                progress = _checked_progress(self._json_body())
            except RequestError as exc:
                return self._error(400, str(exc))
            s.progress = progress
            return self._json(200, {"status": "ok"})
        return self._results(path)

    def _traces(self) -> None:
        s = self.session
        header = s.npy_header()
        # Streamed from the array itself: no second copy of a large recording.
        data = memoryview(s.traces).cast("B")
        self.send_response(200)
        for name, value in _CORS:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(header) + data.nbytes))
        self.end_headers()
        self.wfile.write(header)
        chunk = 1 << 24
        for start in range(0, data.nbytes, chunk):
            self.wfile.write(data[start:start + chunk])

    def _results(self, path: str) -> None:
        app = self.session.app
        if path in app.legacy_json_routes:
            return self._json_results()
        prefix = f"{API_PREFIX}/results/"
        if not path.startswith(prefix):
            return self._error(404, f"no such endpoint: POST {path}")
        segments = path[len(prefix):].split("/")
        if len(segments) == 1 and segments[0] in RESERVED_SLUGS and segments[0] in app.arrays:
            return self._array_upload(segments[0])
        slug = segments[0]
        if slug != app.slug:
            if slug in APPS:
                return self._error(409, f"this bridge session is serving '{app.slug}', not '{slug}'")
            return self._error(404, f"unknown app '{slug}'")
        if app.schema is None:
            return self._error(404, f"{app.display_name} has no results format")
        if len(segments) == 1:
            return self._json_results()
        if len(segments) == 2 and segments[1] in app.arrays:
            return self._array_upload(segments[1])
        return self._error(404, f"no such endpoint: POST {path}")

    def _json_results(self) -> None:
        s = self.session
        try:
            payload = self._json_body()
        except RequestError as exc:
            return self._error(400, str(exc))
        if not isinstance(payload, dict):
            return self._error(400, "Results must be a JSON object")
        try:
            warnings = check_payload(s.app, payload, SOLVER_VERSION)
        except BridgeVersionError as exc:
            with s.lock:
                s.error = exc
            s.done.set()
            return self._error(409, str(exc))
        with s.lock:
            s.payload, s.warnings, s.error = payload, warnings, None
        s.done.set()
        return self._json(200, {"status": "ok", "warnings": warnings})

    def _array_upload(self, name: str) -> None:
        body = self._body()
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
            if not isinstance(array, np.ndarray):
                raise ValueError("not a single array")
        except Exception:  # noqa: BLE001 - anything np.load rejects is bad input
            return self._error(400, "Invalid .npy data")
        with self.session.lock:
            self.session.arrays[name] = array
        return self._json(200, {"status": "ok"})

    # ------------------------------------------------------------------ compute
    def _compute(self, method: str, rest: str, query: dict[str, str]) -> None:
        slug, _, name = rest.partition("/")
        app = self.session.app
        if slug != app.slug:
            if slug in APPS:
                return self._error(409, f"this bridge session is serving '{app.slug}', not '{slug}'")
            return self._error(404, f"unknown app '{slug}'")
        route = app.compute.get(name)
        if route is None or route.method != method:
            return self._error(404, f"no such endpoint: {method} {COMPUTE_PREFIX}/{rest}")
        # Compute requests are small JSON documents: the traces-sized cap is for .npy uploads.
        body = self._body(MAX_JSON_BYTES) if method == "POST" else b""
        try:
            status, content_type, reply = route.handler(self.session, query, body)
        except (ValueError, KeyError, TypeError) as exc:
            return self._error(400, one_line_message(exc))
        except Exception as exc:  # noqa: BLE001 - a failed solve must reach the page as JSON
            return self._error(500, f"{type(exc).__name__}: {exc}")
        return self._send(status, content_type, reply)


class BridgeServer(ThreadingHTTPServer):
    """A threaded HTTP server on ``127.0.0.1`` serving one :class:`BridgeSession`.

    Parameters
    ----------
    session : BridgeSession
        Data and state shared with the page.
    port : int or None
        Port to bind; None or 0 lets the OS choose.  A busy port raises ``OSError``.
    allowed_origins : iterable of str, optional
        Page origins (``scheme://host[:port]``) besides loopback ones whose browser
        requests are served: the hosted app's origin when one is opened.
    check_host : bool
        Refuse requests whose ``Host`` is not a loopback name or whose ``Origin`` is not
        allowed (default).  Only a server reached through a trusted proxy on a machine
        the user's browser cannot address directly (Colab's kernel port proxy) turns it off.

    Use as a context manager (or call :meth:`close`) so the socket is always released.
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, session: BridgeSession, port: int | None = None, *,
                 allowed_origins: Iterable[str] = (), check_host: bool = True) -> None:
        self.session = session
        self.check_host = bool(check_host)
        self.allowed_origins = frozenset(o for o in (origin_of(u) for u in allowed_origins) if o)
        self._thread: threading.Thread | None = None
        super().__init__((LOOPBACK_HOST, int(port or 0)), _Handler)

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser page at ``origin`` may call this server."""
        normalised = origin_of(origin)
        if normalised is None:  # "null" (sandboxed frames, file pages) or garbage
            return False
        if normalised in self.allowed_origins:
            return True
        host = urlsplit(normalised).hostname or ""
        return _is_loopback_name(host)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"calab-bridge-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (if started) and close the socket; safe to call twice."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> BridgeServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
