#!/usr/bin/env python3
"""Writes the fuzz harness's seed corpus (tests/reliability/corpus/).

Each seed is a hand-written operation sequence in the byte encoding of fuzz_abi.c, so that
fuzzing starts from inputs that already reach every call, the class boundaries, the large path
and the failure paths. Rerun after changing the encoding: python3 gen-corpus.py
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

# Opcodes (op % 16) and the selectors of take_size / take_align, as in fuzz_abi.c.
MALLOC, CALLOC, REALLOC, REALLOCARRAY, ALIGNED, POSIX_MEMALIGN, MEMALIGN = 0, 2, 3, 4, 5, 6, 7
VALLOC, PVALLOC, FREE, USABLE, REWRITE, TRIM, STATS = 8, 9, 10, 12, 13, 14, 15


def tiny(n):  # 0..16
    return [0, n]


def byte(n):  # 0..255
    return [1, n]


def upto4k(n):  # 0..4096
    return [3, n & 0xFF, n >> 8]


def near_class(index, below):  # class size + 2 - below (below 0..11)
    return [4, index, below]


def small(n):  # 0..131072
    return [6, n & 0xFF, (n >> 8) & 0xFF, n >> 16]


def large(extra):  # largest class - 16 + extra (extra < 2 MiB)
    return [7, extra & 0xFF, (extra >> 8) & 0xFF, extra >> 16]


def pages(n, minus):  # n pages + 1 - minus
    return [8, n, minus]


def huge(index):  # one of the unservable sizes
    return [9, index]


def align_pow2(shift):  # 1 << shift, shift <= 12
    return [1, shift]


def align_big(shift):  # 1 << (12 + shift)
    return [3, shift]


def align_odd(n):
    return [4, n & 0xFF, n >> 8]


def align_ptr_multiple(k):  # (k % 7 + 3) * 8
    return [5, k]


def align_unservable(k):
    return [7, k]


def op(code, slot, *args):
    out = [code, slot]
    for a in args:
        out += a
    return out


def free(slot, how=0):
    return op(FREE, slot, [how])


def seeds():
    s = {}
    every = []
    every += op(MALLOC, 0, byte(100))
    every += op(CALLOC, 1, [1], [7], byte(40))  # count from take8 % 17 (selector not 0 mod 8)
    every += op(REALLOC, 0, upto4k(3000))
    every += op(REALLOCARRAY, 1, [1], [3], byte(50))
    every += op(ALIGNED, 2, align_pow2(6), byte(64))
    every += op(POSIX_MEMALIGN, 3, align_big(2), upto4k(1000))
    every += op(MEMALIGN, 4, align_ptr_multiple(0), byte(24))
    every += op(VALLOC, 5, byte(10))
    every += op(PVALLOC, 6, upto4k(4097))
    every += op(USABLE, 0) + op(USABLE, 2) + op(REWRITE, 1) + op(STATS, 0)
    every += op(TRIM, 0, [0])
    every += free(0, 0) + free(1, 1) + free(2, 3) + free(3, 2) + free(4) + free(5) + free(6)
    every += op(STATS, 0)
    s["every_call"] = every

    boundaries = []
    for index in range(48):
        for below in (0, 2, 9, 10, 11):
            boundaries += op(MALLOC, (index * 5 + below) % 48, near_class(index, below))
    s["class_boundaries"] = boundaries

    big = []
    big += op(MALLOC, 0, large(0)) + op(MALLOC, 1, large(1 << 20)) + op(MALLOC, 2, large(4095))
    big += op(REALLOC, 0, byte(100)) + op(REALLOC, 0, large(300000)) + op(REALLOC, 1, large(17))
    big += op(ALIGNED, 3, align_big(10), large(5)) + op(ALIGNED, 4, align_big(9), byte(1))
    big += op(POSIX_MEMALIGN, 5, align_big(8), pages(40, 0)) + op(PVALLOC, 6, pages(64, 2))
    big += op(USABLE, 0) + op(USABLE, 3) + op(TRIM, 0, [1]) + op(STATS, 0)
    big += free(3, 3) + free(4, 3) + free(0, 1) + free(1, 2)
    s["large_objects"] = big

    fails = []
    for index in range(8):
        fails += op(MALLOC, index, huge(index))
        fails += op(CALLOC, 8 + index, [0], huge(index), byte(2))  # count unservable
        fails += op(ALIGNED, 16 + index, align_pow2(4), huge(index))
        fails += op(VALLOC, 24 + index, huge(index)) + op(PVALLOC, 32 + index, huge(index))
    fails += op(MALLOC, 40, byte(33))
    for index in range(8):
        fails += op(REALLOC, 40, huge(index)) + op(REALLOCARRAY, 40, [0], huge(index), huge(2))
    fails += op(ALIGNED, 41, align_odd(100), byte(8)) + op(ALIGNED, 42, [6, 0], byte(8))
    fails += op(POSIX_MEMALIGN, 43, align_pow2(2), byte(8))  # 4: not a multiple of 8
    fails += op(POSIX_MEMALIGN, 44, align_ptr_multiple(0), byte(8))
    fails += op(POSIX_MEMALIGN, 45, align_unservable(3), byte(8))
    fails += op(MEMALIGN, 46, [6, 1], byte(8)) + op(MEMALIGN, 47, align_odd(4097), byte(8))
    fails += op(MEMALIGN, 39, align_unservable(0), byte(8))
    s["failures"] = fails

    churn = []
    for i in range(600):
        churn += op(MALLOC, i % 3, byte(i % 200)) + free(i % 3, i % 3)
    s["churn_quarantine"] = churn

    grow = op(MALLOC, 7, tiny(1))
    size = 1
    while size < 3 << 20:
        size = size * 3 // 2 + 7
        if size <= 131072:
            grow += op(REALLOC, 7, small(size))
        else:
            grow += op(REALLOC, 7, large(min(size - 131056, (2 << 20) - 1)))
    while size > 16:
        size //= 3
        grow += op(REALLOC, 7, small(min(size, 131072)))
    grow += op(REALLOC, 7, tiny(0)) + op(REALLOC, 7, tiny(0))  # frees, then realloc(NULL, 0)
    s["realloc_chain"] = grow

    # Large objects written whole (with transparent huge pages, a 2 MiB + 4 KiB object has one
    # small page, which the pattern covers), then buffers grown by reallocarray to 200 and 400
    # MiB: the second growth stays in place. Populating such growths whole once took 4.4 GB of
    # RSS over the fuzzer's 4 GB limit; now a growth populates no more than an object keeps.
    two_mib_and_a_page = (2 << 20) + 1 - 131056
    grow_big = []
    for _ in range(6):
        grow_big += op(MALLOC, 0, large(two_mib_and_a_page)) + free(0)
    for slot in range(1, 25):
        grow_big += op(MALLOC, slot, byte(100)) + op(REALLOC, slot, large(two_mib_and_a_page))
        for count in (100, 199):  # count from take_size (selector 0 mod 8)
            grow_big += op(REALLOCARRAY, slot, [0], upto4k(count), large(two_mib_and_a_page))
    s["huge_growths"] = grow_big

    # Large blocks shrunk in place below half, grown back into the end they gave back, then
    # moved by a growth their room cannot hold, and shrunk into the small classes.
    shrink = []
    for slot in range(8):
        shrink += op(MALLOC, slot, large(two_mib_and_a_page)) + op(REWRITE, slot)
        shrink += op(REALLOCARRAY, slot, [0], upto4k(4), large(two_mib_and_a_page))  # 8 MiB
        shrink += op(REALLOC, slot, large(300000 + slot * 4096))  # about 420 KiB: in place
        shrink += op(REALLOCARRAY, slot, [0], upto4k(2), large(two_mib_and_a_page))  # 4 MiB
        shrink += op(REALLOCARRAY, slot, [0], upto4k(32), large(two_mib_and_a_page))  # 64 MiB
        shrink += op(USABLE, slot) + op(REALLOC, slot, byte(200))
    shrink += op(STATS, 0)
    s["shrink_and_regrow"] = shrink

    # A buffer of about 10 GiB, never touched but for its ends, doubled by reallocarray: its
    # pages must move, untouched. In preset none such a buffer was once a charged mapping,
    # and where 30 GiB (the new size and as much room, less the old size) is more than RAM +
    # swap the kernel refused the move and its 10 GiB were copied (a fuzzer input went past
    # 4 GB of RSS; replayed, 24 GB). Where 20 GiB is more than RAM + swap, it is refused.
    giant = op(REALLOCARRAY, 0, [0], small(5000), large(two_mib_and_a_page))
    giant += op(REALLOCARRAY, 0, [0], small(10000), large(two_mib_and_a_page))
    giant += op(USABLE, 0) + free(0) + op(STATS, 0)
    s["giant_sparse_growth"] = giant

    rng = random.Random(20261125)
    mixed = []
    for _ in range(1500):
        mixed += [rng.randrange(256) for _ in range(rng.randrange(2, 6))]
    s["random_mix"] = mixed
    return s


def main():
    out_dir = os.path.join(HERE, "corpus")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(bytes(b & 0xFF for b in data))


if __name__ == "__main__":
    main()
