#!/usr/bin/env python3
"""Turns the raw outputs of one bench/policy.sh run (a bench/results/run-policy-* directory)
into Markdown on stdout: the machine, versions, and per workload and client shape the two
daemons side by side, with CPU, DNS and HTTPS work per lookup, load averages, and the
targets of issue 4."""

import json
import sys
from pathlib import Path

RUN = Path(sys.argv[1])

# workload -> (minimum ratio sigillo / resolver, shapes it applies to, p99 limit in ms at 16x1,
# over TCP and over a unix socket)
TARGETS = {
    "hits": (5, None, 1.0),
    "notfound": (20, None, None),
    "misses": (10, None, None),
}
WORKLOAD_TEXT = {
    "hits": "cache hits: domains with a cached MTA-STS `enforce` policy",
    "notfound": "NOTFOUND: domains without MTA-STS (the `_mta-sts` name does not exist)",
    "misses": "misses: every lookup a domain never asked before (TXT lookup + policy fetch)",
    "bursts": "bursts: every new domain asked by all connections at about the same time",
}
SHAPE_TEXT = {
    "16x1": "16 connections x 1 in flight",
    "64x8": "64 connections (4 x 16) x 8 in flight",
    "16x1u": "16 connections x 1 in flight, unix socket",
    "64x8u": "64 connections (4 x 16) x 8 in flight, unix socket",
}


def env():
    out = {}
    for line in (RUN / "env.txt").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def results():
    rows = {}
    path = RUN / "results.jsonl"
    for line in path.read_text().splitlines():
        d = json.loads(line)
        daemon, workload, shape = d["label"].split()
        rows[(workload, shape, daemon)] = d
    return rows


def fmt_rate(x):
    return f"{x:,.0f}"


def per_lookup(d, key):
    n = d["lookups"]
    v = d["counters"].get(key)
    if not n or v is None:
        return "–"
    return f"{v / n:.2f}"


def cpu_per_lookup(d):
    pct = d["cpu_pct"].get("daemon")
    if pct is None or not d["lookups"]:
        return "–"
    return f"{pct / 100 * d['seconds'] / d['lookups'] * 1e6:.1f}"


def statuses(d):
    return ", ".join(f"{k} {v:,}" for k, v in d["statuses"].items()) or "none"


def cpu(d, who):
    v = d["cpu_pct"].get(who) if who != "generator" else d["generator_cpu_pct"]
    return "–" if v is None else f"{v:.0f}%"


def main():
    e = env()
    rows = results()
    out = []
    p = out.append
    p(f"# sigillo policy serve vs postfix-mta-sts-resolver — {RUN.name}\n")
    p("| | |\n|---|---|")
    for k in ["date", "commit", "cpu", "cores", "mem", "kernel", "rustc", "python",
              "postfix-mta-sts-resolver", "uvloop", "aiodns", "pycares", "aiohttp", "sigillo",
              "duration", "warmup", "domains", "loadavg_start", "loadavg_end"]:
        if k in e:
            p(f"| {k} | {e[k]} |")
    p("")
    p("Nothing is pinned: the daemon under test, the load generator and the lab (DNS and "
      "HTTPS servers) share all cores. CPU columns are percent of one core over the measured "
      "window (200% = both cores). DNS and HTTPS columns count the lab's DNS queries and "
      "policy requests per lookup answered. Load averages are the 1/5/15-minute values "
      "before and after each measurement.\n")
    workloads = []
    shapes = []
    for (w, s, _) in rows:
        if w not in workloads:
            workloads.append(w)
        if s not in shapes:
            shapes.append(s)
    verdicts = []
    for w in workloads:
        p(f"## {WORKLOAD_TEXT.get(w, w)}\n")
        p("| shape | daemon | lookups/s | p50 ms | p99 ms | p99.9 ms | daemon CPU | "
          "daemon CPU µs/lookup | generator CPU | lab CPU | DNS/lookup | fetches/lookup | replies | load before → after |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for s in shapes:
            for daemon in ["sigillo", "resolver"]:
                d = rows.get((w, s, daemon))
                if d is None:
                    continue
                name = "sigillo" if daemon == "sigillo" else "mta-sts-resolver"
                p(f"| {SHAPE_TEXT.get(s, s)} | {name} | {fmt_rate(d['lookups_per_s'])} | "
                  f"{d['p50_ms']:.3f} | {d['p99_ms']:.3f} | {d['p999_ms']:.3f} | "
                  f"{cpu(d, 'daemon')} | {cpu_per_lookup(d)} | {cpu(d, 'generator')} | "
                  f"{cpu(d, 'lab')} | "
                  f"{per_lookup(d, 'dns_queries')} | {per_lookup(d, 'https_requests')} | "
                  f"{statuses(d)} | {d['loadavg_before']} → {d['loadavg_after']} |")
                if d["errors"]:
                    p(f"|  | errors | {'; '.join(sorted(set(d['errors'])))[:200]} |")
        p("")
        for s in shapes:
            a, b = rows.get((w, s, "sigillo")), rows.get((w, s, "resolver"))
            if not a or not b or not b["lookups_per_s"]:
                continue
            ratio = a["lookups_per_s"] / b["lookups_per_s"]
            line = f"- {SHAPE_TEXT.get(s, s)}: sigillo **{ratio:.1f}x** the lookups/s"
            target = TARGETS.get(w)
            if target:
                want, _, p99_limit = target
                ok = ratio >= want
                extra = ""
                if p99_limit is not None and s in ("16x1", "16x1u"):
                    ok = ok and a["p99_ms"] < p99_limit
                    extra = f" and p99 under {p99_limit:g} ms (got {a['p99_ms']:.3f} ms)"
                line += f" (target ≥ {want}x{extra}: {'met' if ok else 'NOT met'})"
                verdicts.append((w, s, ratio, ok))
            p(line)
        p("")
    p("## Examples of replies\n")
    for (w, s, daemon), d in sorted(rows.items()):
        for status, text in d["examples"].items():
            p(f"- {daemon} {w} {s}: `{text}`")
    print("\n".join(out))


main()
