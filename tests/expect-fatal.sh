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

expect_name=expect-fatal
expect_wanted="SIGABRT and one line '^starmalloc: fatal: ${expected} at 0x[0-9a-f]+\$' on stderr"
# shellcheck source=common/expect-lib.sh
. "$(dirname "$0")/common/expect-lib.sh"
tmp=$expect_tmp

expect_run "$@"
expect_killed_by ABRT

line_re="^starmalloc: fatal: (${expected}) at 0x[0-9a-f]+\$"
matches=$(grep -cE -- "$line_re" "$tmp/stderr")
all_fatal=$(grep -c -- '^starmalloc: fatal: ' "$tmp/stderr")
if [ "$matches" -ne 1 ]; then
    expect_fail "expected exactly one matching fatal line on stderr, found $matches"
fi
if [ "$all_fatal" -ne 1 ]; then
    expect_fail "expected exactly one 'starmalloc: fatal:' line on stderr, found $all_fatal"
fi

announced=$(sed -n 's/^expect-fatal: address \(0x[0-9a-f]*\)$/\1/p' "$tmp/stdout" | tail -n 1)
if [ -n "$announced" ]; then
    reported=$(grep -E -- "$line_re" "$tmp/stderr" | sed 's/.* at \(0x[0-9a-f]*\)$/\1/')
    if [ "$reported" != "$announced" ]; then
        expect_fail "the report names $reported, but the bad pointer was $announced"
    fi
fi

grep -E -- "$line_re" "$tmp/stderr"
exit 0
