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

static void futex_wait(atomic_int *word, int expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_one(atomic_int *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void lock_acquire_slow(struct sm_lock *lock)
{
    /* Critical sections are short: spin a little before sleeping. */
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        int expected = LOCK_FREE;
        if (atomic_load_explicit(&lock->state, memory_order_relaxed) == LOCK_FREE &&
            atomic_compare_exchange_weak_explicit(&lock->state, &expected, LOCK_HELD,
                                                  memory_order_acquire, memory_order_relaxed))
            return;
        cpu_relax();
    }
    while (atomic_exchange_explicit(&lock->state, LOCK_CONTENDED, memory_order_acquire) !=
           LOCK_FREE)
        futex_wait(&lock->state, LOCK_CONTENDED);
}

void sm_lock_acquire(struct sm_lock *lock)
{
    int expected = LOCK_FREE;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(&lock->state, &expected, LOCK_HELD,
                                                                 memory_order_acquire,
                                                                 memory_order_relaxed),
                         1))
        return;
    lock_acquire_slow(lock);
}

void sm_lock_release(struct sm_lock *lock)
{
    if (atomic_exchange_explicit(&lock->state, LOCK_FREE, memory_order_release) == LOCK_CONTENDED)
        futex_wake_one(&lock->state);
}
