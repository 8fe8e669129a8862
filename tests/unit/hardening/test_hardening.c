/* Unit tests for fatal-error reporting and the per-slot hooks (libs/hardening).
 *
 * stderr is captured through a SOCK_SEQPACKET socket installed as fd 2: every write(2)
 * arrives as one message, so "written with one write(2)" is checked exactly. sm_fatal runs
 * in a forked child, which must die by SIGABRT. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "starmalloc/config.h"
#include "starmalloc/hardening.h"

#include "child.h"

/* ---- sm_format_hex ---------------------------------------------------------------------- */

static void assert_hex(uintptr_t value, const char *expected)
{
    char buf[32];
    memset(buf, 0x7f, sizeof(buf));
    size_t len = sm_format_hex(buf, value);
    assert_int_equal(len, strlen(expected));
    assert_string_equal(buf, expected);
    /* The buffer is only written up to the terminating NUL. */
    for (size_t i = len + 1; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0x7f);
}

static void test_format_hex(void **state)
{
    (void)state;
    assert_hex(0, "0x0");
    assert_hex(1, "0x1");
    assert_hex(0x10, "0x10");
    assert_hex(0xabc, "0xabc");
    assert_hex(0xdeadbeef, "0xdeadbeef");
    if (sizeof(uintptr_t) == 8)
        assert_hex(UINTPTR_MAX, "0xffffffffffffffff");
    else
        assert_hex(UINTPTR_MAX, "0xffffffff");
}

static void test_format_hex_fits_the_documented_buffer(void **state)
{
    (void)state;
    /* 19 bytes: "0x", 16 digits, NUL, for every 64-bit value. */
    for (unsigned shift = 0; shift < 8 * sizeof(uintptr_t); shift++) {
        char buf[19];
        uintptr_t value = (uintptr_t)1 << shift;
        size_t len = sm_format_hex(buf, value);
        assert_int_equal(len, 2 + shift / 4 + 1);
        assert_int_equal(buf[len], '\0');
        assert_int_equal(buf[2], "1248"[shift % 4]);
    }
}

/* ---- sm_fatal --------------------------------------------------------------------------- */

static void fatal_double_free(void *arg)
{
    (void)arg;
    sm_fatal("double free", (const void *)(uintptr_t)0x1234);
}

static void test_fatal_writes_one_line_and_aborts(void **state)
{
    (void)state;
    struct captured_stderr out;
    int status = run_in_child(fatal_double_free, NULL, &out);
    assert_child_aborted(status);
    assert_child_wrote_once(&out, "starmalloc: fatal: double free at 0x1234\n");
}

static void fatal_with_address(void *arg)
{
    sm_fatal("invalid free", arg);
}

static void test_fatal_formats_any_address(void **state)
{
    (void)state;
    struct captured_stderr out;
    assert_child_aborted(run_in_child(fatal_with_address, NULL, &out));
    assert_child_wrote_once(&out, "starmalloc: fatal: invalid free at 0x0\n");

    assert_child_aborted(run_in_child(fatal_with_address, (void *)UINTPTR_MAX, &out));
    assert_child_wrote_once(&out, sizeof(uintptr_t) == 8
                                      ? "starmalloc: fatal: invalid free at 0xffffffffffffffff\n"
                                      : "starmalloc: fatal: invalid free at 0xffffffff\n");
}

static void fatal_long_description(void *arg)
{
    (void)arg;
    char what[1000];
    memset(what, 'x', sizeof(what) - 1);
    what[sizeof(what) - 1] = '\0';
    sm_fatal(what, (const void *)(uintptr_t)0x1234);
}

static void test_fatal_truncates_an_overlong_description(void **state)
{
    (void)state;
    /* The line is built in a fixed buffer (no allocation): a huge description is cut, but it
     * is still one line, in one write, ending in a newline. */
    struct captured_stderr out;
    assert_child_aborted(run_in_child(fatal_long_description, NULL, &out));
    assert_int_equal(out.count, 1);
    assert_true(out.length[0] > strlen("starmalloc: fatal: "));
    assert_true(out.length[0] < 1000);
    assert_memory_equal(out.text[0], "starmalloc: fatal: xxxx", 23);
    assert_int_equal(out.text[0][out.length[0] - 1], '\n');
    assert_null(memchr(out.text[0], '\n', out.length[0] - 1));
}

/* ---- sm_warn ---------------------------------------------------------------------------- */

static void test_warn_writes_one_line_and_returns(void **state)
{
    (void)state;
    int fds[2];
    capture_open(fds);
    int saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_int_equal(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
    sm_warn("guard pages could not be installed");
    sm_warn("second");
    assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
    close(saved_stderr);
    close(fds[1]);

    struct captured_stderr out;
    capture_read(fds[0], &out);
    close(fds[0]);
    assert_int_equal(out.count, 2);
    assert_string_equal(out.text[0], "starmalloc: warning: guard pages could not be installed\n");
    assert_string_equal(out.text[1], "starmalloc: warning: second\n");
}

/* ---- the slot hooks --------------------------------------------------------------------- */

/* Slot-sized, suitably aligned test memory. */
enum { SLOT = 128, SECRET_A = 0x1234567, SECRET_B = 0x7654321 };
struct test_slot {
    _Alignas(16) unsigned char before[16];
    unsigned char bytes[SLOT];
    unsigned char after[16];
};

static void init_slot(struct test_slot *t, unsigned char fill)
{
    memset(t, 0xee, sizeof(*t));
    memset(t->bytes, fill, SLOT);
}

static void assert_surroundings_untouched(const struct test_slot *t)
{
    for (size_t i = 0; i < 16; i++) {
        assert_int_equal(t->before[i], 0xee);
        assert_int_equal(t->after[i], 0xee);
    }
}

static void test_on_alloc_reports_zeroed_slots_only_with_zero_on_free(void **state)
{
    (void)state;
    /* calloc trusts this answer to skip its memset: it may say 1 only when every freed slot
     * was cleared, i.e. with zero-on-free. */
    struct test_slot t;
    init_slot(&t, 0);
    int zeroed = sm_harden_on_alloc(t.bytes, SLOT, SECRET_A);
    assert_int_equal(zeroed, SM_ZERO_ON_FREE ? 1 : 0);
    /* The user's part is untouched (zero); only the canary, if any, was written. */
    for (size_t i = 0; i < SLOT - SM_CANARY_BYTES; i++)
        assert_int_equal(t.bytes[i], 0);
    assert_surroundings_untouched(&t);
}

static void test_canary_is_written_at_the_end_of_the_slot(void **state)
{
    (void)state;
    struct test_slot t;
    init_slot(&t, 0);
    sm_harden_on_alloc(t.bytes, SLOT, SECRET_A);
    assert_true(sm_harden_canary_intact(t.bytes, SLOT, SECRET_A));
    if (!SM_CANARIES) {
        assert_int_equal(SM_CANARY_BYTES, 0);
        return;
    }
    assert_int_equal(SM_CANARY_BYTES, 8);
    /* The canary is not all zero, but its first byte is (it stops string reads). */
    const unsigned char *canary = t.bytes + SLOT - SM_CANARY_BYTES;
    unsigned char zero[8] = {0};
    assert_memory_not_equal(canary, zero, 8);
    assert_int_equal(canary[0], 0);
    /* It depends on the secret. */
    assert_false(sm_harden_canary_intact(t.bytes, SLOT, SECRET_B));
}

static void test_canary_survives_use_of_the_usable_bytes(void **state)
{
    (void)state;
    struct test_slot t;
    init_slot(&t, 0);
    sm_harden_on_alloc(t.bytes, SLOT, SECRET_A);
    memset(t.bytes, 0x41, SLOT - SM_CANARY_BYTES); /* the user fills what is theirs */
    assert_true(sm_harden_canary_intact(t.bytes, SLOT, SECRET_A));
    assert_int_equal(sm_harden_on_free(t.bytes, SLOT, SECRET_A), 1);
    assert_surroundings_untouched(&t);
}

static void test_an_overflow_into_the_canary_is_detected(void **state)
{
    (void)state;
    if (!SM_CANARIES)
        skip();
    /* Any non-zero byte written past the usable size breaks the canary. */
    for (size_t i = SLOT - SM_CANARY_BYTES; i < SLOT; i++) {
        struct test_slot t;
        init_slot(&t, 0);
        sm_harden_on_alloc(t.bytes, SLOT, SECRET_A);
        t.bytes[i] ^= 0x5a;
        assert_false(sm_harden_canary_intact(t.bytes, SLOT, SECRET_A));
        /* on_free reports it and changes nothing (no zeroing of the evidence). */
        struct test_slot before = t;
        assert_int_equal(sm_harden_on_free(t.bytes, SLOT, SECRET_A), 0);
        assert_memory_equal(&t, &before, sizeof(t));
    }
}

static void test_a_canary_copied_from_another_slot_does_not_fit(void **state)
{
    (void)state;
    if (!SM_CANARIES)
        skip();
    /* Two slots of the same slab (same secret) at different addresses. */
    struct test_slot t[2];
    init_slot(&t[0], 0);
    init_slot(&t[1], 0);
    sm_harden_on_alloc(t[0].bytes, SLOT, SECRET_A);
    sm_harden_on_alloc(t[1].bytes, SLOT, SECRET_A);
    memcpy(t[1].bytes + SLOT - 8, t[0].bytes + SLOT - 8, 8);
    assert_false(sm_harden_canary_intact(t[1].bytes, SLOT, SECRET_A));
}

static void test_on_free_zeroes_exactly_the_slot_when_configured(void **state)
{
    (void)state;
    struct test_slot t;
    init_slot(&t, 0);
    sm_harden_on_alloc(t.bytes, SLOT, SECRET_A);
    memset(t.bytes, 0xaa, SLOT - SM_CANARY_BYTES);
    struct test_slot before = t;
    assert_int_equal(sm_harden_on_free(t.bytes, SLOT, SECRET_A), 1);
    assert_surroundings_untouched(&t);
    /* SM_ZERO_ON_FREE (config.h) decides: the whole slot, canary included, is zeroed, or it
     * is left exactly as it was. */
    for (size_t i = 0; i < SLOT; i++) {
        unsigned char expected = SM_ZERO_ON_FREE ? 0 : before.bytes[i];
        if (t.bytes[i] != expected)
            fail_msg("byte %zu is 0x%02x, expected 0x%02x (SM_ZERO_ON_FREE=%d)", i, t.bytes[i],
                     expected, (int)SM_ZERO_ON_FREE);
    }
}

static void test_free_then_alloc_round_trip(void **state)
{
    (void)state;
    /* A slot freed and handed out again: when the alloc hook says "zeroed", it is, and its
     * new canary is intact. */
    struct test_slot t;
    init_slot(&t, 0);
    sm_harden_on_alloc(t.bytes, SLOT, SECRET_A);
    memset(t.bytes, 0x5c, SLOT - SM_CANARY_BYTES);
    assert_int_equal(sm_harden_on_free(t.bytes, SLOT, SECRET_A), 1);
    if (sm_harden_on_alloc(t.bytes, SLOT, SECRET_B)) {
        for (size_t i = 0; i < SLOT - SM_CANARY_BYTES; i++)
            assert_int_equal(t.bytes[i], 0);
    }
    assert_true(sm_harden_canary_intact(t.bytes, SLOT, SECRET_B));
}

static void write_after_free(void *arg)
{
    unsigned char *slot = (unsigned char *)(uintptr_t)arg;
    slot[40] = 1; /* a freed (zeroed) slot, written to through a dangling pointer */
    sm_harden_on_alloc(slot, SLOT, SECRET_A);
}

static void test_write_after_free_is_detected_on_reuse(void **state)
{
    (void)state;
    struct test_slot t;
    init_slot(&t, 0);
    struct captured_stderr out;
    int status = run_in_child(write_after_free, t.bytes, &out);
    if (!SM_WRITE_AFTER_FREE_CHECK) {
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_int_equal(out.count, 0);
        return;
    }
    assert_child_aborted(status);
    char expected[128];
    char hex[20];
    sm_format_hex(hex, (uintptr_t)t.bytes);
    snprintf(expected, sizeof(expected), "starmalloc: fatal: write after free at %s\n", hex);
    assert_child_wrote_once(&out, expected);
}

/* ---- guard failures --------------------------------------------------------------------- */

static void two_guard_failures(void *arg)
{
    (void)arg;
    uint64_t before = sm_harden_guard_failures();
    sm_harden_note_guard_failure("guard page refused");
    sm_harden_note_guard_failure("guard page refused again");
    _exit(before == 0 && sm_harden_guard_failures() == 2 ? 0 : 1);
}

static void test_guard_failures_are_counted_and_reported_once(void **state)
{
    (void)state;
    struct captured_stderr out;
    int status = run_in_child(two_guard_failures, NULL, &out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* counted from 0 to 2 */
    assert_child_wrote_once(&out, "starmalloc: warning: guard page refused\n");
}

/* ---- randomness ------------------------------------------------------------------------- */

/* The 64 bytes of a ChaCha block, little-endian as the cipher defines its output. */
static void chacha_bytes(const uint32_t key[8], uint64_t counter, uint64_t nonce, int rounds,
                         unsigned char out[64])
{
    uint32_t words[16];
    sm_chacha_block(key, counter, nonce, rounds, words);
    for (int i = 0; i < 16; i++) {
        for (int b = 0; b < 4; b++)
            out[4 * i + b] = (unsigned char)(words[i] >> (8 * b));
    }
}

static void assert_hex_bytes(const unsigned char *bytes, const char *hex)
{
    char text[129];
    for (int i = 0; i < 64; i++)
        snprintf(text + 2 * i, 3, "%02x", bytes[i]);
    assert_string_equal(text, hex);
}

static void test_chacha_block_matches_published_vectors(void **state)
{
    (void)state;
    static const uint32_t zero_key[8] = {0};
    unsigned char out[64];

    /* RFC 8439, A.1 test vector #1: ChaCha20, zero key, nonce and counter. */
    chacha_bytes(zero_key, 0, 0, 20, out);
    assert_hex_bytes(out, "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
                          "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586");

    /* draft-strombergson-chacha-test-vectors, TC1: ChaCha8, zero key and IV. */
    chacha_bytes(zero_key, 0, 0, 8, out);
    assert_hex_bytes(out, "3e00ef2f895f40d67f5bb8e81f09a5a12c840ec3ce9a7f3b181be188ef711a1e"
                          "984ce172b9216f419f445367456d5619314a42a3da86b001387bfdb80e0cfe42");

    /* RFC 8439, 2.3.2: key 00..1f, counter 1, nonce 00:00:00:09:00:00:00:4a:00:00:00:00.
     * The RFC's 32-bit counter and 96-bit nonce fill words 12-15 as the 64-bit counter
     * 0x09000000'00000001 and the 64-bit nonce 0x4a000000. */
    uint32_t key[8];
    for (int i = 0; i < 8; i++)
        key[i] = (uint32_t)(4 * i) | (uint32_t)(4 * i + 1) << 8 | (uint32_t)(4 * i + 2) << 16 |
                 (uint32_t)(4 * i + 3) << 24;
    uint32_t words[16];
    sm_chacha_block(key, UINT64_C(0x0900000000000001), 0x4a000000, 20, words);
    static const uint32_t expected[16] = {0xe4e7f110u, 0x15593bd1u, 0x1fdd0f50u, 0xc47120a3u,
                                          0xc7f4d1c7u, 0x0368c033u, 0x9aaa2204u, 0x4e6cd4c3u,
                                          0x466482d2u, 0x09aa9f07u, 0x05d7c214u, 0xa2028bd9u,
                                          0xd19c12b5u, 0xb94e16deu, 0xe883d0cbu, 0x4e3c50a2u};
    assert_memory_equal(words, expected, sizeof(words));
}

static void test_random_streams_differ_and_look_uniform(void **state)
{
    (void)state;
    struct sm_random a, b;
    sm_random_init(&a, 1);
    sm_random_init(&b, 2);
    enum { DRAWS = 1000 };
    static uint64_t values[DRAWS];
    unsigned ones[64] = {0};
    unsigned same = 0;
    for (int i = 0; i < DRAWS; i++) {
        values[i] = sm_random_u64(&a);
        same += values[i] == sm_random_u64(&b);
        for (int bit = 0; bit < 64; bit++)
            ones[bit] += (values[i] >> bit) & 1;
    }
    assert_int_equal(same, 0);
    /* Each bit is set about half the time (6 standard deviations: 500 +- 95). */
    for (int bit = 0; bit < 64; bit++)
        assert_in_range(ones[bit], 405, 595);
    /* No repeats in 1000 64-bit draws. */
    for (int i = 0; i < DRAWS; i++) {
        for (int j = i + 1; j < DRAWS; j++)
            assert_true(values[i] != values[j]);
    }
}

static void test_random_below_stays_in_range(void **state)
{
    (void)state;
    struct sm_random rng;
    sm_random_init(&rng, 3);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sm_random_below(&rng, 1), 0);
    static const uint32_t bounds[] = {2, 3, 7, 256, 1000, UINT32_MAX};
    for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
        for (int i = 0; i < 10000; i++)
            assert_true(sm_random_below(&rng, bounds[b]) < bounds[b]);
    }
    /* Every value of a small range comes up, about equally often (10000 +- 7 sigma). */
    unsigned counts[4] = {0};
    for (int i = 0; i < 40000; i++)
        counts[sm_random_below(&rng, 4)]++;
    for (int v = 0; v < 4; v++)
        assert_in_range(counts[v], 9400, 10600);
}

/* Powers of two up to 256 take one byte each: a block serves 64 of them, and every value
 * comes up about equally often; draws of every width mixed stay in range across blocks. */
static void test_random_below_powers_of_two_take_a_byte(void **state)
{
    (void)state;
    struct sm_random rng;
    sm_random_init(&rng, 4);
    for (int i = 0; i < 64; i++)
        assert_true(sm_random_below(&rng, 32) < 32);
    assert_int_equal(rng.counter, 1);
    (void)sm_random_below(&rng, 256);
    assert_int_equal(rng.counter, 2);
    (void)sm_random_below(&rng, 1000); /* 16 bits */
    assert_int_equal(rng.next, 3);
    /* 32 values x 2000 draws each (2000 +- 7 sigma, sigma about 44). */
    static unsigned counts[32];
    for (int i = 0; i < 64000; i++)
        counts[sm_random_below(&rng, 32)]++;
    for (int v = 0; v < 32; v++)
        assert_in_range(counts[v], 1690, 2310);
    static const uint32_t bounds[] = {2, 3, 128, 256, 257, 1000, 65536, 65537};
    for (int i = 0; i < 20000; i++) {
        uint32_t bound = bounds[i % 8];
        assert_true(sm_random_below(&rng, bound) < bound);
        if (i % 7 == 0)
            (void)sm_random_u64(&rng);
    }
}

static void test_random_fill_writes_exactly_the_buffer(void **state)
{
    (void)state;
    unsigned char a[64 + 2], b[64 + 2];
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    sm_random_fill(a + 1, 64);
    sm_random_fill(b + 1, 64);
    assert_int_equal(a[0], 0);
    assert_int_equal(a[65], 0);
    unsigned char zero[64] = {0};
    assert_memory_not_equal(a + 1, zero, 64);
    assert_memory_not_equal(a + 1, b + 1, 64);
    /* Odd lengths too. */
    unsigned char c[16];
    memset(c, 0xcc, sizeof(c));
    sm_random_fill(c, 13);
    assert_int_equal(c[13], 0xcc);
    assert_int_equal(c[15], 0xcc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_hex),
        cmocka_unit_test(test_format_hex_fits_the_documented_buffer),
        cmocka_unit_test(test_fatal_writes_one_line_and_aborts),
        cmocka_unit_test(test_fatal_formats_any_address),
        cmocka_unit_test(test_fatal_truncates_an_overlong_description),
        cmocka_unit_test(test_warn_writes_one_line_and_returns),
        cmocka_unit_test(test_on_alloc_reports_zeroed_slots_only_with_zero_on_free),
        cmocka_unit_test(test_canary_is_written_at_the_end_of_the_slot),
        cmocka_unit_test(test_canary_survives_use_of_the_usable_bytes),
        cmocka_unit_test(test_an_overflow_into_the_canary_is_detected),
        cmocka_unit_test(test_a_canary_copied_from_another_slot_does_not_fit),
        cmocka_unit_test(test_on_free_zeroes_exactly_the_slot_when_configured),
        cmocka_unit_test(test_free_then_alloc_round_trip),
        cmocka_unit_test(test_write_after_free_is_detected_on_reuse),
        cmocka_unit_test(test_guard_failures_are_counted_and_reported_once),
        cmocka_unit_test(test_chacha_block_matches_published_vectors),
        cmocka_unit_test(test_random_streams_differ_and_look_uniform),
        cmocka_unit_test(test_random_below_stays_in_range),
        cmocka_unit_test(test_random_below_powers_of_two_take_a_byte),
        cmocka_unit_test(test_random_fill_writes_exactly_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
