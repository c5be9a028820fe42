#!/usr/bin/env python3
"""Compares `sigillo report --json` with the generator's truth sidecar (gen_postfix_log).

usage: report-check.py TRUTH.json REPORT.json
Prints a table; exits 1 when a checked count differs (the figures the report exists for:
inbound and outbound messages and TLS messages, internal inbound messages, and the outbound
messages per next-hop domain when the sidecar has them). Other figures are
shown and marked, without failing: their counting rules leave room (see the notes column).
"""
import json
import sys

truth = json.load(open(sys.argv[1]))
rep = json.load(open(sys.argv[2]))

# (label, truth value, report path, checked, note)
rows = []
for d in ("inbound", "outbound"):
    t = truth[d]
    for k, checked in (
        ("messages", True),
        ("tls_messages", True),
        ("plain_messages", True),
        ("recipients", False),
        ("tls_recipients", False),
        ("connections", False),
        ("tls_connections", False),
        ("deferred", False),
        ("bounced", False),
    ):
        rows.append((f"{d}.{k}", t[k], (d, k), checked, ""))
    for v, n in sorted(t["versions"].items()):
        rows.append((f"{d}.tls.versions.{v}", n, (d, "tls", "versions", v), False, ""))
rows.append(("internal_inbound.messages", truth["internal_inbound_messages"],
             ("internal_inbound", "messages"), True, "pickup + localhost[127.0.0.1]"))
rows.append(("internal_outbound.messages", truth["internal_outbound_messages"],
             ("internal_outbound", "messages"), False,
             "generator: one per delivery job (virtual/lmtp/local)"))
rows.append(("stripping_traces (listed+omitted≥)", truth["stripped_sessions"],
             ("stripping_traces",), False, "sessions with unknown=0/1 (list capped at 1000)"))
rows.append(("starttls_failures (listed)", truth["starttls_failures"],
             ("starttls_failures",), False, "SSL_accept errors (list capped at 1000)"))


def get(path):
    v = rep
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    if isinstance(v, list):
        return len(v)
    return v


bad = 0
print(f"{'figure':44} {'truth':>10} {'sigillo':>10}  result")
for label, want, path, checked, note in rows:
    got = get(path)
    same = got == want
    if same:
        res = "ok"
    elif checked:
        res = "MISMATCH"
        bad += 1
    else:
        res = "differs (not checked)"
    print(f"{label:44} {want:>10} {str(got):>10}  {res}{'  — ' + note if note else ''}")

# Per day, inbound (informational).
rd = {p["period"]: p for p in rep.get("daily", [])}
days_bad = [d["period"] for d in truth["daily"]
            if rd.get(d["period"], {}).get("inbound_messages") != d["inbound_messages"]
            or rd.get(d["period"], {}).get("inbound_tls") != d["inbound_tls"]]
print(f"daily inbound messages/TLS: {len(truth['daily']) - len(days_bad)} of {len(truth['daily'])} days equal"
      + (f" (differ: {', '.join(days_bad[:5])})" if days_bad else ""))
# Per next-hop (recipient) domain, outbound (checked when the truth has it: generator ≥ this
# version).
if "next_hops" in truth:
    rh = {h["domain"]: h for h in rep.get("next_hops", [])}
    keys = ("messages", "tls_messages", "trusted_tls_messages")
    hops_bad = [h["domain"] for h in truth["next_hops"]
                if any(rh.get(h["domain"], {}).get(k) != h[k] for k in keys)]
    extra = set(rh) - {h["domain"] for h in truth["next_hops"]}
    print(f"next_hops (messages, TLS, trusted TLS per recipient domain): "
          f"{len(truth['next_hops']) - len(hops_bad)} of {len(truth['next_hops'])} domains equal"
          + (f", {len(extra)} not in the truth" if extra else "")
          + (f" (differ: {', '.join(hops_bad[:5])})" if hops_bad else ""))
    if hops_bad or extra:
        bad += 1
inp = rep.get("inputs", [{}])
print("inputs: " + "; ".join(f"{i.get('source')}: {i.get('lines')} lines, {i.get('bad_lines')} bad, "
                             f"format {i.get('format')}, compression {i.get('compression')}" for i in inp))
print(f"unparsed_lines {rep.get('unparsed_lines')}, evicted {rep.get('evicted')}")
if bad:
    print(f"FAILED: {bad} checked figure(s) differ from the truth")
    sys.exit(1)
print("checked figures: all equal to the truth")
