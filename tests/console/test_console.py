"""The console (`GET /console`) in headless chromium against the real release daemon: what
it shows is what the API says, its chart, ledger paging, feed and forms work, a
read-only token sees no forms, it stays on its own origin, and it works from the
keyboard and at phone width. Everything runs against the daemon itself (promo blocks,
members, refunds, `affordable` are the daemon's own). The run writes docs/console.png (the
account page, 1280 px).
"""

from __future__ import annotations

import datetime as dt
import html.parser
import time
from typing import Any, Dict, List, Optional

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from conftest import ADMIN_TOKEN, DEBIT_TOKEN, PHONE, READ_TOKEN, REPO, WIDE, Page, api, ok, raw

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def debit(
    url: str, acct: str, op: str, qty: int = 1, key: str = "", token: Any = None, member: Optional[str] = None
) -> Any:
    body: Dict[str, Any] = {
        "operation": op,
        "quantity": qty,
        "idempotency_key": key or f"{acct}-{op}-{qty}-{time.monotonic_ns()}",
    }
    if member:
        body["member"] = member
    return ok(url, "POST", f"/v1/accounts/{acct}/debits", body, token)


def later(days: float) -> str:
    """An instant `days` from now, in UTC, to the minute (what the page's expiry box holds)."""
    t = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) + dt.timedelta(days=days)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def busy_account(url: str, acct: str, token: Any = None) -> Dict[str, str]:
    """An account as products use it: a plan, a pack, a promo block, two members (one
    capped), debits of four operations naming them, a partial refund and an open hold.
    Returns the debits' idempotency keys by operation."""
    ok(url, "POST", "/v1/accounts", {"id": acct, "plan": "growth"}, token)
    ok(url, "POST", f"/v1/accounts/{acct}/purchases", {"pack": "pack_100", "payment_ref": f"{acct}-p1"}, token)
    grant = {"bucket": "promo", "credits": 60, "expires_at": later(14), "reason": "launch promo", "idempotency_key": f"{acct}-g"}
    ok(url, "POST", f"/v1/accounts/{acct}/grants", grant, token)
    for member, cap in (("brand-a", 100), ("brand-b", None)):
        body = {"cap_per_period": cap, "idempotency_key": f"{acct}-m-{member}"}
        ok(url, "PUT", f"/v1/accounts/{acct}/members/{member}", body, token)
    keys = {}
    for op, qty, member in (
        ("sample_image", 3, "brand-a"),
        ("face_generation", 2, "brand-a"),
        ("caption_generation", 4, "brand-b"),
        ("video_generation", 1, "brand-b"),
    ):
        keys[op] = f"{acct}-{op}"
        debit(url, acct, op, qty, key=keys[op], token=token, member=member)
    refund = {"credits": 3, "reason": "blurry frames", "idempotency_key": f"{acct}-r"}
    ok(url, "POST", f"/v1/accounts/{acct}/debits/{keys['video_generation']}/refund", refund, token)
    hold = {"operation": "sample_image", "member": "brand-a", "idempotency_key": f"{acct}-h"}
    ok(url, "POST", f"/v1/accounts/{acct}/holds", hold, token)
    return keys


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
        "balance-promo": b["promo"],
        "balance-free": b["free"],
        "balance-packs": b["packs"],
        "balance-held": a["held"],
    }


def cells(row: Any) -> List[str]:
    return [str(td.text).strip() for td in row.find_elements(By.TAG_NAME, "td")]


def shown_blocks(page: Page) -> List[tuple]:
    return [tuple(cells(r)[:2]) for r in page.tids("promo-row")]


def api_blocks(a: Dict[str, Any]) -> List[tuple]:
    return [(b["grant_id"], str(b["credits"])) for b in a["promo_blocks"]]


def shown_members(page: Page) -> List[tuple]:
    return [tuple(cells(r)) for r in page.tids("member-row")]


def api_members(a: Dict[str, Any]) -> List[tuple]:
    cap = lambda c: "none" if c is None else str(c)  # noqa: E731
    return [(m["member"], str(m["used_this_period"]), cap(m["cap_per_period"])) for m in a["members"]]


def shown_affordable(page: Page) -> Dict[str, str]:
    chips = page.drv.find_elements(By.CSS_SELECTOR, "#affordable li[data-operation]")
    return {c.get_attribute("data-operation"): str(c.text).split()[0] for c in chips}


def everything_shown_is_the_apis(page: Page, a: Dict[str, Any]) -> bool:
    return (
        shown_numbers(page) == api_numbers(a)
        and shown_blocks(page) == api_blocks(a)
        and shown_members(page) == api_members(a)
        and shown_affordable(page) == {op: str(n) for op, n in a["affordable"].items()}
    )


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
    keys = busy_account(page.url, acct)
    page.load()
    page.open(acct)
    a = ok(page.url, "GET", f"/v1/accounts/{acct}")
    page.wait(lambda d: everything_shown_is_the_apis(page, a), what="balances, promo blocks, members, affordable")
    # The account is what busy_account made of it: all of it comes from the daemon.
    assert a["balances"]["promo"] > 0 and len(a["promo_blocks"]) == 1
    assert a["balances"]["promo"] == a["promo_blocks"][0]["credits"]
    assert api_members(a) == [("brand-a", "22", "100"), ("brand-b", "9", "none")], a["members"]
    prices = ok(page.url, "GET", "/v1/pricing")["operations"]
    assert a["affordable"] == {op: a["available"] // p for op, p in prices.items()}
    exp = page.tids("promo-row")[0].find_elements(By.TAG_NAME, "td")[2].text
    assert exp.startswith(a["promo_blocks"][0]["expires_at"][:10]), exp
    assert page.text("status") == a["status"] == "active"
    assert page.text("plan") == a["plan"] == "growth"
    assert page.drv.find_element(By.ID, "next-reset").text.startswith(a["next_reset_at"][:10])
    assert len(page.tids("hold-row")) == len(a["holds"]) == 1
    assert "brand-a" in page.tids("hold-row")[0].text
    assert "config" in page.drv.find_element(By.ID, "alerts-settings").text
    # The ledger names the members and the refund.
    rows = {r.get_attribute("data-kind"): r for r in page.tids("ledger-row")}
    assert keys["video_generation"] in rows["refund"].text and "blurry frames" in rows["refund"].text
    debits = [r.text for r in page.tids("ledger-row") if r.get_attribute("data-kind") == "debit"]
    assert len(debits) == 4 and all("member brand-" in t for t in debits), debits

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
    page.check_stayed_home()


def test_a_promo_grant_made_on_the_page_is_a_promo_block(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct})
    page.load()
    page.open(acct)
    # The promo bucket asks for its expiry (UTC, to the minute) and sends it as expires_at.
    assert not page.tid("grant-expires").is_displayed()
    Select(page.tid("grant-bucket")).select_by_value("promo")
    assert page.tid("grant-expires").is_displayed()
    expires = later(10)
    page.tid("grant-credits").send_keys("30")
    page.tid("grant-reason").send_keys("launch promo")
    page.drv.execute_script("arguments[0].value = arguments[1]", page.tid("grant-expires"), expires[:16])
    page.tid("grant-submit").click()
    page.wait(lambda d: d.find_element(By.ID, "notice").is_displayed(), what="the promo grant's notice")
    assert not page.tid("error").is_displayed(), page.text("error")
    a = ok(page.url, "GET", f"/v1/accounts/{acct}")
    assert [(b["credits"], b["expires_at"]) for b in a["promo_blocks"]] == [(30, expires)], a["promo_blocks"]
    assert a["balances"]["promo"] == 30
    top = ok(page.url, "GET", f"/v1/accounts/{acct}/ledger?limit=1")["entries"][0]
    assert (top["kind"], top["bucket"], top["credits"], top["expires_at"]) == ("grant", "promo", 30, expires)
    assert top["grant_id"] == a["promo_blocks"][0]["grant_id"] and top["reason"] == "launch promo"
    assert len(top["idempotency_key"]) >= 32, "a UUID from the page"
    page.wait(lambda d: everything_shown_is_the_apis(page, a), what="the block on the page")
    row = page.tids("promo-row")[0]
    assert cells(row)[2].startswith(expires[:10]), cells(row)
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

    # A refund of a debit the account never made.
    page.tid("refund-key").send_keys("nope")
    page.tid("refund-reason").send_keys("no such debit")
    page.tid("refund-submit").click()
    page.wait(lambda d: "debit_not_found" in page.text("error"), what="the refund's code")
    assert page.tid("error").get_attribute("data-code") == "debit_not_found"
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
    # From the top of the page (nothing focused; a click on the title puts the start of
    # Tab's order there, wherever the autofocus had put it), Tab to the account id.
    page.drv.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(page.drv).move_to_element(page.drv.find_element(By.TAG_NAME, "h1")).click().perform()
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


FORMS = ("grant-submit", "refund-submit", "purchase-submit", "plan-submit")


def probe_answers(url: str, acct: str, token: str) -> Dict[str, int]:
    """What the page's probes get: each form's route sent an empty body."""
    routes = {
        "grant-submit": ("POST", f"/v1/accounts/{acct}/grants"),
        "refund-submit": ("POST", f"/v1/accounts/{acct}/debits/console-probe/refund"),
        "purchase-submit": ("POST", f"/v1/accounts/{acct}/purchases"),
        "plan-submit": ("PUT", f"/v1/accounts/{acct}/plan"),
    }
    return {form: api(url, m, p, {}, token)[0] for form, (m, p) in routes.items()}


def use_token(page: Page, token: str, acct: str) -> None:
    """A new tab's session: the prompt, the token, the account open."""
    page.drv.execute_script("sessionStorage.clear()")
    page.drv.refresh()
    page.wait(lambda d: page.tid("token-input").is_displayed(), what="the token prompt")
    page.tid("token-input").send_keys(token, Keys.ENTER)
    page.wait_open(acct)


def forms_shown(page: Page) -> Dict[str, bool]:
    return {f: page.tid(f).is_displayed() for f in FORMS}


def test_with_tokens_it_asks_for_one_and_each_form_follows_its_scope(page: Page, token_daemon: Any, acct: str) -> None:
    url = token_daemon.url
    status, _, headers = raw(url, "GET", "/v1/pricing")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    keys = busy_account(url, acct, token=ADMIN_TOKEN)
    seq = ok(url, "GET", f"/v1/accounts/{acct}", token=ADMIN_TOKEN)["seq"]
    # The daemon checks the scope before the body: 403 without it, 400 (the body) with it.
    assert probe_answers(url, acct, READ_TOKEN) == {f: 403 for f in FORMS}
    assert probe_answers(url, acct, DEBIT_TOKEN) == {
        "grant-submit": 403, "refund-submit": 400, "purchase-submit": 403, "plan-submit": 403
    }
    assert probe_answers(url, acct, ADMIN_TOKEN) == {f: 400 for f in FORMS}

    # read only: the account, no forms.
    page.url = url
    page.load(f"#account={acct}")
    page.wait(lambda d: page.tid("token-input").is_displayed(), what="the token prompt")
    page.tid("token-input").send_keys(READ_TOKEN, Keys.ENTER)
    page.wait_open(acct)
    a = ok(url, "GET", f"/v1/accounts/{acct}", token=READ_TOKEN)
    page.wait(lambda d: everything_shown_is_the_apis(page, a))
    page.wait(lambda d: d.find_element(By.ID, "actions-none").is_displayed(), what="the probes done")
    assert forms_shown(page) == {f: False for f in FORMS}
    assert not page.tid("grant-credits").is_displayed()
    # Kept for the tab only.
    assert page.drv.execute_script("return sessionStorage.getItem('creditsd-console-token')") == READ_TOKEN
    assert page.drv.execute_script("return localStorage.length") == 0
    assert page.drv.execute_script("return document.cookie") == ""
    page.collect_logs()
    api_calls = [r for r in page.requests if "/v1/" in r["url"]]
    assert any(r["headers"].get("Authorization") == f"Bearer {READ_TOKEN}" for r in api_calls)
    mutations = [r for r in api_calls if r["method"] != "GET"]
    assert any(r["url"].endswith("/refund") for r in mutations), "the refund's scope was probed"
    assert ok(url, "GET", f"/v1/accounts/{acct}", token=READ_TOKEN)["seq"] == seq, "the probes changed nothing"

    # debit + read: the refund form and no other; its refund lands.
    use_token(page, DEBIT_TOKEN, acct)
    page.wait(lambda d: page.tid("refund-submit").is_displayed(), what="the refund form")
    assert forms_shown(page) == {"grant-submit": False, "refund-submit": True, "purchase-submit": False, "plan-submit": False}
    assert not page.drv.find_element(By.ID, "actions-none").is_displayed()
    refund_on_page(page, keys["sample_image"], "3", "refunded by the debit token")
    page.wait(lambda d: d.find_element(By.ID, "notice").is_displayed(), what="the refund's notice")
    top = ok(url, "GET", f"/v1/accounts/{acct}/ledger?limit=1", token=READ_TOKEN)["entries"][0]
    assert (top["kind"], top["debit_key"], top["credits"]) == ("refund", keys["sample_image"], 3)
    assert top["seq"] == seq + 1
    page.wait(lambda d: everything_shown_is_the_apis(page, ok(url, "GET", f"/v1/accounts/{acct}", token=READ_TOKEN)))

    # admin: every form, and its grant lands.
    use_token(page, ADMIN_TOKEN, acct)
    page.wait(lambda d: page.tid("grant-submit").is_displayed(), what="the forms")
    assert forms_shown(page) == {f: True for f in FORMS}
    page.tid("grant-credits").send_keys("5")
    page.tid("grant-reason").send_keys("admin on the console")
    page.tid("grant-submit").click()
    page.wait(lambda d: ok(url, "GET", f"/v1/accounts/{acct}", token=ADMIN_TOKEN)["seq"] == seq + 2)
    page.check_stayed_home()


# ---- refunds ----


def refund_on_page(page: Page, key: str, credits: str, reason: str) -> None:
    page.tid("refund-key").clear()
    page.tid("refund-key").send_keys(key)
    page.tid("refund-credits").clear()
    if credits:
        page.tid("refund-credits").send_keys(credits)
    page.tid("refund-reason").clear()
    page.tid("refund-reason").send_keys(reason)
    page.tid("refund-submit").click()


def test_a_refund_made_on_the_page_is_in_the_books_and_a_refused_one_shows_its_code(page: Page, acct: str) -> None:
    ok(page.url, "POST", "/v1/accounts", {"id": acct, "plan": "starter"})
    ok(page.url, "PUT", f"/v1/accounts/{acct}/members/brand-a", {"cap_per_period": 50, "idempotency_key": f"{acct}-m"})
    key = f"{acct}-faces"
    debit(page.url, acct, "face_generation", 2, key=key, member="brand-a")  # 10 credits
    debit(page.url, acct, "sample_image", 1)
    page.load()
    page.open(acct)
    page.wait(lambda d: page.tid("refund-submit").is_displayed(), what="the refund form")

    # Part of it: 4 of the 10 credits, back where they came from, and the member's use too.
    refund_on_page(page, key, "4", "two faces were wrong")
    page.wait(lambda d: d.find_element(By.ID, "notice").is_displayed(), what="the refund's notice")
    assert "Refunded 4 credits" in page.drv.find_element(By.ID, "notice").text
    a = ok(page.url, "GET", f"/v1/accounts/{acct}")
    top = ok(page.url, "GET", f"/v1/accounts/{acct}/ledger?limit=1")["entries"][0]
    assert (top["kind"], top["debit_key"], top["credits"], top["reason"]) == ("refund", key, 4, "two faces were wrong")
    assert top["member"] == "brand-a" and len(top["idempotency_key"]) >= 32
    assert top["balance_after"]["available"] == a["available"]
    assert api_members(a) == [("brand-a", "6", "50")]
    page.wait(lambda d: everything_shown_is_the_apis(page, a), what="the page shows the refund")
    page.wait(lambda d: page.tids("ledger-row")[0].get_attribute("data-kind") == "refund")
    assert key in page.tids("ledger-row")[0].text
    seq = a["seq"]

    # More than is left (6): refund_exceeds_debit, with what is refundable; nothing changes.
    refund_on_page(page, key, "7", "too much")
    page.wait(lambda d: page.tid("error").is_displayed(), what="the refusal")
    assert page.tid("error").get_attribute("data-code") == "refund_exceeds_debit", page.text("error")
    assert "refund_exceeds_debit" in page.text("error") and "refundable: 6" in page.text("error")
    assert page.tid("error").find_element(By.XPATH, "ancestor::form").get_attribute("id") == "refund-form"
    # A key no debit of the account has: debit_not_found.
    refund_on_page(page, f"{acct}-never", "", "no such debit")
    page.wait(lambda d: page.tid("error").get_attribute("data-code") == "debit_not_found", what="debit_not_found")
    assert "debit_not_found" in page.text("error")
    assert ok(page.url, "GET", f"/v1/accounts/{acct}")["seq"] == seq

    # The rest (credits left empty): the debit is wholly given back.
    refund_on_page(page, key, "", "the rest")
    page.wait(lambda d: not page.tid("error").is_displayed() and d.find_element(By.ID, "notice").is_displayed())
    a = ok(page.url, "GET", f"/v1/accounts/{acct}")
    top = ok(page.url, "GET", f"/v1/accounts/{acct}/ledger?limit=1")["entries"][0]
    assert (top["kind"], top["credits"], a["seq"]) == ("refund", 6, seq + 1)
    assert api_members(a) == [("brand-a", "0", "50")]
    page.wait(lambda d: everything_shown_is_the_apis(page, a), what="the page shows the second refund")
    page.check_stayed_home()


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
