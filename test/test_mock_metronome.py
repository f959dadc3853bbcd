#!/usr/bin/env python3
"""test_mock_metronome.py: the mock Metronome's own behaviour (unittest, stdlib).

Starts test/mock_metronome.py on a free 127.0.0.1 port as a subprocess and
checks what pg_metronome's tests rely on: validation like the real ingest API
(400/401 with {"message"}), dedup counted in /_stats, exact recording of what
was received, the fault script, delays, drops, rejected transaction_ids, gzip
and chunked bodies, keep-alive, concurrency and the masked token in the log;
arrival rates (/_rates) and the rate_limit fault (429 without Retry-After).

Run from the repository root:
    python3 -m unittest -v test/test_mock_metronome.py
or  python3 test/test_mock_metronome.py
"""

import datetime
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

MOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    "mock_metronome.py")
TOKEN = "s3cret-T0KEN-for-tests"


def start_mock(*args):
    """Start the mock on port 0; returns (process, port)."""
    proc = subprocess.Popen([sys.executable, MOCK, "--port", "0"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError("mock did not start: %r %s"
                           % (line, proc.stderr.read()))
    return proc, int(line.split()[1])


def stop_mock(proc):
    """SIGTERM the mock; returns its exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(10)
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return rc


def iso(dt):
    """dt as the wire format's timestamp, UTC with milliseconds."""
    return dt.astimezone(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def event(tx, **over):
    """A valid event with transaction_id tx, keys in the wire order."""
    ev = {"transaction_id": tx, "customer_id": "cust-1",
          "timestamp": "2021-07-10T05:37:11.000Z", "event_type": "api_call",
          "properties": {"tokens": "42", "model": "m1"}}
    ev.update(over)
    return ev


class MockTestCase(unittest.TestCase):
    """Shares one mock (with a log file) across the tests of a class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mocktest")
        cls.logpath = os.path.join(cls.tmp, "requests.jsonl")
        cls.proc, cls.port = start_mock("--token", TOKEN, "--log", cls.logpath)

    @classmethod
    def tearDownClass(cls):
        rc = stop_mock(cls.proc)
        for f in os.listdir(cls.tmp):
            os.unlink(os.path.join(cls.tmp, f))
        os.rmdir(cls.tmp)
        assert rc == 0, "mock exited with %s" % rc

    def setUp(self):
        self.control("POST", "/_reset")

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)

    def control(self, method, path, obj=None):
        """Call a control endpoint; returns (status, parsed JSON)."""
        c = self.conn()
        try:
            body = json.dumps(obj) if obj is not None else None
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            c.close()

    def stats(self):
        return self.control("GET", "/_stats")[1]

    def faults(self, **spec):
        st, body = self.control("POST", "/_faults", spec)
        self.assertEqual(st, 200, body)
        return body

    def post(self, body, token=TOKEN, conn=None, headers=None,
             path="/v1/ingest"):
        """POST body (an object to JSON-encode, or bytes) to the ingest URL.

        Returns (status, response headers, raw response body).
        """
        c = conn or self.conn()
        h = {"Content-Type": "application/json",
             "User-Agent": "pg_metronome/test"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            c.request("POST", path, body=data, headers=h)
            r = c.getresponse()
            return r.status, r, r.read()
        finally:
            if conn is None:
                c.close()

    def assertError(self, status, got, contains=None):
        """got is (status, response, body) carrying {"message": ...}."""
        st, r, raw = got
        self.assertEqual(st, status, raw)
        msg = json.loads(raw)["message"]
        self.assertIsInstance(msg, str)
        self.assertTrue(msg)
        if contains:
            self.assertIn(contains, msg)
        return msg


class IngestValidation(MockTestCase):
    """The ingest endpoint validates like Metronome's."""

    def test_good_batch_200_empty_body_and_recorded_exactly(self):
        batch = [event("tx-1"), event("tx-2", customer_id="cust-2")]
        # Keys in an unusual order must be kept as sent.
        batch.append({"event_type": "e", "timestamp": "2021-07-10T05:37:11Z",
                      "customer_id": "c", "transaction_id": "tx-3"})
        raw = json.dumps(batch, separators=(",", ":")).encode()
        st, r, body = self.post(raw)
        self.assertEqual(st, 200)
        self.assertEqual(body, b"")
        self.assertEqual(r.getheader("Content-Length"), "0")
        st, events = self.control("GET", "/_events")
        self.assertEqual(events, batch)
        self.assertEqual([list(e) for e in events], [list(e) for e in batch])
        st, reqs = self.control("GET", "/_requests")
        self.assertEqual(len(reqs), 1)
        self.assertEqual(reqs[0]["body"], raw.decode())
        self.assertEqual(reqs[0]["status"], 200)
        self.assertEqual(reqs[0]["headers"]["user-agent"], "pg_metronome/test")
        s = self.stats()
        self.assertEqual((s["requests"], s["events"], s["unique_events"],
                          s["duplicates"]), (1, 3, 3, 0))
        self.assertEqual(s["by_status"], {"200": 1})

    def test_empty_array_400(self):
        self.assertError(400, self.post([]))

    def test_not_an_array_400(self):
        self.assertError(400, self.post(event("tx-1")))
        self.assertError(400, self.post(b'[{"transaction_id": '))
        self.assertError(400, self.post(b'"text"'))
        self.assertError(400, self.post(b'[NaN]'))
        self.assertError(400, self.post([event("a"), 5]))
        self.assertError(400, self.post(b"[" * 100000 + b"]" * 100000))
        self.assertEqual(self.stats()["by_status"], {"400": 6})
        self.assertEqual(self.stats()["inflight"], 0)

    def test_100_events_ok_101_refused(self):
        self.assertEqual(self.post([event("a%d" % i) for i in range(100)])[0],
                         200)
        self.assertError(400, self.post([event("b%d" % i)
                                         for i in range(101)]), "101")
        self.assertEqual(self.stats()["unique_events"], 100)

    def test_timestamps(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        good = ["2021-07-10T05:37:11.000Z", "2021-07-10T05:37:11Z",
                "2021-07-10T05:37:11.123456789Z", "2021-07-10t05:37:11z",
                "2021-07-10T05:37:11+05:30", "2021-07-10T05:37:11.5-08:00",
                "2024-02-29T00:00:00Z", iso(now + datetime.timedelta(hours=23))]
        for i, ts in enumerate(good):
            with self.subTest(ts=ts):
                self.assertEqual(self.post([event("g%d" % i, timestamp=ts)])[0],
                                 200)
        bad = ["2021-07-10", "2021-07-10 05:37:11Z", "2021-07-10T05:37:11",
               "2021-07-10T05:37Z", "20210710T053711Z", "2021-13-01T00:00:00Z",
               "2021-02-29T00:00:00Z", "2021-04-31T00:00:00.000Z",
               "2021-07-10T24:00:00Z", "2021-07-10T05:37:11+24:00",
               "yesterday", "", 1625895431000, None,
               iso(now + datetime.timedelta(hours=25))]
        for i, ts in enumerate(bad):
            with self.subTest(ts=ts):
                self.assertError(400, self.post([event("ok"),
                                                 event("b%d" % i, timestamp=ts)]),
                                 "timestamp")
        self.assertEqual(self.stats()["unique_events"], len(good))

    def test_transaction_id_length(self):
        self.assertEqual(self.post([event("x" * 128)])[0], 200)
        self.assertError(400, self.post([event("y" * 129)]), "transaction_id")
        self.assertError(400, self.post([event("")]), "transaction_id")
        self.assertError(400, self.post([event(12)]), "transaction_id")

    def test_required_fields_and_types(self):
        for field in ("transaction_id", "customer_id", "event_type",
                      "timestamp"):
            ev = event("t-" + field)
            del ev[field]
            with self.subTest(missing=field):
                self.assertError(400, self.post([ev]), field)
        for field in ("customer_id", "event_type"):
            with self.subTest(empty=field):
                self.assertError(400, self.post([event("e", **{field: ""})]),
                                 field)
                self.assertError(400, self.post([event("e", **{field: 7})]),
                                 field)
        self.assertError(400, self.post([event("p", properties=[1])]),
                         "properties")
        self.assertError(400, self.post([event("p", properties="x")]),
                         "properties")
        self.assertError(400, self.post([event("u", extra=1)]), "extra")
        ev = event("np")
        del ev["properties"]
        self.assertEqual(self.post([ev])[0], 200)
        self.assertEqual(self.post([event("any", properties={
            "n": 1.5, "b": True, "z": None, "l": [1], "o": {"a": "b"}})])[0],
            200)
        self.assertEqual(self.stats()["unique_events"], 2)

    def test_one_bad_event_fails_whole_batch(self):
        batch = [event("keep-%d" % i) for i in range(10)]
        batch[7]["customer_id"] = ""
        msg = self.assertError(400, self.post(batch))
        self.assertIn("events[7]", msg)
        s = self.stats()
        self.assertEqual((s["events"], s["unique_events"]), (0, 0))
        self.assertEqual(self.control("GET", "/_events")[1], [])
        # The good ones are not known as seen: sending them later is new.
        del batch[7]
        self.post(batch)
        self.assertEqual(self.stats()["duplicates"], 0)

    def test_token(self):
        good = [event("tok-1")]
        self.assertError(401, self.post(good, token="wrong"))
        self.assertError(401, self.post(good, token=None))
        self.assertError(401, self.post(good, token=TOKEN + "x"))
        self.assertError(401, self.post(good, token=""))
        # 401 comes before body validation, as a token check relies on.
        self.assertError(401, self.post([], token="wrong"))
        self.assertError(400, self.post([]))
        s = self.stats()
        self.assertEqual(s["events"], 0)
        self.assertEqual(s["by_status"], {"401": 5, "400": 1})
        st, reqs = self.control("GET", "/_requests")
        self.assertEqual([r["auth"] for r in reqs],
                         ["wrong", "missing", "wrong", "wrong", "wrong", "ok"])

    def test_dedup_counted(self):
        # A duplicate within one batch, then across batches.
        self.assertEqual(self.post([event("d1"), event("d2"),
                                    event("d1")])[0], 200)
        self.assertEqual(self.post([event("d2"), event("d3"),
                                    event("d3")])[0], 200)
        self.assertEqual(self.post([event("d1"), event("d2")])[0], 200)
        s = self.stats()
        self.assertEqual((s["requests"], s["events"], s["unique_events"],
                          s["duplicates"]), (3, 8, 3, 5))
        ids = [e["transaction_id"] for e in self.control("GET", "/_events")[1]]
        self.assertEqual(ids, ["d1", "d2", "d3"])
        # /_reset forgets them.
        self.control("POST", "/_reset")
        self.post([event("d1")])
        self.assertEqual(self.stats()["duplicates"], 0)

    def test_paths_and_methods(self):
        self.assertEqual(self.post([event("p1")], path="/ingest")[0], 200)
        self.assertError(404, self.post([event("p2")], path="/v1/ingestx"))
        self.assertError(404, self.post([event("p3")], path="/v1/usage"))
        c = self.conn()
        c.request("GET", "/v1/ingest")
        r = c.getresponse()
        self.assertEqual(r.status, 405)
        self.assertTrue(json.loads(r.read())["message"])
        c.close()

    def test_gzip_body(self):
        batch = [event("gz-%d" % i) for i in range(50)]
        raw = json.dumps(batch).encode()
        st, r, body = self.post(gzip.compress(raw),
                                headers={"Content-Encoding": "gzip"})
        self.assertEqual((st, body), (200, b""))
        self.assertEqual(self.control("GET", "/_events")[1], batch)
        self.assertEqual(self.control("GET", "/_requests")[1][0]["body"],
                         raw.decode())
        self.assertEqual(self.stats()["gzip_requests"], 1)
        self.assertError(400, self.post(b"not gzip",
                                        headers={"Content-Encoding": "gzip"}),
                         "gzip")


class Faults(MockTestCase):
    """Faults set at run time through /_faults."""

    def test_script_500_then_success(self):
        self.faults(script=[500, {"status": 503, "message": "try later"}])
        self.assertError(500, self.post([event("f1")]))
        self.assertError(503, self.post([event("f1")]), "try later")
        self.assertEqual(self.post([event("f1")])[0], 200)
        s = self.stats()
        self.assertEqual(s["by_status"], {"200": 1, "500": 1, "503": 1})
        self.assertEqual((s["unique_events"], s["duplicates"]), (1, 0))
        self.assertEqual(s["script_remaining"], 0)

    def test_429_retry_after_headers(self):
        self.faults(script=[{"status": 429, "retry_after": "2"},
                            {"status": 429, "retry_after_ms": 1500}, 401])
        st, r, body = self.post([event("r1")])
        self.assertEqual(st, 429)
        self.assertEqual(r.getheader("Retry-After"), "2")
        self.assertTrue(json.loads(body)["message"])
        st, r, body = self.post([event("r1")])
        self.assertEqual((st, r.getheader("retry-after-ms")), (429, "1500"))
        self.assertIsNone(r.getheader("Retry-After"))
        self.assertError(401, self.post([event("r1")]))
        self.assertEqual(self.post([event("r1")])[0], 200)

    def test_drop_closes_connection(self):
        self.faults(script=["drop"])
        c = self.conn()
        with self.assertRaises((http.client.RemoteDisconnected,
                                ConnectionResetError)):
            self.post([event("x1")], conn=c)
        c.close()
        s = self.stats()
        self.assertEqual((s["dropped"], s["events"], s["by_status"]),
                         (1, 0, {}))
        self.assertIsNone(self.control("GET", "/_requests")[1][0]["status"])
        self.assertEqual(self.post([event("x1")])[0], 200)

    def test_reset_connection(self):
        self.faults(script=["reset"])
        with self.assertRaises((http.client.RemoteDisconnected,
                                ConnectionResetError)):
            self.post([event("rs")])
        self.assertEqual(self.post([event("rs")])[0], 200)

    def test_drop_after_accept_records_batch(self):
        self.faults(script=["drop_after_accept"])
        with self.assertRaises((http.client.RemoteDisconnected,
                                ConnectionResetError)):
            self.post([event("lost-ack")])
        # The client resends: a duplicate, accepted.
        self.assertEqual(self.post([event("lost-ack")])[0], 200)
        s = self.stats()
        self.assertEqual((s["unique_events"], s["duplicates"], s["dropped"]),
                         (1, 1, 1))

    def test_status_after_processing(self):
        self.faults(script=[{"status": 500, "process": True}])
        self.assertError(500, self.post([event("pp")]))
        self.assertEqual(self.post([event("pp")])[0], 200)
        self.assertEqual(self.stats()["duplicates"], 1)

    def test_script_ok_gap_and_raw_body(self):
        self.faults(script=["ok", {"status": 502, "body": "<html>bad</html>",
                                   "headers": {"Content-Type": "text/html"}}])
        self.assertEqual(self.post([event("o1")])[0], 200)
        st, r, body = self.post([event("o2")])
        self.assertEqual((st, body), (502, b"<html>bad</html>"))
        self.assertEqual(r.getheader("Content-Type"), "text/html")

    def test_delay(self):
        self.faults(script=[{"delay": 0.6}])
        t = time.monotonic()
        self.assertEqual(self.post([event("slow")])[0], 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.55)
        self.assertEqual(self.post([event("fast")])[0], 200)
        reqs = self.control("GET", "/_requests")[1]
        self.assertEqual([r["fault"] for r in reqs],
                         [{"delay": 0.6, "process": True}, None])

    def test_delay_with_status_and_client_timeout(self):
        self.faults(script=[{"status": 503, "delay": 0.3}, {"delay": 1.0}])
        t = time.monotonic()
        self.assertError(503, self.post([event("ds")]))
        self.assertGreaterEqual(time.monotonic() - t, 0.25)
        # A client giving up on a delayed answer: the batch was accepted.
        c = self.conn(timeout=0.2)
        with self.assertRaises(socket.timeout):
            self.post([event("timeout")], conn=c)
        c.close()
        time.sleep(1.0)
        s = self.stats()
        self.assertEqual((s["unique_events"], s["by_status"]),
                         (1, {"503": 1, "200": 1}))
        self.assertEqual(self.post([event("after")])[0], 200)

    def test_delay_does_not_block_other_connections(self):
        self.faults(delay=0.5)
        results = []

        def send(i):
            results.append(self.post([event("c%d" % i)])[0])
        t = time.monotonic()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        # Answered while the four ingests wait (so: not after them).
        self.assertTrue(self.control("GET", "/_wait?inflight=4&timeout=5")[1]
                        ["reached"])
        self.assertEqual(results, [])
        for th in threads:
            th.join()
        self.assertEqual(results, [200] * 4)
        # Four delays of 0.5 s in parallel, not one after the other (2 s).
        self.assertLess(time.monotonic() - t, 1.5)
        s = self.stats()
        self.assertEqual((s["max_inflight"], s["inflight"]), (4, 0))
        self.faults(clear=True)
        self.assertEqual(self.faults()["delay"], 0)

    def test_reject_transaction_ids(self):
        self.faults(reject_transaction_ids=["poison", "bad-2"])
        msg = self.assertError(400, self.post([event("fine-1"),
                                               event("poison")]))
        self.assertIn("poison", msg)
        self.assertEqual(self.post([event("fine-1")])[0], 200)
        self.assertError(400, self.post([event("bad-2")]), "bad-2")
        self.assertEqual(self.stats()["unique_events"], 1)
        st, f = self.control("DELETE", "/_faults")
        self.assertEqual(f["reject_transaction_ids"], [])
        self.assertEqual(self.post([event("poison")])[0], 200)

    def test_bad_faults_refused(self):
        for spec in ({"script": ["explode"]}, {"script": 5},
                     {"delay": -1}, {"reject_transaction_ids": "x"},
                     {"nonsense": 1}, {"script": [{"status": 1000}]}):
            with self.subTest(spec=spec):
                st, body = self.control("POST", "/_faults", spec)
                self.assertEqual(st, 400)
                self.assertTrue(body["message"])
        self.assertEqual(self.stats()["script_remaining"], 0)

    def test_script_consumed_by_any_ingest_and_append(self):
        self.faults(script=[500])
        self.faults(append=[503])
        self.assertError(500, self.post([], token="wrong"))
        self.assertError(503, self.post([event("a")]))
        self.assertError(401, self.post([event("a")], token="wrong"))


class Rates(MockTestCase):
    """Arrival rates (/_rates, "t" in /_requests) and the rate_limit fault."""

    def batch(self, prefix, n):
        return [event("%s-%d" % (prefix, i)) for i in range(n)]

    def test_rates_count_arrivals_per_second(self):
        before = time.time()
        self.assertEqual(self.post(self.batch("a", 10))[0], 200)
        self.assertEqual(self.post(self.batch("b", 5))[0], 200)
        self.assertError(401, self.post(self.batch("c", 3), token="wrong"))
        after = time.time()
        st, r = self.control("GET", "/_rates")
        self.assertEqual(st, 200)
        self.assertEqual((r["requests"], r["events"]), (3, 15))
        self.assertTrue(before <= r["first"] <= r["last"] <= after, r)
        self.assertEqual(sum(b["requests"] for b in r["seconds"]), 3)
        self.assertEqual(sum(b["events"] for b in r["seconds"]), 15)
        statuses = {}
        for b in r["seconds"]:
            for k, v in b["by_status"].items():
                statuses[k] = statuses.get(k, 0) + v
        self.assertEqual(statuses, {"200": 2, "401": 1})
        self.assertEqual(r["max_window_events"], 15)
        reqs = self.control("GET", "/_requests")[1]
        self.assertEqual([type(q["t"]) for q in reqs], [float] * 3)
        self.assertTrue(reqs[0]["t"] <= reqs[1]["t"] <= reqs[2]["t"])
        # since: only the arrivals from then on
        since = self.control("GET", "/_rates?since=%f" % (after + 1))[1]
        self.assertEqual((since["requests"], since["events"], since["first"],
                          since["rate"]), (0, 0, None, None))
        self.control("POST", "/_reset")
        self.assertEqual(self.control("GET", "/_rates")[1]["requests"], 0)

    def test_rate_and_max_window(self):
        for i in range(3):
            self.assertEqual(self.post(self.batch("w%d" % i, 20))[0], 200)
            time.sleep(0.3)
        r = self.control("GET", "/_rates?window=0.2")[1]
        self.assertEqual(r["events"], 60)
        self.assertEqual(r["window"], 0.2)
        # 0.3 s apart: no 0.2 s window holds two batches
        self.assertEqual(r["max_window_events"], 20)
        self.assertAlmostEqual(r["rate"], 60 / (r["last"] - r["first"]))
        self.assertLess(r["rate"], 60 / 0.5)
        self.assertEqual(self.control("GET", "/_rates?window=10")[1]
                         ["max_window_events"], 60)
        self.assertEqual(self.control("GET", "/_rates?window=0")[0], 400)

    def test_rate_limit_answers_429_without_retry_after(self):
        f = self.faults(rate_limit={"events_per_second": 150, "window": 0.5})
        self.assertEqual(f["rate_limit"],
                         {"events_per_second": 150, "window": 0.5})
        self.assertEqual(self.post(self.batch("x", 70))[0], 200)
        got = self.post(self.batch("y", 10))
        self.assertEqual(got[0], 429)
        self.assertIsNone(got[1].getheader("Retry-After"))
        self.assertIsNone(got[1].getheader("retry-after-ms"))
        self.assertError(429, got, "Rate limit")
        # 70 + 5 = 75 = 150 events/s * 0.5 s: still within
        self.assertEqual(self.post(self.batch("z", 5))[0], 200)
        s = self.stats()
        self.assertEqual((s["unique_events"], s["rate_limited"],
                          s["by_status"]), (75, 1, {"200": 2, "429": 1}))
        # the refused batch was not recorded; once the window has passed
        # it is accepted
        time.sleep(0.6)
        self.assertEqual(self.post(self.batch("y", 10))[0], 200)
        self.assertEqual(len(self.control("GET", "/_events")[1]), 85)
        r = self.control("GET", "/_rates")[1]
        self.assertEqual((r["requests"], r["events"]), (4, 85))
        # invalid batches and bad tokens are refused as before, not limited
        self.assertError(400, self.post([event("")]))
        self.assertError(401, self.post(self.batch("q", 1), token="wrong"))
        self.assertEqual(self.stats()["rate_limited"], 1)

    def test_rate_limit_cleared_and_validated(self):
        self.faults(rate_limit={"events_per_second": 1})
        self.assertEqual(self.control("GET", "/_faults")[1]["rate_limit"],
                         {"events_per_second": 1, "window": 1})
        self.assertEqual(self.post(self.batch("a", 1))[0], 200)
        self.assertEqual(self.post(self.batch("b", 1))[0], 429)
        self.faults(rate_limit=None)
        self.assertEqual(self.post(self.batch("b", 1))[0], 200)
        self.faults(rate_limit={"events_per_second": 1})
        self.control("DELETE", "/_faults")
        self.assertEqual(self.post(self.batch("c", 1))[0], 200)
        for spec in ({"rate_limit": 5}, {"rate_limit": {}},
                     {"rate_limit": {"events_per_second": 0}},
                     {"rate_limit": {"events_per_second": 5, "window": 0}},
                     {"rate_limit": {"events_per_second": 5, "window": 61}},
                     {"rate_limit": {"events_per_second": 5, "x": 1}}):
            with self.subTest(spec=spec):
                st, body = self.control("POST", "/_faults", spec)
                self.assertEqual(st, 400)
                self.assertIn("rate_limit", body["message"])
        self.assertIsNone(self.control("GET", "/_faults")[1]["rate_limit"])


class Waiting(MockTestCase):
    """GET /_wait answers when counters are reached, or at its timeout."""

    def test_wait_for_events(self):
        def later():
            time.sleep(0.3)
            self.post([event("w1"), event("w2")])
        th = threading.Thread(target=later)
        t = time.monotonic()
        th.start()
        st, s = self.control("GET", "/_wait?unique_events=2&timeout=5")
        th.join()
        self.assertEqual(st, 200)
        self.assertTrue(s["reached"])
        self.assertEqual(s["unique_events"], 2)
        self.assertGreaterEqual(time.monotonic() - t, 0.25)
        t = time.monotonic()
        st, s = self.control("GET", "/_wait?unique_events=3&requests=1"
                             "&timeout=0.3")
        self.assertFalse(s["reached"])
        self.assertGreaterEqual(time.monotonic() - t, 0.25)
        st, s = self.control("GET", "/_wait?requests=1&timeout=nan")
        self.assertEqual(st, 400)
        st, s = self.control("GET", "/_wait?bogus=1")
        self.assertEqual(st, 400)
        self.assertIn("bogus", s["message"])


class Connections(MockTestCase):
    """HTTP behaviour: keep-alive, pipelining, Expect, chunked, bad clients."""

    def test_keep_alive_reuses_one_connection(self):
        before = self.stats()["connections"]
        c = self.conn()
        c.connect()
        sock = c.sock
        name = sock.getsockname()
        for i in range(5):
            st, r, body = self.post([event("ka-%d" % i)], conn=c)
            self.assertEqual(st, 200)
            self.assertFalse(r.will_close)
        self.assertError(400, self.post([], conn=c))   # errors keep it too
        self.assertEqual(self.post([event("ka-last")], conn=c)[0], 200)
        self.assertIs(c.sock, sock)
        self.assertEqual(c.sock.getsockname(), name)
        c.close()
        # One connection for the 7 ingests, one for the stats calls each.
        self.assertEqual(self.stats()["connections"] - before, 2)
        self.assertEqual(self.stats()["unique_events"], 6)

    def raw_exchange(self, data, expect_responses):
        """Send raw bytes on a socket; read expect_responses responses."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(data)
        f = s.makefile("rb")
        out = []
        for _ in range(expect_responses):
            status = f.readline().split()[1]
            headers = {}
            while True:
                line = f.readline().strip()
                if not line:
                    break
                k, _, v = line.decode().partition(":")
                headers[k.lower()] = v.strip()
            body = f.read(int(headers.get("content-length", "0")))
            out.append((int(status), headers, body))
        f.close()
        s.close()
        return out

    def request_bytes(self, body, extra=""):
        return ("POST /v1/ingest HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Bearer %s\r\nContent-Length: %d\r\n%s\r\n"
                % (TOKEN, len(body), extra)).encode() + body

    def test_pipelined_requests_answered_in_order(self):
        reqs = (self.request_bytes(json.dumps([event("pl-1")]).encode()) +
                self.request_bytes(b"[]") +
                self.request_bytes(json.dumps([event("pl-2")]).encode()))
        got = self.raw_exchange(reqs, 3)
        self.assertEqual([g[0] for g in got], [200, 400, 200])

    def test_pipelined_behind_a_delayed_answer(self):
        self.faults(script=[{"delay": 0.3}, 503])
        reqs = (self.request_bytes(json.dumps([event("pd-1")]).encode()) +
                self.request_bytes(json.dumps([event("pd-2")]).encode()) +
                self.request_bytes(json.dumps([event("pd-3")]).encode()))
        t = time.monotonic()
        got = self.raw_exchange(reqs, 3)
        self.assertGreaterEqual(time.monotonic() - t, 0.25)
        self.assertEqual([g[0] for g in got], [200, 503, 200])
        ids = [e["transaction_id"] for e in self.control("GET", "/_events")[1]]
        self.assertEqual(ids, ["pd-1", "pd-3"])

    def test_expect_100_continue(self):
        body = json.dumps([event("ex-%d" % i) for i in range(20)]).encode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        head = self.request_bytes(body, "Expect: 100-continue\r\n")
        s.sendall(head[:len(head) - len(body)])
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        s.sendall(body)
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200 OK\r\n"))
        s.close()

    def test_chunked_body(self):
        body = json.dumps([event("ch-1"), event("ch-2")]).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50]),
                                             body[i:i + 50])
                          for i in range(0, len(body), 50)) + b"0\r\n\r\n"
        req = ("POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               "%s\r\nTransfer-Encoding: chunked\r\n\r\n" % TOKEN).encode()
        got = self.raw_exchange(req + chunks, 1)
        self.assertEqual(got[0][0], 200)
        self.assertEqual(self.stats()["unique_events"], 2)

    def test_clients_dropping_connections(self):
        for part in (b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\n",
                     self.request_bytes(b"[" * 2000)[:-500], b"\x00\xff"):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(part)
            s.close()
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(b"GARBAGE\r\n\r\n")
        self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 400"))
        s.close()
        self.assertEqual(self.post([event("still-alive")])[0], 200)

    def test_concurrent_connections(self):
        results = []

        def worker(w):
            c = self.conn()
            for i in range(20):
                results.append(self.post(
                    [event("cc-%d-%d-%d" % (w, i, k)) for k in range(10)],
                    conn=c)[0])
            c.close()
        threads = [threading.Thread(target=worker, args=(w,))
                   for w in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(results, [200] * 120)
        s = self.stats()
        self.assertEqual((s["requests"], s["unique_events"]), (120, 1200))

    def test_log_masks_token(self):
        self.post([event("log-1")])
        self.post([event("log-2")], token="wrong-token-value")
        self.post(b"not json")
        with open(self.logpath, encoding="utf-8") as f:
            text = f.read()
        self.assertNotIn(TOKEN, text)
        self.assertNotIn("wrong-token-value", text)
        lines = [json.loads(l) for l in text.splitlines()]
        last = lines[-3:]
        self.assertEqual([l["status"] for l in last], [200, 401, 400])
        self.assertEqual(last[0]["headers"]["authorization"], "Bearer ****")
        self.assertEqual(last[0]["body"], [event("log-1")])
        self.assertEqual(last[2]["body"], "not json")
        for l in last:
            self.assertEqual(l["method"], "POST")
            self.assertEqual(l["path"], "/v1/ingest")
            datetime.datetime.fromisoformat(l["time"].replace("Z", "+00:00"))
        st, reqs = self.control("GET", "/_requests")
        self.assertNotIn(TOKEN, json.dumps(reqs))
        self.assertEqual(reqs[0]["headers"]["authorization"], "Bearer ****")
        st, later = self.control("GET", "/_requests?since=%d" % reqs[1]["seq"])
        self.assertEqual(len(later), 1)


class FastPathAgreement(unittest.TestCase):
    """The mock's quick whole-batch check never accepts what the full one refuses."""

    def test_random_batches(self):
        import importlib.util
        import random
        spec = importlib.util.spec_from_file_location("mock_metronome", MOCK)
        mm = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mm)
        rnd = random.Random(int(os.environ.get("MOCK_TEST_SEED", "20240601")))
        now = datetime.datetime.now(datetime.timezone.utc)
        stamps = ["2021-07-10T05:37:11.000Z", "2021-07-10T05:37:11Z",
                  "2021-02-29T00:00:00Z", "2024-02-29T23:59:59.9Z",
                  "2021-04-31T00:00:00Z", "2021-04-30T00:00:00Z",
                  "2021-00-10T00:00:00Z", "2021-07-10T24:00:00Z",
                  "2021-07-10T05:60:00Z", "2021-07-10 05:37:11Z",
                  "2021-07-10T05:37:11+01:00", "0000-01-01T00:00:00Z",
                  "2021-07-10T05:37:11.Z", "2021-07-10T05:37:11.0000000000Z",
                  "\u0661021-07-10T05:37:11Z", iso(now),
                  iso(now + datetime.timedelta(hours=23, minutes=59)),
                  iso(now + datetime.timedelta(hours=24, seconds=1)),
                  iso(now + datetime.timedelta(days=400))]
        values = ["", "x", "y" * 128, "z" * 129, 0, 1.5, None, True, [], {}]
        m = mm.Mock(mm.parse_args([]))
        agree = fast_ok = 0
        for _ in range(3000):
            n = rnd.choice([0, 1, 2, 5, 100, 101])
            batch = []
            for i in range(n):
                ev = event("t%d" % i, timestamp=rnd.choice(stamps[:2]))
                if rnd.random() < 0.05:
                    ev["timestamp"] = rnd.choice(stamps)
                if rnd.random() < 0.02:
                    del ev[rnd.choice(list(ev))]
                if rnd.random() < 0.02:
                    ev[rnd.choice(list(mm.EVENT_KEYS) + ["other"])] = \
                        rnd.choice(values)
                if rnd.random() < 0.005:
                    ev = rnd.choice(values + ["str", 5])
                batch.append(ev)
            fast = mm.check_fast(batch, m.limit19(), m.good_dates)
            try:
                mm.validate_batch(batch, m.max_future)
                full = True
            except mm.BadRequest:
                full = False
            if fast is not None:
                fast_ok += 1
                self.assertTrue(full, batch)
                self.assertEqual(list(fast),
                                 [e["transaction_id"] for e in batch])
            agree += 1
        # The quick check does take the common case.
        self.assertGreater(fast_ok, 300)


class CommandLine(unittest.TestCase):
    """Faults from the command line, --port-file, /_reset, signals."""

    def test_command_line_faults_port_file_and_sigterm(self):
        tmp = tempfile.mkdtemp(prefix="mocktest")
        pf = os.path.join(tmp, "port")
        proc, port = start_mock(
            "--port-file", pf, "--script", '[503, {"status": 429, '
            '"retry_after": 1}]', "--reject-transaction-id", "nope")
        try:
            with open(pf) as f:
                self.assertEqual(int(f.read()), port)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            auth = {"Authorization": "Bearer test-token"}   # the default

            def post(batch):
                c.request("POST", "/v1/ingest", json.dumps(batch), auth)
                r = c.getresponse()
                return r.status, r.getheader("Retry-After"), r.read()
            self.assertEqual(post([event("a")])[0], 503)
            self.assertEqual(post([event("a")])[:2], (429, "1"))
            st, _, body = post([event("nope")])
            self.assertEqual(st, 400)
            self.assertIn("nope", json.loads(body)["message"])
            self.assertEqual(post([event("a")])[0], 200)
            # /_reset restores the command line's faults.
            c.request("POST", "/_reset")
            c.getresponse().read()
            self.assertEqual(post([event("a")])[0], 503)
            c.close()
        finally:
            t = time.monotonic()
            rc = stop_mock(proc)
            os.unlink(pf)
            os.rmdir(tmp)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t, 3)

    def test_sigint_and_bad_command_line(self):
        proc, port = start_mock()
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0)
        proc.stdout.close()
        proc.stderr.close()
        r = subprocess.run([sys.executable, MOCK, "--script", "[\"bogus\"]"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("bogus", r.stderr)

    def test_binds_loopback_only(self):
        proc, port = start_mock()
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.close()
            with open("/proc/net/tcp") as f:
                rows = [l.split() for l in f.readlines()[1:]]
            listen = [r[1] for r in rows
                      if r[3] == "0A" and int(r[1].split(":")[1], 16) == port]
            self.assertEqual(listen, ["0100007F:%04X" % port])
        finally:
            stop_mock(proc)


if __name__ == "__main__":
    unittest.main(verbosity=2)
