#!/usr/bin/env bash
# Soak: holds load on a release build of creditsd for a while and reports, every
# interval, throughput, latency (p50/p99/max) and the daemon's RSS; at the end the drift
# of p99 and RSS from the first interval to the last, and `creditsd audit`.
#
# Usage: benches/soak.sh [SECONDS] [CLIENTS] [ACCOUNTS] [INTERVAL_SECONDS]
#        defaults: 300 8 200 30 (the target soak is 1800 seconds)
# SOAK_CONFIG="...toml..." adds config (e.g. a smaller [storage] cache_bytes).
# The load: keep-alive clients (python3, standard library only) doing debits with fresh
# idempotency keys (85%), account reads (10%), retried keys (3%) and purchases (2%).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
clients=${2:-8}
accounts=${3:-200}
interval=${4:-30}

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/creditsd
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
printf '%b\n' "${SOAK_CONFIG:-}" > "$work/config.toml"
RUST_LOG=info "$bin" serve --config "$work/config.toml" --listen 127.0.0.1:0 \
    --data-dir "$work/data" 2> "$work/log" &
pid=$!
for _ in $(seq 100); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$work/log" | head -1 | sed 's|.*http://||') || true
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$work/log"; exit 1; }
echo "soak: creditsd pid $pid on $addr for ${seconds}s, $clients clients, $accounts accounts"

python3 - "$addr" "$pid" "$seconds" "$clients" "$accounts" "$interval" <<'PY'
import http.client, json, random, sys, threading, time

addr, pid, seconds, clients, accounts, interval = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
host, port = addr.rsplit(":", 1)

def conn():
    return http.client.HTTPConnection(host, int(port), timeout=30)

def call(c, method, path, body=None):
    data = json.dumps(body) if body is not None else None
    c.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    return r.status

c = conn()
for i in range(accounts):
    call(c, "POST", "/v1/accounts", {"id": f"soak-{i}", "plan": "growth"})
    call(c, "POST", f"/v1/accounts/soak-{i}/grants",
         {"bucket": "packs", "credits": 10**12, "reason": "soak", "idempotency_key": "g"})

lock = threading.Lock()
lat, statuses = [], {}
stop = time.time() + seconds

def client(n):
    rnd = random.Random(n)
    c, k = conn(), 0
    while time.time() < stop:
        a = f"soak-{rnd.randrange(accounts)}"
        roll = rnd.random()
        k += 1
        t0 = time.perf_counter()
        try:
            if roll < 0.85:
                s = call(c, "POST", f"/v1/accounts/{a}/debits",
                         {"operation": rnd.choice(["face_generation", "sample_image", "caption_generation"]),
                          "idempotency_key": f"c{n}-{k}", "metadata": {"job": str(k)}})
            elif roll < 0.95:
                s = call(c, "GET", f"/v1/accounts/{a}")
            elif roll < 0.98:
                s = call(c, "POST", f"/v1/accounts/{a}/debits",
                         {"operation": "caption_generation", "idempotency_key": f"retry-{n}"})
            else:
                s = call(c, "POST", f"/v1/accounts/{a}/purchases",
                         {"pack": "pack_100", "payment_ref": f"p{n}-{k}"})
        except Exception as e:
            s = type(e).__name__
            c = conn()
        dt = time.perf_counter() - t0
        with lock:
            lat.append(dt)
            statuses[s] = statuses.get(s, 0) + 1

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
for t in threads: t.start()
rows, t0 = [], time.time()
print(f"{'t_s':>6} {'req/s':>8} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'rss_mib':>8}  statuses")
while time.time() < stop:
    time.sleep(min(interval, max(0.1, stop - time.time())))
    with lock:
        window, statuses_now = sorted(lat), dict(statuses)
        lat.clear(); statuses.clear()
    if not window: continue
    p = lambda q: window[min(len(window) - 1, int(q * len(window)))] * 1000
    row = (time.time() - t0, len(window) / interval, p(0.5), p(0.99), window[-1] * 1000, rss_kib() / 1024)
    rows.append(row)
    print("%6.0f %8.0f %8.2f %8.2f %8.1f %8.1f  %s" % (*row, statuses_now), flush=True)
for t in threads: t.join()
if len(rows) >= 2:
    first, last = rows[0], rows[-1]
    print(f"soak: p99 {first[3]:.2f} ms -> {last[3]:.2f} ms ({(last[3] / first[3] - 1) * 100:+.0f}%), "
          f"RSS {first[5]:.1f} MiB -> {last[5]:.1f} MiB ({last[5] - first[5]:+.1f} MiB), max RSS {max(r[5] for r in rows):.1f} MiB")
PY

kill -TERM $pid
wait $pid || { echo "soak: creditsd exited non-zero"; exit 1; }
"$bin" audit --config "$work/config.toml" --data-dir "$work/data" | tail -1
