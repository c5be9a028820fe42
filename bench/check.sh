#!/usr/bin/env bash
# Benchmark of `sigillo check` on loopback: one real Postfix against sslscan and testssl, and a
# bulk run against a farm of lab SMTP+STARTTLS servers. Raw outputs go to bench/results/<run>/,
# the summary to bench/results/latest.md. See docs/benchmarks.md.
#
# Settings (environment):
#   SINGLE_RUNS=5        hyperfine runs of sigillo vs sslscan vs testssl (testssl takes ~6 s a run)
#   SIGILLO_RUNS=30      hyperfine runs of sigillo alone (and the STARTTLS floor client)
#   BULK_PORTS=1000      ports of the lab farm per address family
#   BULK_IPV6=auto       also serve the same number of ports on ::1 (auto: when ::1 exists)
#   CONCURRENCY="1 16 64 256"
#   BULK_RUNS=5          hyperfine runs per bulk command
#   CPU_RUNS=3           /usr/bin/time -v runs per bulk command (CPU split, peak RSS)
#   PERF=auto            sample where the CPU goes with `perf record` (auto: when perf works)
#   PARTS="single bulk"  which parts to run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SINGLE_RUNS=${SINGLE_RUNS:-5}
SIGILLO_RUNS=${SIGILLO_RUNS:-30}
BULK_PORTS=${BULK_PORTS:-1000}
BULK_IPV6=${BULK_IPV6:-auto}
CONCURRENCY=${CONCURRENCY:-"1 16 64 256"}
BULK_RUNS=${BULK_RUNS:-5}
CPU_RUNS=${CPU_RUNS:-3}
PERF=${PERF:-auto}
PARTS=${PARTS:-"single bulk"}

RUN="$ROOT/bench/results/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
log() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
[[ -x /usr/bin/time ]] || need_apt+=(time)
command -v python3 >/dev/null || need_apt+=(python3)
command -v sslscan >/dev/null || need_apt+=(sslscan)
command -v testssl >/dev/null || need_apt+=(testssl.sh)
command -v postfix >/dev/null || { echo "postfix is not installed (see .ci/install-peers)" >&2; exit 1; }
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    apt-get install -y --no-install-recommends "${need_apt[@]}" >&2
fi
if [[ $EUID -ne 0 ]]; then
    echo "bench/check.sh needs root (a private Postfix instance runs its master as root)" >&2
    exit 1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- build
log "building (release)"
cargo build --release -p sigillo >&2
cargo build --release -p sigillo-check --example lab_farm --example starttls_floor >&2
cargo build --release -p sigillo-testkit --example postfix_for_bench >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SIGILLO="$TARGET_DIR/release/sigillo"
FARM="$TARGET_DIR/release/examples/lab_farm"
FLOOR="$TARGET_DIR/release/examples/starttls_floor"
POSTFIX_BENCH="$TARGET_DIR/release/examples/postfix_for_bench"

# ---------------------------------------------------------------- servers
# Each server reads a fifo on stdin and stops when the script closes its end (EOF), or on
# SIGTERM; cleanup does both, and stops any Postfix instance left behind by its config dir.
SERVER_PIDS=()
SERVER_FDS=()
POSTFIX_DIRS=()

cleanup() {
    local fd pid dir
    # (A bare `exec` redirection would apply to the whole script: keep it in a group.)
    for fd in "${SERVER_FDS[@]}"; do { exec {fd}>&-; } 2>/dev/null || true; done
    SERVER_FDS=()
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; sleep 1; fi
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
    for dir in "${POSTFIX_DIRS[@]}"; do
        if [[ -d $dir ]]; then postfix -c "$dir" stop >/dev/null 2>&1 || true; fi
    done
    POSTFIX_DIRS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME CMD... : runs CMD with stdin from a fifo; sets SERVER_PID.
start_server() {
    local name=$1 fd
    shift
    mkfifo "$RUN/$name.in"
    "$@" <"$RUN/$name.in" >"$RUN/$name.out" 2>"$RUN/$name.err" &
    SERVER_PID=$!
    exec {fd}>"$RUN/$name.in"
    SERVER_PIDS+=("$SERVER_PID")
    SERVER_FDS+=("$fd")
}

# wait_line FILE REGEX SECONDS: prints the first matching line.
wait_line() {
    local file=$1 re=$2 deadline=$((SECONDS + $3)) line
    while ((SECONDS < deadline)); do
        if line=$(grep -m1 -E "$re" "$file" 2>/dev/null); then
            printf '%s\n' "$line"
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for /$re/ in $file" >&2
    cat "${file%.out}.err" >&2 || true
    return 1
}

# start_postfix NAME [main.cf key=value...]: sets PF_PORT, PF_CA.
start_postfix() {
    local name=$1
    shift
    start_server "$name" "$POSTFIX_BENCH" "$@"
    local dir
    dir=$(wait_line "$RUN/$name.out" '^config_dir=' 60)
    POSTFIX_DIRS+=("${dir#config_dir=}")
    PF_PORT=$(wait_line "$RUN/$name.out" '^port=' 5)
    PF_PORT=${PF_PORT#port=}
    PF_CA=$(wait_line "$RUN/$name.out" '^ca=' 5)
    PF_CA=${PF_CA#ca=}
}

# ---------------------------------------------------------------- environment
{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cpus=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "mem_total=$(grep MemTotal /proc/meminfo | awk '{print $2 " kB"}')"
    echo "sigillo=$("$SIGILLO" --version 2>/dev/null || echo unknown) ($(git -C "$ROOT" rev-parse --short HEAD))"
    echo "rustc=$(rustc --version)"
    echo "postfix=$(postconf -d mail_version 2>/dev/null | cut -d' ' -f3)"
    echo "openssl=$(openssl version 2>/dev/null)"
    echo "sslscan=$(sslscan --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 -oE '[0-9]+\.[0-9]+\.[0-9]+')"
    echo "testssl=$(testssl --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 -oE 'testssl +[0-9.]+' | awk '{print $2}')"
    echo "hyperfine=$(hyperfine --version | awk '{print $2}')"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/env.txt"
cat "$RUN/env.txt" >&2

# ---------------------------------------------------------------- a. single host
if [[ " $PARTS " == *" single "* ]]; then
log "single host: private Postfix with STARTTLS"
start_postfix postfix
PORT=$PF_PORT
CA=$PF_CA
echo "[127.0.0.1]:$PORT" >"$RUN/single-target.txt"
echo "postfix_port=$PORT" >>"$RUN/env.txt"
"$SIGILLO" check --ca-file "$CA" --color never "[127.0.0.1]:$PORT" >"$RUN/single-report.txt"
sslscan --starttls-smtp "127.0.0.1:$PORT" >"$RUN/sslscan.txt" 2>&1 || true
echo "postfix_ready=yes" >>"$RUN/env.txt"

log "single host: sigillo vs sslscan vs testssl, one hyperfine run, $SINGLE_RUNS runs each"
hyperfine -N --warmup 1 --runs "$SINGLE_RUNS" -i \
    --export-json "$RUN/single-tools.json" --export-markdown "$RUN/single-tools.md" \
    -n sigillo "$SIGILLO check --json --ca-file $CA [127.0.0.1]:$PORT" \
    -n sslscan "sslscan --starttls-smtp 127.0.0.1:$PORT" \
    -n testssl "testssl --starttls smtp -p 127.0.0.1:$PORT" >&2

log "single host: sigillo and the bare STARTTLS client, $SIGILLO_RUNS runs each"
hyperfine -N --warmup 3 --runs "$SIGILLO_RUNS" \
    --export-json "$RUN/single-sigillo.json" \
    -n "sigillo check" "$SIGILLO check --json --ca-file $CA [127.0.0.1]:$PORT" \
    -n "starttls_floor" "$FLOOR --targets-from $RUN/single-target.txt --concurrency 1" >&2

log "single host: sigillo's own phase timings"
for _ in $(seq 20); do
    "$SIGILLO" check --json --ca-file "$CA" "[127.0.0.1]:$PORT"
done >"$RUN/single-phases.jsonl"

if command -v tcpdump >/dev/null; then
    log "single host: packet trace of one check (diagnostic)"
    tcpdump -U --immediate-mode -i lo -n -s 128 -w "$RUN/single.pcap" "tcp port $PORT" 2>/dev/null &
    tcpdump_pid=$!
    sleep 1
    "$SIGILLO" check --json --ca-file "$CA" "[127.0.0.1]:$PORT" >"$RUN/single-traced.json"
    sleep 1.5
    kill -INT "$tcpdump_pid"
    wait "$tcpdump_pid" || true
    tcpdump -n -ttt -r "$RUN/single.pcap" 2>/dev/null | sed "s/127\.0\.0\.1\.$PORT\b/POSTFIX/g" >"$RUN/single-trace.txt"
    rm -f "$RUN/single.pcap"
fi

log "single host: the same Postfix limited to TLS 1.2 (diagnostic)"
start_postfix postfix12 'smtpd_tls_protocols=!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3'
hyperfine -N --warmup 3 --runs "$SIGILLO_RUNS" --export-json "$RUN/single-sigillo-tls12.json" \
    -n "sigillo check (Postfix TLS 1.2 only)" \
    "$SIGILLO check --json --ca-file $PF_CA [127.0.0.1]:$PF_PORT" >&2
for _ in $(seq 20); do
    "$SIGILLO" check --json --ca-file "$PF_CA" "[127.0.0.1]:$PF_PORT"
done >"$RUN/single-phases-tls12.jsonl"
cleanup
fi

# ---------------------------------------------------------------- b. bulk
if [[ " $PARTS " == *" bulk "* ]]; then
log "bulk: lab farm"
farm_args=(--ports "$BULK_PORTS" --out "$RUN/targets.txt" --silent 10 --silent-out "$RUN/silent.txt")
if [[ $BULK_IPV6 == 1 || ($BULK_IPV6 == auto && -n $(ip -6 addr show dev lo 2>/dev/null | grep -F '::1/128')) ]]; then
    farm_args+=(--ipv6)
fi
start_server farm "$FARM" "${farm_args[@]}"
FARM_PID=$SERVER_PID
wait_line "$RUN/farm.out" '^ready ' 30 >/dev/null
TARGETS="$RUN/targets.txt"
N=$(grep -c . "$TARGETS")
DEMO_CA="$ROOT/examples/demo/ca.pem"
echo "bulk_targets=$N" >>"$RUN/env.txt"

# Sanity: every target answered with a verified certificate over STARTTLS.
"$SIGILLO" check --json --ca-file "$DEMO_CA" --concurrency 64 --targets-from "$TARGETS" >"$RUN/bulk-sample.jsonl"
python3 - "$RUN/bulk-sample.jsonl" "$N" <<'PY'
import collections, json, sys
docs = [json.loads(l) for l in open(sys.argv[1])]
verdicts = collections.Counter(d["verdict"] for d in docs)
print("bulk sanity check:", len(docs), "documents,", dict(verdicts), file=sys.stderr)
assert len(docs) == int(sys.argv[2]) and verdicts == {"encrypted": len(docs)}, "bulk targets not all encrypted"
PY

clist=$(echo "$CONCURRENCY" | tr ' ' ',')
log "bulk: throughput, $N targets, concurrency $clist, $BULK_RUNS runs each"
hyperfine -N --warmup 1 --runs "$BULK_RUNS" -L c "$clist" \
    --export-json "$RUN/bulk.json" \
    "$SIGILLO check --json --ca-file $DEMO_CA --concurrency {c} --targets-from $TARGETS" \
    "$FLOOR --targets-from $TARGETS --concurrency {c}" >&2

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
log "bulk: CPU split and peak RSS, $CPU_RUNS runs each"
printf 'tool\tconcurrency\trun\tfarm_ticks\tbusy_ticks\ttime_file\n' >"$RUN/cpu.tsv"
for c in $CONCURRENCY; do
    for tool in sigillo starttls_floor; do
        for r in $(seq "$CPU_RUNS"); do
            tf="$RUN/time-$tool-c$c-$r.txt"
            f0=$(cpu_ticks "$FARM_PID"); b0=$(busy_ticks)
            if [[ $tool == sigillo ]]; then
                /usr/bin/time -v -o "$tf" "$SIGILLO" check --json --ca-file "$DEMO_CA" \
                    --concurrency "$c" --targets-from "$TARGETS" >/dev/null
            else
                /usr/bin/time -v -o "$tf" "$FLOOR" --targets-from "$TARGETS" --concurrency "$c" >/dev/null
            fi
            f1=$(cpu_ticks "$FARM_PID"); b1=$(busy_ticks)
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$c" "$r" $((f1 - f0)) $((b1 - b0)) "$tf" >>"$RUN/cpu.tsv"
        done
    done
done
getconf CLK_TCK >"$RUN/clk_tck.txt"

log "bulk: peak RSS against the number of targets (concurrency 64)"
printf 'targets\ttime_file\n' >"$RUN/rss.tsv"
for k in 250 500 1000 2000 4000; do
    ((k <= N)) || continue
    head -n "$k" "$TARGETS" >"$RUN/targets-$k.txt"
    tf="$RUN/time-rss-$k.txt"
    /usr/bin/time -v -o "$tf" "$SIGILLO" check --json --ca-file "$DEMO_CA" --concurrency 64 \
        --targets-from "$RUN/targets-$k.txt" >/dev/null
    printf '%s\t%s\n' "$k" "$tf" >>"$RUN/rss.tsv"
done

if [[ $PERF == auto ]]; then
    if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then PERF=1; else PERF=0; fi
fi
if [[ $PERF == 1 ]]; then
    log "bulk: perf profiles at concurrency 64 (sigillo, the bare client, and the farm meanwhile)"
    for tool in sigillo starttls_floor; do
        perf record -q -F 2999 -p "$FARM_PID" -o "$RUN/perf-farm-$tool.data" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
        if [[ $tool == sigillo ]]; then
            perf record -q -F 2999 -o "$RUN/perf-$tool.data" -- "$SIGILLO" check --json \
                --ca-file "$DEMO_CA" --concurrency 64 --targets-from "$TARGETS" >/dev/null 2>&1
        else
            perf record -q -F 2999 -o "$RUN/perf-$tool.data" -- "$FLOOR" --targets-from "$TARGETS" \
                --concurrency 64 >/dev/null 2>&1
        fi
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        for f in "perf-$tool" "perf-farm-$tool"; do
            perf report -i "$RUN/$f.data" --no-children --sort dso,sym --stdio 2>/dev/null >"$RUN/$f.txt" || true
            rm -f "$RUN/$f.data"
        done
    done
fi
log "bulk: 1000 targets with 10 silent servers among them (greeting timeout 2 s)"
# If slow targets only held their own slot, this would take about 2 s plus the normal time.
python3 - "$TARGETS" "$RUN/silent.txt" "$RUN/targets-stall.txt" <<'PY'
import sys
good = open(sys.argv[1]).read().split()[:1000]
silent = open(sys.argv[2]).read().split()
out = []
for i, t in enumerate(good):
    if i % 100 == 0 and i // 100 < len(silent):
        out.append(silent[i // 100])
    out.append(t)
open(sys.argv[3], "w").write("\n".join(out) + "\n")
PY
/usr/bin/time -v -o "$RUN/time-stall.txt" "$SIGILLO" check --json --ca-file "$DEMO_CA" --concurrency 64 \
    --greeting-timeout 2 --targets-from "$RUN/targets-stall.txt" >"$RUN/stall.jsonl" || true
head -n 1000 "$TARGETS" >"$RUN/targets-1000.txt"
/usr/bin/time -v -o "$RUN/time-nostall.txt" "$SIGILLO" check --json --ca-file "$DEMO_CA" --concurrency 64 \
    --greeting-timeout 2 --targets-from "$RUN/targets-1000.txt" >/dev/null
cleanup
fi
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/env.txt"

# ---------------------------------------------------------------- c. summary
python3 "$ROOT/bench/summarize.py" "$RUN" >"$RUN/summary.md"
cp "$RUN/summary.md" "$ROOT/bench/results/latest.md"
log "summary: bench/results/latest.md (raw outputs in ${RUN#"$ROOT"/})"
cat "$RUN/summary.md"
