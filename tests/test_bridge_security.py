"""The bridge server under attack: static-route traversal, Host/Origin checks, CORS scope.

Every case is a raw HTTP request against the real server on loopback, so the request
target reaches the server exactly as written (no client-side normalisation).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

from calab.bridge import apps
from calab.bridge.registry import get_app
from calab.bridge.server import BridgeServer, BridgeSession, origin_of, resolve_page_file

SERVER_SOURCE = Path(apps.__file__).with_name("server.py")


def raw_request(port: int, target: str, *, host: str | None = None, headers: dict | None = None,
                method: str = "GET") -> tuple[int, dict, bytes]:
    """Send one HTTP/1.1 request with ``target`` verbatim; return status, headers, body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host if host is not None else f'127.0.0.1:{port}'}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


@pytest.fixture
def server():
    apps._builtin_apps()
    session = BridgeSession(np.ones((2, 50)), 30.0, get_app("catune"))
    with BridgeServer(session, allowed_origins=["https://miniscope.github.io/CaLab/CaTune/"]) as srv:
        srv.start()
        yield srv


@pytest.fixture
def secret_file():
    handle, name = tempfile.mkstemp(prefix="bridge-secret-", suffix=".txt")
    os.write(handle, b"TOP SECRET CONTENT")
    os.close(handle)
    yield Path(name)
    os.unlink(name)


def traversal_targets(secret_file: Path) -> list[str]:
    absolute = secret_file.as_posix()
    server_py = SERVER_SOURCE.as_posix()
    return [
        f"/pages/{absolute}",                       # "//tmp/..." joined as an absolute path
        f"/pages/{server_py}",
        f"/pages//{absolute.lstrip('/')}",
        f"/pages/%2F{absolute.lstrip('/')}",        # encoded slash
        f"/pages/%2f{absolute.lstrip('/')}",
        f"/pages/catune/%2e%2e/%2e%2e/server.py",   # encoded dots
        "/pages/catune/../../server.py",
        "/pages/../server.py",
        "/pages/catune/..%2f..%2fserver.py",
        "/pages/catune/..%5c..%5cserver.py",        # encoded backslash
        "/pages/catune\\..\\..\\server.py",
        "/pages/C:/Windows/win.ini",                # drive letter
        "/pages/c:%5cwindows%5cwin.ini",
        "/pages/catune/index.html%00.png",          # NUL byte
        "/pages/catune/%00",
        "/pages/.hidden",
        "/pages/catune/%ff%fe",                     # undecodable percent escapes
    ]


def test_no_traversal_form_reaches_a_file_outside_pages(server, secret_file):
    for target in traversal_targets(secret_file):
        status, headers, body = raw_request(server.port, target)
        assert status == 404, target
        assert b"TOP SECRET" not in body and b"BridgeServer" not in body, target
        assert "access-control-allow-origin" not in headers, target
    # the absolute-form request target (RFC 9112 §3.2.2) of the same paths
    for target in traversal_targets(secret_file)[:3]:
        status, _, body = raw_request(server.port, f"http://127.0.0.1:{server.port}{target}")
        assert status == 404 and b"TOP SECRET" not in body, target


def test_a_symlink_out_of_pages_is_not_followed(tmp_path, secret_file, monkeypatch):
    pages = tmp_path / "pages"
    (pages / "catune").mkdir(parents=True)
    (pages / "catune" / "index.html").write_text("<html>CaTune</html>")
    (pages / "catune" / "leak.txt").symlink_to(secret_file)
    (pages / "outside").symlink_to(secret_file.parent, target_is_directory=True)
    from calab.bridge import server as server_module

    monkeypatch.setattr(server_module, "_pages_root", lambda: pages.resolve())
    assert resolve_page_file("/catune/index.html") == (pages / "catune" / "index.html").resolve()
    assert resolve_page_file("/catune/") == (pages / "catune" / "index.html").resolve()
    assert resolve_page_file("/catune/leak.txt") is None
    assert resolve_page_file(f"/outside/{secret_file.name}") is None


def test_pages_still_served_without_cors(server):
    status, headers, body = raw_request(server.port, "/pages/catune/index.html")
    assert status == 200 and b"CaTune" in body and headers["content-type"].startswith("text/html")
    assert "access-control-allow-origin" not in headers and headers["referrer-policy"] == "no-referrer"
    status, headers, _ = raw_request(server.port, "/pages/catune/")
    assert status == 200
    status, _, _ = raw_request(server.port, "/pages/vendor/uplot/uPlot.iife.min.js")
    assert status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io",
                                  "localhost.evil.example", "192.168.1.5", "", "[::1]@evil", "a b"])
def test_dns_rebinding_hosts_are_refused_on_every_route(server, host):
    secret = {"X-Bridge-Secret": server.session.secret}
    for target in ["/pages/catune/index.html", "/api/v1/metadata", "/api/v1/traces", "/api/v1/health",
                   "/calab/v1/catune/overview"]:
        status, _, body = raw_request(server.port, target, host=host, headers=secret)
        assert status == 403 and b"loopback" in body, (host, target)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:1", "[::1]", "127.0.0.2:9"])
def test_loopback_hosts_are_served(server, host):
    status, _, body = raw_request(server.port, "/api/v1/health", host=host,
                                  headers={"X-Bridge-Secret": server.session.secret})
    assert (status, body) == (200, b"ok")


def test_origins(server):
    secret = {"X-Bridge-Secret": server.session.secret}
    for origin in ["http://127.0.0.1:8765", "http://localhost:3000", "https://miniscope.github.io"]:
        status, headers, _ = raw_request(server.port, "/api/v1/metadata", headers={**secret, "Origin": origin})
        assert status == 200 and headers["access-control-allow-origin"] == "*", origin
    for origin in ["https://evil.example", "null", "http://127.0.0.1.evil.example", "file://", "garbage"]:
        status, _, _ = raw_request(server.port, "/api/v1/metadata", headers={**secret, "Origin": origin})
        assert status == 403, origin


def test_colab_proxy_mode_skips_the_host_check():
    session = BridgeSession(np.ones((2, 50)), 30.0, get_app("catune"))
    with BridgeServer(session, check_host=False) as srv:
        srv.start()
        status, _, _ = raw_request(srv.port, "/api/v1/health", host="8000-abc.colab.googleusercontent.com",
                                   headers={"X-Bridge-Secret": session.secret})
        assert status == 200
        assert raw_request(srv.port, "/pages//etc/passwd")[0] == 404


def test_origin_of():
    assert origin_of("https://miniscope.github.io/CaLab/CaTune/") == "https://miniscope.github.io"
    assert origin_of("http://[::1]:7/x") == "http://[::1]:7"
    assert origin_of("HTTP://LocalHost:9") == "http://localhost:9"
    assert origin_of("javascript:alert(1)") is None and origin_of("null") is None
