/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTP layer: request bodies, libcurl multi requests, the
 *	  classification of Metronome's answers, Retry-After parsing, backoff.
 *
 * Nothing here knows about PostgreSQL (see http.h): memory comes from
 * malloc and is freed on every path, failures are return values, and the
 * only global is libcurl's own initialisation.  ship.c drives it:
 *
 *	HttpClientConfigure (url, token, user agent, timeout)
 *	HttpClientSetCAFile (the authorities trusted for https; NULL: default)
 *	HttpSetConcurrency (run at most max_inflight at once, queue the rest)
 *	HttpStart (one request per batch; returns at once)
 *	HttpWait (wait at most timeout_ms for a request to finish)
 *	HttpNextDone (each finished request, classified)
 *	HttpResume / HttpDropQueued (after an answer other than 2xx: go on, or
 *		give the queued requests back unsent, `dropped` set)
 *	HttpCancelAll (error paths: abort every transfer in flight)
 *
 * The I/O thread.  The first HttpStart starts one POSIX thread per client
 * (io_main, every signal blocked in it, so PostgreSQL's handlers only ever
 * run in the backend's own thread); HttpClientDestroy stops and joins it.
 * The thread owns the multi handle: it writes each request's body from the
 * events the caller keeps (HttpBuildBody, json-c; the caller may pass a
 * body instead), hands requests to libcurl as max_running allows, runs
 * curl_multi_perform and curl_multi_poll, and moves finished requests to
 * the done list, signalling done_cv.  The backend's thread never waits on
 * the network: it starts requests, handles answers and runs its short
 * transactions while the thread sends (ship.c, "Claiming ahead").  What
 * both threads touch lives under mu, which neither holds across a libcurl
 * call that waits.  An answer other than 2xx sets `hold`: no queued
 * request starts until the caller has seen that answer and chosen
 * HttpResume or HttpDropQueued, so a closed gate or a bisection never
 * races the queue.  The thread calls nothing of PostgreSQL's (no palloc,
 * no elog, no latch): that is why this file must stay PostgreSQL-free.
 *
 * One client keeps one multi handle, so connections are reused across
 * requests and cycles, and a share handle keeps TLS sessions and DNS
 * answers for new connections.  TLS peers and host names are verified,
 * only http and https are spoken, redirects are not followed, and the
 * Authorization header is never logged (the client never turns on
 * CURLOPT_VERBOSE) nor quoted in an error text (HttpScrub): an answer's body
 * is scrubbed before its message is taken from it, and a piece of the token
 * left at the end of a message cut to fit is masked too (scrub_cut).
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "http.h"
#include "rfc3339.h"

/* Most bytes of an answer's body kept (for its {"message"}). */
#define HTTP_MAX_RESPONSE (64 * 1024)

/* Most idle easy handles kept for reuse. */
#define HTTP_POOL_SIZE 64

struct HttpClient
{
	CURLM	   *multi;			/* the I/O thread's alone once it runs */
	CURLSH	   *share;
	char	   *url;
	char	   *token;			/* kept only to scrub it from error texts */
	char	   *user_agent;
	char	   *ca_file;		/* CURLOPT_CAINFO; NULL: libcurl's default */
	long		timeout_ms;
	struct curl_slist *headers;

	/*
	 * Shared between the caller and the I/O thread: everything below, under
	 * mu (the thread drops it only around curl_multi_perform and
	 * curl_multi_poll, which touch none of it).
	 */
	pthread_mutex_t mu;
	pthread_cond_t done_cv;		/* a request finished, or a cancel is done */
	pthread_t	io;
	bool		io_started;
	bool		io_stop;		/* the caller asks the thread to end */
	bool		io_cancel;		/* the caller asks it to abort everything */
	bool		io_broken;		/* the multi interface failed (HttpWait -1) */
	bool		hold;			/* an answer other than 2xx came: start no
								 * queued request until HttpResume */
	int			max_running;	/* run at most this many at once (0: all) */
	int			nflight;		/* started and not yet finished */

	HttpRequest *sub_head;		/* started, not yet handed to libcurl */
	HttpRequest *sub_tail;

	HttpRequest **active;		/* requests libcurl runs (the thread's) */
	int			nactive;
	int			maxactive;

	HttpRequest *done_head;		/* finished, not yet taken by HttpNextDone */
	HttpRequest *done_tail;

	CURL	   *pool[HTTP_POOL_SIZE];	/* idle easy handles */
	int			npool;
};

/* per-request private data kept beside the public struct */
typedef struct HttpRequestPriv
{
	HttpRequest pub;
	char		curl_error[CURL_ERROR_SIZE];
	struct timespec started;
} HttpRequestPriv;

static bool curl_initialised = false;

static bool io_start(HttpClient *client);
static void *io_main(void *arg);
static void io_add_started(HttpClient *client);
static void io_cancel_all(HttpClient *client);
static void io_fail_all(HttpClient *client);

/* ----------------------------------------------------------------------
 * Pure helpers
 * ---------------------------------------------------------------------- */

/*
 * What an HTTP status means for the batch it answered
 * (metronome-ingest.md, "How our worker classifies a response").
 */
HttpClass
HttpClassifyStatus(long status)
{
	if (status >= 200 && status < 300)
		return HTTP_CLASS_OK;
	switch (status)
	{
		case 400:
		case 413:
		case 422:
			return HTTP_CLASS_BAD_BATCH;
		case 401:
		case 403:
			return HTTP_CLASS_AUTH;
		case 408:
		case 409:
		case 423:
		case 425:
		case 429:
			return HTTP_CLASS_TRANSIENT;
		case 501:
			return HTTP_CLASS_CONFIG;
		default:
			break;
	}
	if (status >= 500 && status < 600)
		return HTTP_CLASS_TRANSIENT;

	/*
	 * 404, 405 and every other answer (1xx, 3xx: we do not follow
	 * redirects, other 4xx) say that the URL is not an ingest endpoint, or
	 * that something between us and Metronome (a proxy) wants attention.
	 * Failing rows for it would be wrong; retrying blindly would be noise.
	 */
	return HTTP_CLASS_CONFIG;
}

/*
 * What a libcurl failure (no usable answer) means.  Most are transient
 * (network, timeouts, resets); a malformed URL or a TLS certificate that
 * does not verify will not fix itself and is a configuration problem.
 */
HttpClass
HttpClassifyCurlError(int curl_code)
{
	switch ((CURLcode) curl_code)
	{
		case CURLE_OK:
			return HTTP_CLASS_OK;
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_TOO_MANY_REDIRECTS:
			return HTTP_CLASS_CONFIG;
		default:
			return HTTP_CLASS_TRANSIENT;
	}
}

/*
 * RFC 3339 UTC with milliseconds: the one formatter, in rfc3339.h (shared
 * with fields.c).  Returns false outside the years 0000..9999.
 */
bool
HttpFormatTimestamp(int64_t timestamp_us, char *buf, size_t len)
{
	return len >= HTTP_TIMESTAMP_LEN && Rfc3339FormatMs(timestamp_us, buf);
}

/*
 * Request bodies are written straight into one malloc'd buffer: each string
 * escaped exactly as json-c's json_object_to_json_string_ext does with
 * JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE (", \\, \\b \\f
 * \\n \\r \\t by name, other bytes below 0x20 as \\u00xx in lower-case
 * hex, every other byte verbatim: the text is UTF-8 already), and the
 * properties, jsonb's text form and so valid JSON, copied verbatim
 * (re-parsing them would cost time and round big numbers through double).
 * Building a json-c object tree per event and printing it cost about an
 * eighth of the worker's CPU on a fast Metronome; the bytes are the same
 * (test/unit/http_test.c and the fuzzer compare them with json-c's).
 */
typedef struct BodyBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		oom;
} BodyBuf;

/* make room for `more` bytes (and a NUL); false when out of memory */
static bool
body_reserve(BodyBuf *b, size_t more)
{
	size_t		want;
	char	   *grown;

	if (b->oom)
		return false;
	if (b->len + more + 1 <= b->cap)
		return true;
	want = b->cap > 0 ? b->cap : 256;
	while (want < b->len + more + 1)
	{
		if (want > SIZE_MAX / 2)
		{
			b->oom = true;
			return false;
		}
		want *= 2;
	}
	grown = realloc(b->data, want);
	if (grown == NULL)
	{
		b->oom = true;
		return false;
	}
	b->data = grown;
	b->cap = want;
	return true;
}

static void
body_append(BodyBuf *b, const char *s, size_t n)
{
	if (!body_reserve(b, n))
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

/*
 * The bytes that json-c writes escaped (with JSON_C_TO_STRING_NOSLASHESCAPE):
 * the control characters, '"' and '\\'.  A table: one load per byte.
 */
static const bool body_escaped[256] = {
	[0x00] = true, [0x01] = true, [0x02] = true, [0x03] = true,
	[0x04] = true, [0x05] = true, [0x06] = true, [0x07] = true,
	[0x08] = true, [0x09] = true, [0x0a] = true, [0x0b] = true,
	[0x0c] = true, [0x0d] = true, [0x0e] = true, [0x0f] = true,
	[0x10] = true, [0x11] = true, [0x12] = true, [0x13] = true,
	[0x14] = true, [0x15] = true, [0x16] = true, [0x17] = true,
	[0x18] = true, [0x19] = true, [0x1a] = true, [0x1b] = true,
	[0x1c] = true, [0x1d] = true, [0x1e] = true, [0x1f] = true,
	['"'] = true, ['\\'] = true,
};

/*
 * Write value as a JSON string at d, escaped as json-c does (body_escaped);
 * the caller has reserved 2 + 6 * strlen(value) bytes.  Returns the end.
 */
static char *
body_put_string(char *d, const char *value)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *) (value ? value : "");
	unsigned char c;

	*d++ = '"';
	for (; (c = *p) != '\0'; p++)
	{
		if (!body_escaped[c])
		{
			*d++ = (char) c;
			continue;
		}
		*d++ = '\\';
		switch (c)
		{
			case '"':
				*d++ = '"';
				break;
			case '\\':
				*d++ = '\\';
				break;
			case '\b':
				*d++ = 'b';
				break;
			case '\f':
				*d++ = 'f';
				break;
			case '\n':
				*d++ = 'n';
				break;
			case '\r':
				*d++ = 'r';
				break;
			case '\t':
				*d++ = 't';
				break;
			default:
				*d++ = 'u';
				*d++ = '0';
				*d++ = '0';
				*d++ = hex[c >> 4];
				*d++ = hex[c & 0xf];
				break;
		}
	}
	*d++ = '"';
	return d;
}

/* copy a literal key (its quotes and colon included) */
#define BODY_PUT(d, lit) (memcpy((d), lit, sizeof(lit) - 1), (d) + sizeof(lit) - 1)

/*
 * The events of one body mostly share a day: the date part of the last
 * timestamp formatted is kept and only the time of day is written again.
 */
typedef struct BodyClock
{
	int64_t		day;			/* days since 1970-01-01 of `text` */
	char		text[RFC3339_MS_LEN];	/* the last timestamp formatted */
} BodyClock;

/* format timestamp_us into clock->text; false outside 0000..9999 */
static bool
body_format_timestamp(BodyClock *clock, int64_t timestamp_us)
{
	int64_t		ms = rfc3339_floor_div(timestamp_us, 1000);
	int64_t		secs = rfc3339_floor_div(ms, 1000);
	int64_t		day = rfc3339_floor_div(secs, 86400);
	int64_t		sod = secs - day * 86400;

	if (day != clock->day)
	{
		if (!Rfc3339FormatMs(timestamp_us, clock->text))
			return false;
		clock->day = day;
		return true;
	}
	rfc3339_put_digits(clock->text + 11, (int) (sod / 3600), 2);
	rfc3339_put_digits(clock->text + 14, (int) (sod / 60 % 60), 2);
	rfc3339_put_digits(clock->text + 17, (int) (sod % 60), 2);
	rfc3339_put_digits(clock->text + 20, (int) (ms - secs * 1000), 3);
	return true;
}

/*
 * The body of one ingest request: a JSON array of the events, each with
 * its keys in the contract's order (transaction_id, customer_id,
 * timestamp, event_type, properties).  Returns malloc'd text and its length
 * in *len, or NULL when out of memory or when a timestamp cannot be
 * expressed (the caller checks timestamps first with HttpFormatTimestamp).
 *
 * Each event reserves its worst case (every byte of its strings escaped
 * as \u00xx) once, and is then written with no further checks: this runs
 * for every event on the I/O thread, which shares the cores with the claim.
 */
char *
HttpBuildBody(const HttpEvent *events, int nevents, size_t *len)
{
	BodyBuf		b = {NULL, 0, 0, false};
	BodyClock	clock = {INT64_MIN, {0}};
	size_t		guess = 2;
	int			i;

	/* one allocation in the usual case: the texts plus the keys' overhead */
	for (i = 0; i < nevents; i++)
		guess += 128 + (events[i].properties == NULL ? 2 :
						events[i].properties_len > 0 ? events[i].properties_len :
						strlen(events[i].properties));
	if (!body_reserve(&b, guess))
		return NULL;

	body_append(&b, "[", 1);
	for (i = 0; i < nevents; i++)
	{
		const HttpEvent *ev = &events[i];
		const char *props = ev->properties ? ev->properties : "{}";
		size_t		props_len = ev->properties && ev->properties_len > 0 ?
			ev->properties_len : strlen(props);
		size_t		strings = (ev->transaction_id ? strlen(ev->transaction_id) : 0) +
			(ev->customer_id ? strlen(ev->customer_id) : 0) +
			(ev->event_type ? strlen(ev->event_type) : 0);
		char	   *d;

		if (!body_format_timestamp(&clock, ev->timestamp_us))
		{
			free(b.data);
			return NULL;
		}
		/* the keys, quotes, timestamp and punctuation (108 bytes), and room */
		if (strings > (SIZE_MAX - 256 - props_len) / 6 ||
			!body_reserve(&b, 256 + 6 * strings + props_len))
			break;
		d = b.data + b.len;
		if (i > 0)
			*d++ = ',';
		d = BODY_PUT(d, "{\"transaction_id\":");
		d = body_put_string(d, ev->transaction_id);
		d = BODY_PUT(d, ",\"customer_id\":");
		d = body_put_string(d, ev->customer_id);
		d = BODY_PUT(d, ",\"timestamp\":\"");
		memcpy(d, clock.text, RFC3339_MS_LEN - 1);
		d += RFC3339_MS_LEN - 1;
		d = BODY_PUT(d, "\",\"event_type\":");
		d = body_put_string(d, ev->event_type);
		d = BODY_PUT(d, ",\"properties\":");
		memcpy(d, props, props_len);
		d += props_len;
		*d++ = '}';
		b.len = (size_t) (d - b.data);
	}
	body_append(&b, "]", 1);
	if (b.oom || i < nevents)
	{
		free(b.data);
		return NULL;
	}
	b.data[b.len] = '\0';
	*len = b.len;
	return b.data;
}

/* skip ASCII white space */
static const char *
skip_space(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/*
 * Milliseconds to wait from a Retry-After header: delay-seconds ("2",
 * leniently "2.5") or an HTTP-date (compared with now).  -1 when the value
 * is neither; a date in the past gives 0.
 */
int64_t
HttpParseRetryAfter(const char *value, time_t now)
{
	const char *p;
	char	   *end;
	double		secs;
	time_t		when;
	char		copy[128];
	size_t		n;

	if (value == NULL)
		return -1;
	p = skip_space(value);
	if (isdigit((unsigned char) *p))
	{
		errno = 0;
		secs = strtod(p, &end);
		if (errno == 0 && *skip_space(end) == '\0' && isfinite(secs) &&
			secs >= 0)
		{
			if (secs > 1e9)
				secs = 1e9;
			return (int64_t) ceil(secs * 1000.0);
		}
		/* may still be a date that starts with a digit; fall through */
	}

	/* curl_getdate wants a NUL-terminated string without trailing blanks */
	n = strlen(p);
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' ||
					 p[n - 1] == '\r' || p[n - 1] == '\n'))
		n--;
	if (n == 0 || n >= sizeof(copy))
		return -1;
	memcpy(copy, p, n);
	copy[n] = '\0';
	when = curl_getdate(copy, NULL);
	if (when == (time_t) -1)
		return -1;
	if (when <= now)
		return 0;
	if ((int64_t) (when - now) > 1000000000)
		return (int64_t) 1000000000 * 1000;
	return (int64_t) (when - now) * 1000;
}

/*
 * Milliseconds from a retry-after-ms header (a non-negative number), or -1.
 */
int64_t
HttpParseRetryAfterMs(const char *value)
{
	char	   *end;
	double		ms;

	if (value == NULL)
		return -1;
	value = skip_space(value);
	if (!isdigit((unsigned char) *value))
		return -1;
	errno = 0;
	ms = strtod(value, &end);
	if (errno != 0 || *skip_space(end) != '\0' || !isfinite(ms) || ms < 0)
		return -1;
	if (ms > 1e12)
		ms = 1e12;
	return (int64_t) ceil(ms);
}

/*
 * Length of the UTF-8 character at s (avail bytes there): 2 to 4 for a
 * valid one, 0 for bytes that are not UTF-8 (overlong forms, surrogates
 * and code points past U+10FFFF included), -1 for the start of a valid
 * character that avail cuts short.
 */
static int
utf8_char_len(const unsigned char *s, size_t avail)
{
	unsigned int c = s[0];
	unsigned int cp;
	int			n,
				k;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	for (k = 1; k < n; k++)
	{
		if ((size_t) k >= avail)
			return -1;
		if ((s[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[k] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
		cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

/*
 * Copy src (len bytes) into buf as one printable line of valid UTF-8:
 * control characters (C1 too) become spaces, bytes that are not UTF-8
 * (a proxy's Latin-1 error page) become '?', and a character cut short by
 * len or by the buffer is left out.  The text is stored in the outbox,
 * where invalid text would make a dump that does not restore.
 */
static void
copy_printable(char *buf, size_t buflen, const char *src, size_t len)
{
	const unsigned char *s = (const unsigned char *) src;
	size_t		i = 0;
	size_t		o = 0;

	if (buflen == 0)
		return;
	while (i < len && o < buflen - 1)
	{
		unsigned char c = s[i];
		int			n;

		if (c < 0x80)
		{
			buf[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char) c;
			i++;
			continue;
		}
		n = utf8_char_len(s + i, len - i);
		if (n < 0)
			break;
		if (n == 0)
		{
			buf[o++] = '?';
			i++;
			continue;
		}
		if (o + n > buflen - 1)
			break;
		if (c == 0xC2 && s[i + 1] < 0xA0)
			buf[o++] = ' ';		/* U+0080..U+009F */
		else
		{
			memcpy(buf + o, s + i, n);
			o += n;
		}
		i += n;
	}
	buf[o] = '\0';
}

/*
 * Does an error body look like Metronome's: a JSON object with a string
 * "message"?  A proxy or firewall in front of the ingest URL answers with
 * something else (HTML, plain text, another JSON shape), and its 400 then
 * says nothing about the events of the batch.
 */
bool
HttpIsMetronomeError(const char *body, size_t len)
{
	json_tokener *tok;
	json_object *obj = NULL;
	json_object *msg = NULL;
	bool		shaped = false;

	if (body == NULL || len == 0 || len > (size_t) INT32_MAX)
		return false;
	tok = json_tokener_new();
	if (tok == NULL)
		return false;
	obj = json_tokener_parse_ex(tok, body, (int) len);
	if (json_tokener_get_error(tok) != json_tokener_success)
		obj = NULL;
	if (obj != NULL && json_object_is_type(obj, json_type_object) &&
		json_object_object_get_ex(obj, "message", &msg) &&
		json_object_is_type(msg, json_type_string))
		shaped = true;
	if (obj != NULL)
		json_object_put(obj);
	json_tokener_free(tok);
	return shaped;
}

/*
 * The error text of a non-2xx answer: "HTTP <status>: <message>", the
 * message being Metronome's {"message": ...}, else the start of the body,
 * else nothing.
 */
void
HttpErrorMessage(long status, const char *body, size_t len,
				 char *buf, size_t buflen)
{
	char		prefix[32];
	size_t		plen;

	if (buflen == 0)
		return;
	snprintf(prefix, sizeof(prefix), "HTTP %ld", status);
	snprintf(buf, buflen, "%s", prefix);
	plen = strlen(buf);

	if (body != NULL && len > 0 && plen + 3 < buflen)
	{
		json_tokener *tok = json_tokener_new();
		json_object *obj = NULL;
		json_object *msg = NULL;

		if (tok != NULL && len <= (size_t) INT32_MAX)
		{
			obj = json_tokener_parse_ex(tok, body, (int) len);
			if (json_tokener_get_error(tok) != json_tokener_success)
				obj = NULL;		/* not freed: json_tokener_parse_ex gives NULL */
		}
		memcpy(buf + plen, ": ", 3);
		if (obj != NULL && json_object_is_type(obj, json_type_object) &&
			json_object_object_get_ex(obj, "message", &msg) &&
			json_object_is_type(msg, json_type_string))
			copy_printable(buf + plen + 2, buflen - plen - 2,
						   json_object_get_string(msg),
						   (size_t) json_object_get_string_len(msg));
		else
			copy_printable(buf + plen + 2, buflen - plen - 2, body,
						   len > 200 ? 200 : len);
		if (obj != NULL)
			json_object_put(obj);
		if (tok != NULL)
			json_tokener_free(tok);
	}
}

/*
 * Delay before the next try after `failures` consecutive transient
 * failures: base * 2^(failures - 1), capped at cap, times a jitter factor
 * in (0.75, 1] (random01 in [0, 1)), as Metronome's SDKs do.  At least 1.
 */
int64_t
HttpBackoffDelay(int failures, int64_t base_ms, int64_t cap_ms,
				 double random01)
{
	int64_t		d = base_ms > 0 ? base_ms : 1;
	int			i;

	if (cap_ms < 1)
		cap_ms = 1;
	for (i = 1; i < failures && d < cap_ms; i++)
		d *= 2;
	if (d > cap_ms)
		d = cap_ms;
	if (!(random01 >= 0.0 && random01 < 1.0))
		random01 = 0.0;
	d = (int64_t) ((double) d * (1.0 - 0.25 * random01));
	return d > 0 ? d : 1;
}

/*
 * Overwrite every occurrence of secret in text with asterisks.  Secrets
 * shorter than 4 bytes are left alone (they would mask ordinary words).
 */
void
HttpScrub(char *text, const char *secret)
{
	size_t		slen;
	char	   *hit;

	if (text == NULL || secret == NULL)
		return;
	slen = strlen(secret);
	if (slen < 4)
		return;
	/* search on after each hit: a secret of asterisks matches its own mask */
	while ((hit = strstr(text, secret)) != NULL)
	{
		memset(hit, '*', slen);
		text = hit + 1;
	}
}

/*
 * HttpScrub over len bytes that may hold NULs (an answer's body).
 */
static void
scrub_bytes(char *data, size_t len, const char *secret)
{
	size_t		slen;
	size_t		i;

	if (data == NULL || secret == NULL)
		return;
	slen = strlen(secret);
	if (slen < 4 || len < slen)
		return;
	for (i = 0; i + slen <= len; i++)
	{
		if (data[i] == secret[0] && memcmp(data + i, secret, slen) == 0)
		{
			memset(data + i, '*', slen);
			i += slen - 1;
		}
	}
}

/*
 * text was cut to fit a buffer of size bytes: when it fills the buffer and
 * ends with the start of secret (the token straddled the cut), mask that
 * piece, which HttpScrub cannot recognise.
 */
static void
scrub_cut(char *text, size_t size, const char *secret)
{
	size_t		len;
	size_t		slen;
	size_t		k;

	if (text == NULL || secret == NULL || size == 0)
		return;
	len = strlen(text);
	slen = strlen(secret);
	if (slen < 4 || len + 1 < size)
		return;
	for (k = slen - 1 < len ? slen - 1 : len; k > 0; k--)
	{
		if (memcmp(text + len - k, secret, k) == 0)
		{
			memset(text + len - k, '*', k);
			return;
		}
	}
}

/* ----------------------------------------------------------------------
 * The client
 * ---------------------------------------------------------------------- */

/* free a malloc'd secret after overwriting it */
static void
free_secret(char *s)
{
	if (s != NULL)
	{
		volatile char *p = s;

		while (*p)
			*p++ = '\0';
		free(s);
	}
}

/* free a header list after overwriting its strings (one holds the token) */
static void
free_headers(struct curl_slist *list)
{
	struct curl_slist *l;

	for (l = list; l != NULL; l = l->next)
	{
		volatile char *p = l->data;

		while (p && *p)
			*p++ = '\0';
	}
	curl_slist_free_all(list);
}

/*
 * A new client, or NULL when libcurl cannot be initialised or memory runs
 * out.  Its I/O thread starts with the first request.
 */
HttpClient *
HttpClientCreate(void)
{
	HttpClient *client;

	if (!curl_initialised)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		curl_initialised = true;
	}
	client = calloc(1, sizeof(HttpClient));
	if (client == NULL)
		return NULL;
	pthread_mutex_init(&client->mu, NULL);
	pthread_cond_init(&client->done_cv, NULL);
	client->multi = curl_multi_init();
	client->share = curl_share_init();
	if (client->multi == NULL || client->share == NULL)
	{
		HttpClientDestroy(client);
		return NULL;
	}
	curl_share_setopt(client->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(client->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_multi_setopt(client->multi, CURLMOPT_MAXCONNECTS, 64L);
	return client;
}

/*
 * Abort whatever is in flight, end the I/O thread and free the client.
 */
void
HttpClientDestroy(HttpClient *client)
{
	int			i;

	if (client == NULL)
		return;
	HttpCancelAll(client);
	if (client->io_started)
	{
		pthread_mutex_lock(&client->mu);
		client->io_stop = true;
		pthread_mutex_unlock(&client->mu);
		curl_multi_wakeup(client->multi);
		pthread_join(client->io, NULL);
		client->io_started = false;
	}
	for (i = 0; i < client->npool; i++)
		curl_easy_cleanup(client->pool[i]);
	if (client->multi)
		curl_multi_cleanup(client->multi);
	if (client->share)
		curl_share_cleanup(client->share);
	free(client->active);
	free(client->url);
	free_secret(client->token);
	free(client->user_agent);
	free(client->ca_file);
	free_headers(client->headers);
	pthread_cond_destroy(&client->done_cv);
	pthread_mutex_destroy(&client->mu);
	free(client);
}

/* equal strings, NULL-safe */
static bool
same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/*
 * Set what every following request uses.  Cheap when nothing changed.
 * Must not be called while requests are in flight.  False when out of
 * memory (the previous configuration is then gone too).
 */
bool
HttpClientConfigure(HttpClient *client, const char *url, const char *token,
					const char *user_agent, long timeout_ms)
{
	char	   *auth;
	size_t		alen;
	struct curl_slist *h = NULL;
	struct curl_slist *t;

	client->timeout_ms = timeout_ms;
	if (client->headers != NULL && same(client->url, url) &&
		same(client->token, token) && same(client->user_agent, user_agent))
		return true;

	free(client->url);
	free_secret(client->token);
	free(client->user_agent);
	free_headers(client->headers);
	client->headers = NULL;
	client->url = strdup(url ? url : "");
	client->token = strdup(token ? token : "");
	client->user_agent = strdup(user_agent ? user_agent : "");
	if (!client->url || !client->token || !client->user_agent)
		goto oom;

	alen = strlen(client->token) + sizeof("Authorization: Bearer ");
	auth = malloc(alen);
	if (auth == NULL)
		goto oom;
	snprintf(auth, alen, "Authorization: Bearer %s", client->token);
	t = curl_slist_append(h, auth);
	free_secret(auth);
	if (t == NULL)
		goto oom;
	h = t;
	if ((t = curl_slist_append(h, "Content-Type: application/json")) == NULL)
		goto oom;
	h = t;
	if ((t = curl_slist_append(h, "Accept: application/json")) == NULL)
		goto oom;
	h = t;
	/* no "Expect: 100-continue" round trip before the body */
	if ((t = curl_slist_append(h, "Expect:")) == NULL)
		goto oom;
	h = t;
	client->headers = h;
	return true;

oom:
	free_headers(h);
	free(client->url);
	free_secret(client->token);
	free(client->user_agent);
	client->url = client->token = client->user_agent = NULL;
	return false;
}

/*
 * The PEM file of the certificate authorities trusted for https (NULL or
 * "": libcurl's default, the system's).  Cheap when unchanged.  Must not be
 * called while requests are in flight.  False when out of memory.
 */
bool
HttpClientSetCAFile(HttpClient *client, const char *path)
{
	char	   *copy = NULL;
	int			i;

	if (path != NULL && path[0] == '\0')
		path = NULL;
	if (same(client->ca_file, path))
		return true;
	if (path != NULL && (copy = strdup(path)) == NULL)
		return false;
	free(client->ca_file);
	client->ca_file = copy;

	/*
	 * Pooled handles keep the CAINFO they were given, and setting it back
	 * to NULL would not restore the default: start from fresh handles.
	 * libcurl does not reuse a connection or TLS session made under
	 * another CA configuration.
	 */
	pthread_mutex_lock(&client->mu);
	for (i = 0; i < client->npool; i++)
		curl_easy_cleanup(client->pool[i]);
	client->npool = 0;
	pthread_mutex_unlock(&client->mu);
	return true;
}

/*
 * A new, empty request (NULL when out of memory).
 */
HttpRequest *
HttpRequestNew(void)
{
	HttpRequestPriv *priv = calloc(1, sizeof(HttpRequestPriv));

	if (priv == NULL)
		return NULL;
	priv->pub.retry_after_ms = -1;
	return &priv->pub;
}

/*
 * Free a request that is not in flight, with its body and answer.
 */
void
HttpRequestFree(HttpRequest *req)
{
	if (req == NULL)
		return;
	free(req->body);
	free(req->response);
	free(req);
}

/* libcurl write callback: keep the start of the answer's body */
static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpRequest *req = userp;
	size_t		n = size * nmemb;
	size_t		keep = n;
	char	   *grown;

	if (req->response_len + keep > HTTP_MAX_RESPONSE)
		keep = HTTP_MAX_RESPONSE - req->response_len;
	if (keep > 0)
	{
		grown = realloc(req->response, req->response_len + keep + 1);
		if (grown == NULL)
			return n;			/* keep what we have; the status still counts */
		req->response = grown;
		memcpy(req->response + req->response_len, data, keep);
		req->response_len += keep;
		req->response[req->response_len] = '\0';
	}
	return n;
}

/* seconds between two monotonic instants */
static double
seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - start->tv_sec) +
		(double) (now.tv_nsec - start->tv_nsec) / 1e9;
}

/* append a finished request to the done list (mu held) */
static void
done_append(HttpClient *client, HttpRequest *req)
{
	req->done = true;
	req->next_done = NULL;
	if (client->done_tail)
		client->done_tail->next_done = req;
	else
		client->done_head = req;
	client->done_tail = req;
	client->nflight--;
}

/* fail a request that libcurl never ran or could not finish (mu held) */
static void
fail_request(HttpClient *client, HttpRequest *req, const char *why)
{
	snprintf(req->error, sizeof(req->error), "%s", why);
	req->klass = HTTP_CLASS_TRANSIENT;
	req->status = 0;
	done_append(client, req);
}

/*
 * Start POSTing req->body: the request is handed to the I/O thread, which
 * runs it.  False (with req->error set) when it could not be started; the
 * request is then not in flight.
 */
bool
HttpStart(HttpClient *client, HttpRequest *req)
{
	HttpRequestPriv *priv = (HttpRequestPriv *) req;
	CURL	   *easy = NULL;

	req->done = false;
	req->status = 0;
	req->retry_after_ms = -1;
	req->error[0] = '\0';
	free(req->response);
	req->response = NULL;
	req->response_len = 0;
	priv->curl_error[0] = '\0';
	req->client = client;

	if (client->headers == NULL)
	{
		snprintf(req->error, sizeof(req->error), "HTTP client is not configured");
		req->klass = HTTP_CLASS_CONFIG;
		return false;
	}
	if (!client->io_started && !io_start(client))
	{
		snprintf(req->error, sizeof(req->error), "could not start the HTTP client's thread");
		req->klass = HTTP_CLASS_TRANSIENT;
		return false;
	}

	pthread_mutex_lock(&client->mu);
	if (client->npool > 0)
		easy = client->pool[--client->npool];
	pthread_mutex_unlock(&client->mu);
	if (easy == NULL && (easy = curl_easy_init()) == NULL)
		goto oom;

	/* an easy handle that is in no multi handle is ours to set up */
	curl_easy_setopt(easy, CURLOPT_URL, client->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (client->ca_file != NULL)
		curl_easy_setopt(easy, CURLOPT_CAINFO, client->ca_file);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, client->headers);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, client->user_agent);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, client->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
					 client->timeout_ms < 5000 ? client->timeout_ms : 5000L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_SHARE, client->share);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, priv->curl_error);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	req->easy = easy;
	clock_gettime(CLOCK_MONOTONIC, &priv->started);

	pthread_mutex_lock(&client->mu);
	/* a hold is for requests queued behind an answer not yet seen */
	if (client->nflight == 0 && client->done_head == NULL)
		client->hold = false;
	req->dropped = false;
	req->next_done = NULL;
	if (client->sub_tail)
		client->sub_tail->next_done = req;
	else
		client->sub_head = req;
	client->sub_tail = req;
	client->nflight++;
	pthread_mutex_unlock(&client->mu);
	curl_multi_wakeup(client->multi);
	return true;

oom:
	snprintf(req->error, sizeof(req->error), "could not start an HTTP request: out of memory");
	req->klass = HTTP_CLASS_TRANSIENT;
	return false;
}

/* detach a finished or cancelled request from the multi handle (mu held) */
static void
detach(HttpClient *client, HttpRequest *req, bool reuse)
{
	int			i;
	CURL	   *easy = req->easy;

	for (i = 0; i < client->nactive; i++)
	{
		if (client->active[i] == req)
		{
			client->active[i] = client->active[--client->nactive];
			/* no stale pointer: a request leaked must show as lost */
			client->active[client->nactive] = NULL;
			curl_multi_remove_handle(client->multi, easy);
			break;
		}
	}
	if (easy == NULL)
		return;
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, NULL);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
	if (reuse && client->npool < HTTP_POOL_SIZE)
		client->pool[client->npool++] = easy;
	else
		curl_easy_cleanup(easy);
	req->easy = NULL;
}

/* record the outcome of a transfer that libcurl reports done (mu held) */
static void
finish(HttpClient *client, HttpRequest *req, CURLcode result)
{
	HttpRequestPriv *priv = (HttpRequestPriv *) req;
	CURL	   *easy = req->easy;
	long		status = 0;
	struct curl_header *h;

	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	req->elapsed = seconds_since(&priv->started);

	if (result != CURLE_OK)
	{
		/* no (complete) answer: whatever the status line said, retry */
		req->status = 0;
		req->klass = HttpClassifyCurlError(result);
		snprintf(req->error, sizeof(req->error), "%s",
				 priv->curl_error[0] ? priv->curl_error : curl_easy_strerror(result));
	}
	else
	{
		req->status = status;
		req->klass = HttpClassifyStatus(status);
		if (req->klass != HTTP_CLASS_OK)
		{
			/* a token echoed in the body must not survive the cut to 200 */
			scrub_bytes(req->response, req->response_len, client->token);
			HttpErrorMessage(status, req->response, req->response_len,
							 req->error, sizeof(req->error));
			req->metronome_shaped = HttpIsMetronomeError(req->response,
														 req->response_len);
		}

		/* retry-after-ms is the more precise one when both are there */
		if (curl_easy_header(easy, "retry-after-ms", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
			req->retry_after_ms = HttpParseRetryAfterMs(h->value);
		if (req->retry_after_ms < 0 &&
			curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
			req->retry_after_ms = HttpParseRetryAfter(h->value, time(NULL));
	}
	HttpScrub(req->error, client->token);
	scrub_cut(req->error, sizeof(req->error), client->token);

	detach(client, req, true);
	if (req->klass != HTTP_CLASS_OK)
		client->hold = true;
	done_append(client, req);
}

/* collect every transfer libcurl has finished (mu held) */
static void
collect(HttpClient *client)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(client->multi, &left)) != NULL)
	{
		HttpRequest *req = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		if (req != NULL)
			finish(client, req, msg->data.result);
	}
}

/* hand the requests started since the last turn to libcurl (mu held) */
static void
io_add_started(HttpClient *client)
{
	while (client->sub_head != NULL && !client->hold &&
		   (client->max_running <= 0 || client->nactive < client->max_running))
	{
		HttpRequest *req = client->sub_head;

		client->sub_head = req->next_done;
		if (client->sub_head == NULL)
			client->sub_tail = NULL;
		req->next_done = NULL;
		if (req->body == NULL && req->events != NULL)
		{
			/* the body is written here, beside the caller's own work */
			pthread_mutex_unlock(&client->mu);
			req->body = HttpBuildBody(req->events, req->nevents, &req->body_len);
			pthread_mutex_lock(&client->mu);
			if (req->body == NULL)
			{
				detach(client, req, true);
				fail_request(client, req, "could not write a request body: out of memory");
				continue;
			}
			if (client->hold)
			{
				/* an answer came meanwhile: back to the head of the queue */
				req->next_done = client->sub_head;
				client->sub_head = req;
				if (client->sub_tail == NULL)
					client->sub_tail = req;
				break;
			}
		}
		curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE,
						 (curl_off_t) (req->body ? req->body_len : 0));
		if (client->nactive == client->maxactive)
		{
			int			n = client->maxactive ? client->maxactive * 2 : 16;
			HttpRequest **grown = realloc(client->active, n * sizeof(HttpRequest *));

			if (grown == NULL)
			{
				detach(client, req, true);
				fail_request(client, req, "could not start an HTTP request: out of memory");
				continue;
			}
			client->active = grown;
			client->maxactive = n;
		}
		if (curl_multi_add_handle(client->multi, req->easy) != CURLM_OK)
		{
			detach(client, req, false);
			fail_request(client, req, "could not start an HTTP request: out of memory");
			continue;
		}
		client->active[client->nactive++] = req;
	}
}

/*
 * Abort every request, started or running, and forget finished ones not
 * yet taken (mu held, or no thread).  The requests stay allocated (their
 * owner frees them); their connections are closed.
 */
static void
io_cancel_all(HttpClient *client)
{
	while (client->sub_head != NULL)
	{
		HttpRequest *req = client->sub_head;

		client->sub_head = req->next_done;
		req->next_done = NULL;
		detach(client, req, false);
		req->done = false;
	}
	client->sub_tail = NULL;
	while (client->nactive > 0)
	{
		HttpRequest *req = client->active[client->nactive - 1];

		/* a connection cut mid-request cannot be reused: do not pool */
		detach(client, req, false);
		req->done = false;
	}
	client->done_head = client->done_tail = NULL;
	client->nflight = 0;
	client->hold = false;
}

/* the multi interface failed: every request fails as transient (mu held) */
static void
io_fail_all(HttpClient *client)
{
	while (client->sub_head != NULL)
	{
		HttpRequest *req = client->sub_head;

		client->sub_head = req->next_done;
		detach(client, req, false);
		fail_request(client, req, "libcurl multi interface failed");
	}
	client->sub_tail = NULL;
	while (client->nactive > 0)
	{
		HttpRequest *req = client->active[0];

		detach(client, req, false);
		fail_request(client, req, "libcurl multi interface failed");
	}
	client->io_broken = true;
}

/*
 * The I/O thread: runs every transfer of the client.  It is plain C (no
 * PostgreSQL call, no palloc, no elog), every signal is blocked in it (the
 * process's handlers run in the caller's thread only), and it owns the
 * multi handle.  The caller hands it requests (HttpStart: the started
 * list, then curl_multi_wakeup), and waits on done_cv for them to finish.
 */
static void *
io_main(void *arg)
{
	HttpClient *client = arg;

	pthread_mutex_lock(&client->mu);
	while (!client->io_stop)
	{
		int			running = 0;
		CURLMcode	rc;

		if (client->io_cancel)
		{
			io_cancel_all(client);
			client->io_cancel = false;
			pthread_cond_broadcast(&client->done_cv);
			continue;
		}
		io_add_started(client);
		pthread_mutex_unlock(&client->mu);
		rc = curl_multi_perform(client->multi, &running);
		pthread_mutex_lock(&client->mu);
		if (rc != CURLM_OK)
			io_fail_all(client);
		else
			collect(client);
		if (client->done_head != NULL || client->nflight == 0)
			pthread_cond_broadcast(&client->done_cv);
		if (client->io_stop || client->io_cancel ||
			(client->sub_head != NULL && !client->hold &&
			 (client->max_running <= 0 || client->nactive < client->max_running)))
			continue;
		pthread_mutex_unlock(&client->mu);
		/* network activity, a timeout of libcurl's, or curl_multi_wakeup */
		rc = curl_multi_poll(client->multi, NULL, 0, 1000, NULL);
		pthread_mutex_lock(&client->mu);
		if (rc != CURLM_OK)
		{
			io_fail_all(client);
			pthread_cond_broadcast(&client->done_cv);
		}
	}
	pthread_mutex_unlock(&client->mu);
	return NULL;
}

/* start the I/O thread with every signal blocked in it */
static bool
io_start(HttpClient *client)
{
	sigset_t	all;
	sigset_t	saved;
	int			rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	rc = pthread_create(&client->io, NULL, io_main, client);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (rc != 0)
		return false;
	client->io_started = true;
	return true;
}

/*
 * Wait at most timeout_ms for a request to finish: returns at once when
 * one has (see HttpNextDone) or none is in flight.  Returns how many
 * requests are still in flight, -1 on a libcurl failure (then every
 * request in flight was failed as transient).
 */
int
HttpWait(HttpClient *client, int timeout_ms)
{
	int			n;

	pthread_mutex_lock(&client->mu);
	if (client->done_head == NULL && client->nflight > 0 && !client->io_broken)
	{
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L)
		{
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		(void) pthread_cond_timedwait(&client->done_cv, &client->mu, &until);
	}
	n = client->io_broken ? -1 : client->nflight;
	client->io_broken = false;
	pthread_mutex_unlock(&client->mu);
	return n;
}

/*
 * The next finished request, or NULL.
 */
HttpRequest *
HttpNextDone(HttpClient *client)
{
	HttpRequest *req;

	pthread_mutex_lock(&client->mu);
	req = client->done_head;
	if (req != NULL)
	{
		client->done_head = req->next_done;
		if (client->done_head == NULL)
			client->done_tail = NULL;
		req->next_done = NULL;
	}
	pthread_mutex_unlock(&client->mu);
	return req;
}

/*
 * How many requests are in flight (started, not yet finished).
 */
int
HttpInFlight(HttpClient *client)
{
	int			n;

	if (client == NULL)
		return 0;
	pthread_mutex_lock(&client->mu);
	n = client->nflight;
	pthread_mutex_unlock(&client->mu);
	return n;
}

/*
 * Abort every request in flight and forget finished ones not yet taken,
 * and return once the I/O thread has let go of them all.  The requests
 * themselves stay allocated (their owner frees them); their connections
 * are closed.
 */
void
HttpCancelAll(HttpClient *client)
{
	if (client == NULL)
		return;
	if (!client->io_started)
	{
		io_cancel_all(client);
		return;
	}
	pthread_mutex_lock(&client->mu);
	client->io_cancel = true;
	pthread_mutex_unlock(&client->mu);
	curl_multi_wakeup(client->multi);
	pthread_mutex_lock(&client->mu);
	while (client->io_cancel)
		pthread_cond_wait(&client->done_cv, &client->mu);
	pthread_mutex_unlock(&client->mu);
}

/*
 * Run at most n requests at once (0: every one started); the others wait,
 * in the order they were started, in the I/O thread's queue.
 */
void
HttpSetConcurrency(HttpClient *client, int n)
{
	pthread_mutex_lock(&client->mu);
	client->max_running = n;
	pthread_mutex_unlock(&client->mu);
	if (client->io_started)
		curl_multi_wakeup(client->multi);
}

/*
 * After an answer other than 2xx no queued request starts until the
 * caller has seen it and decided: HttpResume lets them go on.
 */
void
HttpResume(HttpClient *client)
{
	bool		was;

	pthread_mutex_lock(&client->mu);
	was = client->hold;
	client->hold = false;
	pthread_mutex_unlock(&client->mu);
	if (was && client->io_started)
		curl_multi_wakeup(client->multi);
}

/*
 * ... or HttpDropQueued gives the queued ones back unsent: each comes out
 * of HttpNextDone with dropped set (and no answer).  Requests already
 * running go on.
 */
void
HttpDropQueued(HttpClient *client)
{
	pthread_mutex_lock(&client->mu);
	while (client->sub_head != NULL)
	{
		HttpRequest *req = client->sub_head;

		client->sub_head = req->next_done;
		req->next_done = NULL;
		detach(client, req, true);
		req->dropped = true;
		fail_request(client, req, "not sent");
	}
	client->sub_tail = NULL;
	client->hold = false;
	pthread_mutex_unlock(&client->mu);
}
