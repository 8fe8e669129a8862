/* starmalloc/hardening.h: the hardening policies and fatal-error reporting.
 *
 * The allocator calls the policies at fixed points (a slot handed out, a slot freed);
 * which policies run is fixed at build time by the SM_* constants of starmalloc/config.h,
 * and a disabled policy compiles to nothing. Nothing here allocates. */
#ifndef STARMALLOC_HARDENING_H
#define STARMALLOC_HARDENING_H

#include <stddef.h>
#include <stdint.h>

#include "starmalloc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes "starmalloc: fatal: <what> at <addr>" and a newline to stderr with one write(2),
 * then aborts. Never returns, never allocates. */
_Noreturn void sm_fatal(const char *what, const void *addr);

/* Writes "starmalloc: warning: <what>" and a newline to stderr with one write(2). */
void sm_warn(const char *what);

/* Hook: a slot of slot_size bytes at `slot` was just claimed for the user.
 * Returns 1 when the slot's bytes are known to be zero (calloc may skip its memset). */
int sm_harden_on_alloc(void *slot, size_t slot_size);

/* Hook: the slot at `slot` (slot_size bytes, usable_size of them visible to the user) is
 * being freed; runs before the slot is marked free. */
void sm_harden_on_free(void *slot, size_t slot_size);

/* Formats value as "0x..." hexadecimal into buf (at least 19 bytes, NUL-terminated);
 * returns the length. For messages written without printf. */
size_t sm_format_hex(char *buf, uintptr_t value);

#ifdef __cplusplus
}
#endif

#endif
