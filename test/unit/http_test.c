/*-------------------------------------------------------------------------
 *
 * http_test.c
 *	  Unit tests of src/http.c, outside the server (http.c holds no backend
 *	  state).  Prints TAP; test/t/109_http_unit.pl builds and runs it.
 *
 * Covers the pure helpers with exact expectations (classification of
 * answers and libcurl errors, timestamps, request bodies, Retry-After and
 * retry-after-ms, error texts, backoff, scrubbing) and the client on
 * loopback without any server: a closed port, a port that accepts but
 * never answers (timeout), a refused protocol, cancelling.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http.h"
#include "reference_body.h"

static int	ntest = 0;
static int	nfail = 0;

/* one TAP assertion */
static void
check(int cond, const char *what)
{
	ntest++;
	if (!cond)
		nfail++;
	printf("%s %d - %s\n", cond ? "ok" : "not ok", ntest, what);
}

/* string equality, with the values shown on failure */
static void
check_str(const char *got, const char *want, const char *what)
{
	int			ok = (got != NULL && strcmp(got, want) == 0);

	check(ok, what);
	if (!ok)
		printf("#   got:  %s\n#   want: %s\n", got ? got : "(null)", want);
}

/* integer equality, with the values shown on failure */
static void
check_int(long long got, long long want, const char *what)
{
	check(got == want, what);
	if (got != want)
		printf("#   got:  %lld\n#   want: %lld\n", got, want);
}

/* format a timestamp, "" when refused */
static const char *
ts(int64_t us)
{
	static char buf[HTTP_TIMESTAMP_LEN];

	if (!HttpFormatTimestamp(us, buf, sizeof(buf)))
		return "";
	return buf;
}

static void
test_classify(void)
{
	long		ok[] = {200, 201, 202, 204, 299};
	long		bad[] = {400, 413, 422};
	long		auth[] = {401, 403};
	long		config[] = {404, 405, 501, 301, 302, 307, 402, 410, 418, 100};
	long		transient[] = {408, 409, 423, 425, 429, 500, 502, 503, 504, 599};
	size_t		i;
	int			all;

	for (all = 1, i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		all &= HttpClassifyStatus(ok[i]) == HTTP_CLASS_OK;
	check(all, "2xx: accepted");
	for (all = 1, i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		all &= HttpClassifyStatus(bad[i]) == HTTP_CLASS_BAD_BATCH;
	check(all, "400, 413, 422: a bad event in the batch");
	for (all = 1, i = 0; i < sizeof(auth) / sizeof(auth[0]); i++)
		all &= HttpClassifyStatus(auth[i]) == HTTP_CLASS_AUTH;
	check(all, "401, 403: auth");
	for (all = 1, i = 0; i < sizeof(config) / sizeof(config[0]); i++)
		all &= HttpClassifyStatus(config[i]) == HTTP_CLASS_CONFIG;
	check(all, "404, 405, 501, redirects, other 4xx: configuration");
	for (all = 1, i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
		all &= HttpClassifyStatus(transient[i]) == HTTP_CLASS_TRANSIENT;
	check(all, "408, 409, 423, 425, 429, 5xx but 501: transient");

	check(HttpClassifyCurlError(CURLE_OPERATION_TIMEDOUT) == HTTP_CLASS_TRANSIENT &&
		  HttpClassifyCurlError(CURLE_COULDNT_CONNECT) == HTTP_CLASS_TRANSIENT &&
		  HttpClassifyCurlError(CURLE_GOT_NOTHING) == HTTP_CLASS_TRANSIENT &&
		  HttpClassifyCurlError(CURLE_RECV_ERROR) == HTTP_CLASS_TRANSIENT &&
		  HttpClassifyCurlError(CURLE_COULDNT_RESOLVE_HOST) == HTTP_CLASS_TRANSIENT,
		  "timeouts, refused or dropped connections, DNS: transient");
	check(HttpClassifyCurlError(CURLE_URL_MALFORMAT) == HTTP_CLASS_CONFIG &&
		  HttpClassifyCurlError(CURLE_UNSUPPORTED_PROTOCOL) == HTTP_CLASS_CONFIG &&
		  HttpClassifyCurlError(CURLE_PEER_FAILED_VERIFICATION) == HTTP_CLASS_CONFIG,
		  "bad URL, refused protocol, TLS verification: configuration");
}

static void
test_timestamps(void)
{
	char		small[10];

	check_str(ts(0), "1970-01-01T00:00:00.000Z", "the epoch");
	check_str(ts(INT64_C(1625895431000000)), "2021-07-10T05:37:11.000Z",
			  "the contract's example");
	check_str(ts(INT64_C(1625895431123999)), "2021-07-10T05:37:11.123Z",
			  "microseconds truncated to milliseconds");
	check_str(ts(-1), "1969-12-31T23:59:59.999Z", "one microsecond before the epoch");
	check_str(ts(-1500), "1969-12-31T23:59:59.998Z", "negative times floor");
	check_str(ts(INT64_C(951782400000000)), "2000-02-29T00:00:00.000Z", "a leap day");
	check_str(ts(INT64_C(4107542400000000)), "2100-03-01T00:00:00.000Z",
			  "2100 is not a leap year");
	check_str(ts(INT64_C(253402300799999999)), "9999-12-31T23:59:59.999Z",
			  "the last expressible instant");
	check_str(ts(INT64_C(253402300800000000)), "", "year 10000 refused");
	check_str(ts(INT64_C(-62167219200000000)), "0000-01-01T00:00:00.000Z", "year 0");
	check_str(ts(INT64_C(-62167219200000001)), "", "before year 0 refused");
	check_str(ts(INT64_MAX), "", "INT64_MAX refused");
	check_str(ts(INT64_MIN), "", "INT64_MIN refused");
	check(!HttpFormatTimestamp(0, small, sizeof(small)), "a short buffer is refused");
}

static void
test_body(void)
{
	HttpEvent	ev[3];
	char	   *body;
	size_t		len = 0;

	memset(ev, 0, sizeof(ev));
	ev[0].transaction_id = "tx-1";
	ev[0].customer_id = "cust";
	ev[0].event_type = "api_call";
	ev[0].timestamp_us = INT64_C(1625895431000000);
	ev[0].properties = "{\"n\": 12345678901234567890.123456789, \"a\": [1, null]}";
	ev[1].transaction_id = "q\"b\\s/ctl\x01\n";
	ev[1].customer_id = "cliente-\xc3\xa9";
	ev[1].event_type = "e";
	ev[1].timestamp_us = 0;
	ev[1].properties = NULL;
	ev[2] = ev[0];
	ev[2].properties = "{}";

	body = HttpBuildBody(ev, 2, &len);
	check_str(body,
			  "[{\"transaction_id\":\"tx-1\",\"customer_id\":\"cust\","
			  "\"timestamp\":\"2021-07-10T05:37:11.000Z\",\"event_type\":\"api_call\","
			  "\"properties\":{\"n\": 12345678901234567890.123456789, \"a\": [1, null]}},"
			  "{\"transaction_id\":\"q\\\"b\\\\s/ctl\\u0001\\n\",\"customer_id\":\"cliente-\xc3\xa9\","
			  "\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"event_type\":\"e\","
			  "\"properties\":{}}]",
			  "body: key order, escapes, UTF-8 and properties kept verbatim");
	check(body != NULL && len == strlen(body), "length returned");
	free(body);

	body = HttpBuildBody(ev, 0, &len);
	check_str(body, "[]", "no event: []");
	free(body);

	ev[2].timestamp_us = INT64_MAX;
	body = HttpBuildBody(&ev[2], 1, &len);
	check(body == NULL, "an inexpressible timestamp: no body");
	free(body);
}

/* a random NUL-terminated string of 0..maxlen bytes 1..255, ASCII-heavy */
static char *
random_text(unsigned int *seed, int maxlen)
{
	int			n = (int) (rand_r(seed) % (unsigned) (maxlen + 1));
	char	   *s = malloc((size_t) n + 1);
	int			i;

	for (i = 0; i < n; i++)
	{
		unsigned int r = (unsigned) rand_r(seed);

		s[i] = (char) (r % 4 == 0 ? 1 + (r >> 8) % 255 : 32 + (r >> 8) % 95);
	}
	s[n] = '\0';
	return s;
}

/*
 * HttpBuildBody writes the bytes json-c would: every byte value in every
 * string field, batches of 0..100 events, many seeds.
 */
static void
test_body_matches_json_c(void)
{
	unsigned int seed = 20261202;
	int			round;
	int			mismatches = 0;
	int			bytes_checked = 0;
	HttpEvent	all[1];
	char		every[256];
	char	   *mine;
	char	   *ref;
	size_t		len = 0;
	int			i;

	/* first, one event whose fields hold every byte 1..255 */
	for (i = 1; i < 256; i++)
		every[i - 1] = (char) i;
	every[255] = '\0';
	memset(all, 0, sizeof(all));
	all[0].transaction_id = every;
	all[0].customer_id = every + 100;
	all[0].event_type = every + 200;
	all[0].timestamp_us = INT64_C(1700000000123456);
	all[0].properties = "{\"a\": \"\\u0001/\"}";
	mine = HttpBuildBody(all, 1, &len);
	ref = reference_body(all, 1);
	check_str(mine, ref, "body of every byte 1..255: the bytes json-c prints");
	free(mine);
	free(ref);

	for (round = 0; round < 300; round++)
	{
		int			n = (int) (rand_r(&seed) % 101);
		HttpEvent  *ev = calloc((size_t) (n > 0 ? n : 1), sizeof(HttpEvent));

		for (i = 0; i < n; i++)
		{
			ev[i].transaction_id = random_text(&seed, 140);
			ev[i].customer_id = random_text(&seed, 40);
			ev[i].event_type = random_text(&seed, 20);
			ev[i].timestamp_us = (int64_t) (rand_r(&seed) % 2000000000) * INT64_C(1000000) +
				rand_r(&seed) % 1000000;
			ev[i].properties = rand_r(&seed) % 5 == 0 ? NULL : "{\"n\": 1.50, \"s\": \"x\"}";
			/* the length given (as the worker does) or left to strlen */
			if (ev[i].properties != NULL && rand_r(&seed) % 2 == 0)
				ev[i].properties_len = strlen(ev[i].properties);
		}
		mine = HttpBuildBody(ev, n, &len);
		ref = reference_body(ev, n);
		if (mine == NULL || strcmp(mine, ref) != 0 || len != strlen(ref))
			mismatches++;
		else
			bytes_checked += (int) len;
		free(mine);
		free(ref);
		for (i = 0; i < n; i++)
		{
			free((char *) ev[i].transaction_id);
			free((char *) ev[i].customer_id);
			free((char *) ev[i].event_type);
		}
		free(ev);
	}
	check_int(mismatches, 0, "300 random batches: HttpBuildBody writes json-c's bytes");
	check(bytes_checked > 100000, "the random batches were not trivial");

	/*
	 * Timestamps close together, as in a real batch: the body keeps the
	 * date of the previous event and rewrites the time of day only.  Steps
	 * of up to 20 minutes across midnights, before 1970 too, and back in
	 * time.
	 */
	mismatches = 0;
	for (round = 0; round < 200; round++)
	{
		int			n = 1 + (int) (rand_r(&seed) % 100);
		HttpEvent  *ev = calloc((size_t) n, sizeof(HttpEvent));
		int64_t		t = ((int64_t) (rand_r(&seed) % 40000) - 10000) * INT64_C(86400000000) -
			(int64_t) (rand_r(&seed) % 3600) * INT64_C(1000000);

		for (i = 0; i < n; i++)
		{
			t += ((int64_t) (rand_r(&seed) % 1200000) - (round % 4 == 0 ? 600000 : 0)) * 1000 +
				rand_r(&seed) % 1000;
			ev[i].transaction_id = "t";
			ev[i].customer_id = "c";
			ev[i].event_type = "e";
			ev[i].timestamp_us = t;
		}
		mine = HttpBuildBody(ev, n, &len);
		ref = reference_body(ev, n);
		if (mine == NULL || strcmp(mine, ref) != 0 || len != strlen(ref))
			mismatches++;
		free(mine);
		free(ref);
		free(ev);
	}
	check_int(mismatches, 0, "200 batches of nearby timestamps across midnights: json-c's bytes");
}

static void
test_retry_after(void)
{
	/* Wed, 21 Oct 2015 07:28:00 GMT */
	time_t		t = (time_t) 1445412480;

	check_int(HttpParseRetryAfter("2", t), 2000, "Retry-After: 2");
	check_int(HttpParseRetryAfter("  2 ", t), 2000, "blanks around it");
	check_int(HttpParseRetryAfter("0", t), 0, "Retry-After: 0");
	check_int(HttpParseRetryAfter("1.5", t), 1500, "fractional seconds tolerated");
	check_int(HttpParseRetryAfter("Wed, 21 Oct 2015 07:28:03 GMT", t), 3000,
			  "an HTTP-date 3 s ahead");
	check_int(HttpParseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", t), 0,
			  "an HTTP-date in the past: now");
	check_int(HttpParseRetryAfter("-1", t), -1, "negative refused");
	check_int(HttpParseRetryAfter("soon", t), -1, "garbage refused");
	check_int(HttpParseRetryAfter("", t), -1, "empty refused");
	check_int(HttpParseRetryAfter(NULL, t), -1, "none");
	check(HttpParseRetryAfter("99999999999999999999", t) == INT64_C(1000000000000),
		  "huge values capped");

	check_int(HttpParseRetryAfterMs("1500"), 1500, "retry-after-ms: 1500");
	check_int(HttpParseRetryAfterMs("1.2"), 2, "fractions round up");
	check_int(HttpParseRetryAfterMs("-5"), -1, "negative refused");
	check_int(HttpParseRetryAfterMs("1e3"), 1000, "exponent notation");
	check_int(HttpParseRetryAfterMs("x"), -1, "garbage refused");
}

static void
test_error_message(void)
{
	char		buf[HTTP_ERROR_LEN];
	char		tiny[12];
	const char *json = "{\"message\": \"events[3].timestamp is not valid\"}";
	const char *html = "<html>\r\n<body>Bad Gateway</body>\r\n</html>";

	HttpErrorMessage(400, json, strlen(json), buf, sizeof(buf));
	check_str(buf, "HTTP 400: events[3].timestamp is not valid", "the {\"message\"}");
	HttpErrorMessage(502, html, strlen(html), buf, sizeof(buf));
	check_str(buf, "HTTP 502: <html>  <body>Bad Gateway</body>  </html>",
			  "a non-JSON body, on one line");
	HttpErrorMessage(503, "", 0, buf, sizeof(buf));
	check_str(buf, "HTTP 503", "no body");
	HttpErrorMessage(400, "{\"error\": 1}", 12, buf, sizeof(buf));
	check_str(buf, "HTTP 400: {\"error\": 1}", "JSON without a message: the body");
	HttpErrorMessage(400, json, strlen(json), tiny, sizeof(tiny));
	check_str(tiny, "HTTP 400: e", "truncated to the buffer");
}

static void
test_backoff(void)
{
	check_int(HttpBackoffDelay(1, 500, 300000, 0.0), 500, "first failure: the base");
	check_int(HttpBackoffDelay(3, 500, 300000, 0.0), 2000, "doubles per failure");
	check_int(HttpBackoffDelay(1000, 500, 300000, 0.0), 300000, "capped");
	check_int(HttpBackoffDelay(3, 500, 300000, 0.5), 1750, "jitter takes up to a quarter off");
	check(HttpBackoffDelay(1000, 500, 300000, 0.999999) >= 225000,
		  "jitter never below 3/4 of the delay");
	check_int(HttpBackoffDelay(0, 500, 300000, 0.0), 500, "no failure yet: the base");
	check_int(HttpBackoffDelay(5, 500, 100, 0.0), 100, "a cap below the base wins");
}

static void
test_scrub(void)
{
	char		a[] = "token tok-123456 and tok-123456 again";
	char		b[] = "ab abc";
	char		c[] = "********";

	HttpScrub(a, "tok-123456");
	check_str(a, "token ********** and ********** again", "every copy masked");
	HttpScrub(b, "ab");
	check_str(b, "ab abc", "secrets under 4 bytes left alone");
	HttpScrub(c, "****");
	check_str(c, "********", "a secret of asterisks terminates");
}

/* run one request to completion (at most ~5 s) */
static HttpRequest *
run(HttpClient *client, const char *url, long timeout_ms)
{
	HttpRequest *req = HttpRequestNew();
	int			i;

	HttpClientConfigure(client, url, "tok-unit-abcdef", "pg_metronome/test", timeout_ms);
	req->body = strdup("[]");
	req->body_len = 2;
	if (!HttpStart(client, req))
		return req;
	for (i = 0; i < 100 && HttpNextDone(client) == NULL; i++)
		HttpWait(client, 50);
	return req;
}

static void
test_client(void)
{
	HttpClient *client = HttpClientCreate();
	HttpRequest *req;
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);
	int			s;
	char		url[64];

	check(client != NULL, "client created");

	/* a closed port */
	req = run(client, "http://127.0.0.1:9/v1/ingest", 2000);
	check(req->done && req->status == 0 && req->klass == HTTP_CLASS_TRANSIENT,
		  "closed port: transient, no status");
	check(strstr(req->error, "127.0.0.1") != NULL, "the error names the address");
	HttpRequestFree(req);

	/* a refused protocol */
	req = run(client, "ftp://127.0.0.1/v1/ingest", 2000);
	check(req->done && req->klass == HTTP_CLASS_CONFIG,
		  "ftp:// refused (http and https only): configuration");
	HttpRequestFree(req);

	/* a port that accepts the connection and never answers: timeout */
	s = socket(AF_INET, SOCK_STREAM, 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s >= 0 && bind(s, (struct sockaddr *) &addr, sizeof(addr)) == 0 &&
		listen(s, 4) == 0 && getsockname(s, (struct sockaddr *) &addr, &alen) == 0)
	{
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/ingest", ntohs(addr.sin_port));
		req = run(client, url, 300);
		check(req->done && req->status == 0 && req->klass == HTTP_CLASS_TRANSIENT &&
			  req->elapsed >= 0.25 && req->elapsed < 3.0,
			  "no answer: times out after request_timeout, transient");
		HttpRequestFree(req);

		/* cancel a request in flight */
		req = HttpRequestNew();
		req->body = strdup("[]");
		req->body_len = 2;
		HttpClientConfigure(client, url, "tok-unit-abcdef", "pg_metronome/test", 10000);
		check(HttpStart(client, req) && HttpInFlight(client) == 1, "a request in flight");
		HttpWait(client, 20);
		HttpCancelAll(client);
		check(HttpInFlight(client) == 0 && HttpNextDone(client) == NULL,
			  "HttpCancelAll leaves nothing in flight");
		HttpRequestFree(req);
	}
	else
		check(0, "a loopback listener");
	if (s >= 0)
		close(s);
	HttpClientDestroy(client);
}

int
main(void)
{
	test_classify();
	test_timestamps();
	test_body();
	test_body_matches_json_c();
	test_retry_after();
	test_error_message();
	test_backoff();
	test_scrub();
	test_client();
	printf("1..%d\n", ntest);
	return nfail == 0 ? 0 : 1;
}
