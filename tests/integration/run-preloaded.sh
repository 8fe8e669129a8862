#!/usr/bin/env bash
# run-preloaded.sh: runs real programs with StarMalloc preloaded and checks (a) that their output
# is right (the same as a run without StarMalloc, plus explicit checks) and their exit status 0,
# and (b) that StarMalloc really was the process' malloc.
#
# Usage: run-preloaded.sh <test> <path/to/libstarmalloc.so> [test arguments...]
#   python    <alloc_workload.py>            /usr/bin/python3 on an allocation-heavy script
#   perl      <alloc_workload.pl>            /usr/bin/perl on hashes/arrays/strings/regexes
#   git                                      init, add, commit x2, log, status, gc, fsck
#   coreutils                                sort of a 100k-line file, ls -laR /usr/include
#   cxx       <plain-exe> <linked-exe>       a C++ program preloaded, linked and plain
#
# Proof that StarMalloc is in the process, independent of its statistics:
#   - every preloaded run is done with glibc's LD_DEBUG=bindings (written to files, not to the
#     program's output): malloc & co. must be bound to libstarmalloc in every process that binds
#     them, and never to the C library (a binding to the program itself is a canonical PLT entry
#     of a non-PIE executable, which in turn is bound to libstarmalloc);
#   - and, where the program allows, a check from inside the process: python calls
#     starmalloc_malloc_usable_size (via ctypes) on pointers from malloc, which aborts for blocks
#     StarMalloc did not allocate; perl and sort read their own /proc/self/maps; the C++ program
#     looks the symbol up with dlsym and calls it on blocks from operator new.
# Exit status: 0 pass, 1 failure, 77 skipped (a program is not installed), 2 usage.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
(($# >= 2)) || usage
test_name=$1
lib_arg=$2
shift 2

# "Plain" runs must be plain, whatever the environment preloads.
unset LD_PRELOAD LD_DEBUG LD_DEBUG_OUTPUT

say() { printf 'run-preloaded[%s]: %s\n' "$test_name" "$*"; }
skip() { say "SKIP: $*" >&2; exit 77; }
fail() { say "FAIL: $*" >&2; exit 1; }

[[ -f $lib_arg ]] || fail "library '$lib_arg' not found (build the starmalloc target first)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/starmalloc-integration.XXXXXXXX")
cleanup() { rm -rf -- "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# LD_PRELOAD splits its list on spaces and colons: use a copy when the path has either.
lib=$(readlink -f -- "$lib_arg")
if [[ $lib == *[[:space:]:]* || $tmp == *[[:space:]:]* ]]; then
  mkdir -p /tmp/starmalloc-lib.$$
  cp -- "$lib" /tmp/starmalloc-lib.$$/libstarmalloc.so
  lib=/tmp/starmalloc-lib.$$/libstarmalloc.so
  trap 'cleanup; rm -rf /tmp/starmalloc-lib.$$' EXIT
fi

need() { # need <program>: its absolute path, or skip the test when it is not installed
  local path
  if [[ $1 == /* ]]; then
    [[ -x $1 ]] || skip "$1 is not installed"
    path=$1
  else
    path=$(command -v -- "$1" 2>/dev/null) || skip "$1 is not installed"
  fi
  printf '%s\n' "$path"
}

status_text() { # status_text <exit status>
  if (($1 > 128)); then
    printf 'killed by signal %d (SIG%s)' $(($1 - 128)) "$(kill -l $(($1 - 128)) 2>/dev/null || echo '?')"
  else
    printf 'exit status %d' "$1"
  fi
}

# run <label> <command...>: stdout to $tmp/<label>.out, stderr to $tmp/<label>.err; fails unless
# the command exits 0 and no process of it (a child may die unnoticed) reported a fatal error.
run() {
  local label=$1 rc=0
  shift
  "$@" >"$tmp/$label.out" 2>"$tmp/$label.err" || rc=$?
  if ((rc != 0)) || grep -q '^starmalloc: fatal' "$tmp/$label.err"; then
    say "--- stderr of $label (last 40 lines) ---" >&2
    tail -n 40 "$tmp/$label.err" >&2
    fail "$label: '$*' ended with $(status_text "$rc")$(grep -q '^starmalloc: fatal' "$tmp/$label.err" && echo ' and a StarMalloc fatal error')"
  fi
  if grep -q '^starmalloc: ' "$tmp/$label.err"; then # warnings are shown, not failures
    grep '^starmalloc: ' "$tmp/$label.err" | head -n 5 | sed "s/^/$label: /" >&2
  fi
}

# preloaded <label> <command...>: the command with StarMalloc preloaded and ld.so's symbol
# bindings logged to $tmp/ld-<label>.<pid> (one file per process, children included).
preloaded() {
  local label=$1
  shift
  env LD_PRELOAD="$lib" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$tmp/ld-$label" "$@"
}

# check_bindings <label> [min processes]: malloc & co. bound to libstarmalloc in each process
# of the preloaded run <label>, never to the C library.
check_bindings() {
  local label=$1 min_procs=${2:-1} files=() f
  for f in "$tmp/ld-$label".*; do [[ -e $f ]] && files+=("$f"); done
  ((${#files[@]} > 0)) || fail "$label: no LD_DEBUG output: is the dynamic loader glibc's?"
  local summary
  summary=$(awk -v star="$(basename -- "$lib")" '
    function base(p) { sub(/.*\//, "", p); return p }
    FNR == 1 { procs++ }
    /normal symbol `(malloc|calloc|realloc|reallocarray|free|aligned_alloc|posix_memalign|memalign|valloc|pvalloc|malloc_usable_size)'"'"'/ {
      line = $0
      sub(/^.* to /, "", line); sub(/ \[[0-9]+\]: normal symbol .*/, "", line)
      target = base(line)
      if (target ~ /^libstarmalloc\.so/ || target == star) { ours[FILENAME]++; n_ours++ }
      else if (target ~ /^(libc[.-]|ld-|libc\.musl)/) { bad++; print "BAD " $0 }
      else { other++ }
      any[FILENAME] = 1
    }
    END {
      for (f in any) if (!(f in ours)) { print "NONE " f; bad++ }
      printf "OK %d %d %d %d\n", procs, n_ours, other, bad
    }' "${files[@]}")
  if grep -q '^\(BAD\|NONE\) ' <<<"$summary"; then
    grep '^\(BAD\|NONE\) ' <<<"$summary" | head -n 10 >&2
    fail "$label: malloc & co. not bound to StarMalloc in every process (see above)"
  fi
  local procs ours
  read -r _ procs ours _ <<<"$(grep '^OK ' <<<"$summary")"
  ((ours > 0)) || fail "$label: no malloc binding to StarMalloc at all"
  ((procs >= min_procs)) || fail "$label: expected at least $min_procs processes, saw $procs"
  say "$label: $procs process(es), $ours malloc-family bindings to StarMalloc, none to the C library"
}

same_output() { # same_output <label-a> <label-b>
  if ! cmp -s "$tmp/$1.out" "$tmp/$2.out"; then
    diff -u "$tmp/$1.out" "$tmp/$2.out" | head -n 40 >&2 || true
    fail "output of $2 differs from $1"
  fi
}

# ---------------------------------------------------------------------------------------------
test_python() {
  local python script=${1:?usage: python <script.py>}
  python=$(need /usr/bin/python3)
  export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
  run plain "$python" "$script"
  run preloaded preloaded preloaded "$python" "$script" --prove-starmalloc
  grep -q '^prove-starmalloc: malloc' "$tmp/preloaded.err" || fail "the in-process StarMalloc check did not run"
  check_bindings preloaded
  same_output plain preloaded
  grep -q '^checksum: [0-9a-f]\{64\}$' "$tmp/preloaded.out" || fail "no checksum line in the output"
  say "$(tail -n 1 "$tmp/preloaded.out") (identical with and without StarMalloc)"
}

test_perl() {
  local perl script=${1:?usage: perl <script.pl>}
  perl=$(need /usr/bin/perl)
  run plain "$perl" "$script"
  run preloaded preloaded preloaded "$perl" "$script" --prove-starmalloc="$lib"
  grep -q '^prove-starmalloc: .* mapped in perl' "$tmp/preloaded.err" || fail "the in-process check did not run"
  check_bindings preloaded
  same_output plain preloaded
  grep -q '^checksum: [0-9a-f]\{32\}$' "$tmp/preloaded.out" || fail "no checksum line in the output"
  say "$(tail -n 1 "$tmp/preloaded.out") (identical with and without StarMalloc)"
}

# git_scenario <mode: plain|preloaded> <dir>: the whole git session, its transcript in <mode>.out.
git_scenario() {
  local mode=$1 dir=$2 n=0
  local repo=$dir/repo transcript=$tmp/$mode.out
  mkdir -p "$dir/home" "$repo"
  : >"$transcript"
  step() { # step <command...>: one git command, preloaded (and traced) in preloaded mode
    n=$((n + 1))
    local sub='' skip_next=0 a
    for a in "${@:2}"; do # the git subcommand, for the label
      if ((skip_next)); then skip_next=0; elif [[ $a == -c ]]; then skip_next=1; elif [[ $a != -* ]]; then sub=$a; break; fi
    done
    local label=$mode-$n-$sub
    if [[ $mode == preloaded ]]; then
      run "$label" preloaded "$label" "$@"
      traced_labels+=("$label")
    else
      run "$label" "$@"
    fi
    printf '$ %s\n' "$*" >>"$transcript"
    cat "$tmp/$label.out" >>"$transcript"
  }
  (
    export HOME=$dir/home GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
    export GIT_AUTHOR_DATE='2024-01-02T03:04:05+00:00' GIT_COMMITTER_DATE='2024-01-02T03:04:05+00:00'
    export LC_ALL=C TZ=UTC GIT_TERMINAL_PROMPT=0
    unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL
    cd "$repo"
    traced_labels=()
    step "$git" -c init.defaultBranch=main init -q .
    step "$git" config user.name "StarMalloc Integration"
    step "$git" config user.email "integration@starmalloc.invalid"
    step "$git" config gc.autoDetach false
    local i d k
    for ((i = 0; i < 200; i++)); do
      d=dir$((i % 10))
      mkdir -p "$d"
      {
        printf 'file %d\n' "$i"
        for ((k = 0; k <= i % 50; k++)); do printf 'line %d of file %d\n' "$k" "$i"; done
      } >"$d/file$i.txt"
    done
    step "$git" add -A
    step "$git" commit -q -m "first: 200 files"
    for ((i = 0; i < 200; i += 4)); do printf 'changed %d\n' "$i" >>"dir$((i % 10))/file$i.txt"; done
    for ((i = 1; i < 200; i += 20)); do rm "dir$((i % 10))/file$i.txt"; done
    for ((i = 0; i < 5; i++)); do printf 'new %d\n' "$i" >"dir$i/new$i.txt"; done
    step "$git" add -A
    step "$git" commit -q -m "second: modify 50, delete 10, add 5"
    step "$git" log --oneline
    step "$git" status --porcelain
    step "$git" diff --stat HEAD~1 HEAD
    step "$git" gc --quiet
    step "$git" count-objects -v
    step "$git" fsck --full --strict --no-progress
    step "$git" ls-tree -r HEAD
    step "$git" show HEAD:dir4/file4.txt
    printf '%s\n' "${traced_labels[@]}" >"$tmp/$mode.traced"
  )
}

test_git() {
  git=$(need git)
  git_fail() { # the session's transcript, then fail
    say "--- transcript of the preloaded git session (without ls-tree) ---" >&2
    sed '/ls-tree -r HEAD$/,/^\$ /{/^\$ .*show/!d}' "$tmp/preloaded.out" >&2
    fail "$@"
  }
  git_scenario plain "$tmp/plain"
  git_scenario preloaded "$tmp/preloaded"
  local t=$tmp/preloaded.out log
  # Explicit checks on the preloaded session.
  log=$(sed -n '/^\$ .* log --oneline$/,/^\$ /{/^\$ /d;p}' "$t")
  [[ $(wc -l <<<"$log") == 2 ]] || git_fail "git log --oneline: expected 2 lines, got: $log"
  grep -q '^[0-9a-f]\{7,\} second: modify 50, delete 10, add 5$' <<<"$log" || git_fail "git log: second commit missing: $log"
  grep -q '^[0-9a-f]\{7,\} first: 200 files$' <<<"$log" || git_fail "git log: first commit missing: $log"
  [[ -z $(sed -n '/^\$ .* status --porcelain$/,/^\$ /{/^\$ /d;p}' "$t") ]] || git_fail "git status --porcelain is not empty"
  grep -q '^ 65 files changed, 55 insertions(+), 230 deletions(-)$' "$t" || git_fail "git diff --stat: unexpected summary"
  grep -q '^count: 0$' "$t" || git_fail "git count-objects: loose objects left after gc"
  grep -q '^packs: 1$' "$t" || git_fail "git count-objects: expected one pack after gc"
  [[ $(sed -n '/^\$ .* ls-tree -r HEAD$/,/^\$ /{/^\$ /d;p}' "$t" | wc -l) == 195 ]] || git_fail "git ls-tree: expected 195 files"
  grep -qx 'changed 4' "$t" || git_fail "git show: modified content missing"
  # Deterministic dates and content: the preloaded session must match the plain one exactly
  # (same commit ids, same trees, same pack content summary).
  same_output plain preloaded
  local label
  while read -r label; do
    if [[ $label == *-gc ]]; then
      check_bindings "$label" 2 # gc runs pack-objects & co. as child processes
    else
      check_bindings "$label"
    fi
  done <"$tmp/preloaded.traced"
  say "git session identical with and without StarMalloc ($(sed -n 's/^\([0-9a-f]*\) second.*/HEAD \1/p' <<<"$log"))"
}

test_coreutils() {
  local sort ls awk
  sort=$(need /usr/bin/sort)
  ls=$(need ls)
  awk=$(need awk)
  # 100k lines: pseudo-random keys, numbers and words (an LCG, so the file is always the same).
  "$awk" 'BEGIN { s = 12345; for (i = 0; i < 100000; i++) {
      s = (s * 1103515245 + 12345) % 2147483648
      printf "%08x %d word%d %s\n", s, s % 100000, i % 977, substr("abcdefghijklmnopqrstuvwxyz", s % 26 + 1, s % 13)
    } }' >"$tmp/input.txt"
  [[ $(wc -l <"$tmp/input.txt") == 100000 ]] || fail "could not generate the input"
  local opts
  for opts in "" "-n -k2,2 -s" "-u -k3,3" "-r --parallel=2 -S 256K"; do
    local tag=${opts//[^a-z0-9]/}
    # shellcheck disable=SC2086 # $opts is a list of options
    run "plain-sort$tag" "$sort" $opts -T "$tmp" "$tmp/input.txt"
    # shellcheck disable=SC2086
    run "preloaded-sort$tag" preloaded "sort$tag" "$sort" $opts -T "$tmp" "$tmp/input.txt"
    check_bindings "sort$tag"
    same_output "plain-sort$tag" "preloaded-sort$tag"
  done
  "$sort" -c "$tmp/plain-sort.out" || fail "sort output is not sorted"
  [[ $(wc -l <"$tmp/preloaded-sort.out") == 100000 ]] || fail "sort lost lines"
  # sort reading its own memory map: StarMalloc is mapped in the sort process itself.
  run maps preloaded maps "$sort" /proc/self/maps
  grep -qF -- "$lib" "$tmp/maps.out" || fail "$lib is not in sort's /proc/self/maps"

  local tree=/usr/include
  [[ -d $tree ]] || tree=/usr/share/doc
  LC_ALL=C run plain-ls "$ls" -laR "$tree"
  LC_ALL=C run preloaded-ls preloaded ls "$ls" -laR "$tree"
  check_bindings ls
  if ! cmp -s "$tmp/plain-ls.out" "$tmp/preloaded-ls.out"; then
    # Packages may be installed meanwhile: a second plain listing tells a changed tree apart.
    LC_ALL=C run plain-ls "$ls" -laR "$tree"
    same_output plain-ls preloaded-ls
  fi
  local lines
  lines=$(wc -l <"$tmp/preloaded-ls.out")
  ((lines > 10)) || fail "ls -laR $tree printed only $lines lines"
  say "sort: 4 orderings of 100000 lines identical; ls -laR $tree | wc -l = $lines with and without StarMalloc"
}

test_cxx() {
  local plain=${1:?usage: cxx <plain-exe> <linked-exe>} linked=${2:?usage: cxx <plain-exe> <linked-exe>}
  [[ -x $plain && -x $linked ]] || fail "C++ test programs not built: $plain $linked"
  run plain "$plain" --expect-plain
  run preloaded preloaded preloaded "$plain" --expect-starmalloc
  check_bindings preloaded
  # The linked program is run directly: its malloc comes from its link to libstarmalloc.
  run linked env LD_DEBUG=bindings LD_DEBUG_OUTPUT="$tmp/ld-linked" "$linked" --expect-starmalloc
  check_bindings linked
  grep -q 'is a StarMalloc block' "$tmp/preloaded.err" || fail "preloaded: the override check did not run"
  grep -q 'is a StarMalloc block' "$tmp/linked.err" || fail "linked: the override check did not run"
  same_output plain preloaded
  same_output plain linked
  say "$(cat "$tmp/plain.out") in the plain, preloaded and linked runs"
}

case $test_name in
  python) test_python "$@" ;;
  perl) test_perl "$@" ;;
  git) test_git "$@" ;;
  coreutils) test_coreutils "$@" ;;
  cxx) test_cxx "$@" ;;
  *) usage ;;
esac
say "PASS"
