/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Counters and the acknowledgement-latency histogram of the delivery
 *	  (metrics.c, a leaf), and metronome_metrics() (metrics_sql.c).
 *
 * ship.c counts with one-line calls: MetricsCountAnswer() per finished
 * request, MetricsCountSplit() per bisected batch, MetricsNoteAcked() per
 * acknowledged row, MetricsBeginCycle() and MetricsEndCycle() around a
 * cycle (the latter adds the cycle's events and latencies to the counters
 * once its acknowledgement is done).
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_METRICS_H
#define METRONOME_METRICS_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* The answer classes of metronome_requests_total{class}. */
typedef enum MetricsAnswer
{
	METRICS_ANSWER_2XX,			/* accepted */
	METRICS_ANSWER_BAD_BATCH,	/* 400, 413, 422 */
	METRICS_ANSWER_AUTH,		/* 401, 403 */
	METRICS_ANSWER_CONFIG,		/* 404, 405, 501, TLS, bad URL */
	METRICS_ANSWER_RATE_LIMITED,	/* 429 */
	METRICS_ANSWER_TRANSIENT,	/* 408, 5xx and other answers to retry */
	METRICS_ANSWER_NETWORK,		/* no HTTP answer: refused, reset, timeout */
	METRICS_NANSWERS
} MetricsAnswer;

/* Upper bounds (seconds) of the latency histogram's buckets, +Inf last. */
#define METRICS_NBUCKETS 17
extern const double MetricsBucketBounds[METRICS_NBUCKETS - 1];

/* Mappings whose sent events are counted apart, per database; names are
 * cut at METRICS_MAPPING_NAME_LEN - 1 bytes. */
#define METRICS_MAX_MAPPINGS 32
#define METRICS_MAPPING_NAME_LEN 64

/* A copy of one database's counters (MetricsRead). */
typedef struct MetricsView
{
	bool		shared;			/* server-wide (preloaded), else this session's */
	uint64		requests[METRICS_NANSWERS];
	uint64		events_sent;
	uint64		events_failed;
	uint64		events_retried;
	uint64		splits;
	uint64		cycles;
	uint64		latency_buckets[METRICS_NBUCKETS];	/* not cumulative */
	uint64		latency_sum_us;
	int			nmappings;		/* events_sent by mapping ("": none) */
	char		mapping_name[METRICS_MAX_MAPPINGS][METRICS_MAPPING_NAME_LEN];
	uint64		mapping_sent[METRICS_MAX_MAPPINGS];
	uint64		mapping_sent_other;	/* of mappings beyond the slots */
} MetricsView;

/* metrics.c */
extern void MetricsShmemInit(void);
extern const char *MetricsAnswerName(MetricsAnswer answer);
extern void MetricsCountAnswer(int http_class, long status);
extern void MetricsCountSplit(void);
extern void MetricsBeginCycle(void);
extern void MetricsNoteAcked(TimestampTz created_at, const char *mapping);
extern void MetricsEndCycle(int64 claimed, int64 accepted, int64 failed,
							int64 retried);
extern void MetricsRead(MetricsView *out);

#endif							/* METRONOME_METRICS_H */
