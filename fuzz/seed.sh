#!/bin/sh
# Seed the fuzz corpora with the server bytes of crates/sigillo-smtp/testdata/dialogues/*.txt
# (the part after the `---` header line). corpus/ is git-ignored.
#   reply:    the raw bytes, plus each reply on its own
#   dialogue: a mode byte (see fuzz_targets/dialogue.rs) followed by the raw bytes
set -eu
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../crates/sigillo-smtp/testdata/dialogues"
mkdir -p "$here/corpus/reply" "$here/corpus/dialogue"
n=0
for f in "$src"/*.txt; do
    name=$(basename "$f" .txt)
    # Byte offset just after the first line that is exactly `---`.
    off=$(awk '/^---$/ { print total + length($0) + 1; exit } { total += length($0) + 1 }' "$f")
    [ -n "$off" ] || { echo "no --- line in $f" >&2; exit 1; }
    tail -c "+$((off + 1))" "$f" > "$here/corpus/reply/$name"
    for mode in 00 01 02 04 18; do
        { printf "\\$(printf %03o "0x$mode")"; cat "$here/corpus/reply/$name"; } \
            > "$here/corpus/dialogue/$name-$mode"
    done
    n=$((n + 1))
done
echo "seeded $n files into $here/corpus/{reply,dialogue}"

# asa_rewriter: each dialogue's server bytes as 63-byte server-to-client reads (header 0xbf),
# under every mode; fuzz_targets/asa_rewriter.rs reads the layout.
mkdir -p "$here/corpus/asa_rewriter"
for f in "$here"/corpus/reply/*; do
    name=$(basename "$f")
    for mode in 00 01 02 03; do
        {
            printf "\\$(printf %03o "0x$mode")"
            split -b 63 --filter='printf "\\277"; cat' "$f"
        } > "$here/corpus/asa_rewriter/$name-$mode"
    done
done

# log_lines: every log fixture of crates/sigillo-logs/testdata as it is.
mkdir -p "$here/corpus/log_lines"
m=0
for f in "$here"/../crates/sigillo-logs/testdata/*/*.log "$here"/../crates/sigillo-logs/testdata/envelope/*.txt; do
    [ -f "$f" ] || continue
    cp "$f" "$here/corpus/log_lines/$(basename "$(dirname "$f")")-$(basename "$f")"
    m=$((m + 1))
done
echo "seeded $m files into $here/corpus/log_lines"

# socketmap and mta_sts_policy: the bodies (after the `---` line) of the sigillo-policy
# header files; mta_sts_policy also gets the TXT/TLSA tables and the override file whole.
policy_data="$here/../crates/sigillo-policy/testdata"
mkdir -p "$here/corpus/socketmap" "$here/corpus/mta_sts_policy"
body() {
    off=$(awk '/^---$/ { print total + length($0) + 1; exit } { total += length($0) + 1 }' "$1")
    [ -n "$off" ] || { echo "no --- line in $1" >&2; exit 1; }
    tail -c "+$((off + 1))" "$1"
}
s=0
for f in "$policy_data"/socketmap/*.txt; do
    body "$f" > "$here/corpus/socketmap/$(basename "$f" .txt)"
    s=$((s + 1))
done
p=0
for f in "$policy_data"/policies/*.txt; do
    body "$f" > "$here/corpus/mta_sts_policy/$(basename "$f" .txt)"
    p=$((p + 1))
done
for f in "$policy_data"/*-records.txt "$policy_data"/overrides.conf; do
    cp "$f" "$here/corpus/mta_sts_policy/$(basename "$f")"
    p=$((p + 1))
done
echo "seeded $s files into $here/corpus/socketmap, $p into $here/corpus/mta_sts_policy"
