#!/usr/bin/env bash
# Start to ready with a big history on disk: fills a store with EVENTS debits (default
# 10,000,000, in batches of 1000 over 8 connections, spread over ACCOUNTS accounts), then
# measures, against a release build:
#   - bytes stored per event (the data directory's size over the events),
#   - start to ready after a graceful stop (median of 3),
#   - start to ready after kill -9 under load (median of 3: each a few seconds of load,
#     a SIGKILL, a restart; the log left to replay is what the checkpointer had not
#     covered yet).
# "Ready" is /readyz answering 200, timed from the exec. Not part of the test suite; takes
# several minutes. Everything on 127.0.0.1, in a temp dir (or KEEP=dir to keep/reuse it).
#
#   benches/ready.sh
#   EVENTS=1000000 benches/ready.sh
#   KEEP=/tmp/ready benches/ready.sh
set -euo pipefail

EVENTS=${EVENTS:-10000000}
ACCOUNTS=${ACCOUNTS:-10000}
PORT=${PORT:-18730}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=${KEEP:-$(mktemp -d /tmp/creditsd-ready.XXXXXX)}
mkdir -p "$WORK"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --locked --quiet --bin creditsd --bin creditsd-load)

start() { # sets PID and READY_MS (from exec to /readyz answering 200)
    local t0
    t0=$(date +%s%N)
    "$BIN/creditsd" serve --config "$WORK/config.toml" --listen "127.0.0.1:$PORT" \
        --data-dir "$WORK/data" >/dev/null 2>>"$WORK/log" &
    PID=$!
    until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do sleep 0.002; done
    READY_MS=$((($(date +%s%N) - t0) / 1000000))
}
stop() {
    kill -TERM "$PID" && wait "$PID" || true
    PID=""
}
load() { # seconds, or a request count with -n
    "$BIN/creditsd-load" --addr "127.0.0.1:$PORT" -a "$ACCOUNTS" -c 8 -b 1000 \
        --skip-setup --no-verify "$@" >>"$WORK/load.log"
}
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

printf '[storage]\ndurability = "periodic"\n' >"$WORK/config.toml"
if [ -e "$WORK/filled" ]; then
    echo "== reusing $(cat "$WORK/filled") events in $WORK"
else
    echo "== filling $EVENTS debits over $ACCOUNTS accounts (batches of 1000, 8 connections)"
    start
    "$BIN/creditsd-load" --addr "127.0.0.1:$PORT" -a "$ACCOUNTS" --setup-only >/dev/null
    t0=$(date +%s)
    load -n $((EVENTS / 1000))
    echo "filled in $(($(date +%s) - t0)) s"
    stop
    echo "$EVENTS" >"$WORK/filled"
fi
bytes=$(du -sb "$WORK/data" | cut -f1)
echo "on disk: $((bytes / 1048576)) MiB ($(du -sb "$WORK/data/log" | cut -f1) in log/):" \
    "$((bytes / EVENTS)) bytes per event"

echo "== start to ready after a graceful stop (median of 3)"
runs=()
for _ in 1 2 3; do
    start
    runs+=("$READY_MS")
    stop
done
echo "ready in $(median "${runs[@]}") ms (runs: ${runs[*]} ms)"

echo "== start to ready after kill -9 under load (median of 3)"
runs=()
for _ in 1 2 3; do
    start
    load -d 3 &
    loader=$!
    sleep 2
    kill -9 "$PID"
    wait "$PID" 2>/dev/null || true
    wait "$loader" 2>/dev/null || true
    PID=""
    start
    runs+=("$READY_MS")
    stop
done
echo "ready in $(median "${runs[@]}") ms (runs: ${runs[*]} ms)"
grep -o 'replayed the write-ahead log records[^}]*' "$WORK/log" | tail -3 || true
