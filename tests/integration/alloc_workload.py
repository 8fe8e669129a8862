"""An allocation-heavy, deterministic Python workload for the integration tests.

Prints one line per phase and a final checksum; the output depends only on the code, never on
the allocator, addresses or hash randomisation, so a run under LD_PRELOAD of StarMalloc must
print exactly what a plain run prints.

With --prove-starmalloc it also checks, on stderr, that the process' malloc is StarMalloc's:
starmalloc_malloc_usable_size (looked up in the process with ctypes) is called on pointers
from libc's malloc; StarMalloc aborts on a pointer it did not allocate, and the usable size
must be at least what was requested. Exit status 3 when the symbol is missing.
"""
import hashlib
import json
import random
import sys

digest = hashlib.sha256()


def record(name, value):
    text = f"{name}: {value}"
    digest.update(text.encode())
    print(text)


def prove_starmalloc():
    import ctypes

    libc = ctypes.CDLL(None)
    try:
        usable = libc.starmalloc_malloc_usable_size
    except AttributeError:
        print("prove-starmalloc: starmalloc_malloc_usable_size is not in the process",
              file=sys.stderr)
        sys.exit(3)
    usable.restype = ctypes.c_size_t
    usable.argtypes = [ctypes.c_void_p]
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    for size in (1, 100, 4000, 70000, 3 << 20):
        p = libc.malloc(size)
        if not p:
            print(f"prove-starmalloc: malloc({size}) failed", file=sys.stderr)
            sys.exit(3)
        got = usable(p)
        libc.free(p)
        if got < size:
            print(f"prove-starmalloc: usable size {got} < {size}", file=sys.stderr)
            sys.exit(3)
        print(f"prove-starmalloc: malloc({size}) -> usable {got}", file=sys.stderr)


def phase_dicts(rng):
    d = {}
    for i in range(200_000):
        d[f"key-{i:06d}-{rng.randrange(1 << 30)}"] = (i, str(i) * (i % 7), [i] * (i % 5))
    for i in range(0, 200_000, 3):
        d.pop(next(iter(d)))  # delete from the front: forces rehashing and compaction
    total = sum(v[0] for v in d.values())
    lengths = sum(len(k) + len(v[1]) + len(v[2]) for k, v in d.items())
    return f"{len(d)} entries, sum {total}, lengths {lengths}"


def phase_lists_and_strings(rng):
    lists = [[rng.random() for _ in range(rng.randrange(200))] for _ in range(5_000)]
    flat = [x for sub in lists for x in sub]
    parts = []
    for i in range(100_000):
        parts.append(("%d:%x;" % (i, i * 2654435761 % (1 << 32))) * (1 + i % 3))
    joined = "".join(parts)
    words = joined.split(";")
    upper = joined.upper()
    replaced = upper.replace("A", "<a>")
    h = hashlib.sha1(replaced.encode()).hexdigest()
    return f"{len(flat)} floats sum {round(sum(flat), 6)}, {len(words)} words, {len(replaced)} chars, {h}"


def phase_bytes(rng):
    blobs = []
    h = hashlib.sha256()
    for i in range(3_000):
        kind = i % 10
        if kind < 7:
            n = rng.randrange(0, 1024)
        elif kind < 9:
            n = rng.randrange(1024, 256 << 10)
        else:
            n = rng.randrange(256 << 10, 2 << 20)
        b = bytes((i + j) & 0xFF for j in range(min(n, 64))) * (n // 64 + 1)
        b = b[:n]
        blobs.append(b)
        if len(blobs) > 200:
            h.update(blobs.pop(rng.randrange(len(blobs))))
    for b in blobs:
        h.update(b)
    return h.hexdigest()


def phase_json(rng):
    doc = {
        "items": [
            {"id": i, "name": f"item{i}", "tags": [f"t{j}" for j in range(i % 6)],
             "value": rng.randrange(10**9) / 1000, "nested": {"a": [i, i * 2, {"b": str(i)}]}}
            for i in range(20_000)
        ],
        "meta": {"unicode": "h\u00e9llo w\u00f6rld \u2603", "empty": [], "none": None},
    }
    text = json.dumps(doc, sort_keys=True)
    back = json.loads(text)
    again = json.dumps(back, sort_keys=True, indent=1)
    assert back == doc
    return f"{len(text)} bytes, indented {len(again)}, {hashlib.md5(text.encode()).hexdigest()}"


def phase_sort(rng):
    values = [rng.randrange(1 << 40) for _ in range(1_000_000)]
    ordered = sorted(values)
    keyed = sorted(values[:200_000], key=lambda v: (v % 1000, str(v)))
    ok = all(ordered[i] <= ordered[i + 1] for i in range(len(ordered) - 1))
    return f"sorted {len(ordered)} ok={ok} min {ordered[0]} max {ordered[-1]} median {ordered[500_000]} keyed {keyed[0]} {keyed[-1]}"


def phase_bytearray():
    buf = bytearray()
    chunk = bytes(range(256)) * 16  # 4 KiB
    step = 0
    while len(buf) < 48 << 20:
        buf += chunk[: 1 + (step * 37) % len(chunk)]
        step += 1
    buf[::4096] = b"\x55" * len(buf[::4096])
    h = hashlib.sha256(buf).hexdigest()
    del buf[: 16 << 20]
    return f"{step} appends, {h}, after shrink {len(buf)}"


def main():
    if "--prove-starmalloc" in sys.argv[1:]:
        prove_starmalloc()
    rng = random.Random(20240601)
    record("dicts", phase_dicts(rng))
    record("lists+strings", phase_lists_and_strings(rng))
    record("bytes", phase_bytes(rng))
    record("json", phase_json(rng))
    record("sort", phase_sort(rng))
    record("bytearray", phase_bytearray())
    print(f"checksum: {digest.hexdigest()}")


if __name__ == "__main__":
    main()
