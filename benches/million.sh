#!/usr/bin/env bash
# Scale: 1,000,000 accounts on disk. Measures, against a release build:
#   - creation of N accounts (not timed as a target: it is setup),
#   - start-up to ready with N accounts on disk (recovery is lazy: on first use),
#   - cold activation latency (the first GET of an account after a restart) and p99,
#   - resident memory per active account (RSS growth over ACTIVE activated accounts).
# Takes a few minutes; not part of the test suite. Everything on 127.0.0.1, in a temp dir.
#
#   benches/million.sh                 # N=1000000 ACTIVE=100000
#   N=200000 benches/million.sh
#   KEEP=/tmp/million benches/million.sh   # keep (or reuse) the data in /tmp/million
set -euo pipefail

N=${N:-1000000}
ACTIVE=${ACTIVE:-100000}
PORT=${PORT:-18720}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=${KEEP:-$(mktemp -d /tmp/creditsd-million.XXXXXX)}
mkdir -p "$WORK"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --quiet --bin creditsd --bin creditsd-load)

start() { # idle_timeout_ms; sets PID and READY_MS (from exec to /readyz answering 200)
    printf '[storage]\ndurability = "periodic"\n[actors]\nidle_timeout_ms = %s\n' "$1" >"$WORK/config.toml"
    local t0
    t0=$(date +%s%N)
    "$BIN/creditsd" serve --config "$WORK/config.toml" --listen "127.0.0.1:$PORT" \
        --data-dir "$WORK/data" >/dev/null 2>>"$WORK/log" &
    PID=$!
    until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do sleep 0.005; done
    READY_MS=$((($(date +%s%N) - t0) / 1000000))
}
stop() {
    kill -TERM "$PID" && wait "$PID" || true
    PID=""
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

if [ -e "$WORK/created" ]; then
    echo "== reusing $(cat "$WORK/created") accounts in $WORK"
else
    echo "== creating $N accounts (periodic durability, actors passivate after 1 s)"
    start 1000
    t0=$(date +%s)
    "$BIN/creditsd-load" --addr "127.0.0.1:$PORT" -a "$N" --prefix m- --fund 0 --setup-only \
        --setup-connections 64
    echo "created in $(($(date +%s) - t0)) s; on disk: $(du -sh "$WORK/data" | cut -f1)"
    stop
    echo "$N" >"$WORK/created"
fi

echo "== start-up to ready with $N accounts on disk (median of 3)"
ready=()
for _ in 1 2 3; do
    start 600000
    ready+=("$READY_MS")
    stop
done
printf '%s\n' "${ready[@]}" | sort -n | sed -n 2p | xargs -I{} echo "ready in {} ms (runs: ${ready[*]} ms)"

echo "== cold activation of $ACTIVE accounts, then memory per active account"
start 600000
echo "ready in $READY_MS ms"
before=$(rss_kib)
"$BIN/creditsd-load" --addr "127.0.0.1:$PORT" -a "$ACTIVE" --prefix m- --reads --setup-connections 50
after=$(rss_kib)
active=$(metric creditsd_accounts_active)
echo "active accounts: $active; RSS $((before / 1024)) MiB -> $((after / 1024)) MiB:" \
    "$(((after - before) * 1024 / ACTIVE)) bytes per active account"
echo "server-side activation histogram:"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^creditsd_account_activation_duration_seconds_(bucket|count|sum)' | grep -v 'le="+Inf"' | tail -8
stop
