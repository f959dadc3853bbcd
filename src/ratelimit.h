/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  The server's rate limit of events sent to Metronome: one token bucket
 *	  for every shipper of the server (ratelimit.c, a leaf), and the
 *	  adaptive slowdown after 429 answers without Retry-After.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_RATELIMIT_H
#define METRONOME_RATELIMIT_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* Slowest rate the adaptive slowdown goes down to (events per second). */
#define RATELIMIT_FLOOR 10.0

/* What a 429 or a success did to the adaptive slowdown. */
typedef enum RateLimitChange
{
	RATELIMIT_UNCHANGED,
	RATELIMIT_SLOWDOWN_STARTED, /* a first 429 without Retry-After */
	RATELIMIT_SLOWED,			/* another one: the rate halved again */
	RATELIMIT_SPED_UP,			/* a second of successes: a step back up */
	RATELIMIT_SLOWDOWN_ENDED	/* back to the setting (or to no limit) */
} RateLimitChange;

/* A copy of the bucket (metronome_rate_limit()). */
typedef struct RateLimitView
{
	bool		shared;			/* one bucket for the server (preloaded) */
	int			setting;		/* metronome.max_events_per_second in force */
	double		rate;			/* effective events/s; 0 = no limit */
	double		burst;			/* the bucket's size (0 with no limit) */
	double		tokens;			/* events that may go at once now */
	bool		slowdown;		/* the adaptive slowdown is on */
	double		slowdown_rate;	/* its rate (0 when off) */
	double		slowdown_peak;	/* the rate Metronome last refused */
	int64		slowdowns;		/* times the rate was halved */
	double		observed;		/* events started in the last second */
} RateLimitView;

extern void RateLimitShmemInit(void);
extern int64 RateLimitTake(int nevents, TimestampTz now);
extern int64 RateLimitReady(TimestampTz now);
extern int64 RateLimitCycleEvents(int ms);
extern RateLimitChange RateLimitSlowDown(TimestampTz now, double *rate,
										 double *observed);
extern RateLimitChange RateLimitSpeedUp(TimestampTz now, double *rate);
extern void RateLimitRead(RateLimitView *out);

#endif							/* METRONOME_RATELIMIT_H */
