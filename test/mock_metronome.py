#!/usr/bin/env python3
"""mock_metronome.py: a mock of Metronome's usage ingest API for pg_metronome's tests.

Python 3 standard library only.  It behaves like Metronome's real ingest
endpoint as far as a client can tell:

  POST .../ingest            (any path ending in /ingest; e.g. /v1/ingest)
    - Authorization must be "Bearer <token>" (--token, default "test-token"),
      else 401 {"message": ...}.  The scheme is matched case-insensitively.
    - Content-Encoding: gzip bodies are accepted (identity too; others: 400).
      Content-Length and Transfer-Encoding: chunked bodies are both read, and
      "Expect: 100-continue" is answered at once.
    - The body must be a JSON array of 1..100 events, else 400 {"message"}
      ([] is 400, as Segment's token check relies on).  Each event is an
      object with exactly these keys (no others):
        transaction_id  string, 1..128 characters (the dedup key)
        customer_id     non-empty string
        event_type      non-empty string
        timestamp       RFC 3339 string (e.g. 2021-07-10T05:37:11.000Z), not
                        more than 24 h in the future (--max-future-hours)
        properties      optional; an object (values of any JSON type)
      One invalid event fails the whole batch and nothing of it is recorded.
    - 200 with an empty body when accepted.  An event whose transaction_id was
      already accepted is a duplicate: accepted, counted, not stored again.
  Any other path: 404 {"message"}; another method on .../ingest: 405.

Control endpoints (no token needed; JSON answers):
  GET  /_stats     {"requests", "events" (accepted, duplicates included),
                    "unique_events", "duplicates", "by_status": {"200": n, ...},
                    "dropped", "gzip_requests", "bytes", "connections",
                    "open_connections", "max_open_connections", "inflight",
                    "max_inflight", "script_remaining", "recorded_requests",
                    "unrecorded_requests", "rate_limited"}
                   "requests" counts ingest requests (control calls are not
                   counted); "max_inflight" is the most ingest requests ever
                   between their complete receipt and their answer at once
                   (meaningful with a delay fault).  "rate_limited" counts
                   the 429 answers of the rate_limit fault.
  GET  /_rates     arrival rates, for tests of the sender's rate limit:
                   {"requests", "events" (accepted), "first", "last" (arrival
                   times, Unix seconds, of the first and last request that
                   had events accepted; null if none), "rate" (events / (last
                   - first), null under two such requests), "window" (S of
                   ?window=S, default 1), "max_window_events" (the most
                   events accepted within any S seconds), "seconds": [{"second"
                   (Unix second), "requests", "events", "by_status"}, ...]}.
                   ?since=T counts only arrivals at T (Unix seconds) or
                   later.  Kept for the last 1,000,000 ingest requests.
  GET  /_events    JSON list of the accepted unique events, in arrival order,
                   keys in the order they were sent.  ?offset=N skips N.
  GET  /_requests  JSON list of the ingest requests: {"seq", "time", "method",
                   "path", "headers" (names lower-cased, Authorization value
                   masked as "Bearer ****"), "auth" ("ok"|"missing"|"wrong"),
                   "body" (the raw body text, after gunzip), "events" (count or
                   null), "status" (answered; null when dropped), "fault"
                   (the script entry used, or null), "t" (arrival, Unix
                   seconds as a float)}.  ?since=SEQ gives only
                   those with seq > SEQ.
  GET  /_wait?unique_events=N[&requests=M...][&timeout=S]
                   answers once every named /_stats counter is >= its value,
                   or after S seconds (default 10, at most 120): the /_stats
                   object plus "reached": true|false.  For tests that wait
                   for a delivery instead of sleeping.
  GET  /_faults    the current faults (same format as below).
  POST /_faults    set faults (JSON object below); answers the current faults.
  DELETE /_faults  clear every fault (same as POST {"clear": true}).
  POST /_reset     back to the state right after start: counters, dedup set,
                   records cleared; faults set back to the command line's.

Faults (POST /_faults body, or --faults JSON / --faults @file at start):
  {
    "clear": true,                       clear all faults first (optional)
    "script": [ENTRY, ...],              replaces the script of answers
    "append": [ENTRY, ...],              appends to the script
    "delay": 0.05,                       standing delay (s) before every ingest
                                         answer (0 = none)
    "reject_transaction_ids": ["tx1"]    400 {"message" naming the id} for any
                                         batch holding one of them (replaces
                                         the set; [] clears it)
    "rate_limit": {"events_per_second": 2000, "window": 1}
                                         a simulated account limit: a valid
                                         batch that would bring the events
                                         accepted within the last `window`
                                         seconds (default 1) above
                                         events_per_second * window is
                                         answered 429 {"message"} WITHOUT
                                         Retry-After and not recorded
                                         (null clears it)
  }
  Keys left out keep their value.  The script is consumed one entry per
  ingest request (whatever its token or body); when it is empty the mock
  answers normally.  An ENTRY is one of:
    500, 503, 401, 429, ...     answer that status with {"message": <reason>}
                                without looking at the batch
    "ok"                        answer normally (a gap in a script)
    "drop"                      close the connection without an answer,
                                batch not recorded
    "reset"                     same, with a TCP reset (RST) instead of a FIN
    "drop_after_accept"         handle the batch normally (record it), then
                                close without an answer (a lost ack)
    {"status": 429,             any of these keys, all optional:
     "retry_after": "2",          Retry-After header (string or number)
     "retry_after_ms": "1500",    retry-after-ms header
     "message": "...",            the {"message"} of the error body
     "body": "raw text",          a raw body instead (e.g. an HTML 502 page)
     "headers": {"X-A": "b"},     extra response headers
     "delay": 2.5,                answer this late (s), added to the standing
                                  delay
     "drop": true,                close without answering (after the delay)
     "reset": true,               same with RST
     "process": false}            handle (validate, record) the batch first?
                                  Default: true when there is no status or a
                                  2xx one and no drop/reset, false otherwise.
                                  When true, a batch refused by validation
                                  (400/401) gets that answer; an accepted one
                                  gets "status" (default 200).  So {"status": 500,
                                  "process": true} records the batch and then
                                  answers 500 (the client will resend
                                  duplicates).
  A batch is recorded when it is handled, before any delay: a client that
  times out on a delayed answer has still had its batch accepted.

Command line:
  mock_metronome.py [--port N] [--port-file PATH] [--token T] [--log PATH]
                    [--faults JSON|@FILE] [--script JSON] [--delay S]
                    [--reject-transaction-id ID]... [--max-future-hours H]
                    [--max-recorded N]
  It binds 127.0.0.1 only.  --port 0 (the default) picks a free port.  Once
  listening it writes <n> to --port-file if given (atomically: the file
  appears complete), then prints "PORT <n>" as the first line of stdout
  (flushed); nothing else goes to stdout.  --log appends one JSON line per
  ingest request, flushed at once: {"time" (UTC RFC 3339), "method", "path",
  "headers" (lower-cased names, Authorization masked), "auth", "body" (the
  parsed JSON when it parses, after gunzip; else the text), "status"
  (null when dropped), "fault"}.  --max-recorded caps the requests kept for
  /_requests and /_events (default 10000, up to 1,000,000 events; counters
  and dedup stay exact beyond it).  SIGTERM/SIGINT stop it cleanly (exit
  status 0).  Bad arguments or faults: exit status 2.

  Example:
    python3 test/mock_metronome.py --port 0 --token demo-token \\
        --log /tmp/mock.jsonl --script '[503, {"status": 429, "retry_after": "1"}]'
    curl -s -X POST localhost:PORT/_faults -d '{"delay": 0.2}'
    curl -s localhost:PORT/_stats

Implementation: one asyncio event loop with a hand-written HTTP/1.1 protocol
(keep-alive, pipelining, Content-Length on every answer), so delays never
block other connections and clients dropping connections are harmless.

Speed (test/bench/mock.sh on this 2-core machine; the client, 2 processes x
2 keep-alive connections, shares the cores; 100 events of ~370 bytes per
request, 37 KB bodies, every transaction_id new):
  python3 = pyenv 3.11.7 (first in root's PATH here):
    1,380 requests/s = 138,000 events/s with the machine otherwise idle (1.4x
    the 1,000 requests/s target).  With other sessions loading the 2 cores
    (load average 2 to 4) it measured 860 to 1,160 requests/s; its CPU time
    was 700 to 840 us per request, i.e. 1,200 to 1,400 requests/s for each
    core it gets to itself.
  /usr/bin/python3 = Debian's 3.11 (an optimized build; what non-root users
  such as test/run.sh's get here):
    1,780 requests/s = 178,000 events/s idle (1.8x); 1,400 to 1,680 loaded;
    500 to 600 us of CPU per request.
  gzip bodies and --log cost 5 to 15 % more CPU per request.  About 60 % of
  the time is json-decoding the body, which the mock cannot skip.  At the
  extension benchmark's 500 requests/s the mock is 30 to 45 % busy.
"""

import argparse
import asyncio
import collections
import datetime
import http
import itertools
import json
import operator
import os
import re
import signal
import socket
import struct
import sys
import time
import zlib

MAX_EVENTS = 100
MAX_TXID = 128
MAX_BODY = 16 * 1024 * 1024
MAX_HEADER = 64 * 1024
MAX_ARRIVALS = 1000000
EVENT_KEYS = frozenset(("transaction_id", "customer_id", "event_type",
                        "timestamp", "properties"))
RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?"
                     r"(?:[Zz]|[+-]\d\d:\d\d)\Z", re.ASCII)
TS_ONE = (r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T"
          r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?Z")
TS_BATCH = re.compile(r"(?:%s\n)*%s\Z" % (TS_ONE, TS_ONE), re.ASCII)
fromisoformat = datetime.datetime.fromisoformat
GET4 = operator.itemgetter("transaction_id", "customer_id", "event_type",
                           "timestamp")
GET_PROPS = operator.methodcaller("get", "properties", {})
contains = operator.contains
repeat = itertools.repeat


class BadRequest(Exception):
    """A batch refused with 400 {"message": str(self)}."""


def reason(status):
    """The standard reason phrase of an HTTP status."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status %d" % status


def now_iso():
    """The current time as RFC 3339 UTC with microseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


def reject_constant(name):
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError("invalid JSON constant %s" % name)


DECODER = json.JSONDecoder(parse_constant=reject_constant)


def validate_batch(batch, max_future):
    """Raise BadRequest unless batch is a list of 1..100 valid events.

    The reference check, with a message naming the first fault; the common
    case goes through check_fast instead.
    """
    if not isinstance(batch, list):
        raise BadRequest("Request body must be a JSON array of events")
    n = len(batch)
    if n == 0:
        raise BadRequest("Request body must contain at least one event")
    if n > MAX_EVENTS:
        raise BadRequest("Too many events in one request: %d (at most %d)"
                         % (n, MAX_EVENTS))
    limit = time.time() + max_future
    for i, ev in enumerate(batch):
        if type(ev) is not dict:
            raise BadRequest("events[%d] must be an object" % i)
        if not ev.keys() <= EVENT_KEYS:
            extra = sorted(set(ev) - EVENT_KEYS)
            raise BadRequest("events[%d] has unknown field(s): %s"
                             % (i, ", ".join(extra)))
        tx = ev.get("transaction_id")
        if type(tx) is not str or not 0 < len(tx) <= MAX_TXID:
            if tx is None:
                raise BadRequest("events[%d].transaction_id is required" % i)
            if type(tx) is not str:
                raise BadRequest("events[%d].transaction_id must be a string"
                                 % i)
            raise BadRequest("events[%d].transaction_id must be 1 to %d "
                             "characters long (got %d)"
                             % (i, MAX_TXID, len(tx)))
        for key in ("customer_id", "event_type"):
            v = ev.get(key)
            if type(v) is not str or not v:
                if v is None:
                    raise BadRequest("events[%d].%s is required" % (i, key))
                raise BadRequest("events[%d].%s must be a non-empty string"
                                 % (i, key))
        ts = ev.get("timestamp")
        if type(ts) is not str:
            if ts is None:
                raise BadRequest("events[%d].timestamp is required" % i)
            raise BadRequest("events[%d].timestamp must be a string" % i)
        if RFC3339.match(ts) is None:
            raise BadRequest("events[%d].timestamp %s is not an RFC 3339 "
                             "date-time" % (i, json.dumps(ts)))
        try:
            when = fromisoformat(ts.upper()).timestamp()
        except ValueError:
            raise BadRequest("events[%d].timestamp %s is not a valid date-time"
                             % (i, json.dumps(ts)))
        if when > limit:
            raise BadRequest("events[%d].timestamp %s is more than %g hours in "
                             "the future" % (i, json.dumps(ts),
                                             max_future / 3600.0))
        if "properties" in ev and type(ev["properties"]) is not dict:
            raise BadRequest("events[%d].properties must be an object" % i)


def check_fast(batch, limit19, good_dates):
    """The transaction_ids of batch if it is plainly valid, else None.

    A quick pass for the common case (UTC "Z" timestamps before the limit),
    done with whole-batch C-level operations rather than a Python loop per
    event.  It accepts nothing that validate_batch refuses and answers None
    whenever in doubt, so that validate_batch decides and words the message.
    limit19 is the future limit as "YYYY-MM-DDTHH:MM:SS" (UTC); good_dates
    caches calendar checks of days 29 to 31.
    """
    if type(batch) is not list or not 0 < len(batch) <= MAX_EVENTS:
        return None
    try:
        # The getter raises TypeError on anything but a dict (JSON gives no
        # other mapping) and KeyError on a missing field; str.join raises
        # TypeError unless every item is a string.
        txs, cids, ets, tss = zip(*map(GET4, batch))
        "".join(txs)
        "".join(cids)
        "".join(ets)
        joined = "\n".join(tss)
    except (KeyError, TypeError):
        return None
    n = len(batch)
    extra = sum(map(len, batch)) - 4 * n
    if extra:
        # Only "properties" may be there besides the four, as an object.
        if sum(map(contains, batch, repeat("properties", n))) != extra:
            return None
        if set(map(type, map(GET_PROPS, batch))) != {dict}:
            return None
    if "" in txs or "" in cids or "" in ets or \
            max(map(len, txs)) > MAX_TXID:
        return None
    if TS_BATCH.match(joined) is None or max(tss)[:19] >= limit19:
        return None
    if "-29T" in joined or "-30T" in joined or "-31T" in joined:
        for day in {t[:10] for t in tss}:
            ok = good_dates.get(day)
            if ok is None:
                try:
                    datetime.date.fromisoformat(day)
                    ok = True
                except ValueError:
                    ok = False
                if len(good_dates) > 10000:
                    good_dates.clear()
                good_dates[day] = ok
            if not ok:
                return None
    return txs


def normalize_entry(entry):
    """A script entry in its dict form; ValueError when malformed."""
    if isinstance(entry, bool):
        raise ValueError("script entry must not be a boolean")
    if isinstance(entry, int):
        entry = {"status": entry}
    elif isinstance(entry, str):
        words = {"ok": {}, "drop": {"drop": True}, "reset": {"reset": True},
                 "drop_after_accept": {"drop": True, "process": True}}
        if entry not in words:
            raise ValueError("unknown script entry %r" % entry)
        entry = words[entry]
    elif not isinstance(entry, dict):
        raise ValueError("script entry must be a number, a string or an object")
    known = {"status", "retry_after", "retry_after_ms", "message", "body",
             "headers", "delay", "drop", "reset", "process"}
    unknown = set(entry) - known
    if unknown:
        raise ValueError("unknown key(s) in script entry: %s"
                         % ", ".join(sorted(unknown)))
    e = dict(entry)
    st = e.get("status")
    if st is not None and (type(st) is not int or not 100 <= st <= 599):
        raise ValueError("status must be an integer from 100 to 599")
    d = e.get("delay", 0)
    if type(d) not in (int, float) or d < 0:
        raise ValueError("delay must be a non-negative number")
    if "headers" in e and not (isinstance(e["headers"], dict) and all(
            isinstance(v, (str, int, float)) for v in e["headers"].values())):
        raise ValueError("headers must be an object of strings")
    for k in ("message", "body"):
        if k in e and not isinstance(e[k], str):
            raise ValueError("%s must be a string" % k)
    for k in ("retry_after", "retry_after_ms"):
        if k in e and not isinstance(e[k], (str, int, float)):
            raise ValueError("%s must be a string or a number" % k)
    if "process" not in e:
        e["process"] = (st is None or 200 <= st < 300) and \
            not (e.get("drop") or e.get("reset"))
    return e


def normalize_rate_limit(spec):
    """A rate_limit fault in its dict form; ValueError when malformed."""
    if not isinstance(spec, dict):
        raise ValueError("rate_limit must be an object or null")
    unknown = set(spec) - {"events_per_second", "window"}
    if unknown:
        raise ValueError("unknown key(s) in rate_limit: %s"
                         % ", ".join(sorted(unknown)))
    eps = spec.get("events_per_second")
    if type(eps) not in (int, float) or eps <= 0:
        raise ValueError("rate_limit.events_per_second must be a positive "
                         "number")
    window = spec.get("window", 1)
    if type(window) not in (int, float) or not 0 < window <= 60:
        raise ValueError("rate_limit.window must be a number of seconds "
                         "above 0, at most 60")
    return {"events_per_second": eps, "window": window}


class Faults:
    """The fault settings: a script of answers, a delay, rejected ids."""

    def __init__(self):
        self.script = collections.deque()
        self.delay = 0.0
        self.reject = set()
        self.rate_limit = None

    def apply(self, spec):
        """Apply a /_faults JSON object; ValueError on a bad one (unchanged)."""
        if not isinstance(spec, dict):
            raise ValueError("faults must be a JSON object")
        unknown = set(spec) - {"clear", "script", "append", "delay",
                               "reject_transaction_ids", "rate_limit"}
        if unknown:
            raise ValueError("unknown fault key(s): %s"
                             % ", ".join(sorted(unknown)))
        script = append = None
        for k in ("script", "append"):
            if k in spec:
                if not isinstance(spec[k], list):
                    raise ValueError("%s must be a list" % k)
                entries = [normalize_entry(e) for e in spec[k]]
                if k == "script":
                    script = entries
                else:
                    append = entries
        delay = spec.get("delay")
        if delay is not None and (type(delay) not in (int, float) or delay < 0):
            raise ValueError("delay must be a non-negative number")
        rej = spec.get("reject_transaction_ids")
        if rej is not None and not (isinstance(rej, list) and
                                    all(isinstance(x, str) for x in rej)):
            raise ValueError("reject_transaction_ids must be a list of strings")
        rate = spec.get("rate_limit")
        if rate is not None:
            rate = normalize_rate_limit(rate)
        if spec.get("clear"):
            self.__init__()
        if script is not None:
            self.script = collections.deque(script)
        if append is not None:
            self.script.extend(append)
        if delay is not None:
            self.delay = float(delay)
        if rej is not None:
            self.reject = set(rej)
        if "rate_limit" in spec:
            self.rate_limit = rate

    def as_json(self):
        """The current faults in the /_faults format."""
        return {"script": list(self.script), "delay": self.delay,
                "reject_transaction_ids": sorted(self.reject),
                "rate_limit": self.rate_limit}


class Mock:
    """Everything the mock remembers, shared by all connections."""

    def __init__(self, args):
        self.args = args
        self.token = args.token
        self.max_future = args.max_future_hours * 3600.0
        self.max_recorded = args.max_recorded
        self.logf = open(args.log, "a", encoding="utf-8") if args.log else None
        self.initial_faults = []
        self.open_connections = 0
        self.good_dates = {}
        self._limit_at = None
        self._limit19 = None
        self.reset()

    def reset(self):
        """Back to the state right after start."""
        self.faults = Faults()
        for spec in self.initial_faults:
            self.faults.apply(spec)
        self.seen = set()
        self.records = []
        self.seq = 0
        self.unrecorded = 0
        self.s_requests = self.s_events = self.s_unique = self.s_dups = 0
        self.s_dropped = self.s_gzip = self.s_bytes = 0
        self.by_status = collections.Counter()
        self.s_connections = 0
        self.max_open = self.open_connections
        self.inflight = self.max_inflight = 0
        self.s_rate_limited = 0
        # (arrival time, events accepted, status) of each ingest request
        self.arrivals = collections.deque(maxlen=MAX_ARRIVALS)
        # the rate_limit fault's window: (time, events accepted)
        self.rl_window = collections.deque()
        self.rl_sum = 0

    def stats(self):
        """The /_stats answer."""
        return {"requests": self.s_requests, "events": self.s_events,
                "unique_events": self.s_unique, "duplicates": self.s_dups,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "dropped": self.s_dropped, "gzip_requests": self.s_gzip,
                "bytes": self.s_bytes, "connections": self.s_connections,
                "open_connections": self.open_connections,
                "max_open_connections": self.max_open,
                "inflight": self.inflight, "max_inflight": self.max_inflight,
                "script_remaining": len(self.faults.script),
                "recorded_requests": len(self.records),
                "unrecorded_requests": self.unrecorded,
                "rate_limited": self.s_rate_limited}

    def events(self, offset):
        """The accepted unique events in arrival order (from recorded bodies)."""
        out = []
        for rec in self.records:
            uniq = rec["_unique"]
            if not uniq:
                continue
            batch = json.loads(rec["body"])
            if uniq is True:
                out.extend(batch)
            else:
                out.extend(batch[i] for i in uniq)
        return out[offset:]

    # -- ingest ---------------------------------------------------------

    def limit19(self):
        """The future limit of timestamps as "YYYY-MM-DDTHH:MM:SS" (UTC)."""
        now = int(time.time())
        if now != self._limit_at:
            try:
                lim = datetime.datetime.fromtimestamp(
                    now + self.max_future, datetime.timezone.utc)
                self._limit19 = lim.strftime("%Y-%m-%dT%H:%M:%S")
            except (OverflowError, ValueError, OSError):
                self._limit19 = "9999-12-31T23:59:59"
            self._limit_at = now
        return self._limit19

    def ingest(self, method, path, headers, raw):
        """Handle one ingest request: returns an answer dict for the protocol.

        The answer has: status, body (bytes), headers (list), delay, drop,
        reset.
        """
        self.s_requests += 1
        self.seq += 1
        self.s_bytes += len(raw)
        t_arrival = time.time()
        entry = self.faults.script.popleft() if self.faults.script else None
        delay = self.faults.delay + (entry.get("delay", 0) if entry else 0)

        auth_hdr = headers.get("authorization")
        if auth_hdr is None:
            auth = "missing"
        else:
            scheme, _, cred = auth_hdr.partition(" ")
            auth = ("ok" if scheme.lower() == "bearer"
                    and cred.strip() == self.token else "wrong")

        text = None
        parsed = None
        nevents = None
        uniq = None
        status = 200
        message = None
        enc = headers.get("content-encoding", "identity").strip().lower()
        try:
            if enc == "gzip" or enc == "x-gzip":
                self.s_gzip += 1
                try:
                    raw = zlib.decompress(raw, 47)
                except zlib.error as e:
                    raise BadRequest("Request body is not valid gzip: %s" % e)
            elif enc not in ("identity", ""):
                raise BadRequest("Unsupported Content-Encoding: %s" % enc)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
                raise BadRequest("Request body is not valid UTF-8")
            try:
                parsed = DECODER.decode(text)
            except ValueError as e:
                raise BadRequest("Request body is not valid JSON: %s" % e)
            except RecursionError:
                raise BadRequest("Request body is not valid JSON: nested "
                                 "too deeply")
            if isinstance(parsed, list):
                nevents = len(parsed)
        except BadRequest as e:
            status, message = 400, str(e)

        if entry is not None and not entry["process"]:
            status = entry.get("status") or 200
            message = None
        elif auth != "ok":
            status = 401
            message = ("Missing Authorization header" if auth == "missing"
                       else "Invalid API token")
        elif status == 200:
            try:
                txs = check_fast(parsed, self.limit19(), self.good_dates)
                if txs is None:
                    validate_batch(parsed, self.max_future)
                    txs = [ev["transaction_id"] for ev in parsed]
                rej = self.faults.reject
                if rej and not rej.isdisjoint(txs):
                    tx = next(t for t in txs if t in rej)
                    raise BadRequest("Event with transaction_id %s was rejected "
                                     "(mock fault reject_transaction_ids)"
                                     % json.dumps(tx))
            except BadRequest as e:
                status, message = 400, str(e)
            else:
                limit = self.over_rate_limit(t_arrival, nevents)
                if limit is not None:
                    status = 429
                    message = ("Rate limit exceeded: at most %g events per "
                               "second (mock fault rate_limit)" % limit)
                    self.s_rate_limited += 1
            if status == 200:
                seen = self.seen
                if seen.isdisjoint(txs) and len(set(txs)) == nevents:
                    seen.update(txs)
                    uniq = True
                    self.s_unique += nevents
                else:
                    uniq = []
                    for i, tx in enumerate(txs):
                        if tx in seen:
                            self.s_dups += 1
                        else:
                            seen.add(tx)
                            uniq.append(i)
                    self.s_unique += len(uniq)
                self.s_events += nevents
                if entry is not None and entry.get("status"):
                    status = entry["status"]

        drop = bool(entry and (entry.get("drop") or entry.get("reset")))
        if drop:
            self.s_dropped += 1
            answered = None
        else:
            answered = status
            self.by_status[status] += 1

        # Build the answer.
        extra = []
        body = b""
        if entry is not None and status == (entry.get("status") or 200) \
                and message is None:
            if "retry_after" in entry:
                extra.append(("Retry-After", str(entry["retry_after"])))
            if "retry_after_ms" in entry:
                extra.append(("retry-after-ms", str(entry["retry_after_ms"])))
            for k, v in entry.get("headers", {}).items():
                extra.append((k, str(v)))
            if "body" in entry:
                body = entry["body"].encode("utf-8")
            elif status >= 300:
                message = entry.get("message", reason(status))
        if message is not None and not body:
            body = json.dumps({"message": message}).encode("utf-8")
            extra.append(("Content-Type", "application/json"))

        self.arrivals.append((t_arrival, nevents if uniq is not None else 0,
                              answered))
        masked = mask_headers(headers)
        tnow = now_iso()
        if self.logf is not None:
            self.write_log(tnow, method, path, masked, auth, text, parsed,
                           answered, entry)
        if len(self.records) < self.max_recorded:
            self.records.append({
                "seq": self.seq, "time": tnow, "method": method, "path": path,
                "headers": masked, "auth": auth, "body": text,
                "events": nevents, "status": answered, "fault": entry,
                "t": t_arrival, "_unique": uniq})
        else:
            self.unrecorded += 1
        return {"status": status, "body": body, "headers": extra,
                "delay": delay, "drop": drop,
                "reset": bool(entry and entry.get("reset"))}

    def over_rate_limit(self, now, nevents):
        """The rate_limit fault: its events_per_second if a batch of nevents
        accepted now would exceed it (the batch is then not counted), else
        None (the batch is counted in the window)."""
        rl = self.faults.rate_limit
        if rl is None:
            return None
        w = self.rl_window
        while w and w[0][0] <= now - rl["window"]:
            self.rl_sum -= w.popleft()[1]
        if self.rl_sum + nevents > rl["events_per_second"] * rl["window"]:
            return rl["events_per_second"]
        w.append((now, nevents))
        self.rl_sum += nevents
        return None

    def rates(self, query):
        """The /_rates answer (see the module's docstring)."""
        window = float(query.get("window", "1"))
        if not 0 < window <= 3600:
            raise ValueError("window must be above 0, at most 3600 seconds")
        since = float(query.get("since", "0"))
        arr = [a for a in self.arrivals if a[0] >= since]
        seconds = {}
        for t, n, st in arr:
            b = seconds.get(int(t))
            if b is None:
                b = seconds[int(t)] = {"second": int(t), "requests": 0,
                                       "events": 0, "by_status": {}}
            b["requests"] += 1
            b["events"] += n
            key = str(st)
            b["by_status"][key] = b["by_status"].get(key, 0) + 1
        acc = [(t, n) for t, n, st in arr if n]
        best = 0
        total = 0
        lo = 0
        for t, n in acc:
            total += n
            while acc[lo][0] <= t - window:
                total -= acc[lo][1]
                lo += 1
            best = max(best, total)
        first = acc[0][0] if acc else None
        last = acc[-1][0] if acc else None
        events = sum(n for t, n in acc)
        return {"requests": len(arr), "events": events, "first": first,
                "last": last,
                "rate": (events / (last - first)
                         if acc and last > first else None),
                "window": window, "max_window_events": best,
                "seconds": [seconds[k] for k in sorted(seconds)]}

    def write_log(self, tnow, method, path, masked, auth, text, parsed,
                  answered, entry):
        """Append one JSON line about an ingest request to --log."""
        if parsed is not None and "\n" not in text and "\r" not in text \
                and "\u2028" not in text and "\u2029" not in text:
            body = text.strip()
        else:
            body = json.dumps(parsed if parsed is not None else text)
        line = ('{"time": %s, "method": %s, "path": %s, "headers": %s, '
                '"auth": %s, "body": %s, "status": %s, "fault": %s}\n'
                % (json.dumps(tnow), json.dumps(method), json.dumps(path),
                   json.dumps(masked), json.dumps(auth), body,
                   json.dumps(answered), json.dumps(entry)))
        self.logf.write(line)
        self.logf.flush()

    # -- control --------------------------------------------------------

    def control(self, method, path, query, raw):
        """Handle /_... endpoints: returns (status, JSON-able body)."""
        if path == "/_stats" and method == "GET":
            return 200, self.stats()
        if path == "/_events" and method == "GET":
            return 200, self.events(int(query.get("offset", "0")))
        if path == "/_rates" and method == "GET":
            return 200, self.rates(query)
        if path == "/_requests" and method == "GET":
            since = int(query.get("since", "0"))
            return 200, [{k: v for k, v in r.items() if k != "_unique"}
                         for r in self.records if r["seq"] > since]
        if path == "/_faults":
            if method == "GET":
                return 200, self.faults.as_json()
            if method == "DELETE":
                self.faults.apply({"clear": True})
                return 200, self.faults.as_json()
            if method == "POST":
                try:
                    self.faults.apply(json.loads(raw.decode("utf-8") or "{}"))
                except ValueError as e:
                    return 400, {"message": "Bad faults: %s" % e}
                return 200, self.faults.as_json()
        if path == "/_reset" and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if path in ("/_stats", "/_events", "/_requests", "/_faults", "/_reset",
                    "/_rates"):
            return 405, {"message": "Method %s not allowed on %s"
                         % (method, path)}
        return 404, {"message": "Not found: %s" % path}


def mask_headers(headers):
    """The request headers with the Authorization credentials masked."""
    out = dict(headers)
    a = out.get("authorization")
    if a is not None:
        scheme, sp, cred = a.partition(" ")
        out["authorization"] = (scheme + " ****") if sp else "****"
    return out


def parse_chunked(buf, start):
    """Decode a chunked body at buf[start:]: (body, end) or None if partial."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_s = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise ValueError("bad chunk size")
        pos = eol + 2
        if size == 0:
            # Skip trailers up to the empty line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(out), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2
        if len(out) > MAX_BODY:
            raise ValueError("body too large")


class Connection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests, answers in order."""

    def __init__(self, mock, loop):
        self.mock = mock
        self.loop = loop
        self.buf = bytearray()
        self.transport = None
        self.busy = False
        self.closed = False
        self.head = None        # parsed head of the request being received
        self.continued = False  # 100 Continue sent for it

    def connection_made(self, transport):
        self.transport = transport
        m = self.mock
        m.open_connections += 1
        m.s_connections += 1
        if m.open_connections > m.max_open:
            m.max_open = m.open_connections
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc):
        if not self.closed:
            self.closed = True
            self.mock.open_connections -= 1
        if self.head is not None and self.head[5]:
            self.mock.inflight -= 1
            self.head = None

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            try:
                self.process()
            except Exception as e:  # never let a bad request kill the loop
                print("mock_metronome: internal error: %r" % e,
                      file=sys.stderr)
                self.simple(500, {"message": "Mock internal error: %s" % e},
                            close=True)

    def eof_received(self):
        return False

    def simple(self, status, obj, close=False, extra=()):
        """Answer status with a JSON body."""
        body = json.dumps(obj).encode("utf-8")
        self.send(status, body,
                  [("Content-Type", "application/json")] + list(extra), close)

    def send(self, status, body, headers, close):
        """Write one response; close the connection after it if asked."""
        if self.closed:
            return
        h = ["HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
             % (status, reason(status), len(body))]
        for k, v in headers:
            h.append("%s: %s\r\n" % (k, v))
        if close:
            h.append("Connection: close\r\n")
        h.append("\r\n")
        self.transport.write("".join(h).encode("latin-1") + body)
        if close:
            self.transport.close()
            self.closed_by_us()

    def closed_by_us(self):
        """Account for a connection we closed."""
        if not self.closed:
            self.closed = True
            self.mock.open_connections -= 1

    def process(self):
        """Parse and answer every complete request in the buffer."""
        buf = self.buf
        while not self.busy and not self.closed:
            if self.head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEADER:
                        self.simple(431, {"message": "Headers too large"},
                                    close=True)
                    return
                if not self.parse_head(bytes(buf[:end]).decode("latin-1")):
                    return
                del buf[:end + 4]
                self.continued = False
            method, target, version, headers, length, ingest = self.head
            if length == "chunked":
                try:
                    got = parse_chunked(buf, 0)
                except ValueError as e:
                    self.simple(400, {"message": "Bad chunked body: %s" % e},
                                close=True)
                    return
                if got is None:
                    self.maybe_continue(headers)
                    return
                raw, used = got
            else:
                if len(buf) < length:
                    self.maybe_continue(headers)
                    return
                raw, used = bytes(buf[:length]), length
            del buf[:used]
            self.head = None
            close = self.wants_close(version, headers)
            path, _, qs = target.partition("?")
            if ingest:
                try:
                    ans = self.mock.ingest(method, path, headers, raw)
                except Exception:
                    self.mock.inflight -= 1
                    raise
                if ans["delay"] > 0:
                    self.defer(ans["delay"], self.finish, ans, close)
                    return
                self.finish(ans, close)
            elif path == "/_wait" and method == "GET":
                query = dict(p.partition("=")[::2] for p in qs.split("&") if p)
                try:
                    want = {k: float(v) for k, v in query.items()}
                    timeout = want.pop("timeout", 10.0)
                    if not 0 <= timeout <= 120:
                        raise ValueError("timeout must be 0 to 120 seconds")
                    if not set(want) <= set(self.mock.stats()):
                        raise ValueError("unknown counter(s): %s" % ", ".join(
                            sorted(set(want) - set(self.mock.stats()))))
                except ValueError as e:
                    self.simple(400, {"message": "Bad request: %s" % e}, close)
                    continue
                if not self.wait_poll(want, time.monotonic() + timeout, close):
                    return
            elif path.startswith("/_"):
                query = dict(p.partition("=")[::2] for p in qs.split("&") if p)
                try:
                    st, obj = self.mock.control(method, path, query, raw)
                except ValueError as e:
                    st, obj = 400, {"message": "Bad request: %s" % e}
                self.simple(st, obj, close)
            else:
                self.simple(404, {"message": "Not found: %s" % path}, close)

    def defer(self, delay, fn, *args):
        """Run fn(*args) after delay seconds, holding later requests back."""
        self.busy = True
        self.transport.pause_reading()
        self.loop.call_later(delay, self.resume_after, fn, args)

    def resume_after(self, fn, args):
        """The end of a deferral: run fn, then go on with the buffer."""
        try:
            self.busy = False
            fn(*args)           # may defer again (busy once more)
            if not self.closed and not self.busy:
                self.transport.resume_reading()
                if self.buf:
                    self.process()
        except Exception as e:  # never let a bad request kill the loop
            print("mock_metronome: internal error: %r" % e, file=sys.stderr)
            if not self.closed:
                self.transport.abort()
                self.closed_by_us()

    def wait_poll(self, want, deadline, close):
        """Answer /_wait once every counter in want is reached or at deadline.

        Returns True when answered now, False when deferred.
        """
        stats = self.mock.stats()
        reached = all(stats[k] >= v for k, v in want.items())
        if reached or time.monotonic() >= deadline:
            stats["reached"] = reached
            self.simple(200, stats, close)
            return True
        self.defer(0.01, self.wait_poll, want, deadline, close)
        return False

    def parse_head(self, text):
        """Parse a request head into self.head; answers 400 and closes if bad."""
        lines = text.split("\r\n")
        while lines and not lines[0]:   # tolerate stray CRLFs between requests
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.simple(400, {"message": "Malformed request line"}, close=True)
            return False
        method, target, version = parts
        if target.startswith("http://") or target.startswith("https://"):
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 \
                else "/"
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                self.simple(400, {"message": "Malformed header line"},
                            close=True)
                return False
            name = name.strip().lower()
            value = value.strip()
            headers[name] = (headers[name] + ", " + value) if name in headers \
                else value
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            length = "chunked"
        else:
            try:
                length = int(headers.get("content-length", "0"))
                if length < 0:
                    raise ValueError
            except ValueError:
                self.simple(400, {"message": "Bad Content-Length"}, close=True)
                return False
            if length > MAX_BODY:
                self.simple(413, {"message": "Request body too large"},
                            close=True)
                return False
        path = target.partition("?")[0]
        ingest = path.endswith("/ingest")
        if ingest and method != "POST":
            self.simple(405, {"message": "Method %s not allowed; use POST"
                              % method}, close=True, extra=[("Allow", "POST")])
            return False
        if ingest:
            m = self.mock
            m.inflight += 1
            if m.inflight > m.max_inflight:
                m.max_inflight = m.inflight
        self.head = (method, target, version, headers, length, ingest)
        return True

    def maybe_continue(self, headers):
        """Answer Expect: 100-continue once, so clients do not wait for it."""
        if not self.continued and \
                headers.get("expect", "").lower() == "100-continue":
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    @staticmethod
    def wants_close(version, headers):
        """Whether the client asked for the connection to close."""
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            return "keep-alive" not in conn
        return "close" in conn

    def finish(self, ans, close):
        """Send (or drop) an ingest answer."""
        self.mock.inflight -= 1
        if self.closed:
            return
        if ans["drop"]:
            if ans["reset"]:
                sock = self.transport.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    except OSError:
                        pass
                self.transport.abort()
            else:
                self.transport.close()
            self.closed_by_us()
            return
        self.send(ans["status"], ans["body"], ans["headers"], close)


def parse_args(argv):
    """The command line."""
    p = argparse.ArgumentParser(
        description="Mock of Metronome's usage ingest API (127.0.0.1 only).")
    p.add_argument("--port", type=int, default=0,
                   help="TCP port (0 = pick a free one; default 0)")
    p.add_argument("--port-file", help="write the port there once listening")
    p.add_argument("--token", default="test-token",
                   help="the bearer token to require (default test-token)")
    p.add_argument("--log", help="append a JSON line per ingest request here")
    p.add_argument("--faults", action="append", default=[],
                   help="faults as JSON (the /_faults format) or @file")
    p.add_argument("--script", help="fault script as a JSON array")
    p.add_argument("--delay", type=float,
                   help="standing delay in seconds before every ingest answer")
    p.add_argument("--reject-transaction-id", action="append", default=[],
                   metavar="ID", help="400 for batches holding this id")
    p.add_argument("--max-future-hours", type=float, default=24.0,
                   help="refuse timestamps further ahead (default 24)")
    p.add_argument("--max-recorded", type=int, default=10000,
                   help="requests kept for /_requests and /_events")
    return p.parse_args(argv)


def initial_faults(args):
    """The fault specs given on the command line, in order."""
    specs = []
    for f in args.faults:
        if f.startswith("@"):
            with open(f[1:], encoding="utf-8") as fh:
                f = fh.read()
        specs.append(json.loads(f))
    if args.script is not None:
        specs.append({"script": json.loads(args.script)})
    if args.delay is not None:
        specs.append({"delay": args.delay})
    if args.reject_transaction_id:
        specs.append({"reject_transaction_ids": args.reject_transaction_id})
    return specs


async def serve(mock, args):
    """Listen on 127.0.0.1, announce the port, run until a signal."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(mock, loop),
                                      "127.0.0.1", args.port, backlog=512,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp%d" % os.getpid()
        with open(tmp, "w") as fh:
            fh.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()
    await stop.wait()
    server.close()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        mock = Mock(args)
    except OSError as e:
        print("mock_metronome: cannot open the log: %s" % e, file=sys.stderr)
        return 2
    try:
        mock.initial_faults = initial_faults(args)
        mock.reset()
    except (ValueError, OSError) as e:
        print("mock_metronome: bad faults: %s" % e, file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(mock, args))
    except OSError as e:
        print("mock_metronome: %s" % e, file=sys.stderr)
        return 1
    finally:
        if mock.logf is not None:
            mock.logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
