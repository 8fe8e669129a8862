/* sm_lock: uncontended acquire and release are one atomic instruction each. */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "starmalloc/arena.h"

enum { LOCK_FREE = 0, LOCK_HELD = 1, LOCK_CONTENDED = 2, SPIN_ROUNDS = 64 };

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(int *word, int expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_one(int *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static bool try_take(struct sm_lock *lock, bool strong)
{
    int expected = LOCK_FREE;
    return __atomic_compare_exchange_n(&lock->state, &expected, LOCK_HELD, !strong,
                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static void lock_acquire_slow(struct sm_lock *lock)
{
    /* Critical sections are short: spin a little before sleeping. */
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if (__atomic_load_n(&lock->state, __ATOMIC_RELAXED) == LOCK_FREE && try_take(lock, false))
            return;
        cpu_relax();
    }
    while (__atomic_exchange_n(&lock->state, LOCK_CONTENDED, __ATOMIC_ACQUIRE) != LOCK_FREE)
        futex_wait(&lock->state, LOCK_CONTENDED);
}

void sm_lock_acquire(struct sm_lock *lock)
{
    if (__builtin_expect(try_take(lock, true), 1))
        return;
    lock_acquire_slow(lock);
}

void sm_lock_release(struct sm_lock *lock)
{
    if (__atomic_exchange_n(&lock->state, LOCK_FREE, __ATOMIC_RELEASE) == LOCK_CONTENDED)
        futex_wake_one(&lock->state);
}

void sm_lock_reset(struct sm_lock *lock)
{
    __atomic_store_n(&lock->state, LOCK_FREE, __ATOMIC_RELAXED);
}

int sm_lock_is_held(const struct sm_lock *lock)
{
    return __atomic_load_n(&lock->state, __ATOMIC_RELAXED) != LOCK_FREE;
}
