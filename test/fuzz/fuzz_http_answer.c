/*-------------------------------------------------------------------------
 *
 * fuzz_http_answer.c
 *	  libFuzzer target "http_answer": a whole HTTP answer, as bytes on the
 *	  wire, read by libcurl and classified by src/http.c (status, the
 *	  {"message": ...} error text, Retry-After and retry-after-ms, the
 *	  token scrubbed from the error).  Standalone: http.c holds no backend
 *	  state.
 *
 * http.c is included whole, so that the harness can give the client's
 * pool an easy handle that opens a fresh connection per request.  The
 * harness plays Metronome on a loopback port (nothing else is contacted):
 * it accepts libcurl's connection, writes the input as the answer and
 * shuts its side for writing, while one real HttpStart / HttpWait /
 * HttpNextDone cycle runs.  The request it receives is not read.
 *
 * Oracles: the request finishes; a request with an answer is classified
 * as HttpClassifyStatus says; the error text is one printable, terminated
 * line of valid UTF-8 that never holds the API token; Retry-After delays
 * are -1 or within their caps.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include "../../src/http.c"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_TOKEN "tok-fuzz-Secret-0123456789"

static HttpClient *client;
static int	listener = -1;		/* 127.0.0.1:<any port> */

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

/* an easy handle for the client's pool: one connection per request */
static CURL *
prepared_easy(void)
{
	CURL	   *easy = curl_easy_init();

	if (easy == NULL)
		abort();
	curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
	return easy;
}

/* the loopback listener that plays Metronome; returns its port */
static int
listen_loopback(void)
{
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (listener < 0 ||
		bind(listener, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(listener, 16) != 0 ||
		getsockname(listener, (struct sockaddr *) &addr, &alen) != 0)
		abort();
	return ntohs(addr.sin_port);
}

/* write all of data into fd (a socket buffer holds the inputs we allow) */
static bool
write_all(int fd, const uint8_t *data, size_t size)
{
	while (size > 0)
	{
		ssize_t		n = write(fd, data, size);

		if (n <= 0)
			return false;
		data += n;
		size -= (size_t) n;
	}
	return true;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	HttpRequest *req;
	HttpRequest *done = NULL;
	int			server = -1;
	int			i;
	size_t		len;
	struct timespec start;

	if (size > 200 * 1024)
		return 0;
	if (client == NULL)
	{
		char		url[64];

		snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/ingest", listen_loopback());
		client = HttpClientCreate();
		if (client == NULL ||
			!HttpClientConfigure(client, url, FUZZ_TOKEN, "pg_metronome-fuzz", 5000))
			abort();
	}
	while (client->npool > 0)
		curl_easy_cleanup(client->pool[--client->npool]);
	client->pool[client->npool++] = prepared_easy();

	req = HttpRequestNew();
	if (req == NULL)
		abort();
	req->body = strdup("[{\"transaction_id\": \"t1\", \"customer_id\": \"c\","
					   " \"timestamp\": \"2024-05-01T12:00:00.000Z\","
					   " \"event_type\": \"e\", \"properties\": {}}]");
	req->body_len = strlen(req->body);
	if (!HttpStart(client, req))
		finding("HttpStart", req->error);

	/*
	 * Accept libcurl's connection, answer with the input and shut our side
	 * for writing: then the request must finish, by its 5 s timeout at the
	 * latest (the bound here leaves room for a starved process).
	 */
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (done == NULL && seconds_since(&start) < 25.0)
	{
		(void) HttpWait(client, 10);
		done = HttpNextDone(client);
		if (server < 0 && done == NULL)
		{
			server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
			if (server >= 0)
			{
				if (!write_all(server, data, size))
					finding("write", "the answer could not be written");
				shutdown(server, SHUT_WR);
			}
		}
	}
	if (done == NULL)
		finding("HttpWait", "the request did not finish on a complete answer");
	if (done != req || !req->done)
		finding("HttpNextDone", "another request came back");
	if (server < 0)
		finding("accept", "libcurl never connected");
	close(server);

	if (getenv("METRONOME_FUZZ_DEBUG"))
		fprintf(stderr, "status %ld class %d retry_after_ms %lld error \"%s\"\n",
				req->status, (int) req->klass, (long long) req->retry_after_ms,
				req->error);
	len = strnlen(req->error, sizeof(req->error));
	if (len == sizeof(req->error))
		finding("error text", "not terminated");
	for (i = 0; i < (int) len; i++)
		if ((unsigned char) req->error[i] < 0x20 || req->error[i] == 0x7f)
			finding("error text", "a control character");
	if (strstr(req->error, FUZZ_TOKEN) != NULL)
		finding("error text", "holds the API token");
	if (!valid_utf8(req->error))
		finding("error text", "not valid UTF-8");
	if (req->status != 0)
	{
		if (req->klass != HttpClassifyStatus(req->status))
			finding("class", "differs from HttpClassifyStatus");
		if (req->klass != HTTP_CLASS_OK &&
			strncmp(req->error, "HTTP ", 5) != 0)
			finding("error text", "does not start with HTTP <status>");
	}
	else if (req->klass == HTTP_CLASS_OK)
		finding("class", "OK without an answer");
	if (req->retry_after_ms < -1 ||
		req->retry_after_ms > (int64_t) 1000000000 * 1000)
		finding("retry_after_ms", "out of range");

	HttpRequestFree(req);
	return 0;
}
