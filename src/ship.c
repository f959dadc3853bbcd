/*-------------------------------------------------------------------------
 *
 * ship.c
 *	  One shipping cycle (claim, send, classify, acknowledge), shared by the
 *	  delivery worker and CALL metronome_ship(); retention; the queue
 *	  segment function; metronome_check_connection().
 *
 * The outbox is a queue in the manner of PgQ (design, measured against
 * 0.1.0's row-per-row marking, in the README's "How it works"):
 *
 *	metronome_queue		the rows as inserted, never updated: each stamped
 *						with its inserting transaction (txid, xid8), in three
 *						time segments (metronome_segment()).
 *	metronome_delivery	one row, the cursor: every row whose txid is
 *						visible in last_snap is acknowledged; cur_snap is the
 *						batch being delivered (the rows that became visible
 *						between the snapshots last_snap and cur_snap, taken
 *						by the shipper: PgQ's ticks), acknowledged up to
 *						(pos_txid, pos_id) in (txid, id) order; lease_* the
 *						shipper at work and the end of what it claimed.
 *	metronome_outbox_state	a row per exception only (failed, waiting for a
 *						retry, converted from 0.1.0), with the whole event.
 *	metronome_ticks		a row per finished batch, for sent_at.
 *	metronome_outbox	the view users see: every row with its status.
 *
 * A cycle is three steps, and only the first and last are transactions
 * (consecutive claims overlap: "Claiming ahead" below):
 *
 *	1. Claim (a short transaction that commits).  The shipper lock (a
 *	   session-level lock on the extension, ship_lock_shipper) is taken
 *	   without waiting, and held until the cycle ends however it ends; if
 *	   another process holds it the cycle stops ("busy"): concurrent
 *	   shippers never send the same pending row at once.  The cursor row
 *	   is locked FOR UPDATE.  Due exception rows come first (partial index
 *	   on (next_attempt_at, id)), then the next rows of the batch, the rows
 *	   of the transactions visible in cur_snap and not in last_snap, in
 *	   (txid, id) order after the cursor.  As PgQ does, the batch is read
 *	   as txid ranges (ship_claim_ranges): each transaction of last_snap's
 *	   xip list that has committed by cur_snap, then [xmax(last_snap),
 *	   xmax(cur_snap)) cut around the transactions still running at
 *	   cur_snap; one statement per range:
 *
 *		SELECT ... FROM metronome_queue
 *		 WHERE txid >= lo AND txid < hi
 *		   AND visible(txid, cur_snap) AND NOT visible(txid, last_snap)
 *		 ORDER BY txid, id LIMIT n
 *
 *	   (in the range that holds the cursor, (txid, id) > (pos_txid,
 *	   pos_id) replaces txid >= lo, so that the scan starts at the cursor),
 *
 *	   an index range on (txid, id) whatever the statistics say: the
 *	   statement is planned with seqscan, bitmapscan and sort disabled (a
 *	   GUC nest level of the claim only), so the plan right after a
 *	   TRUNCATE or a restore is the plan after a million rows
 *	   (test/t/111_claim_plan.pl).  Its cost is the rows claimed plus one
 *	   probe per range: neither the acknowledged rows committed while
 *	   last_snap's oldest transaction ran nor the rows of transactions
 *	   still running are walked over, however long such transactions
 *	   last (a single range from xmin(last_snap) walked both, which made a
 *	   claim under four concurrent loaders cost 15-45 ms).  The lease
 *	   (pid, expiry, end of the claim) is
 *	   recorded and the transaction commits.
 *	2. Send, with no transaction open in the worker (a procedure's
 *	   transaction with no xid and no snapshot in CALL metronome_ship()):
 *	   batches of batch_size, max_inflight at once (http.c's I/O thread
 *	   runs them; the backend handles each answer as it comes):
 *		2xx			   rows accepted
 *		400/413/422	   split the batch in halves and send each; a single
 *					   event still refused -> failed, last_error = message
 *		401/403		   no row changes; auth error state; gate closed
 *		404/405/501... no row changes; config error state; gate closed
 *		transient	   the rows get attempts + 1 and a next attempt
 *					   (backoff or Retry-After), failed after max_attempts;
 *					   gate closed
 *	   After a transient or auth/config answer no new request starts.
 *	3. Acknowledge (a short transaction): ONE update of the cursor row
 *	   moves it over the longest prefix of the claim whose rows all have
 *	   an outcome (a finished batch also adds one metronome_ticks row).
 *	   Only exceptions write a row each: failed and retried rows of that
 *	   prefix are copied into metronome_outbox_state, and exception rows
 *	   that were sent are updated.  The cursor update must match our
 *	   lease and every exception update must touch exactly its rows, or
 *	   the transaction fails: the rows are then sent again (at least once;
 *	   Metronome dedups on transaction_id), and the worker backs off.
 *
 * Claiming ahead (ship_deliver, ship_claim_ahead).  Steps 1 and 3 would
 * leave Metronome idle while the worker claims and acknowledges, so the
 * steps of consecutive claims overlap.  Once every batch of a claim N has
 * been handed to the HTTP client (its I/O thread runs the requests,
 * http.c), and N filled its claim without reaching the end of the batch,
 * the rows after N are claimed as N+1 in another short transaction: it
 * re-reads the cursor row, goes on only if the lease is still N's (our pid
 * and N's token), claims from N's last (txid, id), takes no exception rows
 * (N's acknowledgement has not yet said what became of them), and records
 * N+1's end and a new token in the lease.  N+1's batches queue behind N's.
 * N is acknowledged once all its answers are in, always before N+1:
 *
 *	every row of N has an outcome   the cursor moves to N's end and the
 *									lease (N+1's token) is kept: N+1 is now
 *									the claim, and may claim ahead in turn
 *	N leaves a gap                  (rows with no answer: a transient
 *									answer or the cycle's time stopped it)
 *									the cursor moves over N's prefix, the
 *									lease is cleared, N+1's requests are
 *									cancelled, and its rows, though
 *									Metronome may have them, are claimed
 *									and sent again later (at least once)
 *
 * so the cursor never passes a row without an outcome, whatever order the
 * answers come in (test/t/119_claim_ahead.pl).  At most one claim is
 * ahead; none is made after the cycle's time (CYCLE_BUDGET_MS), nor when
 * metronome.max_events or the rate limit bounds what a cycle may claim.
 *
 * Transactions beside requests.  The claim ahead and N's acknowledgement
 * run in the backend while the I/O thread has N's or N+1's requests out.
 * None of them spans a request: each touches a bounded number of rows
 * (the cursor row, at most a claim's rows, the claim's exceptions) and
 * commits without waiting on the network, so its length, and the time it
 * holds a snapshot back from vacuum, does not depend on how slow
 * Metronome is.  The backend waits for answers (HttpWait) only with no
 * transaction of its own open, and a row goes out only after the claim
 * that holds it has committed (HttpStart follows ship_xact_commit), so a
 * rolled-back row never leaves.  A crash between any two of these steps
 * is a crash in the plain cycle: the cursor has moved only over answered
 * rows, the lease is stale, and everything after the cursor is sent again.
 *
 * A crash or an error anywhere leaves the cursor where it was, and the
 * shipper lock free (released by the cycle's error path, or by the exit of
 * its process): the next claim takes the stale lease over at once, and the
 * rows it covered are sent again.
 *
 * Retention (ShipDeleteSent): a segment leaves by TRUNCATE when it is not
 * the current one nor the previous one (so all it holds is older than
 * retain_sent), everything in it is acknowledged, and its lock is free;
 * exception rows that were sent leave by DELETE (they are the exceptions).
 *
 * Restore: txids mean something only in the cluster that stamped them.
 * The cursor row records the cluster's system identifier; a claim that
 * finds another one (a restore into a new cluster, or a new install)
 * re-stamps the rows once: acknowledged ones to txid 0, pending ones to
 * the claim's own transaction, and restarts the cursor after them.
 *
 * For benchmarks: ShipCycle(SHIP_CALLER_XACT or SHIP_PROCEDURE, true,
 * max_events, &result) is the database-only floor of this design (the
 * same claim and acknowledgement, every row "accepted", no HTTP).  A
 * benchmark-only module loaded next to metronome.so (PostgreSQL loads
 * libraries RTLD_GLOBAL) declares it from delivery.h and calls it, e.g.
 * from a C procedure (SHIP_PROCEDURE, after SPI_connect_ext(
 * SPI_OPT_NONATOMIC): claim and acknowledgement then commit as the worker
 * does) or a function (SHIP_CALLER_XACT: both in the caller's
 * transaction).  It is not in the extension's SQL.
 *
 * Why this design (measured on the project's 2-core machine, loaded by
 * other work, 200,000 pending rows): 0.1.0 claimed rows FOR UPDATE SKIP
 * LOCKED, held the transaction across HTTP and marked every row sent by a
 * non-HOT UPDATE: its drain to the Python mock was 15,000-22,800 events/s,
 * its database-only floor 26,800-37,900.  Here the drain took 1.24-2.94 s
 * (68,000-161,000 events/s; the mock, serving about 1,600 requests/s, is
 * the bottleneck at the fast end) and the floor (ShipCycle dry run,
 * SHIP_PROCEDURE) 1.31-1.40 s (143,000-153,000 events/s).  The full
 * figures are test/bench/'s.
 *
 * Rate limit (ratelimit.c): a cycle starts only when the server's bucket
 * could give a batch its tokens (else it returns rate_limited, and the
 * worker sleeps on its latch, CALL metronome_ship() commits and sleeps),
 * claims no more than the limit lets go within the cycle's time, and takes
 * a batch's tokens before each request starts; while they come it waits
 * on the HTTP client (requests out) or its latch (none), never past the
 * cycle's time.  A 429 without Retry-After halves the rate (the adaptive
 * slowdown), successes win it back; each change of regime is logged.
 *
 * Backoff: after n consecutive transient failures, min(max_backoff,
 * 500 ms * 2^(n-1)) * (1 - 0.25 * random), as Metronome's SDKs do; a
 * Retry-After or retry-after-ms answer replaces it (capped by
 * max_backoff).  The shared gate holds every request until it has passed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "delivery.h"
#include "encoding.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "http.h"
#include "metronome.h"
#include "metrics.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pg_compat.h"
#include "postmaster/interrupt.h"
#include "ratelimit.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_ship);
PG_FUNCTION_INFO_V1(metronome_check_connection);
PG_FUNCTION_INFO_V1(metronome_segment);

/* A cycle claims enough rows for this many rounds of max_inflight batches. */
#define CLAIM_ROUNDS 8

/*
 * A cycle starts no new request after this long, and claims nothing ahead;
 * the batches of a claim made ahead that are not out yet get until
 * CYCLE_AHEAD_BUDGET_MS (a fast Metronome sends them within milliseconds;
 * cutting them at CYCLE_BUDGET_MS dropped a claim at the end of every
 * cycle of a drain, and halved the next cycle's claim as if Metronome were
 * slow).  Both end well inside the lease (see ship_claim).
 */
#define CYCLE_BUDGET_MS 1000
#define CYCLE_AHEAD_BUDGET_MS (2 * CYCLE_BUDGET_MS)

/* HttpWait's longest sleep: how fast SIGTERM and cancels are noticed. */
#define WAIT_SLICE_MS 50

/* A lease outlives its cycle's longest run by this much. */
#define LEASE_SLACK_MS 10000

/* The instants RFC 3339 can express: years 0000 to 9999 (Unix time, us). */
#define MIN_RFC3339_US INT64CONST(-62167219200000000)
#define MAX_RFC3339_US INT64CONST(253402300800000000)

/* What became of a claimed row in this cycle. */
typedef enum RowOutcome
{
	OUTCOME_NONE = 0,			/* not sent (or no answer that counts) */
	OUTCOME_SENT,
	OUTCOME_FAILED,
	OUTCOME_RETRY
} RowOutcome;

/* One claimed row. */
typedef struct ShipRow
{
	int64		id;
	bool		from_state;		/* an exception row (else a queue row) */
	uint64		txid;			/* queue rows: the inserting transaction (xid8) */
	int32		attempts;		/* exception rows: attempts so far */
	char	   *mapping;		/* NULL when inserted directly */
	TimestampTz ts;
	TimestampTz created_at;
	size_t		props_len;		/* strlen(srv.properties) */
	HttpEvent	ev;				/* what goes out: text in UTF-8 */
	HttpEvent	srv;			/* the same in the server encoding, for
								 * what is written back and for messages */
	RowOutcome	outcome;
	const char *error;			/* FAILED, RETRY */
	TimestampTz next_at;		/* RETRY */
} ShipRow;

/* Transaction ids lo <= txid < hi (a piece of a batch, ship_claim_ranges). */
typedef struct TxidRange
{
	uint64		lo;
	uint64		hi;
} TxidRange;

/* A batch: n claimed rows (pointers into the cycle's rows). */
typedef struct ShipBatch
{
	ShipRow   **r;
	int			n;
	struct ShipBatch *parent;	/* the refused batch this is a half of */
	struct Cycle *cycle;		/* whose rows these are */
	char	   *error;			/* why this batch was refused (if it was) */
	int			halves_alike;	/* halves refused with that same answer */
} ShipBatch;

/*
 * One cycle's state, in its own memory context (it outlives the claim's
 * transaction).  Batches wait in a deque: claimed ones appended at the
 * tail, the halves of a refused batch pushed at the head.
 */
typedef struct Cycle
{
	MemoryContext cxt;
	ShipBatch **q;
	int			head;
	int			tail;
	int			qcap;
	HttpRequest **reqs;
	int			nreqs;
	int			reqcap;

	ShipRow    *rows;			/* exception rows first, then queue rows */
	int			nrows;
	int			nstate;
	int			limit;

	/* the claim */
	char	   *pos_txid;		/* the cursor before the claim */
	int64		pos_id;
	bool		final;			/* the claim reached the end of the batch */
	TimestampTz lease_until;	/* with our pid: the lease's token */
	TimestampTz started;
	bool		again;			/* claim again at once (after a re-stamp) */
	int			inflight;		/* requests of this claim not yet answered */
} Cycle;

/*
 * The queue claim's rows go from the executor's slot straight into the
 * cycle's rows: no copy of each into an SPI tuple table, and its columns
 * deformed once (reading them one by one from a copied tuple walked the
 * tuple again for every column after a text: about a tenth of the
 * worker's time in a drain).
 */
typedef struct ClaimDest
{
	DestReceiver pub;
	Cycle	   *c;
} ClaimDest;

/* SPI plans, kept across transactions for one installation. */
static struct
{
	Oid			relid;			/* of metronome_delivery */
	Oid			extoid;			/* of the extension: the shipper lock's tag */
	SPIPlanPtr	dedup;
	SPIPlanPtr	lock;
	SPIPlanPtr	main;			/* a txid range of the batch */
	SPIPlanPtr	main_after;		/* the rest of one after the cursor */
	SPIPlanPtr	state;
	SPIPlanPtr	lease;
	SPIPlanPtr	roll_empty;
	SPIPlanPtr	ack;
	SPIPlanPtr	ack_keep;		/* ack, keeping the lease of a claim ahead */
	SPIPlanPtr	ack_final;
	SPIPlanPtr	exc_insert;
	SPIPlanPtr	state_sent;
	SPIPlanPtr	state_failed;
	SPIPlanPtr	state_retry;
	SPIPlanPtr	next_due;
	SPIPlanPtr	delete_sent;
} plans;

static HttpClient *client = NULL;

/* the shipper lock (ship_lock_shipper), while this process holds it */
static LOCKTAG shipper_tag;
static bool shipper_locked = false;
static int	claim_rounds = CLAIM_ROUNDS;	/* adapts to Metronome's speed */

/*
 * The memory of the (at most two) live claims, in the worker: reset and
 * kept, so that a drain does not give its megabytes back to malloc and take
 * them again for every claim (about 5% of the worker's CPU in a drain of
 * test/bench/delivery.sh).  Each context keeps a first block of
 * CYCLE_CXT_KEEP, which holds the texts of a full claim of small events
 * (the row array, larger than a chunk, is a block of its own).  A user's
 * backend gives it back with ShipReleaseMemory once its cycles are done
 * (CALL metronome_ship()); after an error it stays until the next call
 * or the end of the session.
 */
#define CYCLE_CXT_KEEP (2 * 1024 * 1024)
static MemoryContext cycle_pool[2];
static int	ncycle_pool = 0;

/*
 * The cycle (or connection check) whose requests are out.  Its PG_TRY
 * block frees them; a FATAL (SIGTERM mid-request) skips that and ends the
 * process, so ship_exit frees them then.
 */
static Cycle *pending = NULL;
static Cycle *pending_ahead = NULL; /* the claim made while pending's
									 * requests were out (ship_deliver) */

static double ship_jitter(void);
static int64 ship_gate_delay(int64 retry_after_ms, double random01);
static SPIPlanPtr ship_prepare(const char *sql, int nargs, Oid *argtypes);
static void ship_free_plans(void);
static void ship_ensure_plans(Oid relid);
static int	ship_claim_ranges(uint64 last_xmax, const uint64 *last_xip, int nlast,
							  uint64 up_xmax, const uint64 *up_xip, int nup,
							  TxidRange *out);
static int	ship_xid_array(Datum arr, uint64 **out);
static int	ship_claim_queue(Cycle *c, const TxidRange *ranges, int nranges,
							 uint64 pos_txid, int want, Datum last_bin,
							 Datum upper_bin);
static int	ship_run(SPIPlanPtr plan, Datum *values, const char *nulls,
					 bool read_only, long count);
static void ship_xact_begin(ShipContext ctx);
static void ship_xact_commit(ShipContext ctx);
static char *ship_text(HeapTuple tup, TupleDesc desc, int col);
static char *ship_text_value(Datum d, bool isnull);
static void ship_fill_event(ShipRow *r);
static void ship_read_row(ShipRow *r, const Datum *v, const bool *isnull);
static bool claim_dest_receive(TupleTableSlot *slot, DestReceiver *self);
static void claim_dest_startup(DestReceiver *self, int operation, TupleDesc typeinfo);
static void claim_dest_nothing(DestReceiver *self);
static void ship_set_error(const char *message);
static bool ship_to_unix_us(TimestampTz ts, int64 *us);
static void queue_append(Cycle *c, ShipBatch *b);
static void queue_push(Cycle *c, ShipBatch *b);
static void ship_release_requests(Cycle *c);
static void ship_exit(int code, Datum arg);
static HttpClient *get_client(void);
static void ship_fixup(void);
static bool ship_lock_shipper(void);
static void ship_unlock_shipper(void);
static int	ship_claim(Cycle *c, int64 max_events, ShipResult *result);
static void ship_make_batches(Cycle *c, int from, int to);
static HttpRequest *ship_start_batch(HttpClient *http, ShipBatch *b,
									 bool *started);
static Cycle *ship_new_cycle(TimestampTz now);
static void ship_free_cycle(Cycle *c);
static void ship_claim_bounds(HeapTuple tup, TupleDesc desc, Datum *last_bin,
							  Datum *upper_bin, TxidRange **ranges, int *nranges);
static int	ship_claim_ahead(Cycle *n, Cycle *prev, ShipResult *result);
static bool ship_may_claim_ahead(Cycle *c);
static void ship_deliver(ShipContext ctx, int64 max_events, ShipResult *result);
static void ship_outcome(ShipBatch *b, RowOutcome outcome, const char *error,
						 TimestampTz next_at);
static bool ship_blanket_refusal(HttpRequest *req, ShipBatch *b, ShipResult *result);
static bool ship_handle_done(HttpRequest *req, ShipResult *result);
static bool ship_acknowledge(Cycle *c, Cycle *next, ShipResult *result);
static int64 ship_retry_delay(ShipBatch *b, int64 retry_after_ms,
							  double random01);
static void ship_rate_change(RateLimitChange change, double rate,
							 double observed);
static void ship_rate_wait(long ms, bool *woken);
static int64 ship_rate_cap(int64 max_events);

/*
 * Backoff delay (ms) after `failures` consecutive transient failures.
 */
int64
ShipBackoffDelay(int failures, double random01)
{
	return HttpBackoffDelay(failures, SHIP_BACKOFF_BASE_MS,
							metronome_max_backoff, random01);
}

/*
 * How long the shared gate stays closed after one more failure: the
 * server's Retry-After when it gave one, else the backoff of the gate's
 * consecutive failures.
 */
static int64
ship_gate_delay(int64 retry_after_ms, double random01)
{
	if (retry_after_ms >= 0)
		return retry_after_ms;
	return ShipBackoffDelay(StatusGateFailures() + 1, random01);
}

/* a random number in [0, 1) for jitter */
static double
ship_jitter(void)
{
	return pg_prng_double(&pg_global_prng_state);
}

/* prepare one statement and keep it */
static SPIPlanPtr
ship_prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/* forget every plan (the extension was re-created) */
static void
ship_free_plans(void)
{
	SPIPlanPtr *all[] = {&plans.dedup, &plans.lock, &plans.main, &plans.main_after, &plans.state,
		&plans.lease, &plans.roll_empty, &plans.ack, &plans.ack_keep, &plans.ack_final,
		&plans.exc_insert, &plans.state_sent, &plans.state_failed,
	&plans.state_retry, &plans.next_due, &plans.delete_sent};
	int			i;

	for (i = 0; i < (int) lengthof(all); i++)
	{
		if (*all[i] != NULL)
			SPI_freeplan(*all[i]);
		*all[i] = NULL;
	}
	plans.relid = InvalidOid;
}

/*
 * Make sure the plans are for this installation (relid of
 * metronome_delivery).  Runs inside SPI, with a snapshot.
 */
static void
ship_ensure_plans(Oid relid)
{
	const char *s;
	char	   *d;

	if (plans.relid == relid)
		return;
	ship_free_plans();
	s = MetronomeSchemaName();
	d = psprintf("(SELECT * FROM %s.metronome_delivery dd"
				 " ORDER BY dd.system_id IS NULL LIMIT 1)", s);

	plans.dedup = ship_prepare(psprintf(
										"DELETE FROM %1$s.metronome_delivery WHERE system_id IS NULL"
										" AND EXISTS (SELECT 1 FROM %1$s.metronome_delivery d2"
										" WHERE d2.system_id IS NOT NULL)", s), 0, NULL);
	plans.lock = ship_prepare(psprintf(
									   "SELECT lease_pid, lease_until, system_id::text,"
									   " cur_snap::text, pos_txid::text, pos_id,"
									   " pg_catalog.pg_current_snapshot()::text, last_snap, u.snap,"
									   " pg_catalog.pg_snapshot_xmax(last_snap),"
									   " ARRAY(SELECT x FROM pg_catalog.pg_snapshot_xip(last_snap) x ORDER BY x),"
									   " pg_catalog.pg_snapshot_xmax(u.snap),"
									   " ARRAY(SELECT x FROM pg_catalog.pg_snapshot_xip(u.snap) x ORDER BY x)"
									   " FROM %s.metronome_delivery,"
									   " LATERAL (SELECT coalesce(cur_snap, pg_catalog.pg_current_snapshot()) AS snap) u"
									   " FOR UPDATE OF metronome_delivery", s), 0, NULL);

	/*
	 * A range's rows, or those after the cursor when it is inside the range:
	 * one lower bound each, so that the index scan starts at it (with both a
	 * txid bound and the row comparison, btree starts at the txid bound and
	 * walks every row before the cursor).  $6 is unused by the first.
	 */
#define SHIP_CLAIM_SQL(lower) \
	"SELECT q.txid, q.id, q.transaction_id, q.customer_id, q.event_type," \
	" q.\"timestamp\", q.properties::text, q.mapping, q.created_at" \
	" FROM %s.metronome_queue q" \
	" WHERE " lower " AND q.txid < $2" \
	" AND pg_catalog.pg_visible_in_snapshot(q.txid, $5)" \
	" AND NOT pg_catalog.pg_visible_in_snapshot(q.txid, $4)" \
	" ORDER BY q.txid, q.id LIMIT $3"
	plans.main = ship_prepare(psprintf(SHIP_CLAIM_SQL("q.txid >= $1"), s),
							  6, (Oid[]) {XID8OID, XID8OID, INT8OID,
		PG_SNAPSHOTOID, PG_SNAPSHOTOID, INT8OID});
	plans.main_after = ship_prepare(psprintf(SHIP_CLAIM_SQL("(q.txid, q.id) > ($1, $6)"), s),
									6, (Oid[]) {XID8OID, XID8OID, INT8OID,
		PG_SNAPSHOTOID, PG_SNAPSHOTOID, INT8OID});
#undef SHIP_CLAIM_SQL

	plans.state = ship_prepare(psprintf(
										"SELECT id, transaction_id, customer_id, event_type, \"timestamp\","
										" properties::text, mapping, created_at, attempts"
										" FROM %s.metronome_outbox_state"
										" WHERE status = 'pending' AND next_attempt_at <= $1"
										" ORDER BY next_attempt_at, id LIMIT $2", s),
							   2, (Oid[]) {TIMESTAMPTZOID, INT8OID});
	plans.lease = ship_prepare(psprintf(
										"UPDATE %s.metronome_delivery SET cur_snap = $1::pg_catalog.pg_snapshot,"
										" lease_pid = $2, lease_until = $3, lease_txid = $4::pg_catalog.xid8,"
										" lease_id = $5, lease_final = $6", s),
							   6, (Oid[]) {TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID, INT8OID, BOOLOID});
	plans.roll_empty = ship_prepare(psprintf(
											 "WITH t AS (INSERT INTO %1$s.metronome_ticks"
											 " SELECT pg_catalog.pg_snapshot_xmax(cur_snap), cur_snap,"
											 " coalesce(acked_at, pg_catalog.now())"
											 " FROM %1$s.metronome_delivery WHERE cur_snap IS NOT NULL AND pos_id > 0)"
											 " UPDATE %1$s.metronome_delivery SET last_snap = cur_snap, cur_snap = NULL,"
											 " pos_txid = '0', pos_id = 0 WHERE cur_snap IS NOT NULL", s), 0, NULL);
	plans.ack = ship_prepare(psprintf(
									  "UPDATE %s.metronome_delivery SET pos_txid = $1::pg_catalog.xid8, pos_id = $2,"
									  " acked_at = CASE WHEN $5 THEN pg_catalog.now() ELSE acked_at END,"
									  " lease_pid = NULL, lease_until = NULL, lease_txid = NULL,"
									  " lease_id = NULL, lease_final = NULL"
									  " WHERE lease_pid = $3 AND lease_until = $4", s),
							 5, (Oid[]) {TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID, BOOLOID});
	plans.ack_keep = ship_prepare(psprintf(
										   "UPDATE %s.metronome_delivery SET pos_txid = $1::pg_catalog.xid8, pos_id = $2,"
										   " acked_at = CASE WHEN $5 THEN pg_catalog.now() ELSE acked_at END"
										   " WHERE lease_pid = $3 AND lease_until = $4", s),
								  5, (Oid[]) {TEXTOID, INT8OID, INT4OID, TIMESTAMPTZOID, BOOLOID});
	plans.ack_final = ship_prepare(psprintf(
											"WITH t AS (INSERT INTO %1$s.metronome_ticks"
											" SELECT pg_catalog.pg_snapshot_xmax(cur_snap), cur_snap, pg_catalog.now()"
											" FROM %1$s.metronome_delivery"
											" WHERE lease_pid = $1 AND lease_until = $2 AND cur_snap IS NOT NULL)"
											" UPDATE %1$s.metronome_delivery SET last_snap = cur_snap, cur_snap = NULL,"
											" pos_txid = '0', pos_id = 0, acked_at = pg_catalog.now(),"
											" lease_pid = NULL, lease_until = NULL, lease_txid = NULL,"
											" lease_id = NULL, lease_final = NULL"
											" WHERE lease_pid = $1 AND lease_until = $2 AND cur_snap IS NOT NULL", s),
								   2, (Oid[]) {INT4OID, TIMESTAMPTZOID});
	plans.exc_insert = ship_prepare(psprintf(
											 "INSERT INTO %s.metronome_outbox_state (id, transaction_id, customer_id,"
											 " event_type, \"timestamp\", properties, mapping, status, attempts,"
											 " next_attempt_at, last_error, created_at)"
											 " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, 1, $9, $10, $11)", s),
									11, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
		TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TIMESTAMPTZOID});
	plans.state_sent = ship_prepare(psprintf(
											 "UPDATE %s.metronome_outbox_state SET status = 'sent', sent_at = pg_catalog.now(),"
											 " attempts = LEAST(attempts, 2147483646) + 1, last_error = NULL"
											 " WHERE id = ANY ($1) AND status = 'pending'", s),
									1, (Oid[]) {INT8ARRAYOID});
	plans.state_failed = ship_prepare(psprintf(
											   "UPDATE %s.metronome_outbox_state SET status = 'failed',"
											   " attempts = LEAST(attempts, 2147483646) + 1, last_error = $2"
											   " WHERE id = $1 AND status = 'pending'", s),
									  2, (Oid[]) {INT8OID, TEXTOID});
	plans.state_retry = ship_prepare(psprintf(
											  "UPDATE %s.metronome_outbox_state"
											  " SET attempts = LEAST(attempts, 2147483646) + 1,"
											  " last_error = $3, next_attempt_at = $2,"
											  " status = CASE WHEN $4 > 0 AND LEAST(attempts, 2147483646) + 1 >= $4"
											  " THEN 'failed' ELSE 'pending' END"
											  " WHERE id = $1 AND status = 'pending'"
											  " RETURNING status = 'failed'", s),
									 4, (Oid[]) {INT8OID, TIMESTAMPTZOID, TEXTOID, INT4OID});
	plans.next_due = ship_prepare(psprintf(
										   "SELECT min(next_attempt_at) FROM %s.metronome_outbox_state"
										   " WHERE status = 'pending'", s), 0, NULL);
	plans.delete_sent = ship_prepare(psprintf(
											  "DELETE FROM %1$s.metronome_outbox_state WHERE id = ANY (ARRAY("
											  "SELECT id FROM %1$s.metronome_outbox_state"
											  " WHERE status = 'sent' AND sent_at < $1"
											  " ORDER BY sent_at LIMIT $2))", s),
									 2, (Oid[]) {TIMESTAMPTZOID, INT8OID});
	pfree(d);
	plans.extoid = get_extension_oid("metronome", false);
	plans.relid = relid;
}

/*
 * The txid ranges that hold a batch's rows, in ascending order (PgQ's
 * batch_event_sql does the same).  The batch is the rows of transactions
 * visible in `up` (cur_snap) and not in `last` (last_snap).  Below
 * xmax(last) those are only the transactions that were in progress at
 * `last` (its xip list) and have committed by `up`: one single-txid range
 * each.  From xmax(last) to xmax(up) it is everything but the transactions
 * still in progress at `up`: the ranges between them.  So the index is
 * never walked over rows acknowledged already (those of transactions that
 * committed while last_snap's oldest one ran) nor over the rows of
 * transactions still running (invisible, yet each a heap fetch), however
 * long such transactions last.  Returns the number of ranges (at most
 * nlast + nup + 1) written to out.
 */
static int
ship_claim_ranges(uint64 last_xmax, const uint64 *last_xip, int nlast,
				  uint64 up_xmax, const uint64 *up_xip, int nup, TxidRange *out)
{
	int			n = 0;
	int			i;
	int			j = 0;
	uint64		lo;

	for (i = 0; i < nlast; i++)
	{
		uint64		x = last_xip[i];

		if (x >= up_xmax)
			continue;
		while (j < nup && up_xip[j] < x)
			j++;
		if (j < nup && up_xip[j] == x)
			continue;			/* still running at `up` */
		out[n].lo = x;
		out[n].hi = x + 1;
		n++;
	}
	lo = last_xmax;
	for (i = 0; i < nup; i++)
	{
		uint64		y = up_xip[i];

		if (y < lo || y >= up_xmax)
			continue;
		if (y > lo)
		{
			out[n].lo = lo;
			out[n].hi = y;
			n++;
		}
		lo = y + 1;
	}
	if (lo < up_xmax)
	{
		out[n].lo = lo;
		out[n].hi = up_xmax;
		n++;
	}
	return n;
}

/* the elements of an xid8[] (sorted by the lock query), in c's context */
static int
ship_xid_array(Datum arr, uint64 **out)
{
	ArrayType  *a = DatumGetArrayTypeP(arr);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(XID8OID, &typlen, &typbyval, &typalign);
	deconstruct_array(a, XID8OID, typlen, typbyval, typalign, &elems, &nulls, &n);
	*out = palloc(sizeof(uint64) * Max(n, 1));
	for (i = 0; i < n; i++)
		(*out)[i] = U64FromFullTransactionId(DatumGetFullTransactionId(elems[i]));
	return n;
}

/*
 * Claim up to `want` queue rows of the batch, in (txid, id) order after the
 * cursor (pos_txid, pos_id): one index range scan per txid range
 * (ship_claim_ranges) until enough rows came.  The statement is planned
 * (once: a generic plan, kept) with sequential scans, bitmap scans and
 * sorts disabled, so that its plan is the (txid, id) index range whatever
 * the statistics say; the settings hold for these statements only (a GUC
 * nest level, as a function's SET clause does).  Returns the rows added to
 * c->rows.
 */
static int
ship_claim_queue(Cycle *c, const TxidRange *ranges, int nranges, uint64 pos_txid,
				 int want, Datum last_bin, Datum upper_bin)
{
	static const Oid types[6] = {XID8OID, XID8OID, INT8OID, PG_SNAPSHOTOID,
	PG_SNAPSHOTOID, INT8OID};
	int			nest = NewGUCNestLevel();
	int			got = 0;
	int			k;
	ParamListInfo params = makeParamList(6);
	ClaimDest	dest;
	SPIExecuteOptions opts;

	MetronomePinPlans(false);

	/* any kind but DestNone (SPI would report no rows) and DestSPI */
	dest.pub.mydest = DestTuplestore;
	dest.pub.receiveSlot = claim_dest_receive;
	dest.pub.rStartup = claim_dest_startup;
	dest.pub.rShutdown = claim_dest_nothing;
	dest.pub.rDestroy = claim_dest_nothing;
	dest.c = c;
	for (k = 0; k < 6; k++)
	{
		params->params[k].isnull = false;
		params->params[k].pflags = PARAM_FLAG_CONST;
		params->params[k].ptype = types[k];
	}
	memset(&opts, 0, sizeof(opts));
	opts.params = params;
	opts.dest = &dest.pub;

	/*
	 * read_only = false: the statement runs under a snapshot of its own,
	 * taken now, so at least as new as the batch's upper bound (cur_snap,
	 * which the lock statement took).  Under the transaction's older
	 * snapshot, the rows of a transaction that committed between the two
	 * would be inside the batch but invisible here, and the cursor would
	 * move past them unsent (test/t/118_concurrent_commits.pl).
	 */
	opts.read_only = false;
	for (k = 0; k < nranges && got < want; k++)
	{
		bool		after;
		int			before = c->nrows;
		int			ret;

		if (ranges[k].hi <= pos_txid)
			continue;			/* all of it acknowledged already */
		/* the cursor inside this range: start after it */
		after = (pos_txid >= ranges[k].lo);
		params->params[0].value =
			FullTransactionIdGetDatum(FullTransactionIdFromU64(after ? pos_txid :
															   ranges[k].lo));
		params->params[1].value = FullTransactionIdGetDatum(FullTransactionIdFromU64(ranges[k].hi));
		params->params[2].value = Int64GetDatum(want - got);
		params->params[3].value = last_bin;
		params->params[4].value = upper_bin;
		params->params[5].value = Int64GetDatum(c->pos_id);
		ret = SPI_execute_plan_extended(after ? plans.main_after : plans.main, &opts);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "claiming outbox rows failed: %s", SPI_result_code_string(ret));
		got += c->nrows - before;
	}
	AtEOXact_GUC(true, nest);
	return got;
}

/* run a prepared statement; the caller's transaction has a snapshot */
static int
ship_run(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		 long count)
{
	return SPI_execute_plan(plan, values, nulls, read_only, count);
}

/*
 * Begin a short transaction of the cycle (claim, acknowledgement) with SPI
 * connected and a snapshot.  In SHIP_PROCEDURE the procedure's transaction
 * is already there (SPI connected non-atomic by the caller).
 */
static void
ship_xact_begin(ShipContext ctx)
{
	MemoryContext old = CurrentMemoryContext;

	if (ctx == SHIP_OWN_XACTS)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
	}
	if (ctx != SHIP_PROCEDURE && SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	/* the cycle allocates in its own context, whatever the transaction */
	MemoryContextSwitchTo(old);
}

/*
 * End it: commit (SHIP_OWN_XACTS: no transaction is left open;
 * SHIP_PROCEDURE: SPI_commit starts the next one, with no xid and no
 * snapshot), or nothing in the caller's transaction.
 */
static void
ship_xact_commit(ShipContext ctx)
{
	MemoryContext old = CurrentMemoryContext;

	PopActiveSnapshot();
	if (ctx != SHIP_PROCEDURE)
		SPI_finish();
	if (ctx == SHIP_OWN_XACTS)
		CommitTransactionCommand();
	else if (ctx == SHIP_PROCEDURE)
		SPI_commit();
	MemoryContextSwitchTo(old);
}

/* a text column of an SPI row, copied into the current context; NULL if null */
static char *
ship_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The outgoing text of one event, set in this one place: the fields were
 * read as the server's text and go out as UTF-8 (encoding.c; an event with
 * a character that has no UTF-8 form fails, alone); the timestamp becomes
 * Unix microseconds.
 */
static void
ship_fill_event(ShipRow *r)
{
	char	   *tid;
	char	   *cid;
	char	   *etype;
	char	   *props;

	if (r->ev.properties == NULL)
	{
		r->ev.properties = "{}";
		r->props_len = 2;
	}
	r->srv = r->ev;
	tid = EncodingToUtf8(r->ev.transaction_id);
	cid = EncodingToUtf8(r->ev.customer_id);
	etype = EncodingToUtf8(r->ev.event_type);
	props = EncodingToUtf8(r->ev.properties);
	if (tid == NULL || cid == NULL || etype == NULL || props == NULL)
	{
		r->outcome = OUTCOME_FAILED;
		r->error = psprintf("the event has text that cannot be converted from %s to UTF-8",
							GetDatabaseEncodingName());
		return;
	}
	r->ev.transaction_id = tid;
	r->ev.customer_id = cid;
	r->ev.event_type = etype;
	r->ev.properties = props;
	r->ev.properties_len = (props == r->srv.properties) ? r->props_len : strlen(props);
	if (!ship_to_unix_us(r->ts, &r->ev.timestamp_us) ||
		r->ev.timestamp_us < MIN_RFC3339_US ||
		r->ev.timestamp_us >= MAX_RFC3339_US)
	{
		r->outcome = OUTCOME_FAILED;
		r->error = "timestamp is outside the range Metronome accepts (years 0000 to 9999)";
	}
}

/* a text value copied into the current context; NULL if null */
static char *
ship_text_value(Datum d, bool isnull)
{
	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The columns id, transaction_id, customer_id, event_type, "timestamp",
 * properties::text, mapping, created_at of a claimed row (both claims
 * select them in this order; v and isnull start at id), and its outgoing
 * text.
 */
static void
ship_read_row(ShipRow *r, const Datum *v, const bool *isnull)
{
	r->id = DatumGetInt64(v[0]);
	r->outcome = OUTCOME_NONE;
	r->error = NULL;
	r->next_at = 0;
	r->ev.properties = NULL;
	r->ev.timestamp_us = 0;
	r->props_len = 0;
	r->ev.transaction_id = ship_text_value(v[1], isnull[1]);
	r->ev.customer_id = ship_text_value(v[2], isnull[2]);
	r->ev.event_type = ship_text_value(v[3], isnull[3]);
	r->ts = DatumGetTimestampTz(v[4]);
	if (!isnull[5])
	{
		text	   *t = DatumGetTextPP(v[5]);

		r->props_len = VARSIZE_ANY_EXHDR(t);
		r->ev.properties = text_to_cstring(t);
	}
	r->mapping = ship_text_value(v[6], isnull[6]);
	r->created_at = DatumGetTimestampTz(v[7]);
	ship_fill_event(r);
}

static bool
claim_dest_receive(TupleTableSlot *slot, DestReceiver *self)
{
	Cycle	   *c = ((ClaimDest *) self)->c;
	ShipRow    *r = &c->rows[c->nrows++];
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	slot_getallattrs(slot);
	r->from_state = false;
	r->attempts = 0;
	r->txid = U64FromFullTransactionId(DatumGetFullTransactionId(slot->tts_values[0]));
	ship_read_row(r, slot->tts_values + 1, slot->tts_isnull + 1);
	MemoryContextSwitchTo(old);
	return true;
}

static void
claim_dest_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	(void) self;
	(void) operation;
	(void) typeinfo;
}

static void
claim_dest_nothing(DestReceiver *self)
{
	(void) self;
}

/*
 * Store an error text that came from Metronome (or the network) for
 * metronome_status(): the one place where such text enters the server
 * (conversion to the server encoding belongs here).  Returns the text to
 * store in rows as well.
 */
static void
ship_set_error(const char *message)
{
	StatusSetError(message);
}

/* convert a PostgreSQL timestamptz to microseconds since the Unix epoch */
static bool
ship_to_unix_us(TimestampTz ts, int64 *us)
{
	const int64 shift = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
		SECS_PER_DAY * USECS_PER_SEC;

	if (TIMESTAMP_NOT_FINITE(ts))
		return false;
	*us = ts + shift;
	return true;
}


/* free the requests of a claim (none of them in flight any more) */
static void
ship_free_requests(Cycle *c)
{
	int			i;

	for (i = 0; i < c->nreqs; i++)
		HttpRequestFree(c->reqs[i]);
	c->nreqs = 0;
}

/*
 * Abort every request in flight, free those of the cycle and of the claim
 * made ahead of it, and forget both.
 */
static void
ship_release_requests(Cycle *c)
{
	HttpCancelAll(client);
	ship_free_requests(c);
	if (pending_ahead != NULL)
		ship_free_requests(pending_ahead);
	pending = NULL;
}

/* at process exit: free what a FATAL left in flight, and the client */
static void
ship_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	if (pending != NULL)
		ship_release_requests(pending);
	HttpClientDestroy(client);
	client = NULL;
}

/* the process's HTTP client, configured from the current settings */
static HttpClient *
get_client(void)
{
	if (client == NULL)
	{
		client = HttpClientCreate();
		if (client == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not initialize libcurl")));
		before_shmem_exit(ship_exit, (Datum) 0);
	}
	if (!HttpClientConfigure(client, metronome_ingest_url, metronome_api_token,
							 "pg_metronome/" METRONOME_VERSION,
							 (long) metronome_request_timeout) ||
		!HttpClientSetCAFile(client, metronome_ca_file))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return client;
}

/*
 * Abort every request in flight (error paths).
 */
void
ShipAbort(void)
{
	HttpCancelAll(client);
}

/* append a batch at the tail of the cycle's deque */
static void
queue_append(Cycle *c, ShipBatch *b)
{
	if (c->tail == c->qcap)
	{
		/* slide to the front, or grow */
		if (c->head > 0)
		{
			memmove(c->q, c->q + c->head, sizeof(ShipBatch *) * (c->tail - c->head));
			c->tail -= c->head;
			c->head = 0;
		}
		if (c->tail == c->qcap)
		{
			c->qcap *= 2;
			c->q = repalloc(c->q, sizeof(ShipBatch *) * c->qcap);
		}
	}
	c->q[c->tail++] = b;
}

/* push a batch at the head of the deque (it goes next) */
static void
queue_push(Cycle *c, ShipBatch *b)
{
	if (c->head == 0)
	{
		int			n = c->tail;
		int			room = Max(c->qcap, 16);

		c->q = repalloc(c->q, sizeof(ShipBatch *) * (c->qcap + room));
		memmove(c->q + room, c->q, sizeof(ShipBatch *) * n);
		c->head = room;
		c->tail = room + n;
		c->qcap += room;
	}
	c->q[--c->head] = b;
}


#define queue_len(c) ((c)->tail - (c)->head)


/*
 * The shipper lock: a session-level lock on the extension (pg_locks shows
 * it as an "object" lock on pg_extension, objsubid 1, held by the process
 * that is shipping), taken without waiting at the start of a claim and
 * released when the cycle ends, however it ends (ShipCycle's PG_FINALLY;
 * process exit releases it too).  It is what makes a lease binding: a
 * process whose cycle failed (an ERROR in CALL metronome_ship(), say) and
 * that lives on holds no lock, so the next shipper takes over its lease at
 * once instead of waiting for it to expire.  Returns false when another
 * process holds it.
 */
static bool
ship_lock_shipper(void)
{
	if (shipper_locked)
		return true;
	SET_LOCKTAG_OBJECT(shipper_tag, MyDatabaseId, ExtensionRelationId,
					   plans.extoid, 1);
	if (LockAcquire(&shipper_tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;
	shipper_locked = true;
	return true;
}

static void
ship_unlock_shipper(void)
{
	if (!shipper_locked)
		return;
	LockRelease(&shipper_tag, ExclusiveLock, true);
	shipper_locked = false;
}

/*
 * The txids of the queue come from another cluster (a restore), or the
 * cursor has never been used: re-stamp the rows once.  Acknowledged rows
 * get txid 0 (visible in every snapshot), pending ones this transaction's
 * own xid, and the cursor restarts at the current snapshot with our own
 * xid added to its in-progress list: it sees the acknowledged rows, not
 * ours, nor those of any transaction still in progress (they are claimed
 * once they commit).  Runs in the claim's transaction, the cursor row
 * locked.
 */
static void
ship_fixup(void)
{
	const char *s = MetronomeSchemaName();
	char		sysid[32];
	int			ret;

	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
	/*
	 * One statement, so one snapshot, for both the re-stamp and the new
	 * last_snap: with two, a transaction committing between them was
	 * neither re-stamped (invisible to the first) nor in the new
	 * last_snap's xip list (committed for the second), and its rows
	 * counted as acknowledged unsent (test/t/118_concurrent_commits.pl).
	 * The data-modifying WITH runs to its end though nothing reads it.
	 */
	ret = SPI_execute(psprintf("WITH n AS (SELECT pg_catalog.pg_current_snapshot() AS s,"
							   " pg_catalog.pg_current_xact_id() AS x),"
							   " d AS (SELECT * FROM %1$s.metronome_delivery LIMIT 1),"
							   " r AS (UPDATE %1$s.metronome_queue q SET txid ="
							   " CASE WHEN %1$s.metronome_acked(q.txid, q.id, d.last_snap, d.cur_snap,"
							   " d.pos_txid, d.pos_id) THEN '0'::pg_catalog.xid8"
							   " ELSE (SELECT x FROM n) END FROM d RETURNING 1)"
							   " UPDATE %1$s.metronome_delivery SET last_snap = ("
							   " SELECT CASE WHEN x >= pg_catalog.pg_snapshot_xmax(s) THEN s ELSE"
							   " (LEAST(pg_catalog.pg_snapshot_xmin(s), x)::text || ':' ||"
							   " pg_catalog.pg_snapshot_xmax(s)::text || ':' ||"
							   " (SELECT pg_catalog.string_agg(v::text, ',' ORDER BY v)"
							   " FROM (SELECT pg_catalog.pg_snapshot_xip(s) AS v UNION SELECT x) u)"
							   ")::pg_catalog.pg_snapshot END FROM n),"
							   " cur_snap = NULL, pos_txid = '0', pos_id = 0, lease_pid = NULL,"
							   " lease_until = NULL, lease_txid = NULL, lease_id = NULL,"
							   " lease_final = NULL, system_id = %2$s", s, sysid),
					  false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "could not restart the delivery cursor: %s", SPI_result_code_string(ret));
	ret = SPI_execute(psprintf("DELETE FROM %1$s.metronome_ticks;"
							   " INSERT INTO %1$s.metronome_ticks"
							   " SELECT '1', '1:1:', coalesce(acked_at, pg_catalog.now())"
							   " FROM %1$s.metronome_delivery", s),
					  false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not restart the delivery cursor: %s", SPI_result_code_string(ret));
}

/*
 * Step 1 of a cycle, in its transaction: take the lease and claim due
 * exception rows, then the next rows of the batch (see the file banner).
 * Returns the rows claimed; sets result->no_extension, locked or busy
 * when it claims nothing for those reasons.
 */
static int
ship_claim(Cycle *c, int64 max_events, ShipResult *result)
{
	Oid			relid = MetronomeRelid("metronome_delivery", true);
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext old;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *sysid;
	char	   *cur_snap;
	char	   *snap_now;
	Datum		last_bin;
	Datum		upper_bin;
	TxidRange  *ranges;
	int			nranges;
	char		mine[32];
	Datum		args[6];
	char		nulls[6];
	int			limit;
	int			nmain = 0;
	int			ret;
	uint64		i;

	if (!OidIsValid(relid))
	{
		result->no_extension = true;
		return 0;
	}
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
	{
		result->locked = true;
		return 0;
	}
	/* the lock brought the latest catalog: is the table still there? */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)) ||
		MetronomeRelid("metronome_delivery", true) != relid)
	{
		result->no_extension = true;
		return 0;
	}
	ship_ensure_plans(relid);

	/* one shipper at a time: the others find it busy, and do nothing */
	if (!ship_lock_shipper())
	{
		result->busy = true;
		return 0;
	}

	/* after a restore, the dumped cursor row wins over the new one */
	if (ship_run(plans.dedup, NULL, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not read the delivery cursor");

	snprintf(mine, sizeof(mine), UINT64_FORMAT, GetSystemIdentifier());
	for (;;)
	{
		ret = ship_run(plans.lock, NULL, NULL, false, 0);
		if (ret != SPI_OK_SELECT || SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the delivery cursor of extension \"metronome\" is missing"),
					 errdetail("Table metronome_delivery must hold exactly one row; it holds %llu.",
							   (unsigned long long) SPI_processed),
					 errhint("Run ALTER EXTENSION metronome UPDATE, or re-create the extension.")));
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		/*
		 * A lease recorded here is stale: we hold the shipper lock, so its
		 * process is not in a cycle (it failed, or died).  The claim
		 * replaces it, and the rows it had claimed are sent again.
		 */
		old = MemoryContextSwitchTo(c->cxt);
		sysid = ship_text(tup, desc, 3);
		MemoryContextSwitchTo(old);
		if (sysid != NULL && strcmp(sysid, mine) == 0)
			break;
		ship_fixup();
		/* the re-stamped rows become visible when this claim commits */
		c->again = true;
	}

	old = MemoryContextSwitchTo(c->cxt);
	cur_snap = ship_text(tup, desc, 4);
	c->pos_txid = ship_text(tup, desc, 5);
	c->pos_id = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
	snap_now = ship_text(tup, desc, 7);
	ship_claim_bounds(tup, desc, &last_bin, &upper_bin, &ranges, &nranges);
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);

	limit = metronome_batch_size * metronome_max_inflight * claim_rounds;
	if (max_events > 0 && max_events < limit)
		limit = (int) max_events;
	/* not zeroed here: each row is, as it is read (ship_read_row) */
	c->rows = MemoryContextAlloc(c->cxt, sizeof(ShipRow) * (limit + 1));

	/* due exception rows first */
	args[0] = TimestampTzGetDatum(now);
	args[1] = Int64GetDatum(limit);
	ret = ship_run(plans.state, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claiming outbox rows failed: %s", SPI_result_code_string(ret));
	old = MemoryContextSwitchTo(c->cxt);
	for (i = 0; i < SPI_processed; i++)
	{
		ShipRow    *r = &c->rows[c->nrows++];
		Datum		v[9];
		bool		vnull[9];

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, v, vnull);
		r->txid = 0;
		r->from_state = true;
		r->attempts = DatumGetInt32(v[8]);
		ship_read_row(r, v, vnull);
	}
	MemoryContextSwitchTo(old);
	c->nstate = c->nrows;
	SPI_freetuptable(SPI_tuptable);

	/* then the next rows of the batch between last_snap and cur_snap */
	if (c->nrows < limit)
	{
		int			want = limit - c->nrows;

		nmain = ship_claim_queue(c, ranges, nranges,
								 strtou64(c->pos_txid, NULL, 10), want,
								 last_bin, upper_bin);
		c->final = (nmain < want);
	}
	c->limit = limit;

	/* the batch in progress has nothing more: finish it */
	if (nmain == 0 && cur_snap != NULL)
	{
		if (ship_run(plans.roll_empty, NULL, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not move the delivery cursor");
		c->pos_txid = "0";
		c->pos_id = 0;
		cur_snap = NULL;
	}
	if (nmain == 0)
		c->final = false;

	if (c->nrows == 0)
	{
		/* nothing to send: when is the next retry due? */
		if (ship_run(plans.next_due, NULL, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			Datum		due = SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				result->next_due = DatumGetTimestampTz(due);
		}
		return 0;
	}

	/* the lease: our pid, until when, and the end of what we claimed */
	c->lease_until = TimestampTzPlusMilliseconds(now, CYCLE_BUDGET_MS +
												 2 * (int64) metronome_request_timeout +
												 LEASE_SLACK_MS);
	memset(nulls, ' ', sizeof(nulls));
	if (nmain > 0)
		args[0] = CStringGetTextDatum(cur_snap ? cur_snap : snap_now);
	else
		nulls[0] = 'n';
	args[1] = Int32GetDatum(MyProcPid);
	args[2] = TimestampTzGetDatum(c->lease_until);
	args[3] = CStringGetTextDatum(nmain > 0 ? psprintf(UINT64_FORMAT, c->rows[c->nrows - 1].txid) :
								  c->pos_txid);
	args[4] = Int64GetDatum(nmain > 0 ? c->rows[c->nrows - 1].id : c->pos_id);
	args[5] = BoolGetDatum(c->final);
	if (ship_run(plans.lease, args, nulls, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != 1)
		elog(ERROR, "could not record the delivery lease");
	result->claimed = c->nrows;
	return c->nrows;
}

/*
 * The batch's bounds from the cursor row the lock statement read, in the
 * current memory context: last_snap and cur_snap as pg_snapshot values (no
 * text to parse per row) and the txid ranges between them.
 */
static void
ship_claim_bounds(HeapTuple tup, TupleDesc desc, Datum *last_bin,
				  Datum *upper_bin, TxidRange **ranges, int *nranges)
{
	bool		isnull;
	uint64		last_xmax;
	uint64		up_xmax;
	uint64	   *last_xip;
	uint64	   *up_xip;
	int			nlast;
	int			nup;

	*last_bin = datumCopy(SPI_getbinval(tup, desc, 8, &isnull), false, -1);
	*upper_bin = datumCopy(SPI_getbinval(tup, desc, 9, &isnull), false, -1);
	last_xmax = U64FromFullTransactionId(DatumGetFullTransactionId(SPI_getbinval(tup, desc, 10, &isnull)));
	nlast = ship_xid_array(SPI_getbinval(tup, desc, 11, &isnull), &last_xip);
	up_xmax = U64FromFullTransactionId(DatumGetFullTransactionId(SPI_getbinval(tup, desc, 12, &isnull)));
	nup = ship_xid_array(SPI_getbinval(tup, desc, 13, &isnull), &up_xip);
	*ranges = palloc(sizeof(TxidRange) * (nlast + nup + 1));
	*nranges = ship_claim_ranges(last_xmax, last_xip, nlast, up_xmax, up_xip, nup, *ranges);
}

/*
 * May the rows after c's be claimed while c's requests are out?  Only
 * when c claimed queue rows, filled its claim and did not reach the end
 * of the batch (a claim there moves to the next batch, which only a claim
 * after c's acknowledgement may do).
 */
static bool
ship_may_claim_ahead(Cycle *c)
{
	return c->nrows > c->nstate && !c->final && !c->again &&
		c->nrows >= c->limit;
}

/*
 * Claim ahead (in its transaction): the next rows of the batch after the
 * end of prev's claim, while prev's requests are out.  The cursor row
 * must still hold prev's lease (we hold the shipper lock, so it does
 * unless the row was changed by hand); the lease then records n's end and
 * a new token, which prev's acknowledgement checks and keeps.  No
 * exception rows: prev's acknowledgement has not yet recorded what became
 * of them.  Returns the rows claimed (0: none, or not possible now; the
 * lease is then unchanged).
 */
static int
ship_claim_ahead(Cycle *n, Cycle *prev, ShipResult *result)
{
	Oid			relid = MetronomeRelid("metronome_delivery", true);
	ShipRow    *last = &prev->rows[prev->nrows - 1];
	MemoryContext old;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	char	   *cur_snap;
	Datum		last_bin;
	Datum		upper_bin;
	TxidRange  *ranges;
	int			nranges;
	Datum		args[6];
	int			nmain;

	if (!OidIsValid(relid) || relid != plans.relid ||
		!ConditionalLockRelationOid(relid, RowExclusiveLock))
		return 0;
	if (ship_run(plans.lock, NULL, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return 0;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	d = SPI_getbinval(tup, desc, 1, &isnull);
	if (isnull || DatumGetInt32(d) != MyProcPid)
		return 0;
	d = SPI_getbinval(tup, desc, 2, &isnull);
	if (isnull || DatumGetTimestampTz(d) != prev->lease_until)
		return 0;
	old = MemoryContextSwitchTo(n->cxt);
	cur_snap = ship_text(tup, desc, 4);
	if (cur_snap == NULL)
	{
		MemoryContextSwitchTo(old);
		return 0;
	}
	ship_claim_bounds(tup, desc, &last_bin, &upper_bin, &ranges, &nranges);
	n->pos_txid = psprintf(UINT64_FORMAT, last->txid);
	n->pos_id = last->id;
	n->limit = prev->limit;
	n->rows = palloc(sizeof(ShipRow) * (n->limit + 1));
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);

	nmain = ship_claim_queue(n, ranges, nranges, last->txid, n->limit,
							 last_bin, upper_bin);
	if (nmain == 0)
		return 0;
	n->final = (nmain < n->limit);
	n->lease_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 CYCLE_BUDGET_MS +
												 2 * (int64) metronome_request_timeout +
												 LEASE_SLACK_MS);
	args[0] = CStringGetTextDatum(cur_snap);
	args[1] = Int32GetDatum(MyProcPid);
	args[2] = TimestampTzGetDatum(n->lease_until);
	args[3] = CStringGetTextDatum(psprintf(UINT64_FORMAT, n->rows[n->nrows - 1].txid));
	args[4] = Int64GetDatum(n->rows[n->nrows - 1].id);
	args[5] = BoolGetDatum(n->final);
	if (ship_run(plans.lease, args, NULL, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != 1)
		elog(ERROR, "could not record the delivery lease");
	result->claimed += n->nrows;
	return n->nrows;
}

/* batches of the rows from .. to - 1 that can be sent, in claim order */
static void
ship_make_batches(Cycle *c, int from, int to)
{
	ShipRow   **ptrs = MemoryContextAlloc(c->cxt, sizeof(ShipRow *) * Max(to - from, 1));
	int			n = 0;
	int			i;

	for (i = from; i < to; i++)
		if (c->rows[i].outcome == OUTCOME_NONE)
			ptrs[n++] = &c->rows[i];
	for (i = 0; i < n; i += metronome_batch_size)
	{
		ShipBatch  *b = MemoryContextAllocZero(c->cxt, sizeof(ShipBatch));

		b->r = ptrs + i;
		b->n = Min(metronome_batch_size, n - i);
		b->cycle = c;
		queue_append(c, b);
	}
}

/* start one batch; *started false (with the request's error set) if it could not */
static HttpRequest *
ship_start_batch(HttpClient *http, ShipBatch *b, bool *started)
{
	Cycle	   *c = b->cycle;
	HttpEvent  *events = MemoryContextAlloc(c->cxt, sizeof(HttpEvent) * b->n);
	HttpRequest *req;
	int			i;

	for (i = 0; i < b->n; i++)
		events[i] = b->r[i]->ev;
	if (c->nreqs == c->reqcap)
	{
		c->reqcap *= 2;
		c->reqs = repalloc(c->reqs, sizeof(HttpRequest *) * c->reqcap);
	}
	req = HttpRequestNew();
	if (req == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	c->reqs[c->nreqs++] = req;
	req->user = b;
	/* the I/O thread writes the body; the events live as long as the cycle */
	req->events = events;
	req->nevents = b->n;
	*started = HttpStart(http, req);
	if (*started)
		c->inflight++;
	return req;
}

/* set the outcome of every row of a batch */
static void
ship_outcome(ShipBatch *b, RowOutcome outcome, const char *error,
			 TimestampTz next_at)
{
	int			i;

	for (i = 0; i < b->n; i++)
	{
		b->r[i]->outcome = outcome;
		b->r[i]->error = error;
		b->r[i]->next_at = next_at;
	}
}

/*
 * How long the rows of a batch wait after a transient failure: the
 * server's Retry-After (capped by max_backoff), else the exponential
 * backoff of the batch's attempts, jittered.
 */
static int64
ship_retry_delay(ShipBatch *b, int64 retry_after_ms, double random01)
{
	int			attempts = 0;
	int			i;

	if (retry_after_ms >= 0)
		return Min(retry_after_ms, (int64) metronome_max_backoff);
	for (i = 0; i < b->n; i++)
		attempts = Max(attempts, b->r[i]->attempts);
	return ShipBackoffDelay(Min(attempts, 1000) + 1, random01);
}

/*
 * A 400/413/422 that says nothing about the events: the answer does not
 * have Metronome's {"message": ...} shape, or both halves of a refused
 * batch were refused with the very answer the whole got (a proxy or a
 * firewall that refuses every request).  Bisecting would fail every row;
 * instead no row changes, the gate closes as for a configuration error
 * (a reload reopens it), and metronome_status() says why.  True when the
 * answer was taken as such.
 */
static bool
ship_blanket_refusal(HttpRequest *req, ShipBatch *b, ShipResult *result)
{
	char	   *why;

	if (req->metronome_shaped &&
		!(b->parent != NULL && b->parent->error != NULL &&
		  strcmp(b->parent->error, req->error) == 0 &&
		  ++b->parent->halves_alike >= 2))
		return false;

	why = psprintf(req->metronome_shaped ?
				   "both halves of a refused batch were refused with the same answer, so the ingest URL refuses every request (a proxy or firewall?): %s" :
				   "the ingest URL refused a batch with an answer that is not Metronome's (no {\"message\": ...} body; a proxy or firewall?): %s",
				   req->error);
	ship_set_error(why);
	StatusSetState(DELIVERY_CONFIG_ERROR);
	ereport(WARNING,
			(errmsg("shipping paused: the ingest URL does not answer as Metronome"),
			 errdetail("The %s", why),
			 errhint("No row was marked failed.  Check metronome.ingest_url and what is between the server and Metronome, then reload the configuration.")));
	result->gate_until = StatusGateClose(DELIVERY_GATE_CONFIG,
										 ship_gate_delay(-1, ship_jitter()));
	result->gated = true;
	return true;
}

/*
 * Classify one finished request and record what it means for its rows.
 * Returns false when no further request should start in this cycle.
 */
static bool
ship_handle_done(HttpRequest *req, ShipResult *result)
{
	ShipBatch  *b = (ShipBatch *) req->user;
	Cycle	   *c = b->cycle;
	char	   *error;

	result->requests++;
	StatusCountRequest();
	MetricsCountAnswer(req->klass, req->status);
	/* Metronome's text in the server encoding (encoding.c) */
	EncodingFromUtf8Buf(req->error, sizeof(req->error));
	switch (req->klass)
	{
		case HTTP_CLASS_OK:
			ship_outcome(b, OUTCOME_SENT, NULL, 0);
			StatusGateReset();
			{
				double		rate;

				ship_rate_change(RateLimitSpeedUp(GetCurrentTimestamp(), &rate),
								 rate, 0);
			}
			return true;

		case HTTP_CLASS_BAD_BATCH:
			if (ship_blanket_refusal(req, b, result))
				return false;
			if (b->n > 1)
			{
				ShipBatch  *lo = MemoryContextAllocZero(c->cxt, sizeof(ShipBatch));
				ShipBatch  *hi = MemoryContextAllocZero(c->cxt, sizeof(ShipBatch));

				MetricsCountSplit();
				b->error = MemoryContextStrdup(c->cxt, req->error);
				lo->parent = hi->parent = b;
				lo->cycle = hi->cycle = c;
				lo->r = b->r;
				lo->n = b->n / 2;
				hi->r = b->r + lo->n;
				hi->n = b->n - lo->n;
				/* the halves go next, the first half first */
				queue_push(c, hi);
				queue_push(c, lo);
				return true;
			}
			error = MemoryContextStrdup(c->cxt, req->error);
			ship_outcome(b, OUTCOME_FAILED, error, 0);
			ship_set_error(psprintf("Metronome refused the event with transaction_id \"%s\": %s",
									b->r[0]->srv.transaction_id, error));
			ereport(WARNING,
					(errmsg("metronome refused outbox row %lld",
							(long long) b->r[0]->id),
					 errdetail("Metronome refused the event with transaction_id \"%s\": %s",
							   b->r[0]->srv.transaction_id, error),
					 errhint("The row is marked failed; fix it and call metronome_retry().")));
			return true;

		case HTTP_CLASS_AUTH:
		case HTTP_CLASS_CONFIG:
			ship_set_error(req->error);
			StatusSetState(req->klass == HTTP_CLASS_AUTH ?
						   DELIVERY_AUTH_ERROR : DELIVERY_CONFIG_ERROR);
			result->gate_until =
				StatusGateClose(req->klass == HTTP_CLASS_AUTH ?
								DELIVERY_GATE_AUTH : DELIVERY_GATE_CONFIG,
								ship_gate_delay(-1, ship_jitter()));
			result->gated = true;
			return false;

		case HTTP_CLASS_TRANSIENT:
			{
				double		r = ship_jitter();
				int64		delay = ship_retry_delay(b, req->retry_after_ms, r);

				/* the account's limit, for an unknown time: slow down */
				if (req->status == 429 && req->retry_after_ms < 0)
				{
					double		rate;
					double		observed;
					RateLimitChange change;

					change = RateLimitSlowDown(GetCurrentTimestamp(),
											   &rate, &observed);
					ship_rate_change(change, rate, observed);
				}
				error = MemoryContextStrdup(c->cxt, req->error);
				ship_outcome(b, OUTCOME_RETRY, error,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay));
				ship_set_error(error);
				result->gate_until =
					StatusGateClose(DELIVERY_GATE_TRANSIENT,
									ship_gate_delay(req->retry_after_ms, r));
			}
			result->gated = true;
			return false;
	}
	return false;
}

/*
 * A cycle's state, in a memory context of its own (it outlives the
 * claim's transaction).
 */
static Cycle *
ship_new_cycle(TimestampTz now)
{
	MemoryContext cxt;
	Cycle	   *c;

	if (ncycle_pool > 0)
		cxt = cycle_pool[--ncycle_pool];
	else
		cxt = AllocSetContextCreate(TopMemoryContext,
									"metronome ship cycle",
									CYCLE_CXT_KEEP, CYCLE_CXT_KEEP,
									ALLOCSET_DEFAULT_MAXSIZE);
	c = MemoryContextAllocZero(cxt, sizeof(Cycle));

	c->cxt = cxt;
	c->qcap = 64;
	c->q = MemoryContextAlloc(cxt, sizeof(ShipBatch *) * c->qcap);
	c->reqcap = 64;
	c->reqs = MemoryContextAlloc(cxt, sizeof(HttpRequest *) * c->reqcap);
	c->started = now;
	return c;
}

/*
 * Give back the claim memory kept between cycles (cycle_pool): for a
 * user's backend once its cycles are done; the worker keeps it.
 */
void
ShipReleaseMemory(void)
{
	while (ncycle_pool > 0)
		MemoryContextDelete(cycle_pool[--ncycle_pool]);
}

/* free a cycle whose requests are all answered (or cancelled) */
static void
ship_free_cycle(Cycle *c)
{
	MemoryContext cxt = c->cxt;

	ship_free_requests(c);
	if (ncycle_pool < (int) lengthof(cycle_pool))
	{
		MemoryContextReset(cxt);
		cycle_pool[ncycle_pool++] = cxt;
	}
	else
		MemoryContextDelete(cxt);
}

/*
 * Steps 2 and 3 for the claim in `pending`: send its batches, max_inflight
 * at once (the HTTP client's I/O thread runs them, and holds the queued
 * ones after an answer other than 2xx until it is seen here), classify
 * each answer as it arrives, and acknowledge the claim once every batch
 * has an answer, the gate closes, or the cycle's time is up.  While the
 * claim's last batches are out, the rows after it are claimed
 * (ship_claim_ahead, when ship_may_claim_ahead) and their batches queued
 * behind; once the first claim is acknowledged with no gap, the one ahead
 * becomes the cycle's claim, and so on until the cycle's time is up or
 * the batch ends.  An acknowledgement that leaves a gap (rows without an
 * answer) ends it there: the claim ahead is not acknowledged and its rows
 * are sent again.  No transaction is open while requests are out, except
 * the short claims and acknowledgements themselves.  Requests in flight
 * are aborted if anything throws (the caller's PG_FINALLY).
 */
static void
ship_deliver(ShipContext ctx, int64 max_events, ShipResult *result)
{
	HttpClient *http = get_client();
	Cycle	   *c = pending;
	TimestampTz started = c->started;
	bool		go = true;
	bool		woken = false;
	bool		ahead_ok;
	bool		ahead = false;	/* this cycle has claimed ahead */
	int			depth;

	/* claiming ahead only when nothing limits what a cycle may claim */
	ahead_ok = (max_events <= 0 && ship_rate_cap(0) <= 0);
	depth = ahead_ok ? metronome_max_inflight * CLAIM_ROUNDS : metronome_max_inflight;
	HttpSetConcurrency(http, metronome_max_inflight);
	HttpResume(http);
	ship_make_batches(c, 0, c->nrows);
	for (;;)
	{
		Cycle	   *next = pending_ahead;
		HttpRequest *req;
		int64		rate_wait_us = 0;

		/* keep requests going, the claim's first, as the rate limit allows */
		while (go && HttpInFlight(http) < depth)
		{
			Cycle	   *from = queue_len(c) > 0 ? c :
				(next != NULL && queue_len(next) > 0) ? next : NULL;
			ShipBatch  *b;
			bool		started;

			if (from == NULL)
				break;
			b = from->q[from->head];
			rate_wait_us = RateLimitTake(b->n, GetCurrentTimestamp());
			if (rate_wait_us > 0)
				break;
			from->head++;
			req = ship_start_batch(http, b, &started);
			if (!started && !ship_handle_done(req, result))
				go = false;
		}

		/* every batch of the claim is out: claim what comes after it */
		if (go && ahead_ok && next == NULL && queue_len(c) == 0 &&
			ship_may_claim_ahead(c) &&
			!TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
										CYCLE_BUDGET_MS))
		{
			next = pending_ahead = ship_new_cycle(GetCurrentTimestamp());
			ship_xact_begin(ctx);
			(void) ship_claim_ahead(next, c, result);
			ship_xact_commit(ctx);
			if (next->nrows == 0)
			{
				ship_free_cycle(next);
				pending_ahead = NULL;
				ahead_ok = false;
			}
			else
			{
				ship_make_batches(next, 0, next->nrows);
				ahead = true;
			}
			continue;
		}

		/* every answer the claim will get is in: acknowledge it */
		if (c->inflight == 0 && (queue_len(c) == 0 || !go))
		{
			bool		kept;

			ship_xact_begin(ctx);
			kept = ship_acknowledge(c, next, result);
			ship_xact_commit(ctx);
			result->full = (c->nrows >= c->limit) || c->again;
			if (next == NULL || !kept)
				break;			/* what is out of the claim ahead is
								 * cancelled by the caller */
			MemoryContextSwitchTo(next->cxt);
			ship_free_cycle(c);
			pending = c = next;
			pending_ahead = NULL;
			continue;
		}

		if (HttpInFlight(http) > 0)
			HttpWait(http, rate_wait_us > 0 ?
					 (int) Min(WAIT_SLICE_MS, rate_wait_us / 1000 + 1) :
					 WAIT_SLICE_MS);
		else if (rate_wait_us > 0)
		{
			/* nothing out: the latch, for interrupts and the postmaster */
			ship_rate_wait((long) Min(WAIT_SLICE_MS, rate_wait_us / 1000 + 1),
						   &woken);
			/* the worker reloads the settings between cycles */
			if (ConfigReloadPending && AmDeliveryWorker() && go)
			{
				go = false;
				result->budget_cut = true;
			}
		}
		CHECK_FOR_INTERRUPTS();
		while ((req = HttpNextDone(http)) != NULL)
		{
			ShipBatch  *b = (ShipBatch *) req->user;

			b->cycle->inflight--;
			/* given back unsent (below): its rows have no answer */
			if (!req->dropped && !ship_handle_done(req, result))
				go = false;
			/* the body is not needed any more */
			free(req->body);
			req->body = NULL;
		}
		if (go && (queue_len(c) > 0 || (next != NULL && queue_len(next) > 0)) &&
			TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
									   ahead ? CYCLE_AHEAD_BUDGET_MS :
									   CYCLE_BUDGET_MS))
		{
			go = false;
			result->budget_cut = true;
		}
		/* after an answer other than 2xx: go on, or start nothing more */
		if (go)
			HttpResume(http);
		else
			HttpDropQueued(http);
	}
	/* a commit's wake-up that the rate limit's wait consumed */
	if (woken)
		SetLatch(MyLatch);
}

/*
 * Log a change of the adaptive slowdown's regime (its start and end at
 * LOG, its steps at DEBUG1).
 */
static void
ship_rate_change(RateLimitChange change, double rate, double observed)
{
	switch (change)
	{
		case RATELIMIT_UNCHANGED:
			break;
		case RATELIMIT_SLOWDOWN_STARTED:
			ereport(LOG,
					(errmsg("Metronome answered 429 without Retry-After: sending at most %.0f events per second",
							rate),
					 errdetail("About %.0f events per second were being sent; the rate rises again after successes.",
							   observed),
					 errhint("See metronome_rate_limit().  metronome.max_events_per_second limits the rate for good.")));
			break;
		case RATELIMIT_SLOWED:
			ereport(DEBUG1,
					(errmsg("Metronome answered 429 again: sending at most %.0f events per second",
							rate)));
			break;
		case RATELIMIT_SPED_UP:
			ereport(DEBUG1,
					(errmsg("sending at most %.0f events per second", rate)));
			break;
		case RATELIMIT_SLOWDOWN_ENDED:
			if (metronome_max_events_per_second > 0)
				ereport(LOG,
						(errmsg("no 429 from Metronome for a while: back to metronome.max_events_per_second (%d events per second)",
								metronome_max_events_per_second)));
			else
				ereport(LOG,
						(errmsg("no 429 from Metronome for a while: the rate is no longer limited")));
			break;
	}
}

/*
 * The rows a cycle claims under the rate limit: what it lets go within the
 * cycle's time (and no more than max_events, when > 0).
 */
static int64
ship_rate_cap(int64 max_events)
{
	int64		cap = RateLimitCycleEvents(CYCLE_BUDGET_MS);

	if (cap > 0 && (max_events <= 0 || cap < max_events))
		return cap;
	return max_events;
}

/*
 * Wait ms milliseconds for the rate limit on the latch (interrupts and
 * SIGHUP set it; no transaction's snapshot is held).  *woken records a
 * latch set meanwhile, to be set again after the cycle.
 */
static void
ship_rate_wait(long ms, bool *woken)
{
	int			rc;

	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   Max(ms, 1), PgCompatWaitEvent("MetronomeRateLimit"));
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		*woken = true;
	}
	CHECK_FOR_INTERRUPTS();
}

/* the error text a row's outcome stores */
static Datum
ship_error_datum(ShipRow *r)
{
	return CStringGetTextDatum(r->error ? r->error : "");
}

/*
 * Step 3, in its transaction: move the cursor over the longest prefix of
 * the claimed queue rows that all have an outcome (ONE update of the
 * cursor row), copy the failed and retried rows of that prefix into
 * metronome_outbox_state, and record what became of the claimed exception
 * rows.  Every statement must touch exactly the rows it means to.  With a
 * claim made ahead (next), the lease is next's: it is checked against
 * next's token, and kept when every row of c has an outcome (returns
 * true: next's rows start where c's end); else it is cleared, and next's
 * rows are not to be acknowledged.
 */
static bool
ship_acknowledge(Cycle *c, Cycle *next, ShipResult *result)
{
	TimestampTz token = next ? next->lease_until : c->lease_until;
	bool		keep = false;
	int			nmain = c->nrows - c->nstate;
	int			prefix = c->nstate;
	int64		accepted = 0;
	int64		failed = 0;
	Datum	   *sent_ids;
	int			nsent = 0;
	Datum		args[11];
	char		nulls[11];
	int			ret;
	int			i;

	/*
	 * A DROP or ALTER EXTENSION while the requests were out: step aside.
	 * Nothing is acknowledged; what is left is sent again.
	 */
	{
		Oid			relid = MetronomeRelid("metronome_delivery", true);

		if (!OidIsValid(relid) || relid != plans.relid ||
			!ConditionalLockRelationOid(relid, RowExclusiveLock))
		{
			result->locked = OidIsValid(relid);
			result->no_extension = !OidIsValid(relid);
			return false;
		}
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)) ||
			MetronomeRelid("metronome_delivery", true) != relid)
		{
			result->no_extension = true;
			return false;
		}
	}

	while (prefix < c->nrows && c->rows[prefix].outcome != OUTCOME_NONE)
		prefix++;

	/* the exceptions of the prefix: a row each */
	for (i = c->nstate; i < prefix; i++)
	{
		ShipRow    *r = &c->rows[i];
		bool		fails;

		if (r->outcome == OUTCOME_SENT)
		{
			accepted++;
			MetricsNoteAcked(r->created_at, r->mapping);
			continue;
		}
		fails = (r->outcome == OUTCOME_FAILED ||
				 (metronome_max_attempts > 0 && metronome_max_attempts <= 1));
		memset(nulls, ' ', sizeof(nulls));
		args[0] = Int64GetDatum(r->id);
		args[1] = CStringGetTextDatum(r->srv.transaction_id);
		args[2] = CStringGetTextDatum(r->srv.customer_id);
		args[3] = CStringGetTextDatum(r->srv.event_type);
		args[4] = TimestampTzGetDatum(r->ts);
		args[5] = CStringGetTextDatum(r->srv.properties);
		if (r->mapping)
			args[6] = CStringGetTextDatum(r->mapping);
		else
			nulls[6] = 'n';
		args[7] = CStringGetTextDatum(fails ? "failed" : "pending");
		args[8] = TimestampTzGetDatum(r->outcome == OUTCOME_RETRY ? r->next_at : r->created_at);
		args[9] = ship_error_datum(r);
		args[10] = TimestampTzGetDatum(r->created_at);
		ret = ship_run(plans.exc_insert, args, nulls, false, 0);
		if (ret != SPI_OK_INSERT || SPI_processed != 1)
			elog(ERROR, "could not record the outcome of outbox row %lld",
				 (long long) r->id);
		if (fails)
			failed++;
		else
			result->retried++;
	}

	/* the cursor: one row */
	if (nmain > 0 && c->final && prefix == c->nrows && next == NULL)
	{
		args[0] = Int32GetDatum(MyProcPid);
		args[1] = TimestampTzGetDatum(token);
		ret = ship_run(plans.ack_final, args, NULL, false, 0);
	}
	else
	{
		bool		moved = (prefix > c->nstate);

		keep = (next != NULL && nmain > 0 && prefix == c->nrows);
		args[0] = CStringGetTextDatum(moved ? psprintf(UINT64_FORMAT, c->rows[prefix - 1].txid) :
									  c->pos_txid);
		args[1] = Int64GetDatum(moved ? c->rows[prefix - 1].id : c->pos_id);
		args[2] = Int32GetDatum(MyProcPid);
		args[3] = TimestampTzGetDatum(token);
		args[4] = BoolGetDatum(moved);
		ret = ship_run(keep ? plans.ack_keep : plans.ack, args, NULL, false, 0);
	}
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the delivery lease was lost before the acknowledgement"),
				 errdetail("Another process took over the rows this cycle claimed (its lease expired); they are sent again, which Metronome's transaction_id dedup makes harmless.")));

	/* the claimed exception rows */
	sent_ids = palloc(sizeof(Datum) * Max(c->nstate, 1));
	for (i = 0; i < c->nstate; i++)
	{
		ShipRow    *r = &c->rows[i];

		if (r->outcome == OUTCOME_SENT)
		{
			sent_ids[nsent++] = Int64GetDatum(r->id);
			MetricsNoteAcked(r->created_at, r->mapping);
		}
		else if (r->outcome == OUTCOME_FAILED)
		{
			args[0] = Int64GetDatum(r->id);
			args[1] = ship_error_datum(r);
			ret = ship_run(plans.state_failed, args, NULL, false, 0);
			if (ret != SPI_OK_UPDATE || SPI_processed != 1)
				elog(ERROR, "outbox row %lld changed while it was being sent",
					 (long long) r->id);
			failed++;
		}
		else if (r->outcome == OUTCOME_RETRY)
		{
			bool		isnull;

			args[0] = Int64GetDatum(r->id);
			args[1] = TimestampTzGetDatum(r->next_at);
			args[2] = ship_error_datum(r);
			args[3] = Int32GetDatum(metronome_max_attempts);
			ret = ship_run(plans.state_retry, args, NULL, false, 0);
			if (ret != SPI_OK_UPDATE_RETURNING || SPI_processed != 1)
				elog(ERROR, "outbox row %lld changed while it was being sent",
					 (long long) r->id);
			if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull)))
				failed++;
			else
				result->retried++;
		}
	}
	if (nsent > 0)
	{
		args[0] = PointerGetDatum(construct_array(sent_ids, nsent, INT8OID,
												  sizeof(int64), FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
		ret = ship_run(plans.state_sent, args, NULL, false, 0);
		if (ret != SPI_OK_UPDATE || SPI_processed != (uint64) nsent)
			elog(ERROR, "the acknowledgement marked %llu outbox rows sent instead of %d",
				 (unsigned long long) SPI_processed, nsent);
		accepted += nsent;
	}
	result->accepted += accepted;
	result->failed += failed;
	StatusCountRows(accepted, failed);
	return keep;
}

/*
 * One shipping cycle (see the file banner).  ctx says how its two short
 * transactions are run: SHIP_OWN_XACTS (the worker; no transaction may be
 * open), SHIP_PROCEDURE (CALL metronome_ship(); SPI connected non-atomic),
 * SHIP_CALLER_XACT (both in the caller's transaction: the dry run only).
 * max_events > 0 bounds the rows claimed.  dry_run takes every claimed row
 * as accepted without any HTTP: the database-only floor of the design.
 */
void
ShipCycle(ShipContext ctx, bool dry_run, int64 max_events, ShipResult *result)
{
	TimestampTz now = GetCurrentTimestamp();
	DeliveryGate kind;
	Cycle	   *c;
	bool		again;
	bool		saved_suppress = DeliveryWakeSuppressed;

	memset(result, 0, sizeof(ShipResult));
	result->next_due = DT_NOEND;
	MetricsBeginCycle();
	Assert(!(ctx == SHIP_CALLER_XACT && !dry_run));

	if (!dry_run && !StatusGateOpen(now, &result->gate_until, &kind))
	{
		result->gated = true;
		return;
	}
	if (!dry_run && (metronome_api_token == NULL || metronome_api_token[0] == '\0'))
	{
		ship_set_error("metronome.api_token is not set");
		StatusSetState(DELIVERY_AUTH_ERROR);
		result->gate_until = StatusGateClose(DELIVERY_GATE_AUTH,
											 ship_gate_delay(-1, ship_jitter()));
		result->gated = true;
		return;
	}
	if (!dry_run)
	{
		int64		wait_us = RateLimitReady(now);

		/* no batch could start yet: claim nothing */
		if (wait_us > 0)
		{
			result->rate_limited = true;
			result->rate_until = now + wait_us;
			return;
		}
	}

	c = pending = ship_new_cycle(now);
	pending_ahead = NULL;

	/* our own writes to the outbox's tables wake nobody */
	DeliveryWakeSuppressed = true;
	PG_TRY();
	{
		MemoryContext old = MemoryContextSwitchTo(c->cxt);

		ship_xact_begin(ctx);
		(void) ship_claim(c, dry_run ? max_events : ship_rate_cap(max_events),
						  result);
		ship_xact_commit(ctx);
		/* c is freed once a claim made ahead replaces it (ship_deliver) */
		again = c->again;

		if (c->nrows > 0 && dry_run)
		{
			int			i;

			for (i = 0; i < c->nrows; i++)
				if (c->rows[i].outcome == OUTCOME_NONE)
					c->rows[i].outcome = OUTCOME_SENT;
			ship_xact_begin(ctx);
			(void) ship_acknowledge(c, NULL, result);
			ship_xact_commit(ctx);
			result->full = (c->nrows >= c->limit);
		}
		else if (c->nrows > 0)
			ship_deliver(ctx, max_events, result);
		MemoryContextSwitchTo(old);
		MetricsEndCycle(result->claimed, result->accepted, result->failed, result->retried);

		/* more may be due: the claim was full, or time ran out */
		result->full = result->full || result->budget_cut || again;

		/*
		 * A slow Metronome cut the cycle short: claim less at a time; a
		 * cycle that sent every row it claimed: claim more, up to
		 * CLAIM_ROUNDS.
		 */
		if (result->budget_cut)
			claim_rounds = Max(1, claim_rounds / 2);
		else if (result->full)
			claim_rounds = Min(CLAIM_ROUNDS, claim_rounds * 2);
	}
	PG_FINALLY();
	{
		/* the cycle's claims: the first, or the last one ship_deliver took */
		if (pending != NULL)
		{
			Cycle	   *last = pending;
			Cycle	   *ahead = pending_ahead;

			ship_release_requests(last);
			pending_ahead = NULL;
			if (ahead != NULL)
				ship_free_cycle(ahead);
			ship_free_cycle(last);
		}
		ship_unlock_shipper();
		DeliveryWakeSuppressed = saved_suppress;
	}
	PG_END_TRY();
}

/*
 * Retention, in the caller's transaction: TRUNCATE the queue segment that
 * is neither the current nor the previous one when all it holds is
 * acknowledged (its rows are older than retain_sent), and delete up to
 * `limit` exception rows sent before retain_sent.  Returns how many
 * exception rows were deleted (-1 when the outbox is locked or missing).
 */
int64
ShipDeleteSent(int64 limit)
{
	Oid			relid = MetronomeRelid("metronome_delivery", true);
	TimestampTz cutoff;
	Datum		values[2];
	int64		n = 0;
	bool		saved_suppress = DeliveryWakeSuppressed;

	if (!OidIsValid(relid) || metronome_retain_sent < 0)
		return -1;
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
		return -1;
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return -1;
	cutoff = GetCurrentTimestamp() - (int64) metronome_retain_sent * USECS_PER_SEC;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	DeliveryWakeSuppressed = true;
	PG_TRY();
	{
		int			seg = (MetronomeSegment() + 1) % METRONOME_NSEGMENTS;
		char	   *name = psprintf("metronome_queue_%d", seg);
		Oid			segid = MetronomeRelid(name, true);
		const char *s = MetronomeSchemaName();
		char		sysid[32];

		ship_ensure_plans(relid);
		snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
		if (OidIsValid(segid) &&
			ConditionalLockRelationOid(segid, AccessExclusiveLock))
		{
			int			ret;

			ret = SPI_execute(psprintf("SELECT d.system_id::text = '%2$s'"
									   " AND NOT EXISTS (SELECT 1 FROM %1$s.%3$s q"
									   " WHERE q.txid >= pg_catalog.pg_snapshot_xmin(d.last_snap)"
									   " AND NOT %1$s.metronome_acked(q.txid, q.id, d.last_snap,"
									   " d.cur_snap, d.pos_txid, d.pos_id))"
									   " AND coalesce((SELECT q.created_at < $$%4$s$$::timestamptz"
									   " FROM %1$s.%3$s q ORDER BY q.txid DESC, q.id DESC LIMIT 1), false)"
									   " FROM %1$s.metronome_delivery d"
									   " ORDER BY d.system_id IS NULL LIMIT 1",
									   s, sysid, name, timestamptz_to_str(cutoff)),
							  true, 1);
			if (ret == SPI_OK_SELECT && SPI_processed == 1)
			{
				bool		isnull;
				Datum		ok = SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull);

				if (!isnull && DatumGetBool(ok))
				{
					if (SPI_execute(psprintf("TRUNCATE %s.%s", s, name), false, 0) != SPI_OK_UTILITY)
						elog(ERROR, "could not truncate %s", name);
					/* the batches of its rows are not needed for sent_at any more */
					(void) SPI_execute(psprintf("DELETE FROM %s.metronome_ticks WHERE acked_at < $$%s$$::timestamptz",
												s, timestamptz_to_str(cutoff - (int64) Max(metronome_retain_sent, 1) * 3 * USECS_PER_SEC)),
									   false, 0);
				}
			}
		}
		values[0] = TimestampTzGetDatum(cutoff);
		values[1] = Int64GetDatum(limit);
		if (ship_run(plans.delete_sent, values, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not delete sent outbox rows");
		n = (int64) SPI_processed;
	}
	PG_FINALLY();
	{
		DeliveryWakeSuppressed = saved_suppress;
	}
	PG_END_TRY();
	PopActiveSnapshot();
	SPI_finish();
	return n;
}

/*
 * metronome_segment() -> smallint: the default of metronome_queue.seg.
 */
Datum
metronome_segment(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	PG_RETURN_INT16((int16) MetronomeSegment());
}

/*
 * CALL metronome_ship(max_events integer DEFAULT NULL,
 *					   INOUT accepted bigint DEFAULT NULL)
 *
 * Ship due pending rows from this session through the same cycle as the
 * worker, each cycle's claim and acknowledgement committed on their own
 * and no snapshot held while requests are out; accepted is how many
 * events Metronome accepted.  Refused inside a transaction block.  Stops
 * when no due row is left, max_events rows were handled, another process
 * is shipping, or the gate closes.
 */
Datum
metronome_ship(PG_FUNCTION_ARGS)
{
	int64		max_events = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0);
	int64		accepted = 0;
	int64		handled = 0;
	ShipResult	r;
	TupleDesc	tupdesc;
	Datum		value;
	bool		isnull = false;

	if (get_func_prokind(fcinfo->flinfo->fn_oid) != PROKIND_PROCEDURE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("function metronome_ship() of extension version 0.1.0 cannot run with this library"),
				 errhint("Run ALTER EXTENSION metronome UPDATE, then CALL metronome_ship().")));
	if (fcinfo->context == NULL || !IsA(fcinfo->context, CallContext) ||
		((CallContext *) fcinfo->context)->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("metronome_ship() cannot run inside a transaction block"),
				 errdetail("It commits its claim before it sends and acknowledges in a transaction of its own."),
				 errhint("Run CALL metronome_ship() on its own, outside BEGIN ... COMMIT and outside functions.")));
	if (!PG_ARGISNULL(0) && max_events < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be positive or NULL")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (!metronome_enabled)
		ereport(NOTICE,
				(errmsg("shipping is paused"),
				 errdetail("metronome.enabled is off."),
				 errhint("Set metronome.enabled to on to ship.")));
	else
	{
		if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		for (;;)
		{
			ShipCycle(SHIP_PROCEDURE, false, max_events > 0 ? max_events - handled : 0, &r);
			accepted += r.accepted;
			handled += r.claimed;

			if (r.no_extension)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("extension \"metronome\" is not installed in this database")));
			if (r.locked)
			{
				ereport(NOTICE,
						(errmsg("the outbox is locked by another session"),
						 errhint("Try again when the DDL in progress has finished.")));
				break;
			}
			if (r.busy)
			{
				ereport(NOTICE,
						(errmsg("another process is shipping the outbox"),
						 errdetail("Concurrent shippers never send the same rows; the one at work sends them."),
						 errhint("Try again later, or leave shipping to the delivery worker.")));
				break;
			}
			if (r.gated)
			{
				DeliveryGate kind;
				TimestampTz until;

				(void) StatusGateOpen(GetCurrentTimestamp(), &until, &kind);
				ereport(kind == DELIVERY_GATE_TRANSIENT ? NOTICE : WARNING,
						(errmsg("shipping to Metronome is paused until %s",
								timestamptz_to_str(until)),
						 errdetail("%s", kind == DELIVERY_GATE_AUTH ?
								   "Metronome refused the API token." :
								   kind == DELIVERY_GATE_CONFIG ?
								   "metronome.ingest_url does not answer as Metronome's ingest endpoint." :
								   "Metronome asked to retry later, or could not be reached."),
						 kind != DELIVERY_GATE_TRANSIENT ?
						 errhint("Fix metronome.api_token or metronome.ingest_url and reload; see metronome_status().") : 0));
				break;
			}
			if (r.rate_limited)
			{
				/*
				 * Wait for the rate limit with no transaction's snapshot:
				 * end the procedure's transaction first (it holds none of
				 * our writes).
				 */
				bool		woken = false;

				SPI_commit();
				while (GetCurrentTimestamp() < r.rate_until)
				{
					long		secs;
					int			us;

					TimestampDifference(GetCurrentTimestamp(), r.rate_until,
										&secs, &us);
					ship_rate_wait((long) Min(secs * 1000 + us / 1000 + 1, 1000),
								   &woken);
				}
				continue;
			}
			if (!r.full || (max_events > 0 && handled >= max_events))
				break;
			CHECK_FOR_INTERRUPTS();
		}
		SPI_finish();
		ShipReleaseMemory();
	}
	value = Int64GetDatum(accepted);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, &value, &isnull)));
}

/*
 * metronome_check_connection() -> text
 *
 * POST an empty batch, as Segment's destination does to test a token:
 * Metronome answers 400 when the token is good.  Returns 'ok' or raises an
 * error that says what is wrong.
 */
Datum
metronome_check_connection(PG_FUNCTION_ARGS)
{
	HttpClient *http;
	HttpRequest *req;
	HttpRequest *volatile vreq;
	Cycle		check;
	long		status;
	HttpClass	klass;
	bool		shaped;
	char		error[HTTP_ERROR_LEN];

	(void) fcinfo;
	if (metronome_api_token == NULL || metronome_api_token[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("metronome.api_token is not set"),
				 errhint("Set metronome.api_token with ALTER SYSTEM and reload the configuration.")));

	http = get_client();
	req = HttpRequestNew();
	if (req == NULL || (req->body = strdup("[]")) == NULL)
	{
		HttpRequestFree(req);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	req->body_len = 2;
	vreq = req;
	memset(&check, 0, sizeof(check));
	check.reqs = &req;
	check.nreqs = 1;
	pending = &check;

	PG_TRY();
	{
		if (HttpStart(http, vreq))
		{
			while (HttpNextDone(http) == NULL)
			{
				HttpWait(http, WAIT_SLICE_MS);
				CHECK_FOR_INTERRUPTS();
			}
		}
	}
	PG_CATCH();
	{
		/* a cancel or a timeout: the request is not wanted any more */
		ship_release_requests(&check);
		PG_RE_THROW();
	}
	PG_END_TRY();
	HttpCancelAll(http);
	pending = NULL;

	status = req->status;
	klass = req->klass;
	shaped = req->metronome_shaped;
	strlcpy(error, req->error, sizeof(error));
	HttpRequestFree(req);
	/* Metronome's text in the server encoding (encoding.c) */
	EncodingFromUtf8Buf(error, sizeof(error));

	if ((status == 400 && shaped) || (status >= 200 && status < 300))
		PG_RETURN_TEXT_P(cstring_to_text("ok"));
	if (status == 400)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metronome.ingest_url does not answer as Metronome's ingest endpoint"),
				 errdetail("It answered HTTP 400 without Metronome's {\"message\": ...} body: %s", error),
				 errhint("Check metronome.ingest_url, and any proxy or firewall between the server and Metronome.")));

	if (status == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to Metronome"),
				 errdetail("%s", error),
				 errhint(klass == HTTP_CLASS_CONFIG ?
						 "Check metronome.ingest_url and the server's TLS certificate authorities." :
						 "Check metronome.ingest_url and the network.")));
	if (klass == HTTP_CLASS_AUTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("the API token was refused by Metronome"),
				 errdetail("%s", error),
				 errhint("Set metronome.api_token to a valid token and reload the configuration.")));
	if (klass == HTTP_CLASS_CONFIG)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metronome.ingest_url does not answer as Metronome's ingest endpoint"),
				 errdetail("%s", error),
				 errhint("Check metronome.ingest_url.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("the Metronome ingest API is not available"),
			 errdetail("%s", error),
			 errhint("Try again later.")));
	PG_RETURN_NULL();
}
