"""creditsd.webhooks.verify: against the signature src/webhooks.rs computes (an HMAC-SHA256
of the body, hex, after `sha256=`) and against a real delivery from the daemon."""

from __future__ import annotations

import http.server
import json
import queue
import socketserver
import threading
from typing import Any, Dict, Tuple

from conftest import Daemon
from creditsd import Client
from creditsd.models import Event
from creditsd.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, sign, verify


def test_the_signature_of_webhooks_rs() -> None:
    # RFC 4231 test case 2, as src/webhooks.rs tests it.
    body, secret = b"what do ya want for nothing?", "Jefe"
    header = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(body, secret) == header
    assert verify(body, header, secret)
    assert verify(body, header.upper().replace("SHA256=", "sha256="), secret), "hex in either case"
    assert verify(body, header, secret.encode())
    assert not verify(body + b" ", header, secret), "a changed body"
    assert not verify(body, header, "jefe"), "another secret"
    assert not verify(body, header[len("sha256="):], secret), "no scheme"
    assert not verify(body, "sha1=" + header[len("sha256="):], secret), "another scheme"
    assert not verify(body, "sha256=zz", secret)
    assert not verify(body, "", secret)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records each delivery."""

    def __init__(self) -> None:
        self.got: "queue.Queue[Tuple[bytes, Dict[str, str]]]" = queue.Queue()
        got = self.got

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got.put((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_real_delivery_verifies(acct: str) -> None:
    secret = "whsec-" + acct
    rx = Receiver()
    d = Daemon(
        f'[[webhooks]]\nurl = "{rx.url}"\nsecret = "{secret}"\nevents = ["purchase.completed"]\n'
        "backoff_initial_ms = 50\n"
    )
    try:
        with Client(d.url) as c:
            c.create_account(acct)
            c.purchase(acct, "pack_100", payment_ref="ch-" + acct)
        body, headers = rx.got.get(timeout=30)
        assert verify(body, headers[SIGNATURE_HEADER.lower()], secret)
        assert not verify(body, headers[SIGNATURE_HEADER.lower()], secret + "x")
        assert not verify(body.replace(b"pack", b"pick") + b" ", headers[SIGNATURE_HEADER.lower()], secret)
        ev = Event.from_json(json.loads(body))
        assert (ev.type, ev.account, ev.balances["packs"]) == ("purchase.completed", acct, 100)
        assert headers[EVENT_ID_HEADER.lower()] == str(ev.id)
    finally:
        d.close()
        rx.close()
