/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTP layer of the delivery worker: request bodies written
 *	  directly (byte for byte what json-c would print), requests run
 *	  concurrently through libcurl's multi interface, answers parsed with
 *	  json-c and classified as Metronome's ingest API asks.
 *
 * This layer holds no backend state: it includes no PostgreSQL header,
 * allocates with malloc, and reports failures through return values, so it
 * can be unit-tested and fuzzed outside the server (test/unit/http_test.c).
 * The caller (ship.c) owns the transaction, the rows and the interrupts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_HTTP_H
#define METRONOME_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* What an answer (or the lack of one) means for the rows of a batch. */
typedef enum HttpClass
{
	HTTP_CLASS_OK,				/* 2xx: every event accepted */
	HTTP_CLASS_BAD_BATCH,		/* 400, 413, 422: a bad event in the batch */
	HTTP_CLASS_AUTH,			/* 401, 403: bad or revoked token */
	HTTP_CLASS_CONFIG,			/* 404, 405, 501, ...: not an ingest endpoint */
	HTTP_CLASS_TRANSIENT		/* 408, 429, 5xx, network errors: retry */
} HttpClass;

/* One usage event, as the caller hands it to HttpBuildBody. */
typedef struct HttpEvent
{
	const char *transaction_id;
	const char *customer_id;
	const char *event_type;
	int64_t		timestamp_us;	/* microseconds since 1970-01-01 00:00 UTC */
	const char *properties;		/* JSON text of an object; NULL means {} */
	size_t		properties_len; /* strlen(properties) if known, else 0 */
} HttpEvent;

/* Size of a buffer that HttpFormatTimestamp always fits in. */
#define HTTP_TIMESTAMP_LEN 40

/* Longest error text kept for a request (message or network error). */
#define HTTP_ERROR_LEN 512

/* One POST of one batch.  Allocate with HttpRequestNew. */
typedef struct HttpRequest
{
	/* set by the caller */
	char	   *body;			/* malloc'd JSON text, owned by the request */
	size_t		body_len;
	const HttpEvent *events;	/* or, with body NULL: the events the I/O
								 * thread writes the body of (HttpBuildBody);
								 * the caller keeps them until the request is
								 * done or cancelled */
	int			nevents;
	void	   *user;			/* the caller's (e.g. the batch) */

	/* set when the request is done */
	bool		done;
	long		status;			/* HTTP status; 0 when there was no answer */
	HttpClass	klass;
	int64_t		retry_after_ms; /* from the answer's headers; -1 if none */
	char		error[HTTP_ERROR_LEN];	/* why it failed ("" on 2xx) */
	bool		metronome_shaped;	/* an error body of Metronome's shape:
									 * a JSON object with a string "message" */
	double		elapsed;		/* seconds from start to done */
	bool		dropped;		/* given back unsent (HttpDropQueued) */

	/* private to http.c */
	void	   *easy;			/* CURL * */
	char	   *response;
	size_t		response_len;
	struct HttpRequest *next_done;
	struct HttpClient *client;
} HttpRequest;

typedef struct HttpClient HttpClient;

/* Pure helpers (unit-tested and fuzzed) */
extern HttpClass HttpClassifyStatus(long status);
extern HttpClass HttpClassifyCurlError(int curl_code);
extern bool HttpFormatTimestamp(int64_t timestamp_us, char *buf, size_t len);
extern char *HttpBuildBody(const HttpEvent *events, int nevents, size_t *len);
extern int64_t HttpParseRetryAfter(const char *value, time_t now);
extern int64_t HttpParseRetryAfterMs(const char *value);
extern void HttpErrorMessage(long status, const char *body, size_t len,
							 char *buf, size_t buflen);
extern bool HttpIsMetronomeError(const char *body, size_t len);
extern int64_t HttpBackoffDelay(int failures, int64_t base_ms, int64_t cap_ms,
								double random01);
extern void HttpScrub(char *text, const char *secret);

/* The client: one per process, keeps connections and TLS sessions. */
extern HttpClient *HttpClientCreate(void);
extern void HttpClientDestroy(HttpClient *client);
extern bool HttpClientConfigure(HttpClient *client, const char *url,
								const char *token, const char *user_agent,
								long timeout_ms);
extern bool HttpClientSetCAFile(HttpClient *client, const char *path);
extern HttpRequest *HttpRequestNew(void);
extern void HttpRequestFree(HttpRequest *req);
extern bool HttpStart(HttpClient *client, HttpRequest *req);
extern int	HttpWait(HttpClient *client, int timeout_ms);
extern HttpRequest *HttpNextDone(HttpClient *client);
extern int	HttpInFlight(HttpClient *client);
extern void HttpCancelAll(HttpClient *client);
extern void HttpSetConcurrency(HttpClient *client, int n);
extern void HttpResume(HttpClient *client);
extern void HttpDropQueued(HttpClient *client);

#endif							/* METRONOME_HTTP_H */
