"""The console (`GET /console`) in headless chromium against the real release daemon: what
it shows is what the API says, its chart, ledger paging, feed and forms work, a
read-only token sees no forms, it stays on its own origin, and it works from the
keyboard and at phone width. The run writes docs/console.png (the account page, 1280 px).
"""

from __future__ import annotations

import datetime as dt
import html.parser
import time
from typing import Any, Dict, List

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from conftest import ADMIN_TOKEN, PHONE, READ_TOKEN, REPO, WIDE, Augmenting, Page, api, ok, raw

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def debit(url: str, acct: str, op: str, qty: int = 1, key: str = "", token: Any = None) -> Any:
    body = {"operation": op, "quantity": qty, "idempotency_key": key or f"{acct}-{op}-{qty}-{time.monotonic_ns()}"}
    return ok(url, "POST", f"/v1/accounts/{acct}/debits", body, token)


def busy_account(url: str, acct: str, token: Any = None) -> None:
    """An account with a plan, a pack, debits of several operations and an open hold."""
    ok(url, "POST", "/v1/accounts", {"id": acct, "plan": "growth"}, token)
    ok(url, "POST", f"/v1/accounts/{acct}/purchases", {"pack": "pack_100", "payment_ref": f"{acct}-p1"}, token)
    debit(url, acct, "sample_image", 3, token=token)
    debit(url, acct, "face_generation", 2, token=token)
    debit(url, acct, "caption_generation", 4, token=token)
    debit(url, acct, "video_generation", 1, token=token)
    ok(url, "POST", f"/v1/accounts/{acct}/holds", {"operation": "sample_image", "idempotency_key": f"{acct}-h"}, token)


def shown_numbers(page: Page) -> Dict[str, int]:
    return {
        n: int(page.text(n))
        for n in ("available", "balance-monthly", "balance-promo", "balance-free", "balance-packs", "balance-held")
    }


def api_numbers(a: Dict[str, Any]) -> Dict[str, int]:
    b = a["balances"]
    return {
        "available": a["available"],
        "balance-monthly": b["monthly"],
        "balance-promo": b.get("promo", 0),
        "balance-free": b["free"],
        "balance-packs": b["packs"],
        "balance-held": a["held"],
    }


# ---- the page as served ----


class Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: List[tuple] = []

    def handle_starttag(self, tag: str, attrs: List[tuple]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_is_served_with_a_strict_policy_and_no_inline_code(daemon: Any) -> None:
    status, body, headers = raw(daemon.url, "GET", "/console")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    p = Tags()
    p.feed(body)
    scripts = [a for t, a in p.tags if t == "script"]
    assert scripts and all(a.get("src", "").startswith("/console/") for a in scripts), scripts
    assert not [t for t, _ in p.tags if t == "style"]
    assert not [(t, a) for t, a in p.tags if "style" in a or any(k.startswith("on") for k in a)]
    for t, a in p.tags:
        for k in ("src", "href", "action"):
            v = a.get(k, "")
            assert not v.startswith(("http:", "https:", "//")), (t, a)
        if t == "input":
            assert a.get("id") and f'for="{a["id"]}"' in body, f"input {a} has no <label>"
    for path, ctype in (("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")):
        status, _, h = raw(daemon.url, "GET", path)
        assert status == 200 and h["content-type"].startswith(ctype), (path, status, h)
        assert h["content-security-policy"] == CSP and h["x-content-type-options"] == "nosniff"
    assert raw(daemon.url, "GET", "/console/app.js")[0] == 404
    js = (REPO / "console/console.js").read_text()
    for word in ("localStorage", "document.cookie", "eval(", "innerHTML", "http://", "https://"):
        assert word not in js.replace("http://www.w3.org/2000/svg", ""), word


# ---- an account ----


def test_the_numbers_on_the_page_are_the_apis_and_the_chart_has_todays_bars(page: Page, acct: str) -> None:
    busy_account(page.url, acct)
    page.load()
    page.open(acct)
    a = ok(page.url, "GET", f"/v1/accounts/{acct}")
    page.wait(lambda d: shown_numbers(page) == api_numbers(a), what="numbers")
    assert page.text("status") == a["status"] == "active"
    assert page.text("plan") == a["plan"] == "growth"
    assert page.drv.find_element(By.ID, "next-reset").text.startswith(a["next_reset_at"][:10])
    # What the balance buys: the daemon's figures, or available / price.
    prices = ok(page.url, "GET", "/v1/pricing")["operations"]
    want = a.get("affordable") or {op: a["available"] // p for op, p in prices.items()}
    for op, n in want.items():
        chip = page.drv.find_element(By.CSS_SELECTOR, f'#affordable li[data-operation="{op}"]')
        assert chip.text.split()[0] == str(n), (op, chip.text)
    assert len(page.tids("hold-row")) == len(a["holds"]) == 1

    # The chart: today's stacked bars, one per operation used, with the API's credits.
    today = dt.datetime.now(dt.timezone.utc).date()
    start = f"{today}T00:00:00Z"
    end = f"{today + dt.timedelta(days=1)}T00:00:00Z"
    usage = ok(page.url, "GET", f"/v1/accounts/{acct}/usage?from={start}&to={end}&granularity=day")
    ops = usage["periods"][-1]["operations"]
    assert len(ops) == 4
    chart = page.tid("usage-chart")
    assert chart.tag_name == "svg"
    bars = chart.find_elements(By.CSS_SELECTOR, f'rect.bar[data-day="{today}"]')
    assert {b.get_attribute("data-operation"): int(b.get_attribute("data-credits")) for b in bars} == {
        op: u["credits"] for op, u in ops.items()
    }
    assert all(float(b.get_attribute("height")) > 0 for b in bars)
    fc = ok(page.url, "GET", f"/v1/accounts/{acct}/forecast")
    assert fc["burn_rate_7d"] > 0
    assert chart.find_elements(By.CSS_SELECTOR, 'path[data-testid="forecast-line"]')
    if fc["projected_exhaustion_at"]:
        assert str(round(fc["burn_rate_7d"], 2))[:3] in page.drv.find_element(By.ID, "forecast").text

    # 90 days: the page asks the API for 90 days and draws today's bars again.
    page.collect_logs()
    page.tid("range-90").click()
    page.wait(lambda d: page.tid("range-90").get_attribute("aria-pressed") == "true")
    page.wait(lambda d: "90 days" in d.find_element(By.ID, "usage-caption").text)
    page.collect_logs()
    usage_asks = [r["url"] for r in page.requests if "/usage?" in r["url"]]
    first = (today - dt.timedelta(days=89)).isoformat()
    assert any(f"from={first}" in u for u in usage_asks), usage_asks
    assert page.tid("usage-chart").find_elements(By.CSS_SELECTOR, f'rect.bar[data-day="{today}"]')
    page.tid("range-30").click()
    page.wait(lambda d: "30 days" in d.find_element(By.ID, "usage-caption").text)

    # The whole account page at 1280 px: the window as tall as the page, then back.
    page.drv.execute_script("window.scrollTo(0, 0)")
    tall = page.drv.execute_script("return document.documentElement.scrollHeight")
    page.size((WIDE[0], min(tall, 4000)))
    page.drv.save_screenshot(str(REPO / "docs/console.png"))
    page.size(WIDE)
    page.check_stayed_home()


def test_the_ledger_pages_back_without_duplicates(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct, "plan": "agency"})
    items = [{"account": acct, "operation": "caption_generation", "idempotency_key": f"c{i}"} for i in range(60)]
    results = ok(page.url, "POST", "/v1/debits", {"debits": items})["results"]
    assert all(r.get("code", 200) == 200 for r in results)
    every: List[int] = []
    cursor = None
    while True:
        q = "limit=500" + (f"&before={cursor}" if cursor else "")
        p = ok(page.url, "GET", f"/v1/accounts/{acct}/ledger?{q}")
        every += [e["seq"] for e in p["entries"]]
        cursor = p["next"]
        if not cursor:
            break
    page.load(f"#account={acct}")
    page.wait_open(acct)
    seqs = lambda: [int(r.get_attribute("data-seq")) for r in page.tids("ledger-row")]  # noqa: E731
    counts = [len(seqs())]
    while page.tid("ledger-more").is_displayed():
        before = len(seqs())
        page.tid("ledger-more").click()
        page.wait(lambda d: len(seqs()) > before, what="an older page")
        counts.append(len(seqs()))
    assert counts[0] < len(every) and len(counts) >= 3, counts
    assert seqs() == every, "every entry once, newest first"
    assert len(set(seqs())) == len(seqs())
    page.check_stayed_home()


def test_a_grant_made_on_the_page_is_in_the_books(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct})
    page.load()
    page.open(acct)
    before = ok(page.url, "GET", f"/v1/accounts/{acct}")
    reason = f"support ticket {acct}"
    Select(page.tid("grant-bucket")).select_by_value("packs")
    page.tid("grant-credits").send_keys("17")
    page.tid("grant-reason").send_keys(reason)
    page.tid("grant-submit").click()
    page.wait(lambda d: d.find_element(By.ID, "notice").is_displayed(), what="the grant's notice")
    after = ok(page.url, "GET", f"/v1/accounts/{acct}")
    assert after["balances"]["packs"] == before["balances"]["packs"] + 17
    assert after["available"] == before["available"] + 17
    top = ok(page.url, "GET", f"/v1/accounts/{acct}/ledger?limit=1")["entries"][0]
    assert (top["kind"], top["credits"], top["reason"], top["bucket"]) == ("grant", 17, reason, "packs")
    assert len(top["idempotency_key"]) >= 32, "a UUID from the page"
    page.wait(lambda d: shown_numbers(page) == api_numbers(after), what="the page shows the new balance")
    page.wait(lambda d: page.tids("ledger-row")[0].get_attribute("data-kind") == "grant")
    # The promo bucket asks for its expiry.
    assert not page.tid("grant-expires").is_displayed()
    Select(page.tid("grant-bucket")).select_by_value("promo")
    assert page.tid("grant-expires").is_displayed()
    page.check_stayed_home()


def test_a_refused_action_shows_its_code_and_changes_nothing(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct})
    page.load()
    page.open(acct)
    seq = ok(page.url, "GET", f"/v1/accounts/{acct}")["seq"]
    for credits in ("0", str(2**53)):
        page.tid("grant-credits").clear()
        page.tid("grant-credits").send_keys(credits)
        page.tid("grant-reason").clear()
        page.tid("grant-reason").send_keys("should be refused")
        page.tid("grant-submit").click()
        page.wait(lambda d: page.tid("error").is_displayed(), what="the error")
        assert "invalid_request" in page.text("error"), page.text("error")
        assert page.tid("error").find_element(By.XPATH, "ancestor::form").get_attribute("id") == "grant-form"
    assert ok(page.url, "GET", f"/v1/accounts/{acct}")["seq"] == seq

    # A refund of a debit the account never made: the code the API gives, on the page.
    body = {"reason": "no such debit", "idempotency_key": "r-1"}
    status, answer = api(page.url, "POST", f"/v1/accounts/{acct}/debits/nope/refund", body)
    assert status in (404, 409), (status, answer)
    page.tid("refund-key").send_keys("nope")
    page.tid("refund-reason").send_keys("no such debit")
    page.tid("refund-submit").click()
    page.wait(lambda d: answer["error"]["code"] in page.text("error"), what="the refund's code")
    assert page.tid("error").find_element(By.XPATH, "ancestor::form").get_attribute("id") == "refund-form"

    # An unknown account: its code where the id was typed.
    page.tid("account-id").clear()
    page.tid("account-id").send_keys(f"{acct}-missing")
    page.tid("account-open").click()
    page.wait(lambda d: "account_not_found" in page.text("error"))
    assert ok(page.url, "GET", f"/v1/accounts/{acct}")["seq"] == seq
    page.check_stayed_home()


def test_purchase_and_plan_forms_and_the_live_feed(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct})
    other = f"{acct}-other"
    ok(page.url, "POST", "/v1/accounts", {"id": other})
    page.load()
    page.open(acct)
    page.wait(lambda d: "Following" in d.find_element(By.ID, "feed-state").text, what="the feed followed")
    rows0 = len(page.tids("feed-row"))
    # Made elsewhere, the purchase shows up in the feed of the account open, not the other's.
    ok(page.url, "POST", f"/v1/accounts/{other}/purchases", {"pack": "pack_250", "payment_ref": f"{other}-1"})
    ok(page.url, "POST", f"/v1/accounts/{acct}/purchases", {"pack": "pack_100", "payment_ref": f"{acct}-1"})
    page.wait(lambda d: len(page.tids("feed-row")) > rows0, what="a feed row")
    types = [r.get_attribute("data-type") for r in page.tids("feed-row")]
    assert "purchase.completed" in types
    page.wait(lambda d: page.text("balance-packs") == "100", what="the balance follows the feed")

    Select(page.tid("purchase-pack")).select_by_value("pack_500")
    page.tid("purchase-submit").click()
    page.wait(lambda d: page.text("balance-packs") == "600", what="the purchase")
    Select(page.tid("plan-select")).select_by_value("growth")
    page.tid("plan-submit").click()
    page.wait(lambda d: page.text("plan") == "growth", what="the plan change")
    a = ok(page.url, "GET", f"/v1/accounts/{acct}")
    assert (a["plan"], a["balances"]["packs"]) == ("growth", 600)
    page.wait(lambda d: "plan.changed" in [r.get_attribute("data-type") for r in page.tids("feed-row")])
    feed_accounts = set()
    for e in ok(page.url, "GET", "/v1/events?after=0&limit=1000")["events"]:
        if e["type"] == "purchase.completed" and e["account"] == other:
            feed_accounts.add(str(e["id"]))
    shown_ids = {r.get_attribute("data-id") for r in page.tids("feed-row")}
    assert feed_accounts and not (feed_accounts & shown_ids), "another account's event shown"
    page.check_stayed_home()


def test_the_keyboard_opens_an_account(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct})
    page.load()
    # From the top of the page (nothing focused), Tab until the account id has the focus.
    page.drv.execute_script("document.activeElement && document.activeElement.blur()")
    for _ in range(10):
        if page.drv.switch_to.active_element.get_attribute("data-testid") == "account-id":
            break
        ActionChains(page.drv).send_keys(Keys.TAB).perform()
    focused = page.drv.switch_to.active_element
    assert focused.get_attribute("data-testid") == "account-id", "Tab reaches the account id"
    focused.send_keys(acct, Keys.ENTER)
    page.wait_open(acct)
    page.drv.switch_to.active_element.send_keys(Keys.TAB)
    assert page.drv.switch_to.active_element.get_attribute("data-testid") == "account-open"
    page.check_stayed_home()


def test_it_reads_at_phone_width(page: Page, acct: str) -> None:
    busy_account(page.url, acct)
    page.size(PHONE)
    page.load(f"#account={acct}")
    page.wait_open(acct)
    assert page.drv.execute_script("return window.innerWidth") == PHONE[0]
    wide = page.drv.execute_script("return document.documentElement.scrollWidth")
    assert wide <= PHONE[0], f"the page is {wide} px wide at {PHONE[0]} px"
    for n in ("available", "status", "plan", "usage-chart", "grant-submit"):
        e = page.tid(n)
        page.drv.execute_script("arguments[0].scrollIntoView()", e)
        assert e.is_displayed(), n
        assert e.rect["x"] >= 0 and e.rect["x"] + e.rect["width"] <= PHONE[0] + 1, (n, e.rect)
    page.size(WIDE)
    page.check_stayed_home()


# ---- tokens ----


def test_with_tokens_it_asks_for_one_and_a_reader_sees_no_forms(page: Page, token_daemon: Any, acct: str) -> None:
    url = token_daemon.url
    status, _, headers = raw(url, "GET", "/v1/pricing")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    busy_account(url, acct, token=ADMIN_TOKEN)
    page.url = url
    page.load(f"#account={acct}")
    page.wait(lambda d: page.tid("token-input").is_displayed(), what="the token prompt")
    page.tid("token-input").send_keys(READ_TOKEN, Keys.ENTER)
    page.wait_open(acct)
    a = ok(url, "GET", f"/v1/accounts/{acct}", token=READ_TOKEN)
    page.wait(lambda d: shown_numbers(page) == api_numbers(a))
    page.wait(lambda d: d.find_element(By.ID, "actions-none").is_displayed(), what="the probes done")
    for form in ("grant-submit", "refund-submit", "purchase-submit", "plan-submit", "grant-credits"):
        assert not page.tid(form).is_displayed(), form
    # Kept for the tab only.
    assert page.drv.execute_script("return sessionStorage.getItem('creditsd-console-token')") == READ_TOKEN
    assert page.drv.execute_script("return localStorage.length") == 0
    assert page.drv.execute_script("return document.cookie") == ""
    page.collect_logs()
    api_calls = [r for r in page.requests if "/v1/" in r["url"]]
    assert any(r["headers"].get("Authorization") == f"Bearer {READ_TOKEN}" for r in api_calls)
    mutations = [r for r in api_calls if r["method"] != "GET"]
    seq = a["seq"]
    assert ok(url, "GET", f"/v1/accounts/{acct}", token=READ_TOKEN)["seq"] == seq, "the probes changed nothing"
    assert mutations, "the scopes were probed"

    # An admin token (a new tab's session) sees every form, and its grant lands.
    page.drv.execute_script("sessionStorage.clear()")
    page.drv.refresh()
    page.wait(lambda d: page.tid("token-input").is_displayed())
    page.tid("token-input").send_keys(ADMIN_TOKEN, Keys.ENTER)
    page.wait_open(acct)
    page.wait(lambda d: page.tid("grant-submit").is_displayed(), what="the forms")
    for form in ("refund-submit", "purchase-submit", "plan-submit"):
        assert page.tid(form).is_displayed(), form
    page.tid("grant-credits").send_keys("5")
    page.tid("grant-reason").send_keys("admin on the console")
    page.tid("grant-submit").click()
    page.wait(lambda d: ok(url, "GET", f"/v1/accounts/{acct}", token=ADMIN_TOKEN)["seq"] == seq + 1)
    page.check_stayed_home()


# ---- the second edition's fields (SPEC section 5) ----

PROMO_ACCOUNT = {
    "balances": {"promo": 30},
    "promo_blocks": [
        {"grant_id": "g12", "credits": 30, "expires_at": "2027-01-15T00:00:00Z", "reason": "launch promo"}
    ],
    "affordable": {"face_generation": 777, "sample_image": 16, "video_generation": 6, "caption_generation": 50},
    "members": [
        {"member": "brand-a", "cap_per_period": 100, "used_this_period": 12},
        {"member": "brand-b", "cap_per_period": None, "used_this_period": 0},
    ],
    "alerts": {"thresholds": [25, 10, 0], "forecast_hours": 24},
}


def test_the_second_editions_fields_are_shown_when_the_daemon_sends_them(page: Page, daemon: Any, acct: str) -> None:

    ok(daemon.url, "POST", "/v1/accounts", {"id": acct})
    debit(daemon.url, acct, "sample_image", 2)
    proxy = Augmenting(daemon.url, PROMO_ACCOUNT, {"member": "brand-a", "taken": {"promo:g12": 6}})
    try:
        page.url = proxy.url
        page.load(f"#account={acct}")
        page.wait_open(acct)
        assert page.text("balance-promo") == "30"
        rows = page.tids("promo-row")
        assert len(rows) == 1 and "g12" in rows[0].text and "launch promo" in rows[0].text
        for op, n in PROMO_ACCOUNT["affordable"].items():
            chip = page.drv.find_element(By.CSS_SELECTOR, f'#affordable li[data-operation="{op}"]')
            assert chip.text.split()[0] == str(n), "the daemon's figure, not one worked out"
        members = [r.text for r in page.tids("member-row")]
        assert len(members) == 2 and "brand-a" in members[0] and "12" in members[0] and "100" in members[0]
        assert "none" in members[1]
        assert "24 h" in page.drv.find_element(By.ID, "alerts-settings").text
        debit_row = [r for r in page.tids("ledger-row") if r.get_attribute("data-kind") == "debit"][0]
        assert "member brand-a" in debit_row.text

        # A promo grant sends its expiry, in UTC; the answer (a refusal on a daemon
        # without promo credits) is shown either way.
        Select(page.tid("grant-bucket")).select_by_value("promo")
        page.tid("grant-credits").send_keys("30")
        page.tid("grant-reason").send_keys("launch promo")
        page.drv.execute_script("arguments[0].value = '2027-01-15T00:00'", page.tid("grant-expires"))
        page.tid("grant-submit").click()
        page.wait(
            lambda d: page.tid("error").is_displayed() or d.find_element(By.ID, "notice").is_displayed(),
            what="the promo grant's answer",
        )
        grants = [b for m, p, b in proxy.sent if m == "POST" and p.endswith("/grants") and b]
        sent = grants[-1]
        assert sent["bucket"] == "promo" and sent["expires_at"] == "2027-01-15T00:00:00Z", sent
        assert sent["credits"] == 30 and len(sent["idempotency_key"]) >= 32
        page.check_stayed_home()
    finally:
        proxy.close()


def test_a_retry_of_the_same_submission_sends_the_same_key(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct})
    page.load()
    page.open(acct)

    # Refused twice with the same values: the same key both times (a refusal binds none);
    # other values: a new key.
    page.drv.execute_script(
        """
        window.__sent = [];
        const orig = window.fetch;
        window.fetch = (url, init) => {
          if (init && init.body && String(url).endsWith('/grants')) window.__sent.push(JSON.parse(init.body));
          return orig(url, init);
        };
        """
    )
    for credits in ("0", "0", "5"):
        page.tid("grant-credits").clear()
        page.tid("grant-credits").send_keys(credits)
        page.tid("grant-reason").clear()
        page.tid("grant-reason").send_keys("retry")
        n = len(page.drv.execute_script("return window.__sent"))
        page.tid("grant-submit").click()
        page.wait(lambda d: len(d.execute_script("return window.__sent")) > n)
        page.wait(lambda d: page.tid("grant-submit").is_enabled())
    keys = [b["idempotency_key"] for b in page.drv.execute_script("return window.__sent") if "credits" in b]
    assert keys[0] == keys[1] != keys[2], keys
    top = ok(page.url, "GET", f"/v1/accounts/{acct}/ledger?limit=1")["entries"][0]
    assert top["idempotency_key"] == keys[2]
    page.check_stayed_home()
