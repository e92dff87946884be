#!/usr/bin/env bash
# Side-by-side: the same work (50 connections, 10,000 accounts drawn uniformly, one debit
# of 1 credit per request, acknowledged only when durable unless the row says otherwise)
# on creditsd sync / periodic / batch, Redis 7 (Lua check-and-decrement, AOF always and
# everysec), PostgreSQL (conditional UPDATE + ledger INSERT, synchronous_commit on), and a
# bare hyper hello-world POST as the HTTP ceiling.
#
# Rounds alternate the systems (A B C ... A B C ...) so that a noisy neighbour hits all of
# them alike; the table shows the median of the rounds. Everything listens on 127.0.0.1
# and lives in a temporary directory that is removed at the end, servers included.
#
#   benches/compare.sh                     # ROUNDS=3 SECS=10 by default
#   ROUNDS=5 SECS=20 benches/compare.sh
#   PEERS=0 benches/compare.sh             # creditsd and bare hyper only (no Redis/PostgreSQL)
#   BEFORE=/path/to/old/bin benches/compare.sh   # also an older creditsd build (its
#                                          # `creditsd` binary there), alternated with this one
#
# creditsd rows also give the daemon's CPU µs and bytes written to disk per debit (from
# /proc/<pid>/io write_bytes over the run, so a checkpoint that falls in the run counts).
#
# Needs root (or sudo) only to install missing Debian packages: redis-server, redis-tools,
# postgresql (pgbench comes with it). Redis and PostgreSQL are driven by their own
# benchmark tools over their binary protocols (no HTTP, no JSON), which favours them.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CONNS=50
ACCOUNTS=10000
REDIS_ALWAYS_N=${REDIS_ALWAYS_N:-60000}
REDIS_EVERYSEC_N=${REDIS_EVERYSEC_N:-400000}
PEERS=${PEERS:-1}
BEFORE=${BEFORE:-}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
WORK=$(mktemp -d /tmp/creditsd-compare.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_DATA=""
PGBIN=""

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

need_pkg() { # command package...
    command -v "$1" >/dev/null 2>&1 && return
    echo "installing ${*:2} (apt-get)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y -q "${@:2}" >/dev/null
}
if [ "$PEERS" = 1 ]; then
    need_pkg redis-server redis-server
    need_pkg redis-benchmark redis-tools
    need_pkg pgbench postgresql
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

[ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet --bin creditsd --bin creditsd-load --example hello)
declare -A SERVER_PID=()

wait_port() { # port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# --- servers ---------------------------------------------------------------------------

start_creditsd() { # name port durability [bin dir]
    mkdir -p "$WORK/$1"
    printf '[storage]\ndurability = "%s"\n' "$3" >"$WORK/$1/config.toml"
    "${4:-$BIN}/creditsd" serve --config "$WORK/$1/config.toml" --listen "127.0.0.1:$2" \
        --data-dir "$WORK/$1/data" 2>"$WORK/$1/log" &
    PIDS+=($!)
    SERVER_PID[$2]=$!
    wait_port "$2"
    "$BIN/creditsd-load" --addr "127.0.0.1:$2" -a $ACCOUNTS --setup-only >/dev/null
}

start_redis() { # name port appendfsync
    mkdir -p "$WORK/$1"
    redis-server --port "$2" --bind 127.0.0.1 --dir "$WORK/$1" --save "" \
        --appendonly yes --appendfsync "$3" --daemonize no --logfile "$WORK/$1/log" &
    PIDS+=($!)
    wait_port "$2"
    for i in $(seq 0 $((ACCOUNTS - 1))); do printf 'SET acct:%012d 1000000000\n' "$i"; done |
        redis-cli -p "$2" --pipe >/dev/null
}

# Check-and-decrement: refuses (returns -1) when the balance is short, like a 402.
REDIS_LUA='local b = tonumber(redis.call("GET", KEYS[1]) or "0")
local c = tonumber(ARGV[1])
if b < c then return -1 end
return redis.call("DECRBY", KEYS[1], c)'

start_postgres() { # port
    PG_DATA=$WORK/pg
    mkdir -p "$PG_DATA" && chown postgres "$PG_DATA"
    runuser -u postgres -- "$PGBIN/initdb" -D "$PG_DATA" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w start -o \
        "-p $1 -k $PG_DATA -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on -c shared_buffers=256MB -c max_connections=120" >/dev/null
    psql -q -h 127.0.0.1 -p "$1" -U postgres <<SQL
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
INSERT INTO accounts SELECT g, 1000000000 FROM generate_series(1, $ACCOUNTS) g;
CREATE TABLE ledger (id bigserial PRIMARY KEY, account int NOT NULL, credits int NOT NULL,
                     idempotency_key text NOT NULL UNIQUE, at timestamptz NOT NULL DEFAULT now());
SQL
    cat >"$WORK/debit.sql" <<SQL
\set aid random(1, $ACCOUNTS)
\set k random(1, 9000000000000000000)
WITH u AS (UPDATE accounts SET balance = balance - 1 WHERE id = :aid AND balance >= 1 RETURNING id)
INSERT INTO ledger (account, credits, idempotency_key) SELECT id, 1, 'k' || :client_id || '-' || :k FROM u;
SQL
}

# --- one measurement each: prints "ops_per_s p50_ms p99_ms" ------------------------------

load_json() { # jq-free extraction of our JSON line
    python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(j["ok_per_s"], j["p50_ms"], j["p99_ms"], "ok" if j["balanced"] and j["transport_errors"]==0 else "BOOKS", j.get("cpu_us_per_debit") or "-", j.get("bytes_per_debit") or "-")'
}

run_creditsd() { # port [extra args]
    local port=$1
    shift
    "$BIN/creditsd-load" --addr "127.0.0.1:$port" -a $ACCOUNTS --skip-setup -d "$SECS" --json \
        --pid "${SERVER_PID[$port]}" "$@" | load_json
}

run_hello() { # port
    "$BIN/creditsd-load" --addr "127.0.0.1:$1" -c $CONNS -a $ACCOUNTS -d "$SECS" --json \
        --path /v1/accounts/x/debits \
        --template '{"account":"{account}","operation":"caption_generation","idempotency_key":"{key}"}' |
        python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(j["ok_per_s"], j["p50_ms"], j["p99_ms"], "ok", "-", "-")'
}

run_redis() { # port n
    local sha
    sha=$(redis-cli -p "$1" SCRIPT LOAD "$REDIS_LUA")
    redis-benchmark -p "$1" -c $CONNS -n "$2" -r $ACCOUNTS --csv \
        EVALSHA "$sha" 1 'acct:__rand_int__' 1 2>/dev/null | tail -1 |
        python3 -c 'import csv,sys; r=next(csv.reader(sys.stdin)); print(r[1], r[4], r[6], "ok", "-", "-")'
}

run_postgres() { # port
    local log=$WORK/pglog
    rm -rf "$log" && mkdir -p "$log"
    (cd "$log" && pgbench -n -h 127.0.0.1 -p "$1" -U postgres -c $CONNS -j 2 -T "$SECS" -M prepared \
        -f "$WORK/debit.sql" --log postgres >"$log/out" 2>&1)
    python3 - "$log" <<'PY'
import glob, re, sys
d = sys.argv[1]
lat = []
for f in glob.glob(d + "/pgbench_log.*"):
    for line in open(f):
        parts = line.split()
        if len(parts) > 2:
            lat.append(int(parts[2]) / 1000.0)
lat.sort()
tps = float(re.search(r"tps = ([0-9.]+)", open(d + "/out").read()).group(1))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{tps:.1f} {q(0.5):.3f} {q(0.99):.3f} ok - -")
PY
}

# --- the run ----------------------------------------------------------------------------

echo "starting servers in $WORK" >&2
start_creditsd sync 18701 sync
start_creditsd periodic 18702 periodic
"$BIN/examples/hello" 127.0.0.1:18703 2>/dev/null &
PIDS+=($!)
wait_port 18703
SYSTEMS=(sync batch periodic hello)
if [ -n "$BEFORE" ]; then
    start_creditsd before-sync 18707 sync "$BEFORE"
    start_creditsd before-periodic 18708 periodic "$BEFORE"
    SYSTEMS=(sync before-sync batch before-batch periodic before-periodic hello)
fi
if [ "$PEERS" = 1 ]; then
    start_redis redis-always 18704 always
    start_redis redis-everysec 18705 everysec
    start_postgres 18706
    SYSTEMS+=(redis-always redis-everysec postgres)
fi
declare -A LABEL=(
    [sync]="creditsd sync (single debits)"
    [batch]="creditsd sync, batches of 1000 (8 conns)"
    [periodic]="creditsd periodic (single debits)"
    [before-sync]="before: creditsd sync (single debits)"
    [before-batch]="before: creditsd sync, batches of 1000 (8 conns)"
    [before-periodic]="before: creditsd periodic (single debits)"
    [hello]="bare hyper hello-world POST"
    [redis-always]="Redis 7 Lua, AOF always"
    [redis-everysec]="Redis 7 Lua, AOF everysec"
    [postgres]="PostgreSQL UPDATE+INSERT, sync commit"
)
RESULTS=$WORK/results
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SYSTEMS[@]}"; do
        case $s in
            sync) r=$(run_creditsd 18701 -c $CONNS) ;;
            batch) r=$(run_creditsd 18701 -c 8 -b 1000) ;;
            periodic) r=$(run_creditsd 18702 -c $CONNS) ;;
            before-sync) r=$(run_creditsd 18707 -c $CONNS) ;;
            before-batch) r=$(run_creditsd 18707 -c 8 -b 1000) ;;
            before-periodic) r=$(run_creditsd 18708 -c $CONNS) ;;
            hello) r=$(run_hello 18703) ;;
            redis-always) r=$(run_redis 18704 "$REDIS_ALWAYS_N") ;;
            redis-everysec) r=$(run_redis 18705 "$REDIS_EVERYSEC_N") ;;
            postgres) r=$(run_postgres 18706) ;;
        esac
        echo "round $round $s: $r" >&2
        echo "$s $r" >>"$RESULTS"
    done
done

python3 - "$RESULTS" "$ROUNDS" "$SECS" <<PY
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, ops, p50, p99, books, cpu, written = line.split()
    rows.setdefault(s, []).append((float(ops), float(p50), float(p99), books, cpu, written))
def med_of(v, i):
    xs = [float(r[i]) for r in v if r[i] != "-"]
    return statistics.median(xs) if xs else None
med = {s: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
           statistics.median(r[2] for r in v), all(r[3] == "ok" for r in v),
           med_of(v, 4), med_of(v, 5)) for s, v in rows.items()}
label = {$(for s in "${SYSTEMS[@]}"; do printf '"%s": "%s", ' "$s" "${LABEL[$s]}"; done)}
hello = med["hello"][0]
ra = med.get("redis-always", (None,))[0]
re_ = med.get("redis-everysec", (None,))[0]
ratio = lambda ops, base: f"{ops/base:.2f}" if base else "–"
num = lambda x, f: format(x, f) if x is not None else "–"
print(f"Medians of {sys.argv[2]} alternating rounds of {sys.argv[3]} s; 50 connections, 10,000 accounts uniform.")
print()
print("| system | debits/s | p50 ms | p99 ms | CPU µs/debit | bytes written/debit | × bare hyper | × Redis always | × Redis everysec |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in rows:
    ops, p50, p99, ok, cpu, written = med[s]
    note = "" if ok else " (books!)"
    print(f"| {label[s]}{note} | {ops:,.0f} | {p50:.2f} | {p99:.2f} | {num(cpu, '.1f')} | {num(written, ',.0f')} | {ops/hello:.2f} | {ratio(ops, ra)} | {ratio(ops, re_)} |")
PY
