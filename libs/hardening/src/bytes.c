/* The byte loops of the per-slot policies: zeroing a freed slot and checking that a slot
 * about to be reused is still zero. They run on every free and every allocation of the
 * default preset, so they use the widest vectors the CPU has: 32-byte AVX2 when the
 * start-up check finds it and the slot has 128 bytes or more, else 16-byte vectors (SSE2 on
 * x86-64, NEON on arm64, scalar code elsewhere), without a loop up to 64 bytes. Slot
 * addresses and sizes are multiples of 16. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bytes.h"

typedef uint64_t vec16 __attribute__((vector_size(16), aligned(16)));

static bool use_avx2; /* decided once by sm_bytes_init */
/* Below this the 16-byte loops, inlined, are shorter than a call to the 32-byte ones. */
enum { AVX2_MIN_BYTES = 128 };

static bool any_nonzero16(const char *p, size_t bytes)
{
    vec16 a = {0, 0}, b = {0, 0};
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) {
        a |= *(const vec16 *)(const void *)(p + i) | *(const vec16 *)(const void *)(p + i + 16);
        b |=
            *(const vec16 *)(const void *)(p + i + 32) | *(const vec16 *)(const void *)(p + i + 48);
    }
    for (; i < bytes; i += 16)
        a |= *(const vec16 *)(const void *)(p + i);
    a |= b;
    return (a[0] | a[1]) != 0;
}

static void zero16(char *p, size_t bytes)
{
    const vec16 zero = {0, 0};
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) {
        __asm__("" : "+r"(p)); /* keeps the loop a loop, not a call to memset */
        *(vec16 *)(void *)(p + i) = zero;
        *(vec16 *)(void *)(p + i + 16) = zero;
        *(vec16 *)(void *)(p + i + 32) = zero;
        *(vec16 *)(void *)(p + i + 48) = zero;
    }
    for (; i < bytes; i += 16) {
        __asm__("" : "+r"(p));
        *(vec16 *)(void *)(p + i) = zero;
    }
}

/* Slots of 16 to 64 bytes, the most frequent, in four 16-byte accesses at offsets 0, 16, 32
 * and 48 clamped to the last 16 bytes (so that they overlap in smaller slots): no loop, and
 * no branch that depends on the size, which varies from one call to the next. */
static size_t clamped_offset(size_t bytes, size_t offset)
{
    return offset < bytes - 16 ? offset : bytes - 16;
}

static bool any_nonzero_up_to_64(const char *p, size_t bytes)
{
    vec16 a = *(const vec16 *)(const void *)p |
              *(const vec16 *)(const void *)(p + clamped_offset(bytes, 16));
    vec16 b = *(const vec16 *)(const void *)(p + clamped_offset(bytes, 32)) |
              *(const vec16 *)(const void *)(p + bytes - 16);
    a |= b;
    return (a[0] | a[1]) != 0;
}

static void zero_up_to_64(char *p, size_t bytes)
{
    const vec16 zero = {0, 0};
    *(vec16 *)(void *)p = zero;
    *(vec16 *)(void *)(p + clamped_offset(bytes, 16)) = zero;
    *(vec16 *)(void *)(p + clamped_offset(bytes, 32)) = zero;
    *(vec16 *)(void *)(p + bytes - 16) = zero;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

static inline __attribute__((target("avx2"))) __m256i load32(const char *p)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

/* 128 bytes per round in one chain of ORs (loads with a folded OR), then 32 at a time;
 * a 16-byte tail is read as the upper half of an overlapping 32-byte load. */
__attribute__((target("avx2"))) static bool any_nonzero_avx2(const char *p, size_t bytes)
{
    const char *end = p + bytes;
    const char *rounds_end = p + (bytes & ~(size_t)127);
    __m256i acc = _mm256_setzero_si256();
    for (; p < rounds_end; p += 128) {
        __m256i x = _mm256_or_si256(_mm256_or_si256(load32(p), load32(p + 32)),
                                    _mm256_or_si256(load32(p + 64), load32(p + 96)));
        acc = _mm256_or_si256(acc, x);
    }
    for (; p + 32 <= end; p += 32)
        acc = _mm256_or_si256(acc, load32(p));
    if (p < end)
        acc = _mm256_or_si256(acc, load32(end - 32));
    return !_mm256_testz_si256(acc, acc);
}

/* 128 bytes per round, then 32, then a 16-byte tail. The empty asm statements keep the
 * loops loops: compilers would otherwise turn them into calls to memset. */
__attribute__((target("avx2"))) static void zero_avx2(char *p, size_t bytes)
{
    const __m256i zero = _mm256_setzero_si256();
    char *end = p + bytes;
    char *rounds_end = p + (bytes & ~(size_t)127);
    for (; p < rounds_end; p += 128) {
        __asm__("" : "+r"(p));
        _mm256_storeu_si256((__m256i *)(void *)p, zero);
        _mm256_storeu_si256((__m256i *)(void *)(p + 32), zero);
        _mm256_storeu_si256((__m256i *)(void *)(p + 64), zero);
        _mm256_storeu_si256((__m256i *)(void *)(p + 96), zero);
    }
    for (; p + 32 <= end; p += 32) {
        __asm__("" : "+r"(p));
        _mm256_storeu_si256((__m256i *)(void *)p, zero);
    }
    if (p < end)
        _mm_storeu_si128((__m128i *)(void *)p, _mm_setzero_si128());
}

/* Streaming (non-temporal) stores: the lines go to memory without being read first or kept
 * in the cache. A loop that zeroes the same buffer again and again favours memset (it stays
 * in the cache), but for freed memory nobody reads soon the cache is the cost: the `large`
 * workload of the light preset takes 0.95 s with these stores and 2.0 s with memset.
 * p 16-byte aligned, bytes a multiple of 64. */
static void zero_streaming(char *p, size_t bytes)
{
    const __m128i zero = _mm_setzero_si128();
    char *end = p + bytes;
    for (; p < end; p += 64) {
        _mm_stream_si128((__m128i *)(void *)p, zero);
        _mm_stream_si128((__m128i *)(void *)(p + 16), zero);
        _mm_stream_si128((__m128i *)(void *)(p + 32), zero);
        _mm_stream_si128((__m128i *)(void *)(p + 48), zero);
    }
    _mm_sfence(); /* the zeros are visible before anything that follows, as with memset */
}

void sm_bytes_zero_cold(void *p, size_t bytes)
{
    if (bytes % 64 != 0) {
        memset(p, 0, bytes);
        return;
    }
    zero_streaming(p, bytes);
}

void sm_bytes_init(void)
{
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
}
#else
void sm_bytes_zero_cold(void *p, size_t bytes)
{
    memset(p, 0, bytes);
}
void sm_bytes_init(void) {}
static bool any_nonzero_avx2(const char *p, size_t bytes)
{
    return any_nonzero16(p, bytes);
}
static void zero_avx2(char *p, size_t bytes)
{
    zero16(p, bytes);
}
#endif

/* The AVX2 test first, its size test first: small slots, the most frequent, do not read
 * use_avx2, and slots of 128 bytes and more pay no other test. (Callgrind, per malloc+free
 * pair: against the 64-byte test first, 5 to 14 instructions fewer from 80-byte slots on,
 * 5 more up to 64 bytes.) */
bool sm_bytes_any_nonzero(const void *p, size_t bytes)
{
    if (bytes >= AVX2_MIN_BYTES && use_avx2)
        return any_nonzero_avx2(p, bytes);
    if (bytes <= 64)
        return any_nonzero_up_to_64(p, bytes);
    return any_nonzero16(p, bytes);
}

void sm_bytes_zero(void *p, size_t bytes)
{
    if (bytes >= AVX2_MIN_BYTES && use_avx2) {
        zero_avx2(p, bytes);
        return;
    }
    if (bytes <= 64) {
        zero_up_to_64(p, bytes);
        return;
    }
    zero16(p, bytes);
}
