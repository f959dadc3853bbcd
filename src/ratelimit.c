/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  The server's rate limit of events sent to Metronome (a leaf: it calls
 *	  nothing of the delivery above it; ship.c asks it before each request).
 *
 * metronome.max_events_per_second (0 = no limit) is a token bucket counted
 * in events: a request of n events takes n tokens.  With the library
 * preloaded there is ONE bucket in shared memory for the whole server: every
 * database's delivery worker and every session running CALL
 * metronome_ship() take from it, so the server as a whole stays within the
 * setting (an account below Metronome's default 110,000 events/s, or one
 * shared with other senders).  Without preloading each session has a
 * bucket of its own (there is no shared memory), so the limit is per
 * session.
 *
 * The bucket refills at the rate continuously and holds at most `burst`
 * tokens: a tenth of a second's worth, and at least metronome.batch_size,
 * so that a full batch can always go and no one-second window carries more
 * than 1.1 times the rate plus one batch.  A request may start when the
 * bucket holds min(n, burst) tokens; it then takes all n (a request larger
 * than the burst, possible only right after a reload lowered batch_size,
 * puts the bucket into debt, which the next ones wait out).
 * Over any interval T at most burst + rate * T events start.
 *
 * The setting is PGC_SIGHUP and every process reads its own copy, which a
 * session inside a long CALL reloads only after it.  So the bucket keeps
 * the setting of the process that loaded the configuration last
 * (PgReloadTime, which each process sets when it reads the files): a
 * reload changes the rate for everyone as soon as one process that has
 * read it (the delivery workers do between cycles) takes tokens.
 *
 * Adaptive slowdown (AIMD, as TCP does): a 429 answer without Retry-After
 * or retry-after-ms says the account's limit is reached without saying for
 * how long.  The first one starts the slowdown at half the rate observed
 * (events started in the last second) or half the setting, whichever is
 * lower; each further one halves the slowdown's rate again (at most once a
 * second: the answers to requests already out belong to the same
 * episode), never below RATELIMIT_FLOOR events/s.  Each second with
 * successes adds a twentieth of the rate last refused (slowdown_peak), so
 * half the rate is won back in ten seconds; at twice that rate, or at the
 * setting, the slowdown ends.  The effective rate is the lower of the
 * setting and the slowdown's rate.  A 429 WITH Retry-After is honoured by
 * the gate (status.c) instead, and does not change the rate.
 *
 * One spinlock per bucket; each critical section is a few assignments and
 * arithmetic (the bucket's refill is an always-inlined helper: no call, no
 * loop); the caller computes and waits outside it.  Waiting is the
 * caller's: ship.c waits on its latch, never holding a transaction's
 * snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "metronome.h"
#include "miscadmin.h"
#include "ratelimit.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/* the bucket's size: this many seconds' worth of the rate ... */
#define BURST_SECONDS 0.1
/* ... the adaptive slowdown's step up: this fraction of the peak a second */
#define SPEEDUP_FRACTION 0.05
/* ... and it ends at this multiple of the peak (or at the setting) */
#define SPEEDUP_END 2.0
/* "full" while there is no limit: capped to the burst once there is one */
#define TOKENS_FULL 1e15

typedef struct RateBucket
{
	slock_t		mutex;
	int			setting;		/* max_events_per_second in force */
	TimestampTz setting_loaded; /* PgReloadTime of the process that set it */
	double		tokens;
	TimestampTz refilled_at;

	/* events started: this window (since win_start) and the previous one */
	TimestampTz win_start;
	double		win_events;
	double		prev_events;

	/* the adaptive slowdown: slow_rate 0 = off */
	double		slow_rate;
	double		slow_peak;
	TimestampTz slow_changed_at;
	TimestampTz slow_decreased_at;
	int64		slowdowns;
} RateBucket;

static RateBucket *shared_bucket = NULL;
static RateBucket local_bucket;
static bool local_ready = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
bucket_init(RateBucket *b)
{
	memset(b, 0, sizeof(RateBucket));
	SpinLockInit(&b->mutex);
	b->tokens = TOKENS_FULL;
}

/* shmem_request_hook: reserve the bucket */
static void
ratelimit_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RateBucket)));
}

/* shmem_startup_hook: create or attach to the bucket */
static void
ratelimit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared_bucket = ShmemInitStruct("metronome rate limit",
									sizeof(RateBucket), &found);
	if (!found)
		bucket_init(shared_bucket);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from DeliveryInit (while preloading): install the shared-memory
 * hooks.
 */
void
RateLimitShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ratelimit_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ratelimit_shmem_startup;
}

/* the server's bucket, or this session's own without preloading */
static RateBucket *
bucket(void)
{
	if (shared_bucket != NULL)
		return shared_bucket;
	if (!local_ready)
	{
		bucket_init(&local_bucket);
		local_ready = true;
	}
	return &local_bucket;
}

/*
 * The helpers below run under the bucket's spinlock: assignments and
 * arithmetic only, always inlined.
 */

/* the newest loaded setting wins (see the banner) */
static pg_attribute_always_inline void
bucket_sync(RateBucket *b, int mine, TimestampTz loaded)
{
	if (loaded >= b->setting_loaded)
	{
		b->setting = mine;
		b->setting_loaded = loaded;
	}
}

/* the effective rate in events/s: 0 = no limit */
static pg_attribute_always_inline double
bucket_rate(const RateBucket *b)
{
	double		rate = b->setting > 0 ? (double) b->setting : 0.0;

	if (b->slow_rate > 0 && (rate <= 0 || b->slow_rate < rate))
		rate = b->slow_rate;
	return rate;
}

/* the bucket's size at a rate */
static pg_attribute_always_inline double
bucket_burst(double rate, int batch)
{
	return Max((double) batch, rate * BURST_SECONDS);
}

/* refill up to now, and roll the window of observed events */
static pg_attribute_always_inline void
bucket_advance(RateBucket *b, TimestampTz now, double rate, double burst)
{
	if (now - b->win_start >= USECS_PER_SEC)
	{
		b->prev_events = (now - b->win_start < 2 * USECS_PER_SEC) ?
			b->win_events : 0;
		b->win_events = 0;
		b->win_start = now;
	}
	if (rate <= 0)
		b->tokens = TOKENS_FULL;
	else
	{
		if (now > b->refilled_at && b->tokens < burst)
			b->tokens += rate * (double) (now - b->refilled_at) / USECS_PER_SEC;
		if (b->tokens > burst)
			b->tokens = burst;
	}
	if (now > b->refilled_at)
		b->refilled_at = now;
}

/* events started in the last second (the previous window, prorated) */
static pg_attribute_always_inline double
bucket_observed(const RateBucket *b, TimestampTz now)
{
	double		into = (double) (now - b->win_start) / USECS_PER_SEC;

	if (into < 0)
		into = 0;
	if (into > 1)
		into = 1;
	return b->prev_events * (1 - into) + b->win_events;
}

/*
 * Take tokens for a request of nevents events.  Returns 0 when taken (the
 * request may start now), else how many microseconds to wait before
 * asking again (nothing is taken then).
 */
int64
RateLimitTake(int nevents, TimestampTz now)
{
	RateBucket *b = bucket();
	int			mine = metronome_max_events_per_second;
	int			batch = metronome_batch_size;
	TimestampTz loaded = PgReloadTime;
	double		rate;
	double		burst;
	double		need;
	int64		wait = 0;

	SpinLockAcquire(&b->mutex);
	bucket_sync(b, mine, loaded);
	rate = bucket_rate(b);
	burst = bucket_burst(rate, batch);
	bucket_advance(b, now, rate, burst);
	need = Min((double) nevents, burst);
	if (rate <= 0 || b->tokens >= need)
	{
		if (rate > 0)
			b->tokens -= nevents;
		b->win_events += nevents;
	}
	else
		wait = (int64) ((need - b->tokens) * USECS_PER_SEC / rate) + 1;
	SpinLockRelease(&b->mutex);
	return wait;
}

/*
 * How many microseconds until a full batch could start (0: now), taking
 * nothing: a shipper asks before it claims rows.
 */
int64
RateLimitReady(TimestampTz now)
{
	RateBucket *b = bucket();
	int			mine = metronome_max_events_per_second;
	int			batch = metronome_batch_size;
	TimestampTz loaded = PgReloadTime;
	double		rate;
	double		burst;
	double		need;
	int64		wait = 0;

	SpinLockAcquire(&b->mutex);
	bucket_sync(b, mine, loaded);
	rate = bucket_rate(b);
	burst = bucket_burst(rate, batch);
	bucket_advance(b, now, rate, burst);
	need = Min((double) batch, burst);
	if (rate > 0 && b->tokens < need)
		wait = (int64) ((need - b->tokens) * USECS_PER_SEC / rate) + 1;
	SpinLockRelease(&b->mutex);
	return wait;
}

/*
 * The most events the limit lets start within ms milliseconds (the burst
 * plus the rate's worth): what a cycle of that length should claim.  0
 * when there is no limit.
 */
int64
RateLimitCycleEvents(int ms)
{
	RateBucket *b = bucket();
	int			mine = metronome_max_events_per_second;
	int			batch = metronome_batch_size;
	TimestampTz loaded = PgReloadTime;
	double		rate;

	SpinLockAcquire(&b->mutex);
	bucket_sync(b, mine, loaded);
	rate = bucket_rate(b);
	SpinLockRelease(&b->mutex);
	if (rate <= 0)
		return 0;
	return (int64) (rate * ms / 1000.0 + bucket_burst(rate, batch)) + 1;
}

/*
 * Metronome answered 429 without Retry-After: halve the rate (see the
 * banner).  *rate is the slowdown's rate after it, *observed the events
 * started in the last second.
 */
RateLimitChange
RateLimitSlowDown(TimestampTz now, double *rate, double *observed)
{
	RateBucket *b = bucket();
	int			mine = metronome_max_events_per_second;
	int			batch = metronome_batch_size;
	TimestampTz loaded = PgReloadTime;
	RateLimitChange change = RATELIMIT_UNCHANGED;
	double		r;
	double		obs;
	double		base;

	SpinLockAcquire(&b->mutex);
	bucket_sync(b, mine, loaded);
	r = bucket_rate(b);
	bucket_advance(b, now, r, bucket_burst(r, batch));
	obs = bucket_observed(b, now);
	if (b->slow_rate <= 0 || now - b->slow_decreased_at >= USECS_PER_SEC)
	{
		base = b->slow_rate > 0 ? b->slow_rate : obs;
		if (b->setting > 0 && (base <= 0 || base > b->setting))
			base = b->setting;
		if (base < 2 * RATELIMIT_FLOOR)
			base = 2 * RATELIMIT_FLOOR;
		change = b->slow_rate > 0 ? RATELIMIT_SLOWED : RATELIMIT_SLOWDOWN_STARTED;
		b->slow_peak = base;
		b->slow_rate = base / 2;
		b->slow_decreased_at = now;
		b->slow_changed_at = now;
		b->slowdowns++;
	}
	*rate = b->slow_rate;
	SpinLockRelease(&b->mutex);
	*observed = obs;
	return change;
}

/*
 * A request was accepted: during a slowdown, a step back up once a second
 * (see the banner).  *rate is the slowdown's rate after it (0: ended).
 */
RateLimitChange
RateLimitSpeedUp(TimestampTz now, double *rate)
{
	RateBucket *b = bucket();
	RateLimitChange change = RATELIMIT_UNCHANGED;
	double		ceiling;

	SpinLockAcquire(&b->mutex);
	if (b->slow_rate > 0 && now - b->slow_changed_at >= USECS_PER_SEC)
	{
		b->slow_rate += Max(RATELIMIT_FLOOR, b->slow_peak * SPEEDUP_FRACTION);
		b->slow_changed_at = now;
		ceiling = b->slow_peak * SPEEDUP_END;
		if (b->setting > 0 && b->setting < ceiling)
			ceiling = b->setting;
		if (b->slow_rate >= ceiling)
		{
			b->slow_rate = 0;
			change = RATELIMIT_SLOWDOWN_ENDED;
		}
		else
			change = RATELIMIT_SPED_UP;
	}
	*rate = b->slow_rate;
	SpinLockRelease(&b->mutex);
	return change;
}

/*
 * A copy of the bucket, refilled to now (metronome_rate_limit()).
 */
void
RateLimitRead(RateLimitView *out)
{
	RateBucket *b = bucket();
	int			mine = metronome_max_events_per_second;
	int			batch = metronome_batch_size;
	TimestampTz loaded = PgReloadTime;
	TimestampTz now = GetCurrentTimestamp();
	double		rate;
	double		burst;

	SpinLockAcquire(&b->mutex);
	bucket_sync(b, mine, loaded);
	rate = bucket_rate(b);
	burst = bucket_burst(rate, batch);
	bucket_advance(b, now, rate, burst);
	out->setting = b->setting;
	out->rate = rate;
	out->burst = rate > 0 ? burst : 0;
	out->tokens = rate > 0 ? b->tokens : 0;
	out->slowdown = b->slow_rate > 0;
	out->slowdown_rate = b->slow_rate;
	out->slowdown_peak = b->slow_peak;
	out->slowdowns = b->slowdowns;
	out->observed = bucket_observed(b, now);
	SpinLockRelease(&b->mutex);
	out->shared = (shared_bucket != NULL);
}
