#!/usr/bin/env bash
# expect-fatal.sh '<expected message regex>' <command...>
#
# Runs the command and succeeds only when
#   - it was killed by SIGABRT, and
#   - its stderr holds exactly one line "starmalloc: fatal: <expected> at 0x<hex>" (the regex is
#     an extended regex, anchored on both sides) and no other "starmalloc: fatal:" line, and
#   - when its stdout announces "expect-fatal: address 0x<hex>", the report names that address.
# Otherwise prints what it got and exits 1 (2 for a usage error).
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 '<expected message regex>' <command...>" >&2
    exit 2
fi
expected=$1
shift
command_text="$*"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/expect-fatal.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT

# No core file for the expected abort; stdin is /dev/null.
ulimit -c 0 2>/dev/null
# (The braces' 2>/dev/null only silences bash's own "Aborted" job report.)
{ "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr"; } 2>/dev/null
status=$?

fail() {
    {
        echo "expect-fatal: FAIL: $1"
        echo "  command:  $command_text"
        echo "  expected: SIGABRT and one line '^starmalloc: fatal: ${expected} at 0x[0-9a-f]+\$' on stderr"
        echo "  exit status: $status"
        echo "--- stdout ---"
        cat "$tmp/stdout"
        echo "--- stderr ---"
        cat "$tmp/stderr"
        echo "--------------"
    } >&2
    exit 1
}

# bash reports a child killed by signal N as status 128 + N (the driver itself only ever
# exits with 0, 2 or 3, so 134 cannot come from a normal exit).
abrt=$(kill -l ABRT)
if [ "$status" -le 128 ]; then
    fail "the command exited normally (status $status) instead of aborting"
fi
signal=$((status - 128))
if [ "$signal" -ne "$abrt" ]; then
    fail "the command was killed by signal $signal ($(kill -l "$signal" 2>/dev/null || echo '?')), not SIGABRT"
fi

line_re="^starmalloc: fatal: (${expected}) at 0x[0-9a-f]+\$"
matches=$(grep -cE -- "$line_re" "$tmp/stderr")
all_fatal=$(grep -c -- '^starmalloc: fatal: ' "$tmp/stderr")
if [ "$matches" -ne 1 ]; then
    fail "expected exactly one matching fatal line on stderr, found $matches"
fi
if [ "$all_fatal" -ne 1 ]; then
    fail "expected exactly one 'starmalloc: fatal:' line on stderr, found $all_fatal"
fi

announced=$(sed -n 's/^expect-fatal: address \(0x[0-9a-f]*\)$/\1/p' "$tmp/stdout" | tail -n 1)
if [ -n "$announced" ]; then
    reported=$(grep -E -- "$line_re" "$tmp/stderr" | sed 's/.* at \(0x[0-9a-f]*\)$/\1/')
    if [ "$reported" != "$announced" ]; then
        fail "the report names $reported, but the bad pointer was $announced"
    fi
fi

grep -E -- "$line_re" "$tmp/stderr"
exit 0
