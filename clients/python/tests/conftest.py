"""Fixtures: the real daemon binary started on 127.0.0.1:0 with a generated config and a
temporary data directory (as tests/common/mod.rs does for the Rust tests), and a small
HTTP proxy in front of it that drops, delays or refuses answers on cue.

The binary is `$CREDITSD_BIN`, by default `target/release/creditsd` at the repository's
root. A test that needs it fails (never skips) when it is missing.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import queue
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[3]
DOC_PATH = REPO / "openapi" / "openapi.json"
LISTENING = "listening on http://"


def binary() -> Path:
    b = Path(os.environ.get("CREDITSD_BIN", REPO / "target" / "release" / "creditsd"))
    if not b.is_absolute():
        b = REPO / b
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(
            f"no creditsd binary at {b}: build it (cargo build --release) or set CREDITSD_BIN",
            pytrace=False,
        )
    return b


class Daemon:
    """A running `creditsd serve`; `url` is its address."""

    def __init__(self, config: str = "") -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="creditsd-py-")
        self.config_path = Path(self.dir.name) / "config.toml"
        self.config_path.write_text(config)
        self.data = Path(self.dir.name) / "data"
        self.log: List[str] = []
        self.url = ""
        self.proc: Optional[subprocess.Popen[str]] = None
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, RUST_LOG="info")
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [
                str(binary()),
                "serve",
                "--config",
                str(self.config_path),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(self.data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        found: "queue.Queue[str]" = queue.Queue()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                i = line.find(LISTENING)
                if i >= 0:
                    rest = line[i + len(LISTENING) :]
                    addr = rest.split()[0].split('"')[0] if rest.split() else ""
                    found.put(addr)

        threading.Thread(target=read, daemon=True).start()
        try:
            addr = found.get(timeout=60)
        except queue.Empty:
            self.kill()
            pytest.fail("creditsd did not report its address; log:\n" + "\n".join(self.log), pytrace=False)
        self.url = f"http://{addr}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        self.kill()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """One daemon for the session, no tokens (loopback): tests use accounts of their own."""
    d = Daemon("")
    yield d
    d.close()


@pytest.fixture
def acct() -> str:
    """A fresh account id."""
    return f"py-{uuid.uuid4().hex[:12]}"


def raw(url: str, method: str, path: str, body: Any = None, token: Optional[str] = None) -> Tuple[int, Any, Dict[str, str]]:
    """One request without the client: status, decoded JSON (or text) and headers."""
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    r = conn.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    try:
        return r.status, json.loads(data), hdrs
    except ValueError:
        return r.status, data.decode(), hdrs


# ---- the proxy ----


class Proxy:
    """An HTTP proxy in front of the daemon. `script` takes one action per request, in
    order (then everything passes): `pass`, `drop` (forward, then close the connection
    without answering: the daemon did the work, the client never hears), `delay:S`
    (forward, answer after S seconds), `refuse` (close without forwarding),
    `503` / `429` (answer that with `Retry-After: 1` without forwarding), `503-after`
    (forward, then answer 503: the daemon did the work). `requests` records what came in:
    (method, path, body, the time it arrived)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.split("//", 1)[1]
        self.script: "queue.Queue[str]" = queue.Queue()
        self.requests: List[Tuple[str, str, Any, float]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    action = proxy.script.get_nowait()
                except queue.Empty:
                    action = "pass"
                with proxy.lock:
                    proxy.requests.append(
                        (self.command, self.path, json.loads(body) if body else None, time.monotonic())
                    )
                if action == "refuse":
                    self.close_connection = True
                    return
                if action in ("503", "429"):
                    msg = json.dumps({"error": {"code": "unavailable" if action == "503" else "overloaded", "message": "proxy says so"}}).encode()
                    self.send_response(int(action))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body or None, fwd)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                if action == "drop":
                    self.close_connection = True
                    return
                if action.startswith("delay:"):
                    time.sleep(float(action.split(":", 1)[1]))
                status = 503 if action == "503-after" else r.status
                self.send_response(status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                if action == "503-after":
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def plan(self, *actions: str) -> None:
        for a in actions:
            self.script.put(a)

    def sent(self, path_part: str = "") -> List[Tuple[str, str, Any, float]]:
        with self.lock:
            return [r for r in self.requests if path_part in r[1]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(daemon: Daemon) -> Iterator[Proxy]:
    p = Proxy(daemon.url)
    yield p
    p.close()


@pytest.fixture(scope="session")
def document() -> Dict[str, Any]:
    with open(DOC_PATH) as f:
        doc: Dict[str, Any] = json.load(f)
    return doc
