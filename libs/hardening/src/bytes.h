/* Private to libs/hardening: the vectorised byte loops of the slot policies. */
#ifndef STARMALLOC_HARDENING_BYTES_H
#define STARMALLOC_HARDENING_BYTES_H

#include <stdbool.h>
#include <stddef.h>

/* Picks the widest loops the CPU supports (AVX2 on x86-64 when present). Calling the
 * functions below before it is safe: they then use 16-byte vectors. */
void sm_bytes_init(void);

/* Whether [p, p + bytes) holds a non-zero byte; p 16-byte aligned, bytes a multiple of 16
 * (at least 16). */
bool sm_bytes_any_nonzero(const void *p, size_t bytes);

/* Zeroes [p, p + bytes), same conditions. */
void sm_bytes_zero(void *p, size_t bytes);

/* Zeroes [p, p + bytes) (p 16-byte aligned) for memory that will not be read soon, bypassing
 * the cache where the CPU can (a freed large object). */
void sm_bytes_zero_cold(void *p, size_t bytes);

#endif
