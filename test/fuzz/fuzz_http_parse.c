/*-------------------------------------------------------------------------
 *
 * fuzz_http_parse.c
 *	  libFuzzer target "http_parse": the pure helpers of src/http.c that
 *	  read what Metronome (or anything pretending to be it) answers, and
 *	  the ones that build what we send.  Standalone: http.c holds no
 *	  backend state.
 *
 * The input is cut into fields at newlines (a missing field is empty):
 *
 *	  line 1	a Retry-After value (delay-seconds or an HTTP-date)
 *	  line 2	a retry-after-ms value
 *	  line 3	a secret to scrub (the API token)
 *	  rest		an answer's body (the {"message": ...} error body)
 *
 * and its first bytes also give an HTTP status, a buffer size, a
 * timestamp and backoff parameters.  Oracles: the parsed delays are -1 or
 * within their caps; an error text fits its buffer, is one printable line
 * that starts with "HTTP <status>" and does not contain the secret;
 * scrubbing terminates and leaves no copy of a secret; timestamps format
 * as RFC 3339 with milliseconds, or are refused; backoff delays stay in
 * [1, cap]; a request body is valid JSON that json-c reads back.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "http.h"
#include "reference_body.h"

/* the fixed "now" of Retry-After dates: 2024-05-01 12:00:00 UTC */
#define FIXED_NOW ((time_t) 1714564800)

/* report a finding: libFuzzer keeps the input */
static void
finding(const char *what, const char *detail)
{
	fprintf(stderr, "\n==metronome-fuzz== FINDING: %s: %s\n", what,
			detail ? detail : "");
	abort();
}

/*
 * Is s valid UTF-8 (shortest forms, no surrogates, at most U+10FFFF)?  An
 * error text ends up in a table (metronome_outbox.last_error), where
 * invalid text would make a dump that does not restore.
 */
static bool
valid_utf8(const char *str)
{
	const unsigned char *s = (const unsigned char *) str;

	while (*s)
	{
		unsigned int c = *s;
		int			n,
					k;
		unsigned int cp;

		if (c < 0x80)
		{
			s++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 1, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 2, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 3, cp = c & 0x07;
		else
			return false;
		for (k = 1; k <= n; k++)
		{
			if ((s[k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
			cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		s += n + 1;
	}
	return true;
}

/* next field of the input (up to a newline), as a malloc'd C string */
static char *
next_field(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *s = *p;
	const uint8_t *nl = s < end ? memchr(s, '\n', end - s) : NULL;
	const uint8_t *e = nl ? nl : end;
	char	   *out = malloc((e - s) + 1);

	if (out == NULL)
		abort();
	memcpy(out, s, e - s);
	out[e - s] = '\0';
	*p = nl ? nl + 1 : end;
	return out;
}

/* little-endian integer from the input's first bytes (zero-padded) */
static uint64_t
header_bits(const uint8_t *data, size_t size, size_t off, size_t n)
{
	uint64_t	v = 0;
	size_t		i;

	for (i = 0; i < n; i++)
		if (off + i < size)
			v |= (uint64_t) data[off + i] << (8 * i);
	return v;
}

/* the checks of one error text */
static void
check_error_text(const char *buf, size_t buflen, long status,
				 const char *secret)
{
	char		prefix[32];
	size_t		len = strnlen(buf, buflen);
	size_t		i;

	if (len == buflen)
		finding("HttpErrorMessage", "the text is not terminated inside its buffer");
	snprintf(prefix, sizeof(prefix), "HTTP %ld", status);
	if (strncmp(buf, prefix, len < strlen(prefix) ? len : strlen(prefix)) != 0)
		finding("HttpErrorMessage", "the text does not start with HTTP <status>");
	for (i = 0; i < len; i++)
		if ((unsigned char) buf[i] < 0x20 || buf[i] == 0x7f)
			finding("HttpErrorMessage", "a control character in the text");
	if (!valid_utf8(buf))
		finding("HttpErrorMessage", "the text is not valid UTF-8");
	(void) secret;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	const uint8_t *end = data + size;
	char	   *retry_after = next_field(&p, end);
	char	   *retry_after_ms = next_field(&p, end);
	char	   *secret = next_field(&p, end);
	size_t		body_len = end - p;
	char	   *body = malloc(body_len ? body_len : 1);
	long		status = 100 + (long) (header_bits(data, size, 0, 2) % 500);
	size_t		buflen = (size_t) header_bits(data, size, 2, 1) * 3;
	char	   *buf;
	int64_t		ms;
	HttpClass	klass;

	if (body == NULL)
		abort();
	memcpy(body, p, body_len);

	/* Retry-After and retry-after-ms */
	ms = HttpParseRetryAfter(retry_after, FIXED_NOW);
	if (ms < -1 || ms > (int64_t) 1000000000 * 1000)
		finding("HttpParseRetryAfter", retry_after);
	ms = HttpParseRetryAfterMs(retry_after_ms);
	if (ms < -1 || ms > (int64_t) 1000000000000)
		finding("HttpParseRetryAfterMs", retry_after_ms);

	/* status classes */
	klass = HttpClassifyStatus(status);
	if (klass != HTTP_CLASS_OK && klass != HTTP_CLASS_BAD_BATCH &&
		klass != HTTP_CLASS_AUTH && klass != HTTP_CLASS_CONFIG &&
		klass != HTTP_CLASS_TRANSIENT)
		finding("HttpClassifyStatus", "not a class");
	if ((klass == HTTP_CLASS_OK) != (status >= 200 && status < 300))
		finding("HttpClassifyStatus", "2xx and OK disagree");
	(void) HttpClassifyCurlError((int) header_bits(data, size, 3, 1));

	/* the error text, in the real buffer and in a short one */
	{
		HttpRequest req;

		HttpErrorMessage(status, body, body_len, req.error, sizeof(req.error));
		check_error_text(req.error, sizeof(req.error), status, secret);
		HttpScrub(req.error, secret);
		if (strlen(secret) >= 4 && strchr(secret, '*') == NULL &&
			strstr(req.error, secret) != NULL)
			finding("HttpScrub", "the secret is still in the error text");
	}
	buf = malloc(buflen ? buflen : 1);
	if (buf == NULL)
		abort();
	HttpErrorMessage(status, body, body_len, buf, buflen);
	if (buflen > 0)
		check_error_text(buf, buflen, status, secret);
	free(buf);

	/* scrubbing the body itself (a NUL-terminated copy) */
	{
		char	   *text = malloc(body_len + 1);

		if (text == NULL)
			abort();
		memcpy(text, body, body_len);
		text[body_len] = '\0';
		HttpScrub(text, secret);
		if (strlen(secret) >= 4 && strchr(secret, '*') == NULL &&
			strstr(text, secret) != NULL)
			finding("HttpScrub", "the secret is still in the text");
		free(text);
	}

	/* timestamps */
	{
		int64_t		us = (int64_t) header_bits(data, size, 4, 8);
		char		ts[HTTP_TIMESTAMP_LEN];

		if (HttpFormatTimestamp(us, ts, sizeof(ts)))
		{
			int			y, mo, d, h, mi, s, msec;
			char		z;

			if (strlen(ts) != 24 ||
				sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h,
					   &mi, &s, &msec, &z) != 8 || z != 'Z' ||
				mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
				s > 59 || msec > 999)
				finding("HttpFormatTimestamp", ts);
		}
	}

	/* backoff */
	{
		int			failures = (int) header_bits(data, size, 12, 4);
		int64_t		base = (int64_t) header_bits(data, size, 16, 4);
		int64_t		cap = (int64_t) header_bits(data, size, 20, 4);
		double		r = (double) header_bits(data, size, 24, 2) / 65536.0;
		int64_t		d = HttpBackoffDelay(failures, base, cap, r);

		if (d < 1 || d > (cap > 1 ? cap : 1))
			finding("HttpBackoffDelay", "out of [1, cap]");
	}

	/* a request body carrying these strings: json-c's bytes, read back by json-c */
	{
		HttpEvent	ev[2];
		size_t		len = 0;
		char	   *req_body;

		memset(ev, 0, sizeof(ev));
		ev[0].transaction_id = retry_after;
		ev[0].customer_id = retry_after_ms;
		ev[0].event_type = secret;
		ev[0].timestamp_us = (int64_t) header_bits(data, size, 4, 8) % ((int64_t) 1 << 50);
		ev[0].properties = NULL;
		ev[1] = ev[0];
		ev[1].timestamp_us = 0;
		ev[1].properties = "{\"n\": 1}";
		req_body = HttpBuildBody(ev, 2, &len);
		if (req_body != NULL)
		{
			json_object *back = json_tokener_parse(req_body);

			char	   *ref = reference_body(ev, 2);

			if (strlen(req_body) != len)
				finding("HttpBuildBody", "length differs from the text");
			if (ref == NULL || strcmp(ref, req_body) != 0)
				finding("HttpBuildBody", "not the bytes json-c prints");
			free(ref);
			if (back == NULL || !json_object_is_type(back, json_type_array) ||
				json_object_array_length(back) != 2)
				finding("HttpBuildBody", req_body);
			json_object_put(back);
			free(req_body);
		}
	}

	free(retry_after);
	free(retry_after_ms);
	free(secret);
	free(body);
	return 0;
}
