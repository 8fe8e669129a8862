# tests/common/expect-lib.sh: the shared part of tests/expect-fatal.sh and
# tests/security/expect-signal.sh, which source it (bash).
#
#   expect_run <command...>   runs the command with stdin from /dev/null and no core file,
#                             stdout and stderr captured in "$expect_tmp"/stdout and /stderr;
#                             sets expect_status (bash's 128 + N for death by signal N)
#   expect_fail <what>        prints <what>, the command, "$expect_wanted", the status and
#                             the captured output on stderr, and exits 1
#   expect_killed_by <name>   expect_fail unless the command died by signal <name> (ABRT, SEGV)
#
# The caller sets expect_name (the script's name in messages) and expect_wanted (what a
# passing run looks like) first.

expect_tmp=$(mktemp -d "${TMPDIR:-/tmp}/${expect_name}.XXXXXX") || exit 2
trap 'rm -rf "$expect_tmp"' EXIT

expect_run() {
    expect_command="$*"
    ulimit -c 0 2>/dev/null || true
    expect_status=0
    # The braces' 2>/dev/null only silences bash's own job report ("Aborted", "Segmentation
    # fault").
    { "$@" </dev/null >"$expect_tmp/stdout" 2>"$expect_tmp/stderr"; } 2>/dev/null ||
        expect_status=$?
}

expect_fail() {
    {
        echo "$expect_name: FAIL: $1"
        echo "  command:  $expect_command"
        echo "  expected: $expect_wanted"
        echo "  exit status: $expect_status"
        echo "--- stdout ---"
        cat "$expect_tmp/stdout"
        echo "--- stderr ---"
        cat "$expect_tmp/stderr"
        echo "--------------"
    } >&2
    exit 1
}

expect_killed_by() {
    local wanted
    wanted=$(kill -l "$1")
    # The drivers themselves only exit with 0..3, so a status above 128 is a signal.
    if [ "$expect_status" -le 128 ]; then
        expect_fail "the command exited normally (status $expect_status) instead of dying by SIG$1"
    fi
    local signal=$((expect_status - 128))
    if [ "$signal" -ne "$wanted" ]; then
        expect_fail "the command was killed by signal $signal ($(kill -l "$signal" 2>/dev/null || echo '?')), not SIG$1"
    fi
}
