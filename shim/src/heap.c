/* The composition: initialisation, then each request to the small or the large path. */
#include "heap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "starmalloc/arena.h"
#include "starmalloc/hardening.h"
#include "starmalloc/sizeclass.h"

enum { INIT_NONE = 0, INIT_RUNNING, INIT_READY };

static atomic_int init_state;

static void fork_prepare(void)
{
    sm_arena_fork_prepare();
    sm_large_fork_prepare();
}

static void fork_parent(void)
{
    sm_large_fork_parent();
    sm_arena_fork_parent();
}

static void fork_child(void)
{
    sm_large_fork_child();
    sm_arena_fork_child();
}

static bool heap_init_slow(void)
{
    int expected = INIT_NONE;
    if (!atomic_compare_exchange_strong(&init_state, &expected, INIT_RUNNING)) {
        /* Another thread is initialising (nothing in init calls malloc): wait for it. */
        while ((expected = atomic_load(&init_state)) == INIT_RUNNING)
            ;
        return expected == INIT_READY;
    }
    if (!sm_arena_init() || !sm_large_init()) {
        atomic_store(&init_state, INIT_NONE);
        return false;
    }
    atomic_store(&init_state, INIT_READY);
    /* After READY: pthread_atfork may itself call malloc, which must then find us ready. */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    return true;
}

bool sm_heap_ready(void)
{
    if (__builtin_expect(atomic_load_explicit(&init_state, memory_order_acquire) == INIT_READY, 1))
        return true;
    return heap_init_slow();
}

void *sm_heap_alloc(size_t size, size_t align, int *zeroed)
{
    if (!sm_heap_ready())
        return NULL;
    /* A slot holds the user's bytes and then its canary. */
    if (align <= SM_MIN_ALIGN && size <= SM_MAX_SMALL_SIZE - SM_CANARY_BYTES)
        return sm_arena_alloc_cached(sm_sizeclass_of(size + SM_CANARY_BYTES), zeroed);
    if (align <= SM_PAGE_SIZE && size <= SM_MAX_SMALL_SIZE - SM_CANARY_BYTES) {
        unsigned cls = sm_sizeclass_of_aligned(size + SM_CANARY_BYTES, align);
        if (cls < SM_NB_CLASSES)
            return sm_arena_alloc_cached(cls, zeroed);
    }
    if (size > PTRDIFF_MAX)
        return NULL;
    return sm_large_alloc(size, align, zeroed);
}

void sm_heap_free_large(void *p)
{
    if (atomic_load_explicit(&init_state, memory_order_acquire) != INIT_READY)
        sm_fatal("invalid free", p);
    sm_large_free(p);
}

void sm_heap_free(void *p)
{
    if (sm_arena_contains(p)) {
        sm_arena_free_cached(p);
        return;
    }
    sm_heap_free_large(p);
}

size_t sm_heap_usable_size(void *p, const char *operation)
{
    char what[96];
    size_t usable = 0;
    bool freed = false;
    if (sm_arena_contains(p)) {
        enum sm_slot_status status = sm_arena_slot_status(p, &usable);
        if (status == SM_SLOT_IN_USE)
            return usable;
        if (status == SM_SLOT_CANARY_CORRUPTED)
            sm_fatal("canary corrupted", p);
        freed = status == SM_SLOT_FREE;
    } else if (atomic_load_explicit(&init_state, memory_order_acquire) == INIT_READY) {
        usable = sm_large_usable_size(p, &freed);
        if (usable)
            return usable;
    }
    /* "<operation> of a freed pointer" or "invalid <operation>", built without stdio. */
    size_t len = 0;
    const char *parts[3] = {freed ? operation : "invalid ",
                            freed ? " of a freed pointer" : operation, ""};
    for (int i = 0; i < 2; i++)
        for (const char *c = parts[i]; *c && len < sizeof(what) - 1; c++)
            what[len++] = *c;
    what[len] = '\0';
    sm_fatal(what, p);
}

bool sm_heap_resize_in_place(void *p, size_t usable, size_t size)
{
    if (!sm_arena_contains(p))
        return sm_large_resize_in_place(p, usable, size);
    if (size > SM_MAX_SMALL_SIZE - SM_CANARY_BYTES)
        return false;
    /* Only within the same class: moving to a smaller class gives memory back. A slot's
     * usable bytes and canary fill it exactly, so `usable` names its class. (The canary sits
     * at the end of the slot, so it stays valid.) */
    return sm_sizeclass_of(size + SM_CANARY_BYTES) == sm_sizeclass_of(usable + SM_CANARY_BYTES);
}
