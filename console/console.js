// creditsd console: one ES module, no dependencies. It speaks only the public /v1 API of
// the daemon that served it (same origin), with fetch(). The token, when the daemon asks
// for one, lives in this tab's sessionStorage and nowhere else.

const TOKEN_KEY = "creditsd-console-token";
const LEDGER_PAGE = 25;
const ACCOUNTS_PAGE = 100;
const FEED_KEEP = 500;
const FEED_SHOWN = 50;
const SVG_NS = "http://www.w3.org/2000/svg";
const DAY_MS = 86400000;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  authRequired: false,
  pricing: null,
  account: null, // the account view last read
  id: null, // the account open
  ledgerNext: null,
  ledgerSeen: new Set(),
  range: 30,
  scopes: null, // {admin, billing, plan, refund}: what the token may do, learnt by probing
  feed: [], // recent feed events, every account
  feedCursor: null,
  feedAbort: null,
  feedGen: 0,
  accountsNext: null,
  loadGen: 0,
};

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function saveToken(t) {
  state.token = t;
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // sessionStorage off: the token stays in memory.
  }
}

async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      signal: opts.signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "network_error", `the daemon did not answer (${e})`, null);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.ok) return data;
  const err = (data && data.error) || {};
  const code = err.code || `http_${res.status}`;
  const message = err.message || text.slice(0, 300) || res.statusText;
  if (res.status === 401 && !opts.probe) askForToken(res.headers.get("WWW-Authenticate"));
  throw new ApiError(res.status, code, message, data);
}

const enc = encodeURIComponent;
const acctPath = (id, rest = "") => `/v1/accounts/${enc(id)}${rest}`;

// ---------- small helpers ----------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(id, v) {
  $(id).textContent = v === undefined || v === null ? "—" : String(v);
}

function fmtTime(s) {
  if (!s) return "—";
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return s;
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:00Z$/, "Z");
}

function fmtDay(ms) {
  return new Date(ms).toISOString().slice(5, 10);
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function emptyRow(tbody, cols, text) {
  tbody.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: cols, text })));
}

// ---------- messages ----------

function showNotice(text) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
}

// The one error element: shown where the refused action was (its form), with the code.
function showError(e, where) {
  const box = $("error");
  if (!e) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const code = e.code || "error";
  box.replaceChildren(
    el("strong", { text: code }),
    document.createTextNode(e.status ? ` (${e.status}): ` : ": "),
    document.createTextNode(e.message || ""),
  );
  if (e.body && e.body.error) {
    const extra = Object.entries(e.body.error).filter(([k]) => !["code", "message"].includes(k));
    if (extra.length) box.append(el("br"), extra.map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", "));
  }
  box.dataset.code = code;
  const home = where || $("main");
  if (where) where.append(box);
  else home.insertBefore(box, $("account"));
  box.hidden = false;
}

// ---------- the token ----------

function askForToken(challenge) {
  state.authRequired = true;
  const had = !!state.token;
  if (had) saveToken(null);
  $("token-panel").hidden = false;
  $("token-forget").hidden = true;
  setText("auth-state", had ? "The token was refused: give another." : "This daemon needs a token.");
  if (challenge) $("token-panel").dataset.challenge = challenge;
  $("token-input").focus();
}

function tokenAccepted() {
  $("token-panel").hidden = true;
  if (state.token) {
    $("token-forget").hidden = false;
    setText("auth-state", "Using a token (kept in this tab only).");
  } else {
    setText("auth-state", state.authRequired ? "" : "No token needed (loopback, no tokens configured).");
  }
}

// ---------- what the token may do ----------

// Learns whether the token may grant (admin), buy and change plans (billing) and refund
// (debit), without changing anything: each of those routes is sent an empty body. The
// daemon checks the token's scope before it reads a body, so the answer is 403 when the
// token lacks the route's scope and 400 (the empty body refused) when it has it; nothing
// is written. Each form follows its own route's answer.
async function probeScopes(id) {
  // true: allowed; false: 401/403, or no such route (404 not_found).
  const allowed = async (method, path) => {
    try {
      await api(method, path, {}, { probe: true });
      return true;
    } catch (e) {
      if (e.status === 404 && e.code === "not_found") return false;
      return !(e.status === 401 || e.status === 403);
    }
  };
  const [admin, billing, plan, refund] = await Promise.all([
    allowed("POST", acctPath(id, "/grants")),
    allowed("POST", acctPath(id, "/purchases")),
    allowed("PUT", acctPath(id, "/plan")),
    allowed("POST", acctPath(id, `/debits/${enc("console-probe")}/refund`)),
  ]);
  state.scopes = { admin, billing, plan, refund };
  applyScopes();
}

function applyScopes() {
  const s = state.scopes || {};
  $("grant-form").hidden = !s.admin;
  $("refund-form").hidden = !s.refund;
  $("purchase-form").hidden = !s.billing;
  $("plan-form").hidden = !s.plan;
  $("actions-none").hidden = !!(s.admin || s.refund || s.billing || s.plan);
}

// ---------- accounts list ----------

async function loadAccounts(more) {
  const q = new URLSearchParams({ limit: String(ACCOUNTS_PAGE) });
  if (more && state.accountsNext) q.set("after", state.accountsNext);
  const page = await api("GET", `/v1/accounts?${q}`);
  const list = $("account-list");
  if (!more) list.replaceChildren();
  for (const a of page.accounts || []) {
    const b = el("button", { type: "button", "data-account": a.id, title: a.id, text: a.id });
    if (a.id === state.id) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => openAccount(a.id));
    list.append(el("li", {}, b));
  }
  if (!list.children.length) list.append(el("li", { class: "muted", text: "No accounts yet." }));
  state.accountsNext = page.next || null;
  $("accounts-more").hidden = !state.accountsNext;
}

function markCurrent() {
  for (const b of $("account-list").querySelectorAll("button[data-account]")) {
    if (b.dataset.account === state.id) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

// ---------- one account ----------

async function openAccount(id) {
  id = (id || "").trim();
  if (!id) return;
  showError(null);
  showNotice("");
  const gen = ++state.loadGen;
  let a;
  try {
    a = await api("GET", acctPath(id));
  } catch (e) {
    if (gen !== state.loadGen) return;
    showError(e, $("open-form"));
    return;
  }
  if (gen !== state.loadGen) return;
  state.id = id;
  $("account-id").value = id;
  if (location.hash !== `#account=${enc(id)}`) history.replaceState(null, "", `#account=${enc(id)}`);
  renderAccount(a);
  $("placeholder").hidden = true;
  $("account").hidden = false;
  markCurrent();
  renderFeed();
  await Promise.all([
    loadLedger(false),
    loadUsage(),
    state.scopes ? Promise.resolve() : probeScopes(id),
  ]).catch((e) => showError(e));
}

async function refreshAccount() {
  if (!state.id) return;
  const a = await api("GET", acctPath(state.id));
  renderAccount(a);
}

function renderAccount(a) {
  state.account = a;
  const b = a.balances || {};
  $("account-title").textContent = a.id;
  setText("status", a.status);
  $("status").className = `status-${a.status}`;
  setText("plan", a.plan);
  setText("pending-plan", a.pending_plan || "none");
  setText("period-start", fmtTime(a.period_start));
  setText("next-reset", fmtTime(a.next_reset_at));
  setText("available", a.available);
  setText("balance-monthly", b.monthly ?? 0);
  setText("balance-promo", b.promo ?? 0);
  setText("balance-free", b.free ?? 0);
  setText("balance-packs", b.packs ?? 0);
  setText("balance-held", a.held ?? b.held ?? 0);

  // What the balance buys: the daemon's own figures (available / price, rounded down).
  const aff = $("affordable");
  aff.replaceChildren();
  for (const [op, n] of Object.entries(a.affordable || {})) {
    aff.append(el("li", { "data-operation": op }, el("strong", { text: n ?? "∞" }), ` ${op}`));
  }

  const al = a.alerts;
  $("alerts-settings").hidden = !al;
  if (al) {
    const th = (al.thresholds || []).map((t) => `${t}%`).join(", ") || "none";
    const fh = al.forecast_hours == null ? "off" : `${al.forecast_hours} h`;
    const whose = (custom) => (custom ? "this account's" : "the config's");
    $("alerts-settings").textContent =
      `Low-balance alerts at ${th} (${whose(al.thresholds_custom)}); ` +
      `forecast alert ${fh} (${whose(al.forecast_custom)}).`;
  }

  const holds = $("holds");
  if (!(a.holds || []).length) emptyRow(holds, 4, "No open holds.");
  else {
    holds.replaceChildren(
      ...a.holds.map((h) =>
        el(
          "tr",
          { "data-testid": "hold-row" },
          el("td", { text: h.hold_id }),
          el("td", { text: `${h.operation} × ${h.quantity}${h.member ? ` (${h.member})` : ""}` }),
          el("td", { class: "num", text: h.credits }),
          el("td", { class: "nowrap", text: fmtTime(h.expires_at) }),
        ),
      ),
    );
  }

  const blocks = $("promo-blocks");
  if (!(a.promo_blocks || []).length) emptyRow(blocks, 3, "No promo blocks.");
  else {
    blocks.replaceChildren(
      ...a.promo_blocks.map((p) =>
        el(
          "tr",
          { "data-testid": "promo-row" },
          el("td", { text: p.grant_id }),
          el("td", { class: "num", text: p.credits }),
          el("td", { class: "nowrap", text: fmtTime(p.expires_at) }),
        ),
      ),
    );
  }

  const members = $("members");
  if (!(a.members || []).length) emptyRow(members, 3, "No members.");
  else {
    members.replaceChildren(
      ...a.members.map((m) =>
        el(
          "tr",
          { "data-testid": "member-row" },
          el("td", { text: m.member }),
          el("td", { class: "num", text: m.used_this_period ?? 0 }),
          el("td", { class: "num", text: m.cap_per_period == null ? "none" : m.cap_per_period }),
        ),
      ),
    );
  }
}

// ---------- the ledger ----------

function sumChange(change) {
  if (!change) return null;
  return Object.entries(change)
    .filter(([k]) => k !== "held")
    .reduce((s, [, v]) => s + (typeof v === "number" ? v : 0), 0);
}

function describe(e) {
  switch (e.kind) {
    case "debit":
    case "hold":
      return `${e.operation} × ${e.quantity}${e.hold_id ? ` (${e.hold_id})` : ""}`;
    case "capture":
      return `${e.hold_id}${e.operation ? ` ${e.operation}` : ""}`;
    case "release":
      return `${e.hold_id} (${e.reason || "released"})`;
    case "plan_change":
      return `${e.from} → ${e.plan}${e.pending ? " (at reset)" : ""}`;
    case "purchase":
      return `${e.pack}`;
    case "grant":
      return `${e.bucket}${e.expires_at ? ` until ${fmtTime(e.expires_at)}` : ""}`;
    case "reset":
      return `period ${e.period ?? ""} (${e.plan || ""})`;
    case "account_created":
      return `${e.plan || ""}`;
    case "refund":
      return `of ${e.debit_key || ""}${e.operation ? ` (${e.operation})` : ""}`;
    case "promo_expired":
      return `promo ${e.grant_id || ""} expired`;
    case "member_set":
      return `${e.member} cap ${e.cap_per_period == null ? "none" : e.cap_per_period}`;
    case "member_removed":
      return `${e.member}`;
    case "alerts_set":
      return `thresholds ${(e.thresholds || []).join(", ")}`;
    default:
      return e.operation || e.bucket || "";
  }
}

function ledgerRow(e) {
  const change = sumChange(e.change);
  const parts = Object.entries(e.change || {})
    .filter(([, v]) => v)
    .map(([k, v]) => `${k} ${v > 0 ? "+" : ""}${v}`);
  const note = [e.idempotency_key || e.payment_ref, e.reason, e.member ? `member ${e.member}` : null]
    .filter(Boolean)
    .join(" · ");
  return el(
    "tr",
    { "data-testid": "ledger-row", "data-seq": e.seq, "data-kind": e.kind },
    el("td", { class: "num", text: e.seq }),
    el("td", { text: fmtTime(e.time) }),
    el("td", { text: e.kind }),
    el("td", { text: describe(e) }),
    el("td", { class: `num ${change < 0 ? "neg" : change > 0 ? "pos" : ""}`, text: e.credits ?? "" }),
    el("td", { text: parts.join(", ") }),
    el("td", { class: "num", text: e.balance_after ? e.balance_after.available : "" }),
    el("td", { class: "wrap", text: note }),
  );
}

async function loadLedger(more) {
  const id = state.id;
  const q = new URLSearchParams({ limit: String(LEDGER_PAGE) });
  if (more && state.ledgerNext) q.set("before", state.ledgerNext);
  const btn = $("ledger-more");
  btn.disabled = true;
  let page;
  try {
    page = await api("GET", `${acctPath(id, "/ledger")}?${q}`);
  } finally {
    btn.disabled = false;
  }
  if (id !== state.id) return;
  const body = $("ledger");
  if (!more) {
    body.replaceChildren();
    state.ledgerSeen = new Set();
  }
  for (const e of page.entries || []) {
    if (state.ledgerSeen.has(e.seq)) continue;
    state.ledgerSeen.add(e.seq);
    body.append(ledgerRow(e));
  }
  state.ledgerNext = page.next || null;
  btn.hidden = !state.ledgerNext;
}

// ---------- usage and forecast ----------

function utcDay(ms) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

async function loadUsage() {
  const id = state.id;
  const days = state.range;
  const today = utcDay(Date.now());
  const from = new Date(today - (days - 1) * DAY_MS).toISOString();
  const to = new Date(today + DAY_MS).toISOString();
  const q = new URLSearchParams({ from, to, granularity: "day" });
  const [usage, forecast] = await Promise.all([
    api("GET", `${acctPath(id, "/usage")}?${q}`),
    api("GET", acctPath(id, "/forecast")).catch(() => null),
  ]);
  if (id !== state.id || days !== state.range) return;
  drawChart(usage, forecast, today, days);
}

function niceMax(v) {
  if (v <= 0) return 10;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

let lastChart = null;

function drawChart(usage, forecast, today, days) {
  lastChart = [usage, forecast, today, days];
  const chart = $("usage-chart");
  // Drawn at the size it is shown, so labels stay readable on a phone.
  const W = Math.max(320, Math.round(chart.getBoundingClientRect().width) || 960);
  const H = W < 600 ? 220 : 280;
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const left = 48;
  const right = 12;
  const top = 16;
  const bottom = 34;
  const future = days === 30 ? 10 : 30;
  const slots = days + future;
  const first = today - (days - 1) * DAY_MS;
  const slotW = (W - left - right) / slots;
  const plotH = H - top - bottom;

  // Credits per day and operation.
  const byDay = new Map();
  const ops = new Set(Object.keys((state.pricing && state.pricing.operations) || {}));
  for (const p of (usage && usage.periods) || []) {
    const day = utcDay(Date.parse(p.start));
    const m = byDay.get(day) || {};
    for (const [op, u] of Object.entries(p.operations || {})) {
      m[op] = (m[op] || 0) + (u.credits || 0);
      ops.add(op);
    }
    byDay.set(day, m);
  }
  const opList = [...ops].sort();
  const cls = (op) => `op-${opList.indexOf(op) % 6}`;
  let peak = 0;
  let total = 0;
  for (const m of byDay.values()) {
    const t = Object.values(m).reduce((a, b) => a + b, 0);
    peak = Math.max(peak, t);
    total += t;
  }
  const rate = forecast ? Number(forecast.burn_rate_7d) || 0 : 0;
  const yMax = niceMax(Math.max(peak, rate) * 1.1);
  const y = (v) => top + plotH - (v / yMax) * plotH;
  const x = (day) => left + ((day - first) / DAY_MS) * slotW;

  chart.replaceChildren();
  chart.append(svg("title", {}, `Credits used per day by operation, last ${days} days, with the forecast`));
  chart.append(svg("rect", { class: "future", x: x(today + DAY_MS), y: top, width: future * slotW, height: plotH }));
  for (let i = 0; i <= 4; i++) {
    const v = (yMax / 4) * i;
    chart.append(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, String(Math.round(v * 10) / 10)));
  }
  chart.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: y(0), y2: y(0) }));
  const step = (days === 30 ? 5 : 15) * (W < 600 ? 2 : 1);
  for (let i = 0; i < slots; i += step) {
    const day = first + i * DAY_MS;
    chart.append(svg("text", { x: x(day) + slotW / 2, y: H - bottom + 16, "text-anchor": "middle" }, fmtDay(day)));
  }
  chart.append(svg("line", { class: "today", x1: x(today + DAY_MS), x2: x(today + DAY_MS), y1: top, y2: y(0) }));

  // Stacked bars, one per day with usage.
  const bars = svg("g", { class: "bars" });
  const gap = Math.min(2, slotW * 0.2);
  for (const [day, m] of [...byDay.entries()].sort((a, b) => a[0] - b[0])) {
    if (day < first || day > today) continue;
    let acc = 0;
    for (const op of opList) {
      const v = m[op] || 0;
      if (!v) continue;
      const r = svg("rect", {
        class: `bar ${cls(op)}`,
        x: x(day) + gap / 2,
        y: y(acc + v),
        width: Math.max(1, slotW - gap),
        height: Math.max(1, y(acc) - y(acc + v)),
        "data-day": new Date(day).toISOString().slice(0, 10),
        "data-operation": op,
        "data-credits": v,
      });
      r.append(svg("title", {}, `${new Date(day).toISOString().slice(0, 10)} ${op}: ${v} credits`));
      bars.append(r);
      acc += v;
    }
  }
  chart.append(bars);

  // The forecast: the 7-day burn rate carried forward, to the projected exhaustion.
  let forecastText = "No forecast.";
  if (forecast) {
    const startX = x(today - 6 * DAY_MS);
    const endDay = today + (future + 1) * DAY_MS;
    const ex = forecast.projected_exhaustion_at ? Date.parse(forecast.projected_exhaustion_at) : null;
    const stop = ex && ex < endDay ? ex : endDay;
    const stopX = left + ((stop - first) / DAY_MS) * slotW;
    if (rate > 0) {
      chart.append(
        svg("path", {
          class: "projection",
          d: `M${startX.toFixed(1)},${y(rate).toFixed(1)} L${Math.max(startX, stopX).toFixed(1)},${y(rate).toFixed(1)}`,
          "data-testid": "forecast-line",
        }),
      );
    }
    if (ex && ex < endDay) {
      const ax = Math.max(left, stopX);
      chart.append(svg("line", { class: "exhaustion", x1: ax, x2: ax, y1: top, y2: y(0), "data-testid": "forecast-exhaustion" }));
      chart.append(
        svg("text", { class: "exhaustion-label", x: Math.min(ax + 4, W - right - 120), y: top + 12 }, `empty ${fmtDay(ex)}`),
      );
    }
    const rate30 = Number(forecast.burn_rate_30d) || 0;
    forecastText =
      `Burn rate ${rate.toFixed(2)}/day over 7 days, ${rate30.toFixed(2)}/day over 30 days; ` +
      (forecast.projected_exhaustion_at
        ? `at that rate the credits run out ${fmtTime(forecast.projected_exhaustion_at)}.`
        : "no exhaustion in sight.") +
      (forecast.suggested_plan ? ` The smallest plan that would have covered the last period: ${forecast.suggested_plan}.` : "");
  }
  $("forecast").textContent = forecastText;
  $("usage-caption").textContent = `${total} credits used in the last ${days} days (UTC days; shaded: the next ${future} days).`;

  const legend = $("legend");
  legend.replaceChildren(
    ...opList.map((op) => el("li", {}, el("span", { class: `swatch ${cls(op)}`, "aria-hidden": "true" }), op)),
    el("li", {}, el("span", { class: "swatch forecast", "aria-hidden": "true" }), "forecast (7-day rate)"),
  );
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (lastChart && !$("account").hidden) drawChart(...lastChart);
  }, 150);
});

function setRange(days) {
  state.range = days;
  $("range-30").setAttribute("aria-pressed", String(days === 30));
  $("range-90").setAttribute("aria-pressed", String(days === 90));
  if (state.id) loadUsage().catch((e) => showError(e));
}

// ---------- the feed ----------

function feedRow(ev) {
  const bits = [ev.type];
  if (ev.threshold !== undefined) bits.push(`${ev.threshold}%`);
  if (ev.plan) bits.push(ev.plan);
  if (ev.pack) bits.push(ev.pack);
  if (ev.hold_id) bits.push(ev.hold_id);
  if (ev.projected_exhaustion_at) bits.push(`empty at ${fmtTime(ev.projected_exhaustion_at)}`);
  const avail = ev.balances ? ` · available ${ev.balances.available}` : "";
  return el(
    "li",
    { "data-testid": "feed-row", "data-id": ev.id, "data-type": ev.type },
    el("time", { datetime: ev.time, text: fmtTime(ev.time) }),
    `${bits.join(" ")}${avail}`,
  );
}

function renderFeed() {
  const mine = state.feed.filter((ev) => ev.account === state.id).slice(-FEED_SHOWN).reverse();
  const list = $("feed");
  list.replaceChildren(...mine.map(feedRow));
  if (!mine.length) list.append(el("li", { class: "muted", text: "No recent events for this account." }));
}

function addFeed(events) {
  let touched = false;
  for (const ev of events) {
    state.feed.push(ev);
    if (ev.account === state.id) touched = true;
  }
  if (state.feed.length > FEED_KEEP) state.feed.splice(0, state.feed.length - FEED_KEEP);
  if (touched) {
    renderFeed();
    refreshAccount().catch(() => {});
  }
}

// The newest feed id: the feed answers the first event after `after`, so an exponential
// then binary search finds the end in a few dozen one-event reads.
async function feedHead(signal) {
  const after = async (n) => {
    const p = await api("GET", `/v1/events?after=${n}&limit=1`, undefined, { signal });
    return (p.events || []).length > 0;
  };
  if (!(await after(0))) return 0;
  let lo = 0;
  let hi = 1;
  while (await after(hi)) {
    lo = hi;
    hi *= 2;
    if (hi > 2 ** 52) break;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await after(mid)) lo = mid;
    else hi = mid;
  }
  return hi;
}

async function followFeed() {
  if (state.feedAbort) state.feedAbort.abort();
  const gen = ++state.feedGen;
  const ctl = new AbortController();
  state.feedAbort = ctl;
  const signal = ctl.signal;
  const say = (t) => setText("feed-state", t);
  try {
    // The last FEED_KEEP events, then follow.
    const head = await feedHead(signal);
    let cursor = String(Math.max(0, head - FEED_KEEP));
    for (;;) {
      const p = await api("GET", `/v1/events?after=${enc(cursor)}&limit=1000`, undefined, { signal });
      addFeed(p.events || []);
      cursor = p.next || cursor;
      if ((p.events || []).length < 1000) break;
    }
    renderFeed();
    say("Following the feed (long poll).");
    while (gen === state.feedGen) {
      try {
        const p = await api("GET", `/v1/events?after=${enc(cursor)}&wait_seconds=25`, undefined, { signal });
        addFeed(p.events || []);
        cursor = p.next || cursor;
        state.feedCursor = cursor;
        say("Following the feed (long poll).");
      } catch (e) {
        if (e.name === "AbortError" || e.status === 401 || e.status === 403) throw e;
        say(`Feed: ${e.code}; retrying in 3 s.`);
        await new Promise((r) => setTimeout(r, 3000));
      }
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    say(e.status === 403 ? "This token may not read the feed." : `Feed stopped: ${e.code || e}`);
  }
}

// ---------- forms ----------

// Each form keeps its idempotency key until the submission succeeds, so sending the same
// values again (after a timeout, a 503, a lost answer) is the same request; a change of
// values makes a new key.
function submission(form, values) {
  const print = JSON.stringify(values);
  if (form._print !== print || !form._key) {
    form._print = print;
    form._key = newKey();
  }
  return form._key;
}

function done(form) {
  form._key = null;
  form._print = null;
}

function onSubmit(form, build, describeOk) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!state.id) return;
    showError(null);
    showNotice("");
    let req;
    try {
      req = build();
    } catch (e) {
      showError(e, form);
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const r = await api(req.method, req.path, req.body);
      done(form);
      showNotice(describeOk(r, req));
      await Promise.all([refreshAccount(), loadLedger(false), loadUsage()]);
    } catch (e) {
      showError(e, form);
      if (e.status === 403) {
        // The token lacks the scope after all: no form it cannot use.
        form.hidden = true;
      }
    } finally {
      button.disabled = false;
    }
  });
}

function intField(input, field, optional) {
  const raw = input.value.trim();
  if (raw === "" && optional) return undefined;
  const n = Number(raw);
  if (raw === "" || !Number.isFinite(n)) {
    throw new ApiError(0, "invalid_input", `${field}: a whole number, please`, null);
  }
  return n;
}

function setupForms() {
  const bucket = $("grant-bucket");
  const promoShown = () => {
    $("grant-expires-row").hidden = bucket.value !== "promo";
  };
  bucket.addEventListener("change", promoShown);
  promoShown();

  onSubmit(
    $("grant-form"),
    () => {
      const values = {
        bucket: bucket.value,
        credits: intField($("grant-credits"), "credits"),
        reason: $("grant-reason").value,
      };
      if (values.bucket === "promo" && $("grant-expires").value) {
        const v = $("grant-expires").value;
        values.expires_at = new Date(`${v.length === 16 ? `${v}:00` : v}Z`).toISOString().replace(/\.000Z$/, "Z");
      }
      const f = $("grant-form");
      return {
        method: "POST",
        path: acctPath(state.id, "/grants"),
        body: { ...values, idempotency_key: submission(f, [state.id, values]) },
      };
    },
    (r, req) => `Granted ${req.body.credits} credits to ${req.body.bucket}${r && r.duplicate ? " (already done: same request)" : ""}.`,
  );

  onSubmit(
    $("refund-form"),
    () => {
      const key = $("refund-key").value.trim();
      const values = { reason: $("refund-reason").value };
      const credits = intField($("refund-credits"), "credits", true);
      if (credits !== undefined) values.credits = credits;
      const f = $("refund-form");
      return {
        method: "POST",
        path: acctPath(state.id, `/debits/${enc(key)}/refund`),
        body: { ...values, idempotency_key: submission(f, [state.id, key, values]) },
      };
    },
    (r) => `Refunded ${r && r.credits != null ? r.credits : ""} credits.`,
  );

  onSubmit(
    $("purchase-form"),
    () => {
      const pack = $("purchase-pack").value;
      const given = $("purchase-ref").value.trim();
      const f = $("purchase-form");
      const ref = given || `console-${submission(f, [state.id, pack])}`;
      return { method: "POST", path: acctPath(state.id, "/purchases"), body: { pack, payment_ref: ref } };
    },
    (r, req) => `Bought ${req.body.pack} (payment_ref ${req.body.payment_ref})${r && r.duplicate ? ", already recorded" : ""}.`,
  );

  onSubmit(
    $("plan-form"),
    () => {
      const plan = $("plan-select").value;
      const f = $("plan-form");
      return {
        method: "PUT",
        path: acctPath(state.id, "/plan"),
        body: { plan, idempotency_key: submission(f, [state.id, plan]) },
      };
    },
    (r, req) => (r && r.pending ? `Plan ${req.body.plan} from the next reset.` : `Plan is now ${req.body.plan}.`),
  );
}

function fillPricing(p) {
  state.pricing = p;
  const packs = $("purchase-pack");
  packs.replaceChildren(
    ...Object.entries(p.packs || {}).map(([name, k]) =>
      el("option", { value: name, text: `${name}: ${k.credits} credits, ${(k.price_cents / 100).toFixed(2)}` }),
    ),
  );
  const plans = $("plan-select");
  plans.replaceChildren(
    ...Object.entries(p.plans || {}).map(([name, credits]) => el("option", { value: name, text: `${name} (${credits}/month)` })),
  );
}

// ---------- start ----------

async function start() {
  showError(null);
  try {
    fillPricing(await api("GET", "/v1/pricing"));
  } catch (e) {
    if (e.status === 401) return; // askForToken is showing
    showError(e);
    return;
  }
  tokenAccepted();
  state.scopes = null;
  loadAccounts(false).catch((e) => showError(e));
  followFeed();
  const m = /^#account=(.+)$/.exec(location.hash);
  const id = m ? decodeURIComponent(m[1]) : state.id;
  if (id) await openAccount(id);
}

function wire() {
  $("open-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    openAccount($("account-id").value);
  });
  $("accounts-more").addEventListener("click", () => loadAccounts(true).catch((e) => showError(e)));
  $("ledger-more").addEventListener("click", () => loadLedger(true).catch((e) => showError(e)));
  $("range-30").addEventListener("click", () => setRange(30));
  $("range-90").addEventListener("click", () => setRange(90));
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token-input").value.trim();
    if (!t) return;
    $("token-input").value = "";
    saveToken(t);
    start();
  });
  $("token-forget").addEventListener("click", () => {
    saveToken(null);
    if (state.feedAbort) state.feedAbort.abort();
    location.reload();
  });
  setupForms();
}

wire();
state.token = readToken();
start();
