#!/usr/bin/env python3
"""Turns the raw outputs of one bench/check.sh run (a bench/results/run-* directory) into
Markdown tables on stdout."""

import json
import re
import statistics
import sys
from pathlib import Path

RUN = Path(sys.argv[1])


def env():
    out = {}
    for line in (RUN / "env.txt").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def ms(s):
    return f"{s * 1000:.1f}"


def hyperfine_rows(path):
    return json.loads(Path(path).read_text())["results"]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def phases(path):
    rows = {"connect_ms": [], "greeting_ms": [], "tls.handshake_ms": [], "total_ms": [], "duration_ms": []}
    for line in Path(path).read_text().splitlines():
        doc = json.loads(line)
        host = doc["hosts"][0]
        rows["connect_ms"].append(host["connect_ms"])
        rows["greeting_ms"].append(host["greeting_ms"])
        rows["tls.handshake_ms"].append(host["tls"]["handshake_ms"])
        rows["total_ms"].append(host["total_ms"])
        rows["duration_ms"].append(doc["duration_ms"])
    return rows


def time_v(path):
    text = Path(path).read_text()

    def field(name):
        m = re.search(re.escape(name) + r": (.+)", text)
        return m.group(1).strip() if m else None

    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(p) for p in wall.split(":")]
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return {
        "wall": secs,
        "user": float(field("User time (seconds)")),
        "sys": float(field("System time (seconds)")),
        "rss_kb": int(field("Maximum resident set size (kbytes)")),
    }


# Where a sampled symbol belongs. Order matters: first match wins.
CATEGORIES = [
    ("kernel (syscalls, loopback TCP, scheduling)", lambda dso, sym: dso.startswith("[kernel")),
    ("libc (malloc/free, memcpy, epoll)", lambda dso, sym: dso.startswith("libc") or dso.startswith("ld-linux")),
    (
        "TLS crypto (ring: X25519, P-256 ECDSA, AES-GCM, SHA-2)",
        lambda dso, sym: re.search(
            r"ring_core|ring::|nistz256|p256|fe4?_|fiat_|x25519|sha512_block|sha256_block|aes|gcm|ghash|"
            r"bn_|LIMBS|CRYPTO_|ChaCha|poly1305|limbs_",
            sym,
        )
        is not None,
    ),
    (
        "certificates (webpki, x509-parser, DER)",
        lambda dso, sym: re.search(r"webpki|x509_parser|der_parser|asn1_rs|untrusted::|pki_types", sym) is not None,
    ),
    ("rustls (TLS state machine, records)", lambda dso, sym: "rustls" in sym),
    (
        "sigillo's own code (dialogue, analysis, JSON)",
        lambda dso, sym: re.search(r"sigillo|serde|jiff|sha2::|hex::|clap|comfy_table|hickory|lab_farm|starttls_floor", sym)
        is not None,
    ),
    (
        "async runtime & std (tokio, mio, futures, alloc)",
        lambda dso, sym: re.search(r"tokio|mio::|futures|std::|alloc::|core::|__rust|parking_lot", sym) is not None,
    ),
    ("other", lambda dso, sym: True),
]


def perf_split(path):
    shares = {name: 0.0 for name, _ in CATEGORIES}
    line_re = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$")
    for line in Path(path).read_text().splitlines():
        m = line_re.match(line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        for name, test in CATEGORIES:
            if test(dso, sym):
                shares[name] += pct
                break
    return shares


def main():
    e = env()
    out = []
    p = out.append
    p(f"# sigillo check benchmark, {e.get('date_utc')}\n")
    p("| | |\n|---|---|")
    for k in ["cpu_model", "cpus", "kernel", "os", "mem_total", "sigillo", "rustc", "postfix", "openssl",
              "sslscan", "testssl", "hyperfine", "loadavg_start", "loadavg_end"]:
        p(f"| {k} | {e.get(k, '?')} |")
    p("")

    if (RUN / "single-tools.json").exists():
        single(e, p)
    if (RUN / "bulk.json").exists():
        bulk(e, p)
    print("\n".join(out))


def single(e, p):
    p("## Single host: one check of a private Postfix 3.7 with STARTTLS on 127.0.0.1\n")
    p("One hyperfine invocation, same Postfix, same run (wall time of the whole command):\n")
    p("| command | runs | mean ± σ (ms) | min (ms) | max (ms) |\n|---|---:|---:|---:|---:|")
    for r in hyperfine_rows(RUN / "single-tools.json"):
        p(f"| `{r['command']}` | {len(r['times'])} | {ms(r['mean'])} ± {ms(r['stddev'] or 0)} | {ms(r['min'])} | {ms(r['max'])} |")
    p("")
    p("sigillo alone with more runs, next to the bare STARTTLS client (`starttls_floor`), and against the "
      "same Postfix limited to TLS 1.2:\n")
    p("| command | runs | mean ± σ (ms) | median (ms) | min (ms) | max (ms) |\n|---|---:|---:|---:|---:|---:|")
    for f in ["single-sigillo.json", "single-sigillo-tls12.json"]:
        for r in hyperfine_rows(RUN / f):
            p(f"| {r['command']} | {len(r['times'])} | {ms(r['mean'])} ± {ms(r['stddev'] or 0)} | {ms(r['median'])} | {ms(r['min'])} | {ms(r['max'])} |")
    p("")
    p("sigillo's own phase timings from `--json` (20 checks each, median / max, ms):\n")
    p("| Postfix | connect_ms | greeting_ms | tls.handshake_ms | total_ms | duration_ms |\n|---|---:|---:|---:|---:|---:|")
    for label, f in [("TLS 1.3 (default)", "single-phases.jsonl"), ("TLS 1.2 only", "single-phases-tls12.jsonl")]:
        ph = phases(RUN / f)
        cells = " | ".join(f"{median(v):.2f} / {max(v):.2f}" for v in ph.values())
        p(f"| {label} | {cells} |")
    p("")
    ph = phases(RUN / "single-phases.jsonl")
    slow = sum(1 for t in ph["total_ms"] if t > 20)
    p(f"Checks of the TLS 1.3 Postfix with total_ms over 20 ms: {slow} of {len(ph['total_ms'])}.\n")
    if (RUN / "single-trace.txt").exists():
        p("Packet trace of one check (`tcpdump -ttt`, time since the previous packet):\n")
        p("```")
        for line in (RUN / "single-trace.txt").read_text().splitlines():
            line = re.sub(r", options \[[^]]*\]|, win \d+|seq \d+, |, ack \d+ win|IP ", "", line)
            p(line.rstrip())
        p("```\n")



def bulk(e, p):
    n = int(e.get("bulk_targets", "0"))
    p(f"## Bulk: {n} distinct loopback targets (lab farm)\n")
    p("Throughput (hyperfine, wall time of the whole command including process start):\n")
    p("| command | concurrency | runs | mean ± σ (s) | checks/s |\n|---|---:|---:|---:|---:|")
    for r in hyperfine_rows(RUN / "bulk.json"):
        c = r.get("parameters", {}).get("c", "?")
        name = "starttls_floor" if "starttls_floor" in r["command"] else "sigillo check"
        p(f"| {name} | {c} | {len(r['times'])} | {r['mean']:.3f} ± {r['stddev'] or 0:.3f} | {n / r['mean']:.0f} |")
    p("")

    tck = int((RUN / "clk_tck.txt").read_text().strip())
    rows = {}
    for line in (RUN / "cpu.tsv").read_text().splitlines()[1:]:
        tool, c, _r, farm, busy, tf = line.split("\t")
        t = time_v(tf)
        t["farm"] = int(farm) / tck
        t["busy"] = int(busy) / tck
        rows.setdefault((tool, int(c)), []).append(t)
    p("CPU split and peak memory (`/usr/bin/time -v` on the client; the farm's CPU from "
      "`/proc/PID/stat` over the same interval; medians of the runs). Both sides share the same "
      f"{e.get('cpus')} cores. \"others\" is all other CPU use on the machine meanwhile "
      "(`/proc/stat` busy minus client minus farm):\n")
    p("| client | concurrency | wall (s) | checks/s | client CPU (s) user+sys | client CPU ms/check | farm CPU ms/check | "
      "others CPU (s) | peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (tool, c), ts in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] != "sigillo")):
        wall = median([t["wall"] for t in ts])
        user = median([t["user"] for t in ts])
        sys_ = median([t["sys"] for t in ts])
        farm = median([t["farm"] for t in ts])
        others = median([max(0.0, t["busy"] - t["user"] - t["sys"] - t["farm"]) for t in ts])
        rss = max(t["rss_kb"] for t in ts) / 1024
        p(f"| {tool} | {c} | {wall:.2f} | {n / wall:.0f} | {user:.2f}+{sys_:.2f} | {(user + sys_) * 1000 / n:.3f} | "
          f"{farm * 1000 / n:.3f} | {others:.2f} | {rss:.1f} |")
    p("")

    p("Peak RSS of `sigillo check --json --concurrency 64` against the number of targets:\n")
    p("| targets | peak RSS (MiB) | wall (s) |\n|---:|---:|---:|")
    for line in (RUN / "rss.tsv").read_text().splitlines()[1:]:
        k, tf = line.split("\t")
        t = time_v(tf)
        p(f"| {k} | {t['rss_kb'] / 1024:.1f} | {t['wall']:.2f} |")
    p("")

    cpu64 = {}
    for (tool, c), ts in rows.items():
        if c == 64:
            cpu64[tool] = (
                median([t["user"] + t["sys"] for t in ts]) * 1000 / n,
                median([t["farm"] for t in ts]) * 1000 / n,
            )
    if (RUN / "time-stall.txt").exists():
        stall = time_v(RUN / "time-stall.txt")
        base = time_v(RUN / "time-nostall.txt")
        verdicts = {}
        for line in (RUN / "stall.jsonl").read_text().splitlines():
            v = json.loads(line)["verdict"]
            verdicts[v] = verdicts.get(v, 0) + 1
        p("Slow targets in a bulk run: the first 1000 farm targets with 10 silent servers (accept, never "
          "greet) inserted every 100 lines, `--greeting-timeout 2 --concurrency 64`:\n")
        p("| targets | wall (s) | verdicts |\n|---|---:|---|")
        p(f"| 1000 farm targets | {base['wall']:.2f} | |")
        p(f"| same + 10 silent | {stall['wall']:.2f} | {', '.join(f'{k} {v}' for k, v in sorted(verdicts.items()))} |")
        p("")

    perf_files = [("sigillo check", "perf-sigillo.txt"), ("farm during sigillo", "perf-farm-sigillo.txt"),
                  ("starttls_floor", "perf-starttls_floor.txt"), ("farm during floor", "perf-farm-starttls_floor.txt")]
    perf_files = [(label, RUN / f) for label, f in perf_files if (RUN / f).exists()]
    if perf_files:
        p("Where the CPU goes (`perf record -F 2999`, concurrency 64, share of samples of each process):\n")
        splits = [(label, perf_split(f)) for label, f in perf_files]
        p("| category | " + " | ".join(label for label, _ in splits) + " |")
        p("|---|" + "---:|" * len(splits))
        for name, _ in CATEGORIES:
            p(f"| {name} | " + " | ".join(f"{s[name]:.1f}%" for _, s in splits) + " |")
        p("")
        if len(cpu64) == 2 and len(splits) == 4:
            # CPU ms per check of each process at concurrency 64 (medians from the table above).
            per_check = [cpu64["sigillo"][0], cpu64["sigillo"][1], cpu64["starttls_floor"][0], cpu64["starttls_floor"][1]]
            p("The same shares as CPU microseconds per check (share × the median CPU ms/check at "
              "concurrency 64 from the table above):\n")
            p("| category | " + " | ".join(label for label, _ in splits) + " |")
            p("|---|" + "---:|" * len(splits))
            for name, _ in CATEGORIES:
                p(f"| {name} | " + " | ".join(f"{s[name] / 100 * ms_ * 1000:.0f}" for (_, s), ms_ in zip(splits, per_check)) + " |")
            p("| **total** | " + " | ".join(f"**{ms_ * 1000:.0f}**" for ms_ in per_check) + " |")
            p("")


if __name__ == "__main__":
    main()
