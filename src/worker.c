/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery background worker (placeholder: registers nothing yet).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "delivery.h"

/*
 * Request shared memory and register the worker (nothing yet).
 */
void
DeliveryInit(void)
{
}
