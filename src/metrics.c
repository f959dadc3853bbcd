/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  The delivery's counters and its acknowledgement-latency histogram (a
 *	  leaf: it calls nothing of the delivery above it; metronome_metrics()
 *	  renders them, in metrics_sql.c).
 *
 * What is counted, by whom:
 *
 *	requests[class]		every finished request of a shipping cycle, by the
 *						class of its answer (MetricsAnswer: 2xx, bad_batch,
 *						auth, config, rate_limited (429), transient (other
 *						answers to retry), network (no complete answer))
 *	splits				refused batches of more than one event cut in halves
 *	cycles				shipping cycles that claimed rows
 *	events_sent/failed/retried	rows acknowledged as accepted, marked failed,
 *						given another attempt, counted once the cycle's
 *						acknowledgement is done
 *	mappings[]			events acknowledged as accepted by mapping name
 *						(cut at 63 bytes; "" for rows inserted directly),
 *						METRICS_MAX_MAPPINGS names per database, the sent
 *						events of further names in mapping_sent_other
 *	latency				a histogram of, for each row acknowledged as
 *						accepted, the time from its created_at (the start
 *						of the transaction that inserted it: now()) to the
 *						acknowledgement (the instant the shipper recorded
 *						it, just before the acknowledging transaction
 *						commits); buckets of fixed bounds in seconds
 *
 * With the library preloaded the counters live in shared memory, one entry
 * per database (up to METRICS_MAX_DATABASES), and every process of that
 * database counts there: its delivery worker and any session running CALL
 * metronome_ship().  They start at zero when the server starts.  Without
 * preloading (or once every entry is taken: entries are claimed by the
 * first count in a database, not by a read, and kept until the server
 * stops), each backend counts in a copy of its own: metronome_metrics()
 * then shows what this session shipped (and says so:
 * metronome_counters_shared 0).
 *
 * Concurrency: every counter is a pg_atomic_uint64, added to without a
 * lock; an entry is claimed for a database by a compare-and-swap of its
 * dboid (entries are taken in order and never given back, so two
 * processes cannot claim two entries for one database).  A cycle's
 * latencies are gathered in process memory first (MetricsNoteAcked) and
 * added to the shared buckets once per cycle (MetricsEndCycle).  A reader
 * sees each counter atomically, not all of them at one instant; the
 * histogram's _count is rendered as the sum of the buckets read, so the
 * buckets and the count always agree.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "http.h"
#include "mb/pg_wchar.h"
#include "metrics.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#define METRICS_MAX_DATABASES 64

/* the sent events of one mapping: state 0 free, 1 being named, 2 named */
typedef struct MetricsMapping
{
	pg_atomic_uint32 state;
	char		name[METRICS_MAPPING_NAME_LEN];
	pg_atomic_uint64 sent;
} MetricsMapping;

/* one database's counters */
typedef struct MetricsEntry
{
	pg_atomic_uint32 dboid;		/* InvalidOid: free */
	pg_atomic_uint64 requests[METRICS_NANSWERS];
	pg_atomic_uint64 events_sent;
	pg_atomic_uint64 events_failed;
	pg_atomic_uint64 events_retried;
	pg_atomic_uint64 splits;
	pg_atomic_uint64 cycles;
	pg_atomic_uint64 latency_buckets[METRICS_NBUCKETS];
	pg_atomic_uint64 latency_sum_us;
	MetricsMapping mappings[METRICS_MAX_MAPPINGS];
	pg_atomic_uint64 mapping_sent_other;
} MetricsEntry;

/* the buckets' upper bounds in seconds; the last bucket is +Inf */
const double MetricsBucketBounds[METRICS_NBUCKETS - 1] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
	900, 3600
};

static const char *const answer_names[METRICS_NANSWERS] = {
	[METRICS_ANSWER_2XX] = "2xx",
	[METRICS_ANSWER_BAD_BATCH] = "bad_batch",
	[METRICS_ANSWER_AUTH] = "auth",
	[METRICS_ANSWER_CONFIG] = "config",
	[METRICS_ANSWER_RATE_LIMITED] = "rate_limited",
	[METRICS_ANSWER_TRANSIENT] = "transient",
	[METRICS_ANSWER_NETWORK] = "network",
};

static MetricsEntry *shared_entries = NULL;	/* when preloaded */
static MetricsEntry *mine = NULL;	/* this backend's entry, once known */
static bool mine_shared = false;
static MetricsEntry local_entry;	/* else this backend's own counters */
static bool local_ready = false;

/* the latencies and mappings of the cycle in progress, not yet added */
static struct
{
	uint64		buckets[METRICS_NBUCKETS];
	uint64		sum_us;
	int64		n;
	TimestampTz now;			/* the acknowledgement's instant */
	int			nmappings;
	const char *mapping[METRICS_MAX_MAPPINGS];	/* the cycle's memory; "" */
	uint64		mapping_sent[METRICS_MAX_MAPPINGS];
	uint64		mapping_other;
} cycle;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* set every counter of an entry to zero, and the entry free */
static void
metrics_init_entry(MetricsEntry *e)
{
	int			i;

	pg_atomic_init_u32(&e->dboid, InvalidOid);
	for (i = 0; i < METRICS_NANSWERS; i++)
		pg_atomic_init_u64(&e->requests[i], 0);
	pg_atomic_init_u64(&e->events_sent, 0);
	pg_atomic_init_u64(&e->events_failed, 0);
	pg_atomic_init_u64(&e->events_retried, 0);
	pg_atomic_init_u64(&e->splits, 0);
	pg_atomic_init_u64(&e->cycles, 0);
	for (i = 0; i < METRICS_NBUCKETS; i++)
		pg_atomic_init_u64(&e->latency_buckets[i], 0);
	pg_atomic_init_u64(&e->latency_sum_us, 0);
	for (i = 0; i < METRICS_MAX_MAPPINGS; i++)
	{
		pg_atomic_init_u32(&e->mappings[i].state, 0);
		e->mappings[i].name[0] = '\0';
		pg_atomic_init_u64(&e->mappings[i].sent, 0);
	}
	pg_atomic_init_u64(&e->mapping_sent_other, 0);
}

/* shmem_request_hook: reserve the entries */
static void
metrics_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(MetricsEntry) * METRICS_MAX_DATABASES));
}

/* shmem_startup_hook: create or attach to the entries */
static void
metrics_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared_entries = ShmemInitStruct("metronome metrics",
									 sizeof(MetricsEntry) * METRICS_MAX_DATABASES,
									 &found);
	if (!found)
	{
		int			i;

		for (i = 0; i < METRICS_MAX_DATABASES; i++)
			metrics_init_entry(&shared_entries[i]);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from DeliveryInit (while preloading): install the shared-memory
 * hooks.
 */
void
MetricsShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = metrics_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = metrics_shmem_startup;
}

/*
 * The entry this backend counts in: its database's shared entry (claimed
 * when there is none yet and create is set), else its own.  Without
 * create, NULL when the database has no shared entry yet (nothing of it
 * was counted since the server started).
 */
static MetricsEntry *
metrics_entry_ext(bool create)
{
	int			i;

	if (mine != NULL)
		return mine;
	if (shared_entries != NULL && OidIsValid(MyDatabaseId))
	{
		for (i = 0; i < METRICS_MAX_DATABASES && mine == NULL; i++)
		{
			MetricsEntry *e = &shared_entries[i];
			uint32		v = pg_atomic_read_u32(&e->dboid);

			if (v == InvalidOid)
			{
				if (!create)
					return NULL;
				/* free: take it, unless someone just did (for us, maybe) */
				if (pg_atomic_compare_exchange_u32(&e->dboid, &v, MyDatabaseId) ||
					v == MyDatabaseId)
					mine = e;
			}
			else if (v == MyDatabaseId)
				mine = e;
		}
		if (mine != NULL)
		{
			mine_shared = true;
			return mine;
		}
	}
	if (!local_ready)
	{
		metrics_init_entry(&local_entry);
		local_ready = true;
	}
	mine = &local_entry;
	mine_shared = false;
	return mine;
}

/* the entry to count in (see metrics_entry_ext) */
static MetricsEntry *
metrics_entry(void)
{
	return metrics_entry_ext(true);
}

/*
 * The label value of an answer class.
 */
const char *
MetricsAnswerName(MetricsAnswer answer)
{
	if ((int) answer < 0 || answer >= METRICS_NANSWERS)
		return "unknown";
	return answer_names[answer];
}

/*
 * Count one finished request by its HTTP class (http.h) and status (0: no
 * complete answer).
 */
void
MetricsCountAnswer(int http_class, long status)
{
	MetricsAnswer a;

	switch ((HttpClass) http_class)
	{
		case HTTP_CLASS_OK:
			a = METRICS_ANSWER_2XX;
			break;
		case HTTP_CLASS_BAD_BATCH:
			a = METRICS_ANSWER_BAD_BATCH;
			break;
		case HTTP_CLASS_AUTH:
			a = METRICS_ANSWER_AUTH;
			break;
		case HTTP_CLASS_CONFIG:
			a = METRICS_ANSWER_CONFIG;
			break;
		default:
			a = status == 0 ? METRICS_ANSWER_NETWORK :
				status == 429 ? METRICS_ANSWER_RATE_LIMITED :
				METRICS_ANSWER_TRANSIENT;
			break;
	}
	pg_atomic_fetch_add_u64(&metrics_entry()->requests[a], 1);
}

/*
 * Count one refused batch cut in halves.
 */
void
MetricsCountSplit(void)
{
	pg_atomic_fetch_add_u64(&metrics_entry()->splits, 1);
}

/*
 * A cycle begins: forget latencies noted by a cycle that ended in an error
 * before its acknowledgement was done.
 */
void
MetricsBeginCycle(void)
{
	memset(&cycle, 0, sizeof(cycle));
}

/*
 * One row of the cycle is acknowledged as accepted: note its latency (from
 * created_at to the cycle's first acknowledged row's instant).
 */
void
MetricsNoteAcked(TimestampTz created_at, const char *mapping)
{
	int64		us;
	int			i;

	/* by mapping: rows of one mapping mostly come together */
	if (mapping == NULL)
		mapping = "";
	for (i = cycle.nmappings - 1; i >= 0; i--)
		if (strcmp(cycle.mapping[i], mapping) == 0)
			break;
	if (i < 0 && cycle.nmappings < METRICS_MAX_MAPPINGS)
	{
		i = cycle.nmappings++;
		cycle.mapping[i] = mapping;
		cycle.mapping_sent[i] = 0;
	}
	if (i >= 0)
		cycle.mapping_sent[i]++;
	else
		cycle.mapping_other++;

	if (cycle.now == 0)
		cycle.now = GetCurrentTimestamp();
	us = (TIMESTAMP_NOT_FINITE(created_at) || created_at > cycle.now) ? 0 :
		cycle.now - created_at;
	for (i = 0; i < METRICS_NBUCKETS - 1; i++)
		if ((double) us <= MetricsBucketBounds[i] * USECS_PER_SEC)
			break;
	cycle.buckets[i]++;
	cycle.sum_us += (uint64) us;
	cycle.n++;
}

/*
 * Add n sent events of mapping to the entry's slot of that name (named now
 * when it has none: a free slot is taken by a compare-and-swap; two
 * processes naming one mapping at once may take two slots, which
 * MetricsRead adds together), or to the overflow.
 */
static void
metrics_add_mapping(MetricsEntry *e, const char *mapping, uint64 n)
{
	int			len = pg_mbcliplen(mapping, strlen(mapping), METRICS_MAPPING_NAME_LEN - 1);
	int			i;

	for (i = 0; i < METRICS_MAX_MAPPINGS; i++)
	{
		MetricsMapping *m = &e->mappings[i];
		uint32		st = pg_atomic_read_u32(&m->state);

		if (st == 0)
		{
			if (!pg_atomic_compare_exchange_u32(&m->state, &st, 1))
				continue;		/* someone else names it: try the next one */
			memcpy(m->name, mapping, len);
			m->name[len] = '\0';
			pg_write_barrier();
			pg_atomic_write_u32(&m->state, 2);
			st = 2;
		}
		else if (st == 2)
			pg_read_barrier();
		if (st == 2 && strncmp(m->name, mapping, len) == 0 && m->name[len] == '\0')
		{
			pg_atomic_fetch_add_u64(&m->sent, n);
			return;
		}
	}
	pg_atomic_fetch_add_u64(&e->mapping_sent_other, n);
}

/*
 * A cycle's acknowledgement is done: add its figures (ShipResult's) and
 * the latencies and mappings noted to the counters.
 */
void
MetricsEndCycle(int64 claimed, int64 accepted, int64 failed, int64 retried)
{
	MetricsEntry *e = metrics_entry();
	int			i;

	if (claimed > 0)
		pg_atomic_fetch_add_u64(&e->cycles, 1);
	if (accepted > 0)
		pg_atomic_fetch_add_u64(&e->events_sent, (uint64) accepted);
	if (failed > 0)
		pg_atomic_fetch_add_u64(&e->events_failed, (uint64) failed);
	if (retried > 0)
		pg_atomic_fetch_add_u64(&e->events_retried, (uint64) retried);
	if (cycle.n > 0)
	{
		for (i = 0; i < METRICS_NBUCKETS; i++)
			if (cycle.buckets[i] > 0)
				pg_atomic_fetch_add_u64(&e->latency_buckets[i], cycle.buckets[i]);
		pg_atomic_fetch_add_u64(&e->latency_sum_us, cycle.sum_us);
	}
	for (i = 0; i < cycle.nmappings; i++)
		metrics_add_mapping(e, cycle.mapping[i], cycle.mapping_sent[i]);
	if (cycle.mapping_other > 0)
		pg_atomic_fetch_add_u64(&e->mapping_sent_other, cycle.mapping_other);
	memset(&cycle, 0, sizeof(cycle));
}

/*
 * A copy of this database's counters.
 */
void
MetricsRead(MetricsView *out)
{
	MetricsEntry *e = metrics_entry_ext(false);
	int			i;

	if (e == NULL)
	{
		/* preloaded, and nothing counted here yet: zeros, taking no entry */
		memset(out, 0, sizeof(MetricsView));
		out->shared = true;
		return;
	}
	out->shared = mine_shared;
	for (i = 0; i < METRICS_NANSWERS; i++)
		out->requests[i] = pg_atomic_read_u64(&e->requests[i]);
	out->events_sent = pg_atomic_read_u64(&e->events_sent);
	out->events_failed = pg_atomic_read_u64(&e->events_failed);
	out->events_retried = pg_atomic_read_u64(&e->events_retried);
	out->splits = pg_atomic_read_u64(&e->splits);
	out->cycles = pg_atomic_read_u64(&e->cycles);
	for (i = 0; i < METRICS_NBUCKETS; i++)
		out->latency_buckets[i] = pg_atomic_read_u64(&e->latency_buckets[i]);
	out->latency_sum_us = pg_atomic_read_u64(&e->latency_sum_us);

	/* the named mapping slots, one per name */
	out->nmappings = 0;
	for (i = 0; i < METRICS_MAX_MAPPINGS; i++)
	{
		MetricsMapping *m = &e->mappings[i];
		uint64		n;
		int			j;

		if (pg_atomic_read_u32(&m->state) != 2)
			continue;
		pg_read_barrier();
		n = pg_atomic_read_u64(&m->sent);
		for (j = 0; j < out->nmappings; j++)
			if (strcmp(out->mapping_name[j], m->name) == 0)
				break;
		if (j == out->nmappings)
		{
			strlcpy(out->mapping_name[j], m->name, METRICS_MAPPING_NAME_LEN);
			out->mapping_sent[j] = 0;
			out->nmappings++;
		}
		out->mapping_sent[j] += n;
	}
	out->mapping_sent_other = pg_atomic_read_u64(&e->mapping_sent_other);
}
