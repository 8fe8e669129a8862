/* Unit tests for the vectorised byte loops of the slot policies (libs/hardening/src/bytes.c).
 * Each test runs twice: with the 16-byte loops (before sm_bytes_init) and with the loops
 * sm_bytes_init picks for this CPU (AVX2 on most x86-64 machines); slots of up to 64 bytes
 * take the loop-free accesses in both. Every slot size the configuration allows up to 4 KiB is
 * checked, with every byte position. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "bytes.h"

enum { MAX_SLOT = 4096, MARGIN = 64, FILL = 0xa5 };

/* A slot of `size` bytes at a 16-byte (not 32-byte) aligned address, between margins. */
static _Alignas(64) unsigned char arena[MARGIN + 16 + MAX_SLOT + MARGIN];
static unsigned char *const slot = arena + MARGIN + 16;

static void check_margins_untouched(size_t size)
{
    for (size_t i = 0; i < MARGIN + 16; i++)
        assert_int_equal(arena[i], FILL);
    for (size_t i = MARGIN + 16 + size; i < sizeof(arena); i++)
        assert_int_equal(arena[i], FILL);
}

static void zero_exactly_the_slot(void)
{
    for (size_t size = 16; size <= MAX_SLOT; size += 16) {
        memset(arena, FILL, sizeof(arena));
        sm_bytes_zero(slot, size);
        for (size_t i = 0; i < size; i++)
            if (slot[i] != 0)
                fail_msg("size %zu: byte %zu not zeroed", size, i);
        check_margins_untouched(size);
    }
}

static void find_any_nonzero_byte(void)
{
    memset(arena, FILL, sizeof(arena)); /* non-zero around the slot: must not be read */
    for (size_t size = 16; size <= MAX_SLOT; size += 16) {
        memset(slot, 0, size);
        assert_false(sm_bytes_any_nonzero(slot, size));
        for (size_t i = 0; i < size; i++) {
            slot[i] = (unsigned char)(1u << (i % 8));
            if (!sm_bytes_any_nonzero(slot, size))
                fail_msg("size %zu: the non-zero byte %zu was missed", size, i);
            slot[i] = 0;
        }
        memset(slot + size, FILL, MAX_SLOT - size);
    }
}

static void test_cold_zeroing_zeroes_exactly_the_range(void **state)
{
    (void)state;
    /* Multiples of 64 take the streaming stores, the others memset. */
    for (size_t size = 16; size <= MAX_SLOT; size += 16) {
        memset(arena, FILL, sizeof(arena));
        sm_bytes_zero_cold(slot, size);
        for (size_t i = 0; i < size; i++)
            if (slot[i] != 0)
                fail_msg("size %zu: byte %zu not zeroed", size, i);
        check_margins_untouched(size);
    }
}

/* cmocka runs the tests in order: the 16-byte loops first, then the CPU's choice. */
static void test_16_byte_loops_zero_exactly_the_slot(void **state)
{
    (void)state;
    zero_exactly_the_slot();
}

static void test_16_byte_loops_find_any_nonzero_byte(void **state)
{
    (void)state;
    find_any_nonzero_byte();
}

static void test_cpu_loops_zero_exactly_the_slot(void **state)
{
    (void)state;
    sm_bytes_init();
    zero_exactly_the_slot();
}

static void test_cpu_loops_find_any_nonzero_byte(void **state)
{
    (void)state;
    sm_bytes_init();
    find_any_nonzero_byte();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_16_byte_loops_zero_exactly_the_slot),
        cmocka_unit_test(test_16_byte_loops_find_any_nonzero_byte),
        cmocka_unit_test(test_cpu_loops_zero_exactly_the_slot),
        cmocka_unit_test(test_cpu_loops_find_any_nonzero_byte),
        cmocka_unit_test(test_cold_zeroing_zeroes_exactly_the_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
