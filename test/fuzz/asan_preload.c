/*-------------------------------------------------------------------------
 *
 * asan_preload.c
 *	  Preloaded, with AddressSanitizer's runtime, into the postgres process
 *	  that runs the in-backend fuzz targets (test/fuzz/run.sh).
 *
 * The ASan runtime initialises itself lazily, on the first malloc.  In
 * postgres that malloc comes from a library constructor (libgpg-error's)
 * that holds glibc's gettext lock; ASan's initialisation then looks up the
 * optional symbol swift_demangle, and the failed lookup's dlerror()
 * translates its message, taking the same lock: the lock's state is
 * corrupted and postgres hangs in its own bindtextdomain() call.  Defining
 * the symbol makes the lookup succeed, and nothing else changes: ASan
 * only calls it to demangle Swift names, and this one declines.
 *
 *-------------------------------------------------------------------------
 */
#include <stddef.h>
#include <stdint.h>

char	   *swift_demangle(const char *mangled, size_t mangled_len,
						   char *out, size_t *out_len, uint32_t flags);

/* Demangle nothing: ASan then prints the name as it is. */
char *
swift_demangle(const char *mangled, size_t mangled_len,
			   char *out, size_t *out_len, uint32_t flags)
{
	(void) mangled;
	(void) mangled_len;
	(void) out;
	(void) out_len;
	(void) flags;
	return NULL;
}
