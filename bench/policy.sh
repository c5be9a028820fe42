#!/usr/bin/env bash
# Benchmark of `sigillo policy serve` against postfix-mta-sts-resolver (PyPI, with uvloop):
# socketmap lookups per second and p50/p99 latency, same queries, same client shapes, same
# DNS and HTTPS peers, in one run. Raw outputs go to bench/results/run-policy-<time>/, the
# summary to bench/results/policy-latest.md. See docs/benchmarks.md ("sigillo policy serve").
#
# Everything runs inside a network namespace made here (postfix-mta-sts-resolver resolves
# through /etc/resolv.conf, which `ip netns exec` replaces with one pointing at the lab's DNS
# server on 127.0.0.1:53). Nothing is pinned to a core: the daemon, the load generator and
# the lab (DNS + HTTPS) share the machine's cores; each one's CPU is measured and reported.
#
# Settings (environment):
#   DURATION=10            seconds measured per run (after WARMUP)
#   WARMUP=2               seconds of load before measuring
#   SHAPES="16x1 64x8 16x1u 64x8u"   connections x requests in flight (64x8: 4 x 16
#                          connections, 8 each) over loopback TCP; a trailing "u" means the
#                          same over a unix socket (Postfix's socketmap:unix:), for both daemons
#   WORKLOADS="hits notfound misses bursts"
#   DAEMONS="sigillo resolver"
#   HITS=1000 NOTFOUND=1000 MISSES=30000 BURSTS=3000   domains of each kind in the lab
#   MAX_LOAD=1.0           wait (up to LOAD_WAIT s) for the 1-minute load average to fall
#   LOAD_WAIT=90           below this before each run; a run that started above it anyway
#   RETRIES=2              is run again, at most RETRIES times (the last one is kept)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHAPES=${SHAPES:-"16x1 64x8 16x1u 64x8u"}
WORKLOADS=${WORKLOADS:-"hits notfound misses bursts"}
DAEMONS=${DAEMONS:-"sigillo resolver"}
HITS=${HITS:-1000}
NOTFOUND=${NOTFOUND:-1000}
MISSES=${MISSES:-30000}
BURSTS=${BURSTS:-3000}
MAX_LOAD=${MAX_LOAD:-1.0}
LOAD_WAIT=${LOAD_WAIT:-90}
RETRIES=${RETRIES:-2}

RUN="$ROOT/bench/results/run-policy-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN/bin"
log() { printf '\n== %s\n' "$*" >&2; }

if [[ $EUID -ne 0 ]]; then
    echo "bench/policy.sh needs root (network namespace, ports 53 and 443)" >&2
    exit 1
fi
command -v ip >/dev/null || { echo "ip (iproute2) is not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- build
log "building (release)"
cargo build --release -p sigillo >&2
cargo build --release -p sigillo-check --example policy_bench_lab >&2
cargo build --release -p sigillo-policy --example socketmap_load >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# Copies: other builds on this machine must not swap a binary in the middle of the run.
cp "$TARGET_DIR/release/sigillo" "$TARGET_DIR/release/examples/policy_bench_lab" \
    "$TARGET_DIR/release/examples/socketmap_load" "$RUN/bin/"
SIGILLO="$RUN/bin/sigillo"
LAB="$RUN/bin/policy_bench_lab"
LOAD="$RUN/bin/socketmap_load"

# ---------------------------------------------------------------- postfix-mta-sts-resolver
log "installing postfix-mta-sts-resolver and uvloop into a venv"
python3 -m venv "$RUN/venv"
"$RUN/venv/bin/pip" install -q postfix-mta-sts-resolver uvloop >&2
RESOLVER="$RUN/venv/bin/mta-sts-daemon"
# The same settings for both transports; only the listening lines differ.
for transport in tcp unix; do
    if [[ $transport == tcp ]]; then
        printf 'host: 127.0.0.1\nport: 8462\nreuse_port: true\n'
    else
        printf 'path: %s\n' "$RUN/resolver.sock"
    fi >"$RUN/resolver-$transport.yml"
    cat >>"$RUN/resolver-$transport.yml" <<'EOF'
shutdown_timeout: 5
cache:
  type: internal
  options:
    cache_size: 200000
default_zone:
  strict_testing: false
  timeout: 4
EOF
done

# ---------------------------------------------------------------- environment
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo '+dirty')"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores=$(nproc)"
    echo "mem=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "kernel=$(uname -r)"
    echo "rustc=$(rustc --version)"
    echo "python=$("$RUN/venv/bin/python" --version 2>&1)"
    "$RUN/venv/bin/pip" list 2>/dev/null |
        awk 'tolower($1) ~ /^(postfix.mta.sts.resolver|uvloop|aiodns|aiohttp|pycares)$/ {print tolower($1) "=" $2}'
    echo "sigillo=$("$SIGILLO" --version 2>/dev/null || echo '?')"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "duration=$DURATION"
    echo "warmup=$WARMUP"
    echo "domains=hits $HITS, notfound $NOTFOUND, misses $MISSES, bursts $BURSTS"
} >"$RUN/env.txt"

# ---------------------------------------------------------------- namespace, cleanup
NS="sigillo-bench-$$"
PIDS=()
LAB_FD=
cleanup() {
    local pid
    if [[ -n $LAB_FD ]]; then { exec {LAB_FD}>&-; } 2>/dev/null || true; fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns delete "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
echo "nameserver 127.0.0.1" >"/etc/netns/$NS/resolv.conf"
# For foreground commands only: a backgrounded function would record the subshell's pid.
in_ns() { ip netns exec "$NS" "$@"; }

# ---------------------------------------------------------------- lab: DNS + HTTPS
log "starting the lab (signing $((HITS + MISSES + BURSTS)) MTA-STS domains and $NOTFOUND others)"
mkfifo "$RUN/lab.in"
ip netns exec "$NS" "$LAB" --hits "$HITS" --notfound "$NOTFOUND" --misses "$MISSES" --bursts "$BURSTS" \
    --stats "$RUN/lab.stats" <"$RUN/lab.in" >"$RUN/lab.out" 2>"$RUN/lab.err" &
LAB_PID=$!
PIDS+=("$LAB_PID")
exec {LAB_FD}>"$RUN/lab.in"
for _ in $(seq 600); do
    grep -q '^ready ' "$RUN/lab.out" 2>/dev/null && break
    kill -0 "$LAB_PID" 2>/dev/null || { cat "$RUN/lab.err" >&2; exit 1; }
    sleep 0.2
done
read -r _ anchor_kv ca_kv <"$RUN/lab.out"
ANCHOR=${anchor_kv#trust_anchor=}
CA=${ca_kv#ca=}

# ---------------------------------------------------------------- daemons
DAEMON_PID=
ADDR=
start_daemon() { # NAME TRANSPORT (tcp or unix)
    local transport=$2
    case $1 in
    sigillo)
        PORT=8461
        ADDR="127.0.0.1:$PORT"
        [[ $transport == unix ]] && ADDR="unix:$RUN/sigillo.sock"
        ip netns exec "$NS" "$SIGILLO" policy serve --listen "$ADDR" --map-name sts \
            --resolver 127.0.0.1:53 --trust-anchor "$ANCHOR" --ca-file "$CA" \
            2>>"$RUN/sigillo.log" &
        ;;
    resolver)
        PORT=8462
        ADDR="127.0.0.1:$PORT"
        [[ $transport == unix ]] && ADDR="unix:$RUN/resolver.sock"
        SSL_CERT_FILE="$CA" ip netns exec "$NS" "$RESOLVER" -c "$RUN/resolver-$transport.yml" -v warn \
            2>>"$RUN/resolver.log" &
        ;;
    esac
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    for _ in $(seq 200); do
        if [[ $transport == unix ]]; then
            [[ -S ${ADDR#unix:} ]] && return 0
        else
            in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null && return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "daemon $1 did not start; see $RUN/$1.log" >&2
    exit 1
}
stop_daemon() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    rm -f "$RUN/sigillo.sock" "$RUN/resolver.sock"
}

load1() { cut -d' ' -f1 /proc/loadavg; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
wait_for_quiet() {
    local waited=0
    while above "$(load1)" "$MAX_LOAD" && ((waited < LOAD_WAIT)); do
        sleep 5
        waited=$((waited + 5))
    done
}

# keys, count and order of a workload
workload_args() {
    case $1 in
    hits) echo "--keys h{}.bench.test --count $HITS --order cycle" ;;
    notfound) echo "--keys n{}.bench.test --count $NOTFOUND --order cycle" ;;
    misses) echo "--keys m{}.bench.test --count $MISSES --order unique" ;;
    bursts) echo "--keys b{}.bench.test --count $BURSTS --order burst" ;;
    esac
}

# One measurement: a fresh daemon (empty cache), warmed up for hits and notfound with one
# lookup of every domain, then the generator. Writes the result line to $RUN/last.json.
measure() { # DAEMON WORKLOAD SHAPE
    local daemon=$1 workload=$2 shape=$3 conns=${3%x*} inflight=${3#*x} warm=$WARMUP transport=tcp
    if [[ $inflight == *u ]]; then
        inflight=${inflight%u}
        transport=unix
    fi
    start_daemon "$daemon" "$transport"
    case $workload in
    hits | notfound)
        local count=$HITS
        [[ $workload == notfound ]] && count=$NOTFOUND
        # shellcheck disable=SC2046
        in_ns "$LOAD" --addr "$ADDR" --connections 16 --in-flight 1 \
            --keys "${workload:0:1}{}.bench.test" --count "$count" --order unique \
            --warmup 0 --duration 60 --label warm-up >>"$RUN/warm-up.jsonl"
        ;;
    misses | bursts) warm=0 ;; # each lookup must be a miss: nothing to warm up
    esac
    wait_for_quiet
    # shellcheck disable=SC2046
    in_ns "$LOAD" --addr "$ADDR" --connections "$conns" --in-flight "$inflight" \
        $(workload_args "$workload") --warmup "$warm" --duration "$DURATION" \
        --watch "daemon=$DAEMON_PID" --watch "lab=$LAB_PID" --stats "$RUN/lab.stats" \
        --label "$daemon $workload $shape" >"$RUN/last.json"
    stop_daemon
}

log "measuring: daemons [$DAEMONS], workloads [$WORKLOADS], shapes [$SHAPES], ${DURATION}s each"
for workload in $WORKLOADS; do
    for shape in $SHAPES; do
        for daemon in $DAEMONS; do
            for attempt in $(seq 0 "$RETRIES"); do
                measure "$daemon" "$workload" "$shape"
                line=$(cat "$RUN/last.json")
                echo "$line" >>"$RUN/attempts.jsonl"
                before=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["loadavg_before"].split()[0])' "$line")
                if above "$before" "$MAX_LOAD" && ((attempt < RETRIES)); then
                    log "$daemon $workload $shape: load average $before at the start, running it again"
                    continue
                fi
                break
            done
            echo "$line" >>"$RUN/results.jsonl"
            log "$daemon $workload $shape: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["lookups_per_s"], "lookups/s, p50", d["p50_ms"], "ms, p99", d["p99_ms"], "ms, daemon CPU", d["cpu_pct"].get("daemon"), "%, load", d["loadavg_before"], "->", d["loadavg_after"])' "$line")"
        done
    done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/env.txt"

python3 "$ROOT/bench/policy-summarize.py" "$RUN" >"$RUN/summary.md"
cp "$RUN/summary.md" "$ROOT/bench/results/policy-latest.md"
log "summary: bench/results/policy-latest.md (raw outputs in ${RUN#"$ROOT"/})"
