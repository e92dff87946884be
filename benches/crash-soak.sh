#!/usr/bin/env bash
# Crash soak: N SIGKILLs of a release build of creditsd at random moments under concurrent
# load, each followed by `creditsd audit` of the crashed store (on a copy, so that the
# daemon's own restart replays the real one), a restart, and the checks:
#   - every request the kill left unanswered is sent again and answered 200 (applied now,
#     or a duplicate of a write that was durable but never acknowledged);
#   - debits acknowledged in the round are present (sending one again answers
#     `duplicate: true` with the same credits; CHECK_PER_ROUND of them, default 300, a
#     random sample: the balances and the final ledgers check every one);
#   - every account's balance is its funds less the credits of exactly the debits
#     acknowledged (so none is applied twice and none is missing);
# and at the end, every account's full ledger holds each acknowledged key exactly once,
# with gap-free sequence numbers, and a last audit after a clean stop passes.
#
# Usage: benches/crash-soak.sh [N] [CLIENTS] [ACCOUNTS]       defaults: 100 16 20
# CRASH_SOAK_CONFIG="...toml..." replaces the config below; KEEP=dir keeps the work
# directory (the store, the daemon's logs, acked.tsv: every acknowledged key).
# AUDIT_EVERY=k audits the crashed store after every k-th kill only (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-100}
clients=${2:-16}
accounts=${3:-20}

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin creditsd
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release}/creditsd
work=${KEEP:-$(mktemp -d /tmp/creditsd-crash-soak.XXXXXX)}
mkdir -p "$work"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
# Checkpoints every 200 ms, small segments and frequent snapshots, so that kills land in
# the middle of every part of the write path: group commits, segment changes, checkpoints,
# segment deletions, snapshots.
printf '%b\n' "${CRASH_SOAK_CONFIG:-[storage]\ndurability = \"sync\"\nsnapshot_every = 64\ncheckpoint_after_ms = 200\nsegment_bytes = 1048576}" \
    >"$work/config.toml"

python3 - "$bin" "$work" "$kills" "$clients" "$accounts" "${AUDIT_EVERY:-1}" <<'PY'
import http.client, json, os, random, re, shutil, signal, subprocess, sys, threading, time

bin_, work, kills, clients, accounts, audit_every = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
data = os.path.join(work, "data")
config = os.path.join(work, "config.toml")
FUNDS = 10**12
check_per_round = int(os.environ.get("CHECK_PER_ROUND", "300"))
OPS = ["face_generation", "sample_image", "video_generation", "caption_generation"]
rng = random.Random(int(os.environ.get("SEED", time.time_ns())))
acked_file = open(os.path.join(work, "acked.tsv"), "a", buffering=1)

def fail(msg):
    print(f"crash-soak: FAILED: {msg}", flush=True)
    sys.exit(1)

class Daemon:
    def __init__(self):
        self.runs = 0
    def start(self):
        self.runs += 1
        self.log = os.path.join(work, f"log.{self.runs}")
        self.p = subprocess.Popen(
            [bin_, "serve", "--config", config, "--listen", "127.0.0.1:0", "--data-dir", data],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        started = time.time()
        while time.time() - started < 30:
            m = re.search(r"listening on http://([0-9.]+):(\d+)", open(self.log).read())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
            if self.p.poll() is not None:
                fail(f"the daemon exited at start:\n{open(self.log).read()}")
            time.sleep(0.02)
        else:
            fail("the daemon did not start")
        while True:  # ready
            try:
                if self.get("/readyz")[0] == 200:
                    return time.time() - started
            except OSError:
                pass
            time.sleep(0.02)
    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=60)
    def call(self, c, method, path, body=None):
        c.request(method, path, body=None if body is None else json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    def get(self, path):
        c = self.conn()
        try:
            return self.call(c, "GET", path)
        finally:
            c.close()
    def post(self, path, body):
        c = self.conn()
        try:
            return self.call(c, "POST", path, body)
        finally:
            c.close()

def audit(path):
    out = subprocess.run([bin_, "audit", "--config", config, "--data-dir", path],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"audit of {path}:\n{out.stdout}{out.stderr}")
    return out.stdout.strip().splitlines()[-1]

d = Daemon()
d.start()
ids = [f"soak-{i}" for i in range(accounts)]
for a in ids:
    s, v = d.post("/v1/accounts", {"id": a, "plan": "growth"})
    assert s == 201 or s == 200, (s, v)
    s, v = d.post(f"/v1/accounts/{a}/grants", {"bucket": "packs", "credits": FUNDS,
                  "reason": "crash soak", "idempotency_key": "fund"})
    assert s == 200, (s, v)
start_available = {a: d.get(f"/v1/accounts/{a}")[1]["available"] for a in ids}

acked = {}        # key -> (account, body, credits)
unanswered = []   # (key, account, body)
ready_times = []

def record(key, account, body, credits):
    acked[key] = (account, body, credits)
    acked_file.write(f"{key}\t{account}\t{credits}\n")

def resend(items, what):
    for key, account, body in items:
        s, v = d.post(f"/v1/accounts/{account}/debits", body)
        if s != 200:
            fail(f"{what} {key}: {s} {v}")
        record(key, account, body, v["credits"])

for round_ in range(kills):
    resend(unanswered, "re-sent")
    unanswered = []
    lock = threading.Lock()
    round_acked = []
    lost = []
    errors = []
    stop = threading.Event()
    def client(t):
        r = random.Random(rng.random())
        c = d.conn()
        n = 0
        while not stop.is_set():
            account = r.choice(ids)
            key = f"r{round_}-t{t}-n{n}"
            n += 1
            body = {"operation": r.choice(OPS), "quantity": 1 + r.randrange(3),
                    "idempotency_key": key}
            try:
                s, v = d.call(c, "POST", f"/v1/accounts/{account}/debits", body)
            except (OSError, http.client.HTTPException, ValueError):
                with lock:
                    lost.append((key, account, body))
                return
            if s != 200 or v.get("duplicate"):
                with lock:
                    errors.append(f"unexpected answer to {key}: {s} {v}")
                    lost.append((key, account, body))
                return
            with lock:
                record(key, account, body, v["credits"])
                round_acked.append(key)
    threads = [threading.Thread(target=client, args=(t,)) for t in range(clients)]
    for th in threads:
        th.start()
    time.sleep(rng.uniform(0.05, 1.5))
    d.p.send_signal(signal.SIGKILL)
    d.p.wait()
    stop.set()
    for th in threads:
        th.join()
    if errors:
        fail(f"kill {round_ + 1}: {errors[0]}")
    unanswered = lost
    if (round_ + 1) % audit_every == 0:
        copy = os.path.join(work, "crashed")
        shutil.rmtree(copy, ignore_errors=True)
        subprocess.run(["cp", "-a", "--sparse=always", data, copy], check=True)
        last_audit = audit(copy)
        shutil.rmtree(copy)
    ready_times.append(d.start())
    resend(unanswered, "re-sent")
    unanswered = []
    # Each acknowledged key of the round is checked by the balances below (in sum) and by
    # the ledgers at the end (one by one); CHECK_PER_ROUND of them also by a re-send now.
    for key in rng.sample(round_acked, min(len(round_acked), check_per_round)):
        account, body, credits = acked[key]
        s, v = d.post(f"/v1/accounts/{account}/debits", body)
        if s != 200 or not v.get("duplicate") or v["credits"] != credits:
            fail(f"acknowledged {key} lost after kill {round_ + 1}: {s} {v}")
    spent = {a: 0 for a in ids}
    for account, _, credits in acked.values():
        spent[account] += credits
    for a in ids:
        got = d.get(f"/v1/accounts/{a}")[1]["available"]
        if got != start_available[a] - spent[a]:
            fail(f"{a} after kill {round_ + 1}: available {got}, expected {start_available[a] - spent[a]}")
    replayed = re.search(r"records=(\d+)", open(d.log).read())
    cut = re.search(r"cut_bytes=(\d+)", open(d.log).read())
    print(f"kill {round_ + 1}/{kills}: {len(round_acked)} acknowledged this round, "
          f"{len(lost)} in flight, {len(acked)} in all; ready in {ready_times[-1]*1000:.0f} ms"
          f"{', replayed ' + replayed.group(1) + ' records' if replayed else ''}"
          f"{', cut ' + cut.group(1) + ' torn bytes' if cut else ''}", flush=True)

# The end: every ledger holds each acknowledged key exactly once, gap-free.
for a in ids:
    seen, seqs, before = {}, [], None
    while True:
        path = f"/v1/accounts/{a}/ledger?limit=500" + (f"&before={before}" if before else "")
        s, v = d.get(path)
        assert s == 200, (s, v)
        for e in v["entries"]:
            seqs.append(e["seq"])
            if e["kind"] == "debit":
                k = e["idempotency_key"]
                if k in seen:
                    fail(f"{k} applied twice in {a}")
                seen[k] = e["credits"]
        before = v.get("next")
        if not before:
            break
    mine = {k: c for k, (acc, _, c) in acked.items() if acc == a}
    if seen != mine:
        missing = set(mine) - set(seen)
        extra = set(seen) - set(mine)
        fail(f"{a}: {len(missing)} acknowledged debits missing, {len(extra)} never acknowledged")
    if seqs != list(range(len(seqs), 0, -1)):
        fail(f"{a}: sequence numbers have gaps")
d.p.send_signal(signal.SIGTERM)
if d.p.wait() != 0:
    fail("the daemon did not stop cleanly")
final = audit(data)
ready_times.sort()
print(f"crash-soak: PASSED: {kills} SIGKILLs under {clients} concurrent clients over {accounts} "
      f"accounts; {len(acked)} acknowledged debits, each present exactly once; audit clean after "
      f"every {'' if audit_every == 1 else str(audit_every) + 'th '}kill and at the end ({final}); "
      f"ready after a kill: median {ready_times[len(ready_times)//2]*1000:.0f} ms, "
      f"max {ready_times[-1]*1000:.0f} ms", flush=True)
PY
