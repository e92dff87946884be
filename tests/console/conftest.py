"""Fixtures of the console's browser tests: the real release daemon (started as the
client's tests start it, clients/python/tests/conftest.py), headless Debian chromium
driven by selenium, and helpers to read what the page shows and what it asked for.

Nothing here skips: a missing daemon, chromium or chromedriver fails the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]

# The client's fixtures module, loaded under a name of its own (it is a conftest too).
_spec = importlib.util.spec_from_file_location("creditsd_daemon_fixtures", REPO / "clients/python/tests/conftest.py")
assert _spec and _spec.loader
daemon_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(daemon_fixtures)
Daemon = daemon_fixtures.Daemon
raw = daemon_fixtures.raw

READ_TOKEN = f"console-read-{uuid.uuid4().hex}"
DEBIT_TOKEN = f"console-debit-{uuid.uuid4().hex}"
ADMIN_TOKEN = f"console-admin-{uuid.uuid4().hex}"
WIDE = (1280, 900)
PHONE = (390, 844)


def find_binary(env: str, *names: str) -> str:
    given = os.environ.get(env)
    if given:
        return given
    for n in names:
        p = shutil.which(n) or (f"/usr/bin/{n}" if os.access(f"/usr/bin/{n}", os.X_OK) else None)
        if p:
            return p
    pytest.fail(f"no {names[0]} found (run scripts/browser-env, or set {env})", pytrace=False)


def hash_token(token: str) -> str:
    out = subprocess.run(
        [str(daemon_fixtures.binary()), "hash-token", token], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Any]:
    """A daemon without tokens (loopback): every test uses accounts of its own."""
    d = Daemon("")
    yield d
    d.close()


@pytest.fixture(scope="session")
def token_daemon() -> Iterator[Any]:
    """A daemon with three tokens: one that may only read, one that may read and debit
    (and so refund), one admin."""
    d = Daemon(
        f"""
[[auth.tokens]]
name = "console-reader"
sha256 = "{hash_token(READ_TOKEN)}"
scopes = ["read"]

[[auth.tokens]]
name = "console-debitor"
sha256 = "{hash_token(DEBIT_TOKEN)}"
scopes = ["debit", "read"]

[[auth.tokens]]
name = "console-admin"
sha256 = "{hash_token(ADMIN_TOKEN)}"
scopes = ["admin"]
"""
    )
    yield d
    d.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = find_binary("CHROMIUM", "chromium", "chromium-browser")
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--disable-default-apps",
        "--metrics-recording-only",
        f"--window-size={WIDE[0]},{WIDE[1]}",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=find_binary("CHROMEDRIVER", "chromedriver"))
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


class Page:
    """The console in the browser, on one daemon."""

    def __init__(self, drv: webdriver.Chrome, url: str) -> None:
        self.drv = drv
        self.url = url
        self.requests: List[Dict[str, Any]] = []
        self.console: List[Dict[str, Any]] = []

    def size(self, wh: Tuple[int, int]) -> None:
        # The window's outer size: make the viewport (innerWidth) what was asked for.
        self.drv.set_window_size(*wh)
        inner = self.drv.execute_script("return [window.innerWidth, window.innerHeight]")
        self.drv.set_window_size(wh[0] + (wh[0] - inner[0]), wh[1] + (wh[1] - inner[1]))

    def load(self, fragment: str = "") -> None:
        self.drv.get(f"{self.url}/console{fragment}")
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")

    def wait(self, cond: Any, timeout: float = 20, what: str = "") -> Any:
        return WebDriverWait(self.drv, timeout, poll_frequency=0.1).until(cond, what)

    def tid(self, name: str) -> WebElement:
        return self.drv.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')

    def tids(self, name: str) -> List[WebElement]:
        return self.drv.find_elements(By.CSS_SELECTOR, f'[data-testid="{name}"]')

    def text(self, name: str) -> str:
        return str(self.tid(name).text).strip()

    def open(self, account: str) -> None:
        box = self.tid("account-id")
        box.clear()
        box.send_keys(account)
        self.tid("account-open").click()
        self.wait_open(account)

    def wait_open(self, account: str) -> None:
        self.wait(
            lambda d: d.find_element(By.ID, "account-title").text == account
            and d.find_element(By.ID, "account").is_displayed()
            and len(self.tids("ledger-row")) > 0
            and d.find_elements(By.CSS_SELECTOR, '[data-testid="usage-chart"] text'),
            what=f"account {account} shown",
        )

    def collect_logs(self) -> None:
        for entry in self.drv.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                req = msg["params"]["request"]
                self.requests.append({"url": req["url"], "method": req["method"], "headers": req.get("headers", {})})
        self.console.extend(self.drv.get_log("browser"))

    def check_stayed_home(self) -> None:
        """Every request went to the daemon; no CSP violation, no script error."""
        self.collect_logs()
        assert self.requests, "no request recorded"
        for r in self.requests:
            assert r["url"].startswith(self.url + "/") or r["url"].startswith("data:"), r["url"]
        bad = [c for c in self.console if c.get("level") == "SEVERE" and not _expected_refusal(c)]
        assert not bad, bad


def _expected_refusal(c: Dict[str, Any]) -> bool:
    # Chromium logs every non-2xx fetch answer ("Failed to load resource: ... 400"): the
    # scope probes and the refusals the tests provoke are such answers, and nothing else.
    return "Failed to load resource: the server responded with a status of" in c.get("message", "")


@pytest.fixture
def page(browser: webdriver.Chrome, daemon: Any) -> Iterator[Page]:
    browser.get_log("performance")
    browser.get_log("browser")
    p = Page(browser, daemon.url)
    p.size(WIDE)
    yield p
    browser.execute_script("try { sessionStorage.clear() } catch (e) {}")
    browser.get("about:blank")


@pytest.fixture
def acct() -> str:
    return f"console-{uuid.uuid4().hex[:10]}"


def api(url: str, method: str, path: str, body: Any = None, token: Optional[str] = None) -> Tuple[int, Any]:
    status, data, _ = raw(url, method, path, body, token)
    return status, data


def ok(url: str, method: str, path: str, body: Any = None, token: Optional[str] = None) -> Any:
    status, data = api(url, method, path, body, token)
    assert 200 <= status < 300, (method, path, status, data)
    return data
