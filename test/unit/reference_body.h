/*-------------------------------------------------------------------------
 *
 * reference_body.h
 *	  For tests only: an ingest request body as json-c prints it, the
 *	  reference that HttpBuildBody (src/http.c) must match byte for byte.
 *	  Included by test/unit/http_test.c and test/fuzz/fuzz_http_parse.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_REFERENCE_BODY_H
#define METRONOME_REFERENCE_BODY_H

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "http.h"

/*
 * The reference: the body as json-c prints it (what HttpBuildBody wrote
 * before it wrote bodies itself): an array of objects whose properties
 * member prints its text verbatim.
 */
static int
reference_raw_serializer(json_object *jso, struct printbuf *pb, int level, int flags)
{
	const char *text = json_object_get_userdata(jso);

	(void) level;
	(void) flags;
	return printbuf_memappend(pb, text, (int) strlen(text)) < 0 ? -1 : 0;
}

static char *
reference_body(const HttpEvent *events, int nevents)
{
	json_object *arr = json_object_new_array();
	char	   *out;
	int			i;

	for (i = 0; i < nevents; i++)
	{
		json_object *obj = json_object_new_object();
		json_object *props = json_object_new_object();
		char		ts[HTTP_TIMESTAMP_LEN];

		if (!HttpFormatTimestamp(events[i].timestamp_us, ts, sizeof(ts)))
			strcpy(ts, "?");
		json_object_object_add(obj, "transaction_id", json_object_new_string(events[i].transaction_id));
		json_object_object_add(obj, "customer_id", json_object_new_string(events[i].customer_id));
		json_object_object_add(obj, "timestamp", json_object_new_string(ts));
		json_object_object_add(obj, "event_type", json_object_new_string(events[i].event_type));
		json_object_set_serializer(props, reference_raw_serializer,
								   (void *) (events[i].properties ? events[i].properties : "{}"),
								   NULL);
		json_object_object_add(obj, "properties", props);
		json_object_array_add(arr, obj);
	}
	out = strdup(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN |
												 JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
	return out;
}

#endif							/* METRONOME_REFERENCE_BODY_H */
