/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The metronome.* settings, and the redaction that keeps the API token
 *	  out of the server log.
 *
 * metronome.api_token is a secret: it is GUC_SUPERUSER_ONLY (hidden from
 * SHOW, current_setting() and pg_settings for non-superusers), and its show
 * hook masks it for members of pg_read_all_settings.  The GUC machinery
 * itself only ever holds "********": the check hook swaps the value for that
 * mask and hands the real token to the assign hook as the setting's "extra"
 * (otherwise pg_settings.reset_val would show the token to members of
 * pg_read_all_settings).  PostgreSQL logs "parameter ... changed to ..."
 * with the new value when the configuration is reloaded, log_statement logs
 * "ALTER SYSTEM SET metronome.api_token = '...'", and libcurl or a user's
 * error may quote it; an emit_log_hook therefore replaces every occurrence of
 * the current token in a log message by "********", masks whatever follows
 * the setting's name in a message that names it, and keeps the STATEMENT
 * line of such messages out of the log.  pg_stat_activity would still show
 * the text of a statement setting the token to members of pg_read_all_stats
 * (while it runs, and after, as the session's last query): a
 * post_parse_analyze_hook reports that text masked the same way.
 *
 * metronome.ingest_url and metronome.ca_file (the authorities trusted for
 * https) decide where the token is sent: they are superuser-only too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "metronome.h"
#include "access/xact.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "parser/analyze.h"
#include "pg_compat.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"

char	   *metronome_api_token = "";	/* the real token (assign hook) */
char	   *metronome_ingest_url = NULL;
char	   *metronome_ca_file = NULL;
char	   *metronome_database = NULL;
int			metronome_batch_size = 100;
int			metronome_max_inflight = 4;
int			metronome_max_events_per_second = 0;
int			metronome_poll_interval = 1000;
int			metronome_request_timeout = 10000;
int			metronome_max_backoff = 300000;
int			metronome_max_attempts = 0;
int			metronome_retain_sent = 7 * 24 * 3600;
int			metronome_event_retention = -1;
bool		metronome_enabled = true;
int			metronome_on_mapping_error = ON_MAPPING_ERROR_REJECT;
bool		metronome_skip_mapping = false;

static const struct config_enum_entry on_mapping_error_options[] = {
	{"reject", ON_MAPPING_ERROR_REJECT, false},
	{"error", ON_MAPPING_ERROR_ERROR, false},
	{NULL, 0, false}
};

static emit_log_hook_type prev_emit_log_hook = NULL;
static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;

/* what the GUC machinery holds for metronome.api_token: "" or the mask */
static char *api_token_setting = NULL;

#define TOKEN_MASK "********"
#define TOKEN_GUC_NAME "metronome.api_token"

/*
 * Memory for GUC string values and "extra" data (guc_malloc, which
 * pg_compat.h maps to malloc before PostgreSQL 16).
 */
static void *
token_alloc(size_t size)
{
	return guc_malloc(LOG, size);
}

static void
token_free(void *ptr)
{
	guc_free(ptr);
}

/*
 * check hook of metronome.ingest_url: an absolute http:// or https:// URL.
 */
static bool
check_ingest_url(char **newval, void **extra, GucSource source)
{
	const char *url = *newval;

	(void) extra;
	(void) source;

	if (url == NULL)
		return true;
	if (pg_strncasecmp(url, "http://", 7) != 0 &&
		pg_strncasecmp(url, "https://", 8) != 0)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("metronome.ingest_url must start with http:// or https://");
		GUC_check_errdetail("Only HTTP and HTTPS are supported.");
		return false;
	}
	if (strpbrk(url, " \t\r\n") != NULL)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("metronome.ingest_url must not contain white space");
		return false;
	}
	return true;
}

/*
 * check hook of metronome.api_token: it travels in an HTTP header, so it
 * must not hold control characters.  The message never quotes the value.
 */
static bool
check_api_token(char **newval, void **extra, GucSource source)
{
	const unsigned char *p;
	size_t		len;
	char	   *real;

	(void) source;
	if (*newval == NULL)
		return true;
	for (p = (const unsigned char *) *newval; *p; p++)
	{
		if (*p < 0x20 || *p == 0x7f)
		{
			GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
			GUC_check_errmsg("metronome.api_token must not contain control characters");
			return false;
		}
	}

	/* the real token travels as "extra"; the GUC keeps only the mask */
	len = strlen(*newval);
	real = token_alloc(len + 1);
	if (real == NULL)
		return false;
	memcpy(real, *newval, len + 1);
	if (len > 0)
	{
		char	   *mask = token_alloc(sizeof(TOKEN_MASK));

		if (mask == NULL)
		{
			token_free(real);
			return false;
		}
		memcpy(mask, TOKEN_MASK, sizeof(TOKEN_MASK));
		token_free(*newval);
		*newval = mask;
	}
	*extra = real;
	return true;
}

/*
 * assign hook of metronome.api_token: the real token, from the check hook.
 */
static void
assign_api_token(const char *newval, void *extra)
{
	(void) newval;
	metronome_api_token = extra ? (char *) extra : "";
}

/*
 * show hook of metronome.api_token: only superusers see the token.
 * GUC_SUPERUSER_ONLY alone would still show it to members of
 * pg_read_all_settings; they see "********" when one is set.
 */
static const char *
show_api_token(void)
{
	if (metronome_api_token == NULL || metronome_api_token[0] == '\0')
		return "";
	if (IsTransactionState() && superuser())
		return metronome_api_token;
	return TOKEN_MASK;
}

/*
 * Replace each occurrence of secret in *text by "********" (palloc'd copy).
 */
static void
redact(char **text, const char *secret)
{
	StringInfoData buf;
	const char *p;
	const char *hit;
	size_t		slen = strlen(secret);

	if (*text == NULL || strstr(*text, secret) == NULL)
		return;
	initStringInfo(&buf);
	p = *text;
	while ((hit = strstr(p, secret)) != NULL)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		appendStringInfoString(&buf, "********");
		p = hit + slen;
	}
	appendStringInfoString(&buf, p);
	*text = buf.data;
}

/*
 * Where text names metronome.api_token (any case), or NULL.
 */
static const char *
find_token_name(const char *text)
{
	const char *p;
	size_t		n = strlen(TOKEN_GUC_NAME);

	if (text == NULL)
		return NULL;
	for (p = text; *p; p++)
	{
		if ((*p == 'm' || *p == 'M') && pg_strncasecmp(p, TOKEN_GUC_NAME, n) == 0)
			return p;
	}
	return NULL;
}

/*
 * Does p (just after the setting's name) start assigning it a value:
 * "= ...", "TO ..." or ", ..." (set_config's next argument)?
 */
static bool
assigns_value(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	if (*p == '=' || *p == ',')
		return true;
	return pg_strncasecmp(p, "to", 2) == 0 &&
		(p[2] == ' ' || p[2] == '\t' || p[2] == '\'' || p[2] == '\n' ||
		 p[2] == 'E' || p[2] == 'e' || p[2] == '$');
}

/*
 * Does text assign metronome.api_token a value somewhere?
 */
static bool
assigns_token(const char *text)
{
	const char *hit;

	while ((hit = find_token_name(text)) != NULL)
	{
		hit += strlen(TOKEN_GUC_NAME);
		while (*hit == '"' || *hit == '\'')
			hit++;
		if (assigns_value(hit))
			return true;
		text = hit;
	}
	return false;
}

/*
 * Where a mention of metronome.api_token assigns it a value ("SET
 * metronome.api_token = '...'", set_config('metronome.api_token', '...',
 * ...)), mask the rest of that line, so that a token being set, which is
 * not the current one yet, is not logged either.  Other mentions (error
 * messages naming the setting) are left alone.
 */
static void
redact_after_name(char **text)
{
	StringInfoData buf;
	const char *p;
	const char *hit;
	size_t		n = strlen(TOKEN_GUC_NAME);

	if (!assigns_token(*text))
		return;
	initStringInfo(&buf);
	p = *text;
	while ((hit = find_token_name(p)) != NULL)
	{
		const char *eol;

		hit += n;
		/* keep a closing quote of the name itself */
		while (*hit == '"' || *hit == '\'')
			hit++;
		appendBinaryStringInfo(&buf, p, hit - p);
		p = hit;
		if (!assigns_value(hit))
			continue;
		eol = strchr(hit, '\n');
		if (eol == NULL)
			eol = hit + strlen(hit);
		appendStringInfoString(&buf, " " TOKEN_MASK);
		p = eol;
	}
	appendStringInfoString(&buf, p);
	*text = buf.data;
}

/*
 * emit_log_hook: scrub the token from every part of a message.
 */
static void
metronome_emit_log_hook(ErrorData *edata)
{
	const char *secret = metronome_api_token;

	/* tokens shorter than 4 bytes would redact ordinary words */
	if (secret != NULL && strlen(secret) >= 4)
	{
		redact(&edata->message, secret);
		redact(&edata->detail, secret);
		redact(&edata->detail_log, secret);
		redact(&edata->hint, secret);
		redact(&edata->context, secret);
		redact(&edata->internalquery, secret);
	}

	/* a token being set is not the current one yet: mask by context */
	redact_after_name(&edata->message);
	redact_after_name(&edata->detail);
	redact_after_name(&edata->detail_log);
	redact_after_name(&edata->context);
	redact_after_name(&edata->internalquery);
	if (assigns_token(edata->message) &&
		edata->detail != NULL && strncmp(edata->detail, "parameters:", 11) == 0)
		edata->detail = pstrdup("parameters: " TOKEN_MASK);
	/* the STATEMENT line is not ours to edit: leave it out */
	if (assigns_token(debug_query_string))
		edata->hide_stmt = true;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * post_parse_analyze_hook: when the statement being run sets the token,
 * show its text masked in pg_stat_activity (PostgreSQL reported it as it
 * came, just before parsing it).
 */
static void
metronome_post_parse_analyze(ParseState *pstate, Query *query,
							 PG_COMPAT_JUMBLE_CONST JumbleState *jstate)
{
	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);
	if (pgstat_track_activities && debug_query_string != NULL &&
		assigns_token(debug_query_string))
	{
		char	   *masked = (char *) debug_query_string;

		redact_after_name(&masked);
		pgstat_report_activity(STATE_RUNNING, masked);
		if (masked != debug_query_string)
			pfree(masked);
	}
}

/*
 * Install the redaction hooks (once per process).
 */
void
MetronomeInstallRedaction(void)
{
	static bool installed = false;

	if (installed)
		return;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = metronome_emit_log_hook;
	prev_post_parse_analyze_hook = post_parse_analyze_hook;
	post_parse_analyze_hook = metronome_post_parse_analyze;
	installed = true;
}

/*
 * Define every metronome.* setting and reserve the prefix.
 */
void
MetronomeDefineSettings(void)
{
	DefineCustomStringVariable("metronome.api_token",
							   "Metronome API token, sent as a Bearer token.",
							   "Secret: visible to superusers only, never logged.",
							   &api_token_setting,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   check_api_token, assign_api_token, show_api_token);

	DefineCustomStringVariable("metronome.ingest_url",
							   "URL of Metronome's ingest endpoint.",
							   "http:// and https:// only.",
							   &metronome_ingest_url,
							   "https://api.metronome.com/v1/ingest",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_ingest_url, NULL, NULL);

	DefineCustomStringVariable("metronome.ca_file",
							   "PEM file of the certificate authorities trusted for an https ingest_url.",
							   "Empty: the system's default authorities.",
							   &metronome_ca_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/*
	 * A PGC_POSTMASTER setting can only be defined while the library is
	 * preloaded (elsewhere PostgreSQL raises FATAL); without preloading
	 * there is no worker for it to configure.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("metronome.database",
								   "Database whose outbox the delivery worker ships.",
								   NULL,
								   &metronome_database,
								   "postgres",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.batch_size",
							"Events per request to Metronome.",
							NULL,
							&metronome_batch_size,
							100, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.max_inflight",
							"Requests to Metronome in flight at once.",
							NULL,
							&metronome_max_inflight,
							4, 1, 64,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.max_events_per_second",
							"Events per second the whole server sends to Metronome (0 = no limit).",
							"One token bucket shared by every delivery worker and CALL metronome_ship() of the server (per session without preloading).",
							&metronome_max_events_per_second,
							0, 0, 10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.poll_interval",
							"How often an idle worker re-checks for due retries.",
							"New outbox rows wake the worker at commit.",
							&metronome_poll_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.request_timeout",
							"Timeout of one whole request to Metronome.",
							NULL,
							&metronome_request_timeout,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.max_backoff",
							"Cap of the delay between retries.",
							NULL,
							&metronome_max_backoff,
							300000, 10, 24 * 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.max_attempts",
							"Transient failures before a row is marked failed.",
							"0 retries forever.",
							&metronome_max_attempts,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.retain_sent",
							"How long sent rows are kept before the worker deletes them.",
							"-1 keeps them.",
							&metronome_retain_sent,
							7 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("metronome.retain_events",
							"How long mapped events are kept in segment_events before the worker deletes them.",
							"-1 keeps them.",
							&metronome_event_retention,
							-1, -1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("metronome.enabled",
							 "Ship outbox rows to Metronome.",
							 "Off pauses shipping; mapping continues.",
							 &metronome_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("metronome.on_mapping_error",
							 "What an event that cannot be mapped does.",
							 "reject: a metronome_rejected row; error: the INSERT fails.",
							 &metronome_on_mapping_error,
							 ON_MAPPING_ERROR_REJECT,
							 on_mapping_error_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("metronome.skip_mapping",
							 "Map nothing: for restoring a dump.",
							 "On, the mapping trigger maps no event (metronome_enqueue() still does). "
							 "A dump holds the outbox with the events, so its events must not be mapped again.",
							 &metronome_skip_mapping,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("metronome");
}
