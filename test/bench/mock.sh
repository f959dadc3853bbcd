#!/usr/bin/env bash
# test/bench/mock.sh: how fast the mock Metronome (test/mock_metronome.py)
# answers ingest requests of 100 events each.  A benchmark, not a test: it
# prints figures.
#
# It starts the mock on a free 127.0.0.1 port and drives it with a client of
# several processes, each with a few keep-alive connections, sending
# pre-built batches of 100 realistic events (~24 KB) with unique
# transaction_ids, for DURATION seconds per run.  Runs:
#   floor   the same client against a null HTTP server that answers 200
#           without reading the JSON (what the client and loopback cost)
#   mock    the mock, plain JSON bodies
#   gzip    the mock, gzip bodies
#   log     the mock with --log (one JSON line per request to a file)
# and prints requests/s, events/s, the mock's CPU time per request (and so
# its capacity per busy core, a figure that holds when other work shares the
# machine), the ratio mock/floor and the ratio to the 1,000 requests/s target.
# Bounded to about 4 x DURATION seconds.  PYTHON=/usr/bin/python3 picks the
# interpreter (default: python3 on PATH).
#
# Usage: test/bench/mock.sh [DURATION_SECONDS (default 4)] [PROCS (2)] [CONNS_PER_PROC (2)]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exec ${PYTHON:-python3} - "$here/mock_metronome.py" "${1:-4}" "${2:-2}" "${3:-2}" <<'PY'
import asyncio, datetime, gzip, json, multiprocessing, os, selectors, signal
import socket, subprocess, sys, tempfile, time

MOCK, DURATION, PROCS, CONNS = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
TOKEN = "bench-token"


def make_template(proc):
    """A request of 100 events; '##########' is replaced per request."""
    t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    evs = []
    for i in range(100):
        t = t0 + datetime.timedelta(milliseconds=1237 * i)
        ts = t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)
        evs.append({
            "transaction_id": "bench-%d-##########-%03d" % (proc, i),
            "customer_id": "3f2a8c1e-5b7d-4e9a-8c21-0d6f4b9e7a13",
            "timestamp": ts,
            "event_type": "api_call",
            "properties": {"tokens": str(1000 + i), "model": "gpt-large-2024",
                           "region": "us-east-1", "endpoint": "/v2/completions",
                           "user_id": "user_%06d" % (i * 7919 % 1000000),
                           "latency_ms": 125 + i, "cached": i % 3 == 0,
                           "request_id": "req_9f8e7d6c5b4a39281706f5e4d3c2b1a0"}})
    return json.dumps(evs, separators=(",", ":")).encode()


def client(port, proc, use_gzip, deadline, q):
    tmpl = make_template(proc)
    head = ("POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "User-Agent: bench\r\n%sContent-Length: %%d\r\n\r\n"
            % (port, TOKEN, "Content-Encoding: gzip\r\n" if use_gzip else ""))
    counter = [0]

    def request():
        counter[0] += 1
        body = tmpl.replace(b"##########", b"%010d" % counter[0])
        if use_gzip:
            body = gzip.compress(body, 1)
        return (head % len(body)).encode() + body

    sel = selectors.DefaultSelector()
    bufs = {}
    ok = bad = nbytes = 0
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r = request(); nbytes += len(r)
        s.sendall(r)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
    while time.time() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                raise SystemExit("connection closed by server")
            buf = bufs[s] + data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                hdr = buf[:end].decode("latin-1")
                clen = 0
                for line in hdr.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.lower() == "content-length":
                        clen = int(v)
                if len(buf) < end + 4 + clen:
                    break
                if hdr.startswith("HTTP/1.1 100"):
                    buf = buf[end + 4:]
                    continue
                if hdr.startswith("HTTP/1.1 200"):
                    ok += 1
                else:
                    bad += 1
                buf = buf[end + 4 + clen:]
                if time.time() < deadline:
                    r = request(); nbytes += len(r)
                    s.sendall(r)
            bufs[s] = buf
    q.put((ok, bad, nbytes))


def drive(port, use_gzip):
    q = multiprocessing.Queue()
    start = time.time() + 0.3
    deadline = start + DURATION
    ps = [multiprocessing.Process(target=client, args=(port, p, use_gzip, deadline, q))
          for p in range(PROCS)]
    for p in ps:
        p.start()
    ok = bad = nbytes = 0
    for _ in ps:
        a, b, c = q.get()
        ok += a; bad += b; nbytes += c
    for p in ps:
        p.join()
    elapsed = time.time() - (start - 0.3)
    return ok, bad, nbytes, elapsed


def null_server(port_q):
    class P(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t; self.buf = b""
        def data_received(self, d):
            self.buf += d
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                clen = 0
                for line in self.buf[:end].split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.lower() == b"content-length":
                        clen = int(v)
                if len(self.buf) < end + 4 + clen:
                    return
                self.buf = self.buf[end + 4 + clen:]
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(P, "127.0.0.1", 0)
        port_q.put(srv.sockets[0].getsockname()[1])
        await asyncio.Event().wait()
    asyncio.run(main())


def start_mock(extra):
    p = subprocess.Popen([sys.executable, MOCK, "--port", "0", "--token", TOKEN,
                          "--max-recorded", "1000"] + extra,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("PORT "), line
    return p, int(line.split()[1])


def stats(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def cpu_seconds(pid):
    """User + system CPU seconds used so far by process pid."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name, ok, bad, nbytes, elapsed):
    rps = ok / (elapsed - 0.3)
    print("%-6s %8.0f requests/s %10.0f events/s  %6.1f MB/s sent  (%d ok, %d not 200, %.1f s)"
          % (name, rps, rps * 100, nbytes / (elapsed - 0.3) / 1e6, ok, bad, elapsed - 0.3))
    return rps


print("mock benchmark: %d client processes x %d keep-alive connections, %g s per run, "
      "100 events per request, %d cores, %s" % (PROCS, CONNS, DURATION, os.cpu_count(),
                                                sys.executable))
port_q = multiprocessing.Queue()
ns = multiprocessing.Process(target=null_server, args=(port_q,))
ns.start()
floor = report("floor", *drive(port_q.get(), False))
ns.terminate(); ns.join()

res = {}
cap = {}
tmpdir = tempfile.mkdtemp(prefix="mockbench")
for name, extra, gz in (("mock", [], False), ("gzip", [], True),
                        ("log", ["--log", os.path.join(tmpdir, "log.jsonl")], False)):
    p, port = start_mock(extra)
    try:
        cpu0 = cpu_seconds(p.pid)
        ok, bad, nbytes, elapsed = drive(port, gz)
        cpu = cpu_seconds(p.pid) - cpu0
        st = stats(port)
        res[name] = report(name, ok, bad, nbytes, elapsed)
        us = cpu / max(st["requests"], 1) * 1e6
        cap[name] = 1e6 / us
        print("       mock CPU %.0f us per request -> %.0f requests/s per busy core"
              % (us, 1e6 / us))
        # Requests in flight at the deadline were counted by the mock only.
        if not ok * 100 <= st["unique_events"] <= (ok + PROCS * CONNS) * 100 \
                or st["duplicates"] != 0 or bad:
            print("  MISMATCH: mock counted %d unique events, %d duplicates; client got %d x 200"
                  % (st["unique_events"], st["duplicates"], ok))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)
for f in os.listdir(tmpdir):
    os.unlink(os.path.join(tmpdir, f))
os.rmdir(tmpdir)
print("ratio mock/floor %.2f, gzip/floor %.2f, log/floor %.2f"
      % (res["mock"] / floor, res["gzip"] / floor, res["log"] / floor))
print("mock vs target 1,000 requests/s: %.2fx measured, %.2fx by CPU per request; "
      "vs the extension benchmark's 500 requests/s: %.2fx measured"
      % (res["mock"] / 1000, cap["mock"] / 1000, res["mock"] / 500))
print("load average at the end: %s (figures are lower when other work shares the cores)"
      % " ".join(open("/proc/loadavg").read().split()[:3]))
PY
