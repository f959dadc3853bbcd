/*-------------------------------------------------------------------------
 *
 * sink.c
 *	  A fast stand-in for Metronome's ingest API, and a load generator to
 *	  measure it, for the benchmarks of test/bench/ only.
 *
 * The Python mock (test/mock_metronome.py) validates every event and
 * serves about 1,500 requests/s; a drain of 100,000 events/s needs 1,000
 * requests/s of 100 events, and a benchmark must show its sink is not the
 * bottleneck.  This program is one process, one thread, epoll over
 * non-blocking sockets with HTTP/1.1 keep-alive, and does only what the
 * benchmarks need:
 *
 *	bench_sink serve [--token T] [--record-prefix P] [--sample FILE]
 *		Listens on a free 127.0.0.1 port and prints "PORT n" on stdout.
 *		POST .../ingest: 200 with an empty body, as Metronome answers an
 *		accepted batch (401 when --token is given and the Authorization
 *		header is not "Bearer T").  It does not parse the JSON: it counts
 *		the events by their first key ({"transaction_id":"...), which is how
 *		the extension writes them, and keeps a 64-bit fingerprint of each
 *		transaction_id to count unique events and duplicates (a false
 *		duplicate needs a 64-bit hash collision).  The first ingest body is
 *		written to --sample FILE, for the load generator.  The arrival time
 *		(CLOCK_REALTIME, the clock of PostgreSQL's clock_timestamp()) of the
 *		first copy of every transaction_id that starts with --record-prefix
 *		is kept for GET /_arrivals.
 *		GET /_stats     {"requests", "events", "unique_events", "duplicates",
 *		                 "bytes", "first_at", "last_unique_at", "cpu_s",
 *		                 "connections", "max_open_connections"}: times in
 *		                 epoch seconds, cpu_s the sink's own CPU time
 *		GET /_wait?unique_events=N&timeout=S
 *		                answers /_stats once N unique events have arrived
 *		                (or after S seconds, default 60), so that a script
 *		                waits without polling
 *		GET /_arrivals  one line per recorded id: "transaction_id epoch_s"
 *		POST /_reset    counters, fingerprints and arrivals cleared
 *		SIGTERM or SIGINT: exits 0.
 *
 *	bench_sink load PORT BODY_FILE CONNECTIONS SECONDS
 *		Sends the body of BODY_FILE (a captured ingest request) as fast as
 *		the sink answers, one request in flight per connection (like the
 *		extension's max_inflight), for SECONDS; before each request it
 *		rewrites the first 16 characters of every transaction_id with a
 *		per-request counter so that every event is unique, as in a drain.
 *		Prints "requests R events E seconds T".
 *
 * Glossary: a "conn" is one accepted client socket with its input buffer;
 * a "waiter" is a conn whose /_wait answer is held until its target count
 * or deadline.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS_PER_WAIT 64
#define ID_KEY "{\"transaction_id\":\""
#define ID_KEY_LEN (sizeof(ID_KEY) - 1)

/* ids hashed and their slots prefetched at a time (sink_count_body) */
#define FP_BATCH 128
#define MAX_HEAD 16384

/* One client connection of the server. */
typedef struct Conn
{
	int			fd;
	char	   *in;				/* bytes received, not yet consumed */
	size_t		in_len;
	size_t		in_cap;
	char	   *out;			/* answer bytes not yet written */
	size_t		out_len;
	bool		waiting;		/* a /_wait answer is held */
	uint64_t	wait_target;
	double		wait_deadline;
	bool		close_after;	/* Connection: close asked */
} Conn;

/* A recorded arrival. */
typedef struct Arrival
{
	char	   *id;
	double		at;
} Arrival;

/* The server's counters and state. */
static struct
{
	uint64_t	requests;
	uint64_t	events;
	uint64_t	unique;
	uint64_t	dups;
	uint64_t	bytes;
	double		first_at;
	double		last_unique_at;
	uint64_t	connections;
	int			open_conns;
	int			max_open_conns;
	/* fingerprints: open addressing, 0 = empty */
	uint64_t   *fp;
	size_t		fp_cap;			/* a power of two */
	Arrival    *arr;
	size_t		arr_len;
	size_t		arr_cap;
	const char *token;
	size_t		token_len;
	const char *prefix;
	size_t		prefix_len;
	const char *sample;
	bool		sampled;
	Conn	  **waiters;
	int			nwaiters;
	int			waiters_cap;
} S;

static volatile sig_atomic_t stop_requested = 0;
static int	epfd = -1;

static double sink_now(void);
static void *sink_xmalloc(size_t n);
static void *sink_xrealloc(void *p, size_t n);
static void sink_die(const char *what);
static uint64_t sink_hash(const char *s, size_t n);
static void sink_fp_reserve(size_t n);
static bool sink_fp_add(uint64_t h);
static void sink_reset(void);
static void sink_count_body(const char *body, size_t len);
static void sink_queue(Conn *c, const char *data, size_t len);
static void sink_flush(Conn *c);
static void sink_answer(Conn *c, int status, const char *ctype,
						const char *body, size_t len);
static char *sink_stats_json(size_t *len);
static void sink_answer_stats(Conn *c);
static void sink_check_waiters(bool expired_only);
static void sink_close(Conn *c);
static bool sink_header(const char *head, size_t hlen, const char *name,
						const char **val, size_t *vlen);
static int	sink_process(Conn *c);
static void sink_on_readable(Conn *c);
static int	sink_serve(int argc, char **argv);
static void load_send(int fd);
static int	sink_load(int argc, char **argv);
static void sink_on_signal(int sig);

/*
 * Wall-clock time in epoch seconds, with microseconds.
 */
static double
sink_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * malloc that exits on failure: a benchmark tool has nothing to recover.
 */
static void *
sink_xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		sink_die("out of memory");
	return p;
}

/*
 * realloc that exits on failure.
 */
static void *
sink_xrealloc(void *p, size_t n)
{
	void	   *q = realloc(p, n ? n : 1);

	if (q == NULL)
		sink_die("out of memory");
	return q;
}

/*
 * Prints what failed (with errno's text when set) and exits 1.
 */
static void
sink_die(const char *what)
{
	if (errno != 0)
		fprintf(stderr, "bench_sink: %s: %s\n", what, strerror(errno));
	else
		fprintf(stderr, "bench_sink: %s\n", what);
	exit(1);
}

/*
 * A 64-bit hash taken eight bytes at a time (each step a bijection of the
 * state for a given word), with a final mix; never 0 (0 marks an empty
 * slot).  FNV-1a's byte at a time was a fifth of the sink's time.
 */
static uint64_t
sink_hash(const char *s, size_t n)
{
	uint64_t	h = 0x9e3779b97f4a7c15ULL ^ (uint64_t) n;
	uint64_t	w;

	while (n >= 8)
	{
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	w = 0;
	memcpy(&w, s, n);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h ? h : 1;
}

/*
 * Makes room for n more fingerprints: the table doubles until it would be
 * at most half full.
 */
static void
sink_fp_reserve(size_t n)
{
	while ((S.unique + n) * 2 >= S.fp_cap)
	{
		uint64_t   *old = S.fp;
		size_t		oldcap = S.fp_cap,
					mask,
					i,
					j;

		S.fp_cap = oldcap ? oldcap * 2 : (1 << 22);	/* 2M ids before a rehash */
		S.fp = calloc(S.fp_cap, sizeof(uint64_t));
		if (S.fp == NULL)
			sink_die("out of memory");
		mask = S.fp_cap - 1;
		for (j = 0; j < oldcap; j++)
		{
			if (old[j] == 0)
				continue;
			for (i = old[j] & mask; S.fp[i] != 0; i = (i + 1) & mask)
				;
			S.fp[i] = old[j];
		}
		free(old);
	}
}

/*
 * Adds a fingerprint (room reserved by sink_fp_reserve); returns false
 * when it was already there.
 */
static bool
sink_fp_add(uint64_t h)
{
	size_t		mask = S.fp_cap - 1,
				i;

	for (i = h & mask; S.fp[i] != 0; i = (i + 1) & mask)
	{
		if (S.fp[i] == h)
			return false;
	}
	S.fp[i] = h;
	return true;
}

/*
 * POST /_reset: back to the state at start (the sample stays written).
 */
static void
sink_reset(void)
{
	size_t		i;

	S.requests = S.events = S.unique = S.dups = S.bytes = 0;
	S.first_at = S.last_unique_at = 0;
	free(S.fp);
	S.fp = NULL;
	S.fp_cap = 0;
	for (i = 0; i < S.arr_len; i++)
		free(S.arr[i].id);
	S.arr_len = 0;
}

/*
 * Counts the events of one ingest body and their unique transaction_ids;
 * records the arrival of the ids that start with the prefix.  The ids are
 * found and hashed first, FP_BATCH at a time, and their slots prefetched:
 * the table (tens of MB after a million events) is probed at random, and
 * one cache miss after another was most of the sink's time.
 */
static void
sink_count_body(const char *body, size_t len)
{
	const char *p = body,
			   *end = body + len;
	double		t = sink_now();
	bool		more = true;

	if (S.first_at == 0)
		S.first_at = t;
	while (more)
	{
		const char *ids[FP_BATCH];
		size_t		lens[FP_BATCH];
		uint64_t	hs[FP_BATCH];
		int			n = 0,
					k;

		while (n < FP_BATCH &&
			   (p = memmem(p, end - p, ID_KEY, ID_KEY_LEN)) != NULL)
		{
			const char *id = p + ID_KEY_LEN,
					   *q = id;

			while (q < end && *q != '"')
				q += (*q == '\\' && q + 1 < end) ? 2 : 1;
			if (q >= end)
			{
				p = NULL;
				break;
			}
			ids[n] = id;
			lens[n] = q - id;
			hs[n] = sink_hash(id, q - id);
			n++;
			p = q;
		}
		more = (p != NULL && n == FP_BATCH);
		sink_fp_reserve(n);
		for (k = 0; k < n; k++)
			__builtin_prefetch(&S.fp[hs[k] & (S.fp_cap - 1)]);
		for (k = 0; k < n; k++)
		{
			S.events++;
			if (!sink_fp_add(hs[k]))
			{
				S.dups++;
				continue;
			}
			S.unique++;
			S.last_unique_at = t;
			if (S.prefix_len > 0 && lens[k] >= S.prefix_len &&
				memcmp(ids[k], S.prefix, S.prefix_len) == 0)
			{
				if (S.arr_len == S.arr_cap)
				{
					S.arr_cap = S.arr_cap ? S.arr_cap * 2 : 1024;
					S.arr = sink_xrealloc(S.arr, S.arr_cap * sizeof(Arrival));
				}
				S.arr[S.arr_len].id = strndup(ids[k], lens[k]);
				if (S.arr[S.arr_len].id == NULL)
					sink_die("out of memory");
				S.arr[S.arr_len].at = t;
				S.arr_len++;
			}
		}
	}
}

/*
 * Appends bytes to a connection's output and tries to write them.
 */
static void
sink_queue(Conn *c, const char *data, size_t len)
{
	c->out = sink_xrealloc(c->out, c->out_len + len);
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	sink_flush(c);
}

/*
 * Writes what the socket takes now; asks for EPOLLOUT when some is left.
 */
static void
sink_flush(Conn *c)
{
	struct epoll_event ev;

	while (c->out_len > 0)
	{
		ssize_t		n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			c->out_len = 0;		/* peer gone: the read side will see it */
			return;
		}
		memmove(c->out, c->out + n, c->out_len - n);
		c->out_len -= n;
	}
	ev.events = EPOLLIN | (c->out_len > 0 ? EPOLLOUT : 0);
	ev.data.ptr = c;
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/*
 * Queues one HTTP/1.1 answer.
 */
static void
sink_answer(Conn *c, int status, const char *ctype, const char *body, size_t len)
{
	char		head[256];
	int			n;
	const char *reason = status == 200 ? "OK" : status == 401 ? "Unauthorized" :
		status == 404 ? "Not Found" : status == 411 ? "Length Required" :
		status == 413 ? "Payload Too Large" : "Bad Request";

	n = snprintf(head, sizeof(head),
				 "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
				 status, reason, len,
				 ctype ? "Content-Type: " : "", ctype ? ctype : "",
				 ctype ? "\r\n" : "");
	sink_queue(c, head, n);
	if (len > 0)
		sink_queue(c, body, len);
}

/*
 * The /_stats object, malloc'd.
 */
static char *
sink_stats_json(size_t *len)
{
	struct rusage ru;
	char	   *buf = sink_xmalloc(1024);
	int			n;

	getrusage(RUSAGE_SELF, &ru);
	n = snprintf(buf, 1024,
				 "{\"requests\": %llu, \"events\": %llu, \"unique_events\": %llu, "
				 "\"duplicates\": %llu, \"bytes\": %llu, \"first_at\": %.6f, "
				 "\"last_unique_at\": %.6f, \"cpu_s\": %.3f, \"connections\": %llu, "
				 "\"max_open_connections\": %d}\n",
				 (unsigned long long) S.requests, (unsigned long long) S.events,
				 (unsigned long long) S.unique, (unsigned long long) S.dups,
				 (unsigned long long) S.bytes, S.first_at, S.last_unique_at,
				 ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
				 ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
				 (unsigned long long) S.connections, S.max_open_conns);
	*len = n;
	return buf;
}

/*
 * Answers a connection with /_stats.
 */
static void
sink_answer_stats(Conn *c)
{
	size_t		len;
	char	   *body = sink_stats_json(&len);

	sink_answer(c, 200, "application/json", body, len);
	free(body);
}

/*
 * Answers the /_wait requests whose target is reached (or, with
 * expired_only, whose deadline has passed too).
 */
static void
sink_check_waiters(bool expired_only)
{
	double		t = sink_now();
	int			i = 0;

	while (i < S.nwaiters)
	{
		Conn	   *c = S.waiters[i];

		if ((!expired_only && S.unique >= c->wait_target) ||
			(expired_only && (t >= c->wait_deadline || S.unique >= c->wait_target)))
		{
			c->waiting = false;
			S.waiters[i] = S.waiters[--S.nwaiters];
			sink_answer_stats(c);
			if (c->in_len > 0)
				sink_on_readable(c);
			continue;
		}
		i++;
	}
}

/*
 * Closes a connection and frees it.
 */
static void
sink_close(Conn *c)
{
	int			i;

	for (i = 0; i < S.nwaiters; i++)
	{
		if (S.waiters[i] == c)
		{
			S.waiters[i] = S.waiters[--S.nwaiters];
			break;
		}
	}
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	S.open_conns--;
}

/*
 * Finds a header in a request head (case-insensitive name); sets *val and
 * *vlen to its value without surrounding blanks.
 */
static bool
sink_header(const char *head, size_t hlen, const char *name,
			const char **val, size_t *vlen)
{
	size_t		nlen = strlen(name);
	const char *p = memchr(head, '\n', hlen),
			   *end = head + hlen;

	while (p != NULL && p + 1 < end)
	{
		const char *line = p + 1,
				   *eol = memchr(line, '\n', end - line);

		if (eol == NULL)
			eol = end;
		if ((size_t) (eol - line) > nlen && line[nlen] == ':' &&
			strncasecmp(line, name, nlen) == 0)
		{
			const char *v = line + nlen + 1,
					   *e = eol;

			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
				e--;
			*val = v;
			*vlen = e - v;
			return true;
		}
		p = eol < end ? eol : NULL;
	}
	return false;
}

/*
 * Handles the complete requests in a connection's buffer.  Returns -1 when
 * the connection must be closed, else 0 (a held /_wait stops processing
 * until it is answered).
 */
static int
sink_process(Conn *c)
{
	while (!c->waiting && c->in_len > 0)
	{
		char	   *hend = memmem(c->in, c->in_len, "\r\n\r\n", 4);
		size_t		hlen,
					clen = 0,
					vlen;
		const char *v;
		char	   *body;
		char		method[16],
					path[512];
		int			n;

		if (hend == NULL)
			return c->in_len > MAX_HEAD ? -1 : 0;
		hlen = hend - c->in;
		if (sink_header(c->in, hlen, "Transfer-Encoding", &v, &vlen))
		{
			sink_answer(c, 411, NULL, NULL, 0);
			return -1;
		}
		if (sink_header(c->in, hlen, "Content-Length", &v, &vlen))
			clen = strtoul(v, NULL, 10);
		if (hlen + 4 + clen > c->in_len)
		{
			/* the body is still coming; answer Expect: 100-continue once */
			if (sink_header(c->in, hlen, "Expect", &v, &vlen) &&
				vlen == 12 && strncasecmp(v, "100-continue", 12) == 0)
			{
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

				sink_queue(c, cont, sizeof(cont) - 1);
				/* blank the header so it is answered once */
				memset((char *) v, 'x', vlen);
			}
			return 0;
		}
		body = hend + 4;
		n = sscanf(c->in, "%15s %511s", method, path);
		if (n != 2)
			return -1;
		c->close_after = sink_header(c->in, hlen, "Connection", &v, &vlen) &&
			vlen == 5 && strncasecmp(v, "close", 5) == 0;

		if (strcmp(method, "POST") == 0 && strlen(path) >= 7 &&
			strcmp(path + strlen(path) - 7, "/ingest") == 0)
		{
			S.requests++;
			S.bytes += clen;
			if (S.token != NULL &&
				!(sink_header(c->in, hlen, "Authorization", &v, &vlen) &&
				  vlen == 7 + S.token_len && strncasecmp(v, "Bearer ", 7) == 0 &&
				  memcmp(v + 7, S.token, S.token_len) == 0))
			{
				static const char msg[] = "{\"message\": \"Unauthorized\"}";

				sink_answer(c, 401, "application/json", msg, sizeof(msg) - 1);
			}
			else if (clen < 2)
			{
				static const char msg[] = "{\"message\": \"empty batch\"}";

				sink_answer(c, 400, "application/json", msg, sizeof(msg) - 1);
			}
			else
			{
				if (S.sample != NULL && !S.sampled)
				{
					FILE	   *f = fopen(S.sample, "w");

					if (f != NULL)
					{
						fwrite(body, 1, clen, f);
						fclose(f);
					}
					S.sampled = true;
				}
				sink_count_body(body, clen);
				sink_answer(c, 200, NULL, NULL, 0);
				if (S.nwaiters > 0)
					sink_check_waiters(false);
			}
		}
		else if (strcmp(method, "GET") == 0 && strcmp(path, "/_stats") == 0)
			sink_answer_stats(c);
		else if (strcmp(method, "POST") == 0 && strcmp(path, "/_reset") == 0)
		{
			sink_reset();
			sink_answer(c, 200, "application/json", "{}\n", 3);
		}
		else if (strcmp(method, "GET") == 0 && strcmp(path, "/_arrivals") == 0)
		{
			size_t		cap = 64 + S.arr_len * 160,
						len = 0,
						i;
			char	   *out = sink_xmalloc(cap);

			for (i = 0; i < S.arr_len; i++)
				len += snprintf(out + len, cap - len, "%.128s %.6f\n",
								S.arr[i].id, S.arr[i].at);
			sink_answer(c, 200, "text/plain", out, len);
			free(out);
		}
		else if (strcmp(method, "GET") == 0 && strncmp(path, "/_wait?", 7) == 0)
		{
			const char *t = strstr(path, "unique_events="),
					   *d = strstr(path, "timeout=");

			c->wait_target = t ? strtoull(t + 14, NULL, 10) : 0;
			c->wait_deadline = sink_now() + (d ? atof(d + 8) : 60.0);
			if (S.unique >= c->wait_target)
				sink_answer_stats(c);
			else
			{
				c->waiting = true;
				if (S.nwaiters == S.waiters_cap)
				{
					S.waiters_cap = S.waiters_cap ? S.waiters_cap * 2 : 8;
					S.waiters = sink_xrealloc(S.waiters,
											  S.waiters_cap * sizeof(Conn *));
				}
				S.waiters[S.nwaiters++] = c;
			}
		}
		else
		{
			static const char msg[] = "{\"message\": \"not found\"}";

			sink_answer(c, 404, "application/json", msg, sizeof(msg) - 1);
		}

		memmove(c->in, c->in + hlen + 4 + clen, c->in_len - (hlen + 4 + clen));
		c->in_len -= hlen + 4 + clen;
		if (c->close_after)
			return -1;
	}
	return 0;
}

/*
 * Reads what a connection has sent and handles its complete requests;
 * closes it at EOF or on error.
 */
static void
sink_on_readable(Conn *c)
{
	for (;;)
	{
		ssize_t		n;

		if (c->in_cap - c->in_len < 65536)
		{
			c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
			c->in = sink_xrealloc(c->in, c->in_cap);
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0)
		{
			c->in_len += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		/* EOF or error: answer nothing more */
		sink_close(c);
		return;
	}
	if (sink_process(c) < 0)
	{
		sink_flush(c);
		sink_close(c);
	}
}

/*
 * SIGTERM and SIGINT: leave the event loop.
 */
static void
sink_on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

/*
 * The server: see the banner.
 */
static int
sink_serve(int argc, char **argv)
{
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);
	struct epoll_event ev,
				evs[MAX_EVENTS_PER_WAIT];
	struct sigaction sa;
	int			lfd,
				one = 1,
				i;

	for (i = 2; i < argc; i++)
	{
		if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
			S.token = argv[++i];
		else if (strcmp(argv[i], "--record-prefix") == 0 && i + 1 < argc)
			S.prefix = argv[++i];
		else if (strcmp(argv[i], "--sample") == 0 && i + 1 < argc)
			S.sample = argv[++i];
		else
		{
			fprintf(stderr, "bench_sink: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	S.token_len = S.token ? strlen(S.token) : 0;
	S.prefix_len = S.prefix ? strlen(S.prefix) : 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sink_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		sink_die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	if (bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
		listen(lfd, 128) < 0 ||
		getsockname(lfd, (struct sockaddr *) &addr, &alen) < 0)
		sink_die("bind/listen");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		sink_die("epoll_create1");
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;			/* NULL: the listening socket */
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
	printf("PORT %d\n", ntohs(addr.sin_port));
	fflush(stdout);

	while (!stop_requested)
	{
		int			n = epoll_wait(epfd, evs, MAX_EVENTS_PER_WAIT,
								   S.nwaiters > 0 ? 50 : 500);

		if (n < 0 && errno != EINTR)
			sink_die("epoll_wait");
		for (i = 0; i < n; i++)
		{
			Conn	   *c = evs[i].data.ptr;

			if (c == NULL)
			{
				int			fd;

				while ((fd = accept4(lfd, NULL, NULL,
									 SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
				{
					Conn	   *nc = calloc(1, sizeof(Conn));

					if (nc == NULL)
						sink_die("out of memory");
					nc->fd = fd;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN;
					ev.data.ptr = nc;
					epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
					S.connections++;
					if (++S.open_conns > S.max_open_conns)
						S.max_open_conns = S.open_conns;
				}
				continue;
			}
			if (evs[i].events & EPOLLOUT)
				sink_flush(c);
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			{
				if (c->waiting)
				{
					/* a held /_wait: only notice the peer leaving */
					char		b;

					if (recv(c->fd, &b, 1, MSG_PEEK) == 0)
						sink_close(c);
					continue;
				}
				sink_on_readable(c);
			}
		}
		if (S.nwaiters > 0)
			sink_check_waiters(true);
	}
	return 0;
}

/*
 * The load generator's request: head and body in one buffer, and where the
 * rewritable transaction_ids are.
 */
static struct
{
	char	   *req;
	size_t		len;
	size_t	   *idpos;
	size_t		nids;			/* rewritable ids (16 characters or more) */
	size_t		nevents;		/* every event of the body */
	uint64_t	counter;
} L;

/*
 * Makes the request's ids unique (a per-request counter in hex over their
 * first 16 characters) and sends it on fd, blocking until it is written.
 */
static void
load_send(int fd)
{
	size_t		k,
				off;

	L.counter++;
	for (k = 0; k < L.nids; k++)
	{
		char		hex[17];

		snprintf(hex, sizeof(hex), "%016llx",
				 (unsigned long long) (L.counter * 128 + k));
		memcpy(L.req + L.idpos[k], hex, 16);
	}
	for (off = 0; off < L.len;)
	{
		ssize_t		n = send(fd, L.req + off, L.len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			sink_die("send");
		off += n;
	}
}

/*
 * The load generator: see the banner.
 */
static int
sink_load(int argc, char **argv)
{
	struct sockaddr_in addr;
	FILE	   *f;
	char	   *body,
			   *p;
	char		head[256],
				rbuf[4096];
	size_t		blen,
				hlen;
	int			port,
				nconn,
				i;
	int		   *fds;
	double		t0,
				deadline;
	uint64_t	done = 0;

	if (argc != 6)
	{
		fprintf(stderr, "usage: bench_sink load PORT BODY_FILE CONNECTIONS SECONDS\n");
		return 2;
	}
	port = atoi(argv[2]);
	nconn = atoi(argv[4]);
	if (nconn < 1)
		nconn = 1;
	if ((f = fopen(argv[3], "r")) == NULL)
		sink_die(argv[3]);
	fseek(f, 0, SEEK_END);
	blen = ftell(f);
	rewind(f);
	hlen = snprintf(head, sizeof(head),
					"POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
					"Authorization: Bearer %s\r\n"
					"Content-Type: application/json\r\nUser-Agent: bench_sink\r\n"
					"Content-Length: %zu\r\n\r\n",
					port, getenv("SINK_TOKEN") ? getenv("SINK_TOKEN") : "", blen);
	L.len = hlen + blen;
	L.req = sink_xmalloc(L.len);
	memcpy(L.req, head, hlen);
	body = L.req + hlen;
	if (fread(body, 1, blen, f) != blen)
		sink_die("short read of the body file");
	fclose(f);

	for (p = body; (p = memmem(p, body + blen - p, ID_KEY, ID_KEY_LEN)) != NULL;)
	{
		char	   *id = p + ID_KEY_LEN,
				   *q = memchr(id, '"', body + blen - id);

		if (q == NULL)
			break;
		L.nevents++;
		if (q - id >= 16)
		{
			L.idpos = sink_xrealloc(L.idpos, (L.nids + 1) * sizeof(size_t));
			L.idpos[L.nids++] = id - L.req;
		}
		p = q;
	}

	fds = sink_xmalloc(nconn * sizeof(int));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons(port);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		sink_die("epoll_create1");

	t0 = sink_now();
	deadline = t0 + atof(argv[5]);
	for (i = 0; i < nconn; i++)
	{
		struct epoll_event ev;
		int			one = 1;

		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 ||
			connect(fds[i], (struct sockaddr *) &addr, sizeof(addr)) < 0)
			sink_die("connect");
		setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ev.events = EPOLLIN;
		ev.data.u32 = i;
		epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev);
		load_send(fds[i]);
	}

	/*
	 * One request in flight per connection: the next one goes when the
	 * answer (a short head, never pipelined) has come.
	 */
	while (sink_now() < deadline)
	{
		struct epoll_event evs[MAX_EVENTS_PER_WAIT];
		int			n = epoll_wait(epfd, evs, MAX_EVENTS_PER_WAIT, 100),
					e;

		for (e = 0; e < n; e++)
		{
			int			c = evs[e].data.u32;
			ssize_t		r = recv(fds[c], rbuf, sizeof(rbuf), 0);

			if (r <= 0)
				sink_die("the sink closed a connection");
			if (memmem(rbuf, r, "\r\n\r\n", 4) == NULL)
				continue;
			if (strncmp(rbuf, "HTTP/1.1 200", 12) != 0)
				sink_die("the sink answered other than 200");
			done++;
			if (sink_now() < deadline)
				load_send(fds[c]);
		}
	}
	printf("requests %llu events %llu seconds %.3f\n",
		   (unsigned long long) done, (unsigned long long) (done * L.nevents),
		   sink_now() - t0);
	return 0;
}

/*
 * bench_sink serve ... | bench_sink load ...
 */
int
main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0)
		return sink_serve(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "load") == 0)
		return sink_load(argc, argv);
	fprintf(stderr, "usage: bench_sink serve [--token T] [--record-prefix P] [--sample FILE]\n"
			"       bench_sink load PORT BODY_FILE CONNECTIONS SECONDS\n");
	return 2;
}
