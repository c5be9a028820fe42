#!/usr/bin/env bash
# Benchmark of `sigillo report` on a generated Postfix log: speed against `wc -l` (the floor) and
# pflogsumm in one hyperfine invocation, gzip and zstd input against their decompressors (sigillo's
# own decoder alone, examples/decompress_floor, and the command-line tools), peak
# RSS for two log sizes, and a check that sigillo's counts equal the generator's truth.
# Raw outputs go to bench/results/report-run-<UTC time>/ (git-ignored), the summary to
# bench/results/report-latest.md. See docs/benchmarks.md, section "sigillo report".
#
# Settings (environment):
#   SIZE=1G             the log for speed, gzip/zstd and the first RSS figure
#   BIG_SIZE=5G         the second RSS figure ("" to skip); deleted at the end unless KEEP_BIG=1
#   SEED=1 START=2026-11-01   generator seed and first day
#   LOGDIR=/tmp/sigillo-bench-logs   where the logs go (reused when seed, size and start match)
#   RUNS=10             hyperfine: at most this many runs per command; each gets at least
#   MIN_RUNS=2          (pflogsumm takes minutes a run, so it gets MIN_RUNS)
#   Z_RUNS=3            hyperfine runs of the gzip/zstd commands
#   PFLOGSUMM_BIG=0     also measure pflogsumm's peak RSS on BIG_SIZE (about 10 minutes)
#   KEEP_BIG=0          keep the BIG_SIZE log afterwards
#   PERF=auto           sample sigillo with `perf record` (auto: when perf works)
#   CG_BYTES=50000000   callgrind part: instructions counted on the log's first CG_BYTES bytes
#   PARTS="verify plain gzip zstd memory perf callgrind"   which parts to run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SIZE=${SIZE:-1G}
BIG_SIZE=${BIG_SIZE-5G}
SEED=${SEED:-1}
START=${START:-2026-11-01}
LOGDIR=${LOGDIR:-/tmp/sigillo-bench-logs}
RUNS=${RUNS:-10}
MIN_RUNS=${MIN_RUNS:-2}
Z_RUNS=${Z_RUNS:-3}
PERF=${PERF:-auto}
KEEP_BIG=${KEEP_BIG:-0}
PFLOGSUMM_BIG=${PFLOGSUMM_BIG:-0}
CG_BYTES=${CG_BYTES:-50000000}
PARTS=${PARTS:-"verify plain gzip zstd memory perf callgrind"}

RUN="$ROOT/bench/results/report-run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN" "$LOGDIR"
log() { printf '\n== %s\n' "$*" >&2; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
load() { printf '%s %s\n' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/load.txt"; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
[[ -x /usr/bin/time ]] || need_apt+=(time)
command -v pflogsumm >/dev/null || need_apt+=(pflogsumm)
command -v python3 >/dev/null || need_apt+=(python3)
command -v zstd >/dev/null || need_apt+=(zstd)
[[ " $PARTS " == *" callgrind "* ]] && ! command -v valgrind >/dev/null && need_apt+=(valgrind)
command -v pigz >/dev/null || need_apt+=(pigz)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    if [[ $EUID -ne 0 ]]; then
        echo "missing ${need_apt[*]}: run as root or install them" >&2
        exit 1
    fi
    apt-get install -y --no-install-recommends "${need_apt[@]}" >&2 ||
        { apt-get update >&2 && apt-get install -y --no-install-recommends "${need_apt[@]}" >&2; }
fi
HAVE_PIGZ=0
command -v pigz >/dev/null && HAVE_PIGZ=1

# ---------------------------------------------------------------- build
log "building (release)"
cargo build --release -p sigillo >&2
cargo build --release -p sigillo-logs --example gen_postfix_log --example decompress_floor >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SIGILLO="$TARGET_DIR/release/sigillo"
GEN="$TARGET_DIR/release/examples/gen_postfix_log"
FLOOR="$TARGET_DIR/release/examples/decompress_floor"
"$SIGILLO" report --help >/dev/null

# ---------------------------------------------------------------- logs
# gen SIZE → prints the log's path. Reuses a log whose sidecar matches seed, size and start,
# and whose byte count matches the file.
gen() {
    local size=$1 f="$LOGDIR/postfix-$1-seed$SEED-$START.log"
    if [[ -f "$f" && -f "$f.truth.json" ]] && python3 - "$f" "$SEED" "$START" <<'EOF'
import json, os, sys
f, seed, start = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = json.load(open(f + ".truth.json"))
ok = t["seed"] == seed and t["start"] == start and t["bytes"] == os.path.getsize(f) \
    and t.get("generator") == "gen_postfix_log 1"
sys.exit(0 if ok else 1)
EOF
    then
        log "reusing $f" >&2
    else
        log "generating $size (seed $SEED, from $START) into $f"
        "$GEN" --size "$size" --seed "$SEED" --start "$START" --out "$f" >&2
    fi
    echo "$f"
}

LOG=$(gen "$SIZE")
cp "$LOG.truth.json" "$RUN/truth-$SIZE.json"
BYTES=$(stat -c %s "$LOG")
echo "$BYTES" >"$RUN/bytes-$SIZE.txt"

# ---------------------------------------------------------------- machine
{
    echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates/sigillo-logs/src crates/sigillo/src || echo ' (+ local changes)')"
    echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores $(nproc)"
    echo "mem $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
    echo "kernel $(uname -r)"
    echo "rustc $(rustc --version | cut -d' ' -f2)"
    echo "hyperfine $(hyperfine --version | cut -d' ' -f2)"
    echo "pflogsumm $(dpkg-query -W -f='${Version}' pflogsumm 2>/dev/null || echo '?')"
    echo "perl $(perl -e 'print $^V')"
    echo "gzip $(gzip --version | head -1 | awk '{print $2}')"
    echo "pigz $( ((HAVE_PIGZ)) && pigz --version 2>&1 | awk '{print $2}' || echo none)"
    echo "zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1)"
    echo "log $LOG $BYTES bytes, $(python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print(t["lines"], "lines,", t["first"], "to", t["last"])' "$LOG.truth.json")"
} >"$RUN/machine.txt"
cat "$RUN/machine.txt" >&2

# Page cache warm: every timed command reads from memory.
cat "$LOG" >/dev/null

VERIFY_FAILED=0
verify() { # verify NAME TRUTH JSON
    if ! python3 "$ROOT/bench/report-check.py" "$2" "$3" >"$RUN/verify-$1.txt"; then
        VERIFY_FAILED=1
        echo "!!!!! sigillo report's counts differ from the generator's truth ($1): see $RUN/verify-$1.txt" >&2
    fi
    cat "$RUN/verify-$1.txt" >&2
}

# ---------------------------------------------------------------- verify
if part verify; then
    log "verify: sigillo report --json on $SIZE against the generator's truth"
    load "verify-start"
    "$SIGILLO" report --json "$LOG" >"$RUN/report-$SIZE.json"
    "$SIGILLO" report "$LOG" >"$RUN/report-$SIZE.txt" 2>&1 || true
    verify "$SIZE" "$LOG.truth.json" "$RUN/report-$SIZE.json"
fi

# ---------------------------------------------------------------- plain
if part plain; then
    log "plain: wc -l vs sigillo report vs pflogsumm (one hyperfine invocation)"
    load "plain-start"
    hyperfine -N --min-runs "$MIN_RUNS" --max-runs "$RUNS" \
        --export-json "$RUN/hyperfine-plain.json" --export-markdown "$RUN/hyperfine-plain.md" \
        -n "wc -l" "wc -l $LOG" \
        -n "sigillo report --json" "$SIGILLO report --json $LOG" \
        -n "pflogsumm" "pflogsumm $LOG" | tee "$RUN/hyperfine-plain.txt" >&2
    load "plain-end"
    # CPU time and peak RSS of each, once.
    for c in "wc -l $LOG" "$SIGILLO report --json $LOG" "pflogsumm $LOG"; do
        name=$(basename "${c%% *}")
        /usr/bin/time -v -o "$RUN/time-plain-$name.txt" $c >/dev/null
    done
    pflogsumm "$LOG" >"$RUN/pflogsumm-$SIZE.txt" 2>&1 || true
fi

# ---------------------------------------------------------------- gzip / zstd
compressed() { # compressed KIND LEVEL EXT COMPRESS-CMD
    local kind=$1 level=$2 ext=$3 z="$LOG.$2.$3"
    if [[ ! -s "$z" || "$z" -ot "$LOG" ]]; then
        log "compressing: $4 -$level"
        $4 "-$level" -c "$LOG" >"$z.tmp" && mv "$z.tmp" "$z"
    fi
    stat -c %s "$z" >"$RUN/bytes-$kind$level.txt"
    cat "$z" >/dev/null
    # decompress_floor: sigillo's own decoder and chunking, counting newlines and nothing
    # else; what "limited only by decompression" is measured against.
    local cmds=(-n "sigillo report --json (.$ext)" "$SIGILLO report --json $z"
        -n "decompress_floor (sigillo's decoder)" "$FLOOR $z")
    if [[ $kind == gzip ]]; then
        cmds+=(-n "zcat | wc -l" "zcat $z | wc -l")
        ((HAVE_PIGZ)) && cmds+=(-n "pigz -dc | wc -l" "pigz -dc $z | wc -l")
    else
        cmds+=(-n "zstd -dc | wc -l" "zstd -dc $z | wc -l")
    fi
    log "$kind -$level: sigillo vs the decompressor"
    load "$kind$level-start"
    hyperfine --runs "$Z_RUNS" --export-json "$RUN/hyperfine-$kind$level.json" \
        --export-markdown "$RUN/hyperfine-$kind$level.md" "${cmds[@]}" | tee "$RUN/hyperfine-$kind$level.txt" >&2
    /usr/bin/time -v -o "$RUN/time-$kind$level-sigillo.txt" "$SIGILLO" report --json "$z" >"$RUN/report-$kind$level.json"
    verify "$kind$level" "$LOG.truth.json" "$RUN/report-$kind$level.json"
}
if part gzip; then
    compressed gzip 1 gz gzip
    compressed gzip 6 gz gzip
fi
if part zstd; then
    compressed zstd 3 zst zstd
fi

# ---------------------------------------------------------------- memory
if part memory; then
    log "memory: peak RSS on $SIZE${BIG_SIZE:+ and $BIG_SIZE}"
    load "memory-start"
    /usr/bin/time -v -o "$RUN/time-mem-$SIZE.txt" "$SIGILLO" report --json "$LOG" >/dev/null
    if [[ -n "$BIG_SIZE" ]]; then
        BIG=$(gen "$BIG_SIZE")
        cp "$BIG.truth.json" "$RUN/truth-$BIG_SIZE.json"
        stat -c %s "$BIG" >"$RUN/bytes-$BIG_SIZE.txt"
        /usr/bin/time -v -o "$RUN/time-mem-$BIG_SIZE.txt" "$SIGILLO" report --json "$BIG" >"$RUN/report-$BIG_SIZE.json"
        verify "$BIG_SIZE" "$BIG.truth.json" "$RUN/report-$BIG_SIZE.json"
        if [[ "$PFLOGSUMM_BIG" == 1 ]]; then
            /usr/bin/time -v -o "$RUN/time-mem-pflogsumm-$BIG_SIZE.txt" pflogsumm "$BIG" >/dev/null 2>&1 || true
        fi
        [[ "$KEEP_BIG" == 1 ]] || rm -f "$BIG" "$BIG.truth.json"
    fi
    load "memory-end"
fi

# ---------------------------------------------------------------- perf
if part perf; then
    if [[ "$PERF" != 0 ]] && command -v perf >/dev/null && perf record -o /dev/null -q true 2>/dev/null; then
        log "perf: where sigillo report spends its time"
        perf record -F 999 -g -o "$RUN/perf.data" -q "$SIGILLO" report --json "$LOG" >/dev/null 2>&1
        perf report -i "$RUN/perf.data" --no-children --sort dso,symbol --percent-limit 0.5 --stdio \
            -g none 2>/dev/null | grep -v '^$' >"$RUN/perf-self.txt" || true
        perf report -i "$RUN/perf.data" --no-children --sort tid --stdio -g none 2>/dev/null |
            grep -v '^$' >"$RUN/perf-threads.txt" || true
        rm -f "$RUN/perf.data"
    else
        echo "perf not usable here: skipped" >"$RUN/perf-self.txt"
    fi
fi

# ---------------------------------------------------------------- callgrind
# Instructions, not seconds: the same count for the same binary and input whatever else the
# machine is doing, so a change is measured exactly even on a busy or slower host. Per thread,
# on the whole lines among the log's first CG_BYTES bytes.
if part callgrind; then
    log "callgrind: instructions per byte on the first $CG_BYTES bytes"
    SAMPLE="$RUN/sample.log"
    head -c "$CG_BYTES" "$LOG" | python3 -c '
import sys
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(data[: data.rfind(b"\n") + 1])' >"$SAMPLE"
    stat -c %s "$SAMPLE" >"$RUN/callgrind-bytes.txt"
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$RUN/callgrind.%p" \
        "$SIGILLO" report --json "$SAMPLE" >"$RUN/callgrind-report.json" 2>"$RUN/callgrind.err"
    for f in "$RUN"/callgrind.[0-9]*; do
        # The process's own file is empty with --separate-threads.
        [[ -s "$f" ]] && callgrind_annotate --show-percs=no "$f" 2>/dev/null | awk -v f="${f##*/}" '
            /PROGRAM TOTALS/ { gsub(",", "", $1); print f, "total", $1 }
            /file:function/ { top = 1; next }
            top && /^ *[0-9,]+ / && n < 6 { c = $1; gsub(",", "", c); $1 = ""; print f, "top", c, $0; n++ }' \
            >>"$RUN/callgrind-threads.txt"
        rm -f "$f"
    done
    rm -f "$SAMPLE"
fi

# ---------------------------------------------------------------- summary
python3 "$ROOT/bench/report-summarize.py" "$RUN" "$SIZE" "${BIG_SIZE:-}" >"$ROOT/bench/results/report-latest.md"
log "summary: bench/results/report-latest.md (raw: ${RUN#"$ROOT"/})"
if ((VERIFY_FAILED)); then
    echo "FAILED: sigillo report's counts differ from the truth (verify-*.txt in $RUN)" >&2
    exit 1
fi
