/* Unit tests for the size-class table and its O(1) lookups (libs/sizeclass).
 *
 * Every lookup is compared with a plain reference computed from SM_SIZE_CLASS_LIST, the list
 * the table was generated from, over every size and (for the reciprocals) every input the
 * header promises to handle exactly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>

#include "starmalloc/config.h"
#include "starmalloc/sizeclass.h"

/* The configured list, straight from config.h: the reference every lookup is checked against. */
static const size_t class_list[] = {SM_SIZE_CLASS_LIST};
enum { LIST_LENGTH = sizeof(class_list) / sizeof(class_list[0]) };

/* Page numbers below this are resolved exactly by sm_sizeclass_slab_index. */
#define PAGE_NUMBER_LIMIT (UINT32_C(1) << 24)

/* ---- reference implementations ---------------------------------------------------------- */

/* The first class whose size is at least `size` (size 0 -> class 0), by linear search. */
static unsigned reference_class_of(size_t size)
{
    unsigned c = 0;
    while (c < LIST_LENGTH && class_list[c] < size)
        c++;
    return c;
}

/* The first class whose size is at least `size` and a multiple of `align`, or SM_NB_CLASSES. */
static unsigned reference_class_of_aligned(size_t size, size_t align)
{
    for (unsigned c = 0; c < LIST_LENGTH; c++) {
        if (class_list[c] >= size && class_list[c] % align == 0)
            return c;
    }
    return SM_NB_CLASSES;
}

/* ---- the table -------------------------------------------------------------------------- */

static void test_table_matches_configured_list(void **state)
{
    (void)state;
    assert_int_equal(LIST_LENGTH, SM_NB_CLASSES);
    for (unsigned c = 0; c < SM_NB_CLASSES; c++)
        assert_int_equal(sm_sizeclass_geometry(c)->slot_size, class_list[c]);
    /* Class 0 serves malloc(0) and the 16-byte minimum; the last class is the small limit. */
    assert_int_equal(sm_sizeclass_geometry(0)->slot_size, 16);
    assert_int_equal(sm_sizeclass_geometry(SM_NB_CLASSES - 1)->slot_size, SM_MAX_SMALL_SIZE);
}

static void test_slot_sizes_ascend_in_multiples_of_16(void **state)
{
    (void)state;
    uint32_t previous = 0;
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        const struct sm_sizeclass_info *info = sm_sizeclass_geometry(c);
        assert_int_equal(info->slot_size % 16, 0);
        assert_true(info->slot_size > previous);
        previous = info->slot_size;
    }
}

static void test_slab_geometry_of_every_class(void **state)
{
    (void)state;
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        const struct sm_sizeclass_info *info = sm_sizeclass_geometry(c);
        size_t slab_bytes = sm_sizeclass_slab_bytes(c);

        assert_int_equal(slab_bytes, (size_t)info->slab_pages * SM_PAGE_SIZE);
        assert_in_range(info->slab_pages, 1, SM_MAX_SLAB_PAGES);
        assert_in_range(info->slots, 1, SM_MAX_SLOTS);
        assert_true((size_t)info->slots * info->slot_size <= slab_bytes);

        /* As many slots as fit, up to what one 256-bit bitmap can track. */
        size_t fit = slab_bytes / info->slot_size;
        size_t expected = fit < SM_MAX_SLOTS ? fit : SM_MAX_SLOTS;
        assert_int_equal(info->slots, expected);
    }
}

/* ---- size -> class ---------------------------------------------------------------------- */

static void test_class_of_every_small_size(void **state)
{
    (void)state;
    for (size_t size = 0; size <= SM_MAX_SMALL_SIZE; size++) {
        unsigned c = sm_sizeclass_of(size);
        if (c != reference_class_of(size))
            fail_msg("sm_sizeclass_of(%zu) = %u, reference says %u", size, c,
                     reference_class_of(size));
    }
}

static void test_class_of_boundaries(void **state)
{
    (void)state;
    assert_int_equal(sm_sizeclass_of(0), 0);
    assert_int_equal(sm_sizeclass_of(1), 0);
    assert_int_equal(sm_sizeclass_of(16), 0);
    assert_int_equal(sm_sizeclass_of(SM_MAX_SMALL_SIZE), SM_NB_CLASSES - 1);
    /* A class's own size maps to it, one byte more to the next class. */
    for (unsigned c = 0; c + 1 < SM_NB_CLASSES; c++) {
        size_t size = sm_sizeclass_geometry(c)->slot_size;
        assert_int_equal(sm_sizeclass_of(size), c);
        assert_int_equal(sm_sizeclass_of(size + 1), c + 1);
    }
}

/* ---- size, alignment -> class ----------------------------------------------------------- */

static void test_class_of_aligned_every_size_and_alignment(void **state)
{
    (void)state;
    for (size_t align = 1; align <= SM_PAGE_SIZE; align *= 2) {
        for (size_t size = 0; size <= SM_MAX_SMALL_SIZE; size++) {
            unsigned c = sm_sizeclass_of_aligned(size, align);
            unsigned expected = reference_class_of_aligned(size, align);
            if (c != expected)
                fail_msg("sm_sizeclass_of_aligned(%zu, %zu) = %u, reference says %u", size, align,
                         c, expected);
            if (c < SM_NB_CLASSES) {
                uint32_t slot_size = sm_sizeclass_geometry(c)->slot_size;
                assert_true(slot_size >= size);
                assert_int_equal(slot_size % align, 0);
            }
        }
    }
}

static void test_class_of_aligned_spot_checks(void **state)
{
    (void)state;
    /* A page-aligned request needs a class that is a whole number of pages. */
    unsigned c = sm_sizeclass_of_aligned(1, SM_PAGE_SIZE);
    if (c < SM_NB_CLASSES) {
        assert_int_equal(sm_sizeclass_geometry(c)->slot_size % SM_PAGE_SIZE, 0);
        for (unsigned smaller = 0; smaller < c; smaller++)
            assert_int_not_equal(sm_sizeclass_geometry(smaller)->slot_size % SM_PAGE_SIZE, 0);
    }
    /* 16-byte alignment is what every class gives: same answer as sm_sizeclass_of. */
    for (size_t size = 0; size <= SM_MAX_SMALL_SIZE; size += 7)
        assert_int_equal(sm_sizeclass_of_aligned(size, 16), sm_sizeclass_of(size));
}

static void test_class_of_aligned_rejects_large_sizes(void **state)
{
    (void)state;
    for (size_t align = 1; align <= SM_PAGE_SIZE; align *= 2) {
        assert_int_equal(sm_sizeclass_of_aligned(SM_MAX_SMALL_SIZE + 1, align), SM_NB_CLASSES);
        assert_int_equal(sm_sizeclass_of_aligned((size_t)SM_MAX_SMALL_SIZE * 2, align),
                         SM_NB_CLASSES);
        assert_int_equal(sm_sizeclass_of_aligned(SIZE_MAX, align), SM_NB_CLASSES);
    }
}

/* ---- reciprocals ------------------------------------------------------------------------ */

static void test_slot_index_of_every_slot_start(void **state)
{
    (void)state;
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        const struct sm_sizeclass_info *info = sm_sizeclass_geometry(c);
        /* Exact for every multiple of the slot size up to SM_MAX_SLOTS slots, which covers
         * every slot start and the end of the last slot. */
        for (uint32_t k = 0; k <= SM_MAX_SLOTS; k++) {
            uint32_t offset = k * info->slot_size;
            uint32_t index = sm_sizeclass_slot_index(info, offset);
            if (index != k)
                fail_msg("class %u (%u B): slot_index(%u) = %u, expected %u", c, info->slot_size,
                         offset, index, k);
        }
    }
}

/* Checks slab_index for every page number below 2^24; the reference quotient and remainder
 * are stepped along instead of divided, so that the loop is cheap. */
static void check_slab_index_exhaustively(unsigned c)
{
    const struct sm_sizeclass_info *info = sm_sizeclass_geometry(c);
    uint32_t quotient = 0;
    uint32_t remainder = 0;
    for (uint32_t page = 0; page < PAGE_NUMBER_LIMIT; page++) {
        if (sm_sizeclass_slab_index(info, page) != quotient)
            fail_msg("class %u (%u pages): slab_index(%u) = %zu, expected %u", c, info->slab_pages,
                     page, sm_sizeclass_slab_index(info, page), quotient);
        if (++remainder == info->slab_pages) {
            remainder = 0;
            quotient++;
        }
    }
}

static void test_slab_index_of_every_page_number(void **state)
{
    (void)state;
    /* Every class, every page number a class region can have (regions stay below 2^24 pages). */
    for (unsigned c = 0; c < SM_NB_CLASSES; c++)
        check_slab_index_exhaustively(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_configured_list),
        cmocka_unit_test(test_slot_sizes_ascend_in_multiples_of_16),
        cmocka_unit_test(test_slab_geometry_of_every_class),
        cmocka_unit_test(test_class_of_every_small_size),
        cmocka_unit_test(test_class_of_boundaries),
        cmocka_unit_test(test_class_of_aligned_every_size_and_alignment),
        cmocka_unit_test(test_class_of_aligned_spot_checks),
        cmocka_unit_test(test_class_of_aligned_rejects_large_sizes),
        cmocka_unit_test(test_slot_index_of_every_slot_start),
        cmocka_unit_test(test_slab_index_of_every_page_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
