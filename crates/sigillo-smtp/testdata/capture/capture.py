#!/usr/bin/env python3
"""Talk to an SMTP server on 127.0.0.1 like sigillo's ClientDialogue and record the raw
server bytes (after STARTTLS: the bytes read inside TLS; the certificate is not checked).

usage: capture.py PORT OUT                  greeting, EHLO, STARTTLS if offered, EHLO, QUIT
       capture.py PORT OUT CMD... [TLS]...  greeting, then these commands in order
                                            ("TLS" = do the handshake now); stops after a
                                            421 greeting
Prints the session; writes the server bytes to OUT (then add a header: see ../README.md)."""
import socket, ssl, sys, time

def read_reply(sock, buf):
    # read until a complete reply (last line has ' ' or nothing after the code)
    while True:
        lines = buf.split(b"\n")
        pos = 0
        for line in lines[:-1]:
            pos += len(line) + 1
            l = line.rstrip(b"\r")
            if len(l) < 4 or l[3:4] == b" ":
                return buf[:pos], buf[pos:]
        data = sock.recv(65536)
        if not data:
            return buf, b""
        buf += data

port, out = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
raw, buf, log = b"", b"", []
def step(cmd=None):
    global raw, buf
    if cmd is not None:
        s.sendall(cmd + b"\r\n"); log.append(b"C: " + cmd)
    r, buf = read_reply(s, buf)
    raw += r; log.append(r)
    return r
first = step()
if len(sys.argv) > 3:
    for c in (sys.argv[3:] if not first.startswith(b"421") else []):
        if c == "TLS":
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname="mx.lab.test")
            log.append(b"[TLS %s %s]" % (s.version().encode(), s.cipher()[0].encode()))
        else:
            step(c.encode())
    s.close(); open(out, "wb").write(raw); sys.stdout.buffer.write(b"\n".join(log) + b"\n"); sys.exit(0)
r = step(b"EHLO probe.test")
if b"STARTTLS" in r.upper():
    r = step(b"STARTTLS")
    if r.startswith(b"220"):
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="mx.lab.test")
        log.append(b"[TLS %s %s]" % (s.version().encode(), s.cipher()[0].encode()))
        step(b"EHLO probe.test")
step(b"QUIT")
s.close()
open(out, "wb").write(raw)
sys.stdout.buffer.write(b"\n".join(log) + b"\n")
