#!/usr/bin/env bash
# StarMalloc side by side with glibc, jemalloc, tcmalloc, mimalloc and scudo.
#
#   benchmarks/compare.sh [--quick] [--reps N] [--only W[,W...]] [--presets P[,P...]]
#                         [--variant NAME=OPTIONS]... [--baselines A[,A...]]
#                         [--scale X] [--pairs N] [--no-callgrind] [--no-micro] [--no-scaling]
#                         [--no-install] [--no-doc] [--outdir DIR] [--note TEXT]
#
# Installs the Debian packages it needs when missing, builds StarMalloc in Release with each
# hardening preset (build/bench-<preset>) and the workloads once, then runs every workload
# under every allocator, interleaved (round-robin over the allocators within each
# repetition, the starting allocator rotating), N repetitions. It takes medians, computes
# ratios to glibc from the same run, measures two-thread scaling (wl-larson --per-thread with
# 1 and 2 threads under every allocator, interleaved the same way: throughput(2) /
# throughput(1)), counts instructions per malloc/free pair with callgrind, times
# starmalloc-micro's malloc/free pairs per preset (next to glibc's), and writes
# benchmarks/results/<date>[-quick]/{raw.csv,results.csv,scaling-raw.csv,scaling.csv,
# results.md,*.png}, then regenerates the results section of docs/performance.md.
#
#   --quick         a quarter of the work, 3 repetitions, fewer callgrind pairs: for trying it
#   --reps N        repetitions (default 5, --quick 3)
#   --only W,...    only these workloads (larson pipeline false-sharing bignum compiler realloc
#                   large resize fragmentation)
#   --presets P,... only these StarMalloc presets (default: none,light,default,paranoid)
#   --variant NAME=OPTIONS
#                   also a StarMalloc build with these CMake options (space-separated -D...,
#                   e.g. "nosq=-DSTARMALLOC_HARDENING=default -DSTARMALLOC_SLOT_QUARANTINE=0"),
#                   in build/bench-variant-NAME, shown as sm-NAME (repeatable; not in the
#                   starmalloc-micro table)
#   --baselines A,...
#                   only these of jemalloc, tcmalloc, mimalloc, scudo next to glibc, which is
#                   always run (ratios are to glibc); "" for glibc alone (default: all four).
#                   scudo is LLVM's hardened allocator (scudo standalone from libclang-rt-14-dev,
#                   its default options); its large and realloc runs take minutes
#   --scale X       workload scale (default 1, --quick 0.25)
#   --pairs N       malloc/free pairs per callgrind run (default 100000, --quick 20000)
#   --no-callgrind  skip the instruction counts
#   --no-micro      skip the starmalloc-micro malloc/free table (saves building it per preset)
#   --no-scaling    skip the two-thread scaling measurement (it runs whatever --only says)
#   --no-install    do not install missing packages (allocators not found are skipped)
#   --no-doc        do not touch docs/performance.md
#   --outdir DIR    write the results there instead of benchmarks/results/<date>[-quick]
#                   (emptied first)
#   --note TEXT     a caveat printed with the results (e.g. "machine shared with builds")
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="$(nproc 2>/dev/null || echo 2)"

quick=0 reps="" only="" presets="none,light,default,paranoid" scale="" pairs="" callgrind=1
install=1 doc=1 note="" micro=1 scaling=1 outdir="" baselines="jemalloc,tcmalloc,mimalloc,scudo"
variants=()
args_text=""
for a in "$@"; do # the command line as typed, for the report
  if [[ "$a" =~ ^[A-Za-z0-9_./,=:+-]+$ ]]; then args_text+="${args_text:+ }$a"
  else args_text+="${args_text:+ }\"${a//\"/\\\"}\""; fi
done
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --reps) reps="$2"; shift ;;
    --only) only="$2"; shift ;;
    --presets) presets="$2"; shift ;;
    --variant) variants+=("$2"); shift ;;
    --baselines) baselines="$2"; shift ;;
    --scale) scale="$2"; shift ;;
    --pairs) pairs="$2"; shift ;;
    --no-callgrind) callgrind=0 ;;
    --no-micro) micro=0 ;;
    --no-scaling) scaling=0 ;;
    --outdir) outdir="$2"; shift ;;
    --no-install) install=0 ;;
    --no-doc) doc=0 ;;
    --note) note="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((quick)); then
  reps="${reps:-3}" scale="${scale:-0.25}" pairs="${pairs:-20000}"
else
  reps="${reps:-5}" scale="${scale:-1}" pairs="${pairs:-100000}"
fi
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --reps needs a positive number" >&2; exit 2; }

all_workloads=(larson pipeline false-sharing bignum compiler realloc large resize fragmentation)
workloads=()
if [[ -n "$only" ]]; then
  IFS=, read -r -a wanted <<<"$only"
  for w in "${wanted[@]}"; do
    [[ " ${all_workloads[*]} " == *" $w "* ]] || { echo "compare.sh: no workload '$w' (${all_workloads[*]})" >&2; exit 2; }
    workloads+=("$w")
  done
else
  workloads=("${all_workloads[@]}")
fi
IFS=, read -r -a preset_list <<<"$presets"
for p in "${preset_list[@]}"; do
  [[ " none light default paranoid " == *" $p "* ]] || { echo "compare.sh: no preset '$p'" >&2; exit 2; }
done
declare -A variant_options=() # variant name -> its CMake options
variant_names=()
for v in "${variants[@]}"; do
  name="${v%%=*}" options="${v#*=}"
  if [[ "$v" != *=* || ! "$name" =~ ^[a-z0-9][a-z0-9-]*$ || -n "${variant_options[$name]+set}" ]] ||
     [[ " none light default paranoid " == *" $name "* ]]; then
    echo "compare.sh: --variant '$v': needs NAME=OPTIONS, NAME of a-z, 0-9 and -, not a preset's and given once" >&2
    exit 2
  fi
  for o in $options; do
    [[ "$o" == -D?* ]] || { echo "compare.sh: --variant $name: '$o' is not a -D option" >&2; exit 2; }
  done
  variant_options[$name]="$options"
  variant_names+=("$name")
done
# Baselines: name, the Debian package that ships it, the library's file name (a pattern).
declare -A baseline_pkg=([jemalloc]=libjemalloc2 [tcmalloc]=libtcmalloc-minimal4 [mimalloc]=libmimalloc2.0
                         [scudo]=libclang-rt-14-dev)
declare -A baseline_lib=([jemalloc]='libjemalloc\.so\.2' [tcmalloc]='libtcmalloc_minimal\.so\.4'
                         [mimalloc]='libmimalloc\.so\.2'
                         [scudo]="libclang_rt\\.scudo_standalone-$(uname -m)\\.so")
all_baselines=(jemalloc tcmalloc mimalloc scudo)
IFS=, read -r -a baseline_list <<<"$baselines"
for b in "${baseline_list[@]}"; do
  [[ " ${all_baselines[*]} " == *" $b "* ]] || { echo "compare.sh: no baseline '$b' (${all_baselines[*]})" >&2; exit 2; }
done

if [[ -z "$outdir" ]]; then
  stamp="$(date +%Y-%m-%d)"
  ((quick)) && stamp="$stamp-quick"
  outdir="$repo/benchmarks/results/$stamp"
fi
outdir="$(realpath -m "$outdir")"
# Emptied first: refuse a directory that holds something else than an earlier run's results.
if [[ -d "$outdir" && -n "$(ls -A "$outdir")" && ! -e "$outdir/meta.txt" ]]; then
  echo "compare.sh: $outdir is not empty and holds no earlier results (meta.txt): not emptying it" >&2
  exit 2
fi

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- packages -------------------------------------------------------------------------------
alloc_pkgs=()
for b in "${baseline_list[@]}"; do alloc_pkgs+=("${baseline_pkg[$b]}"); done
if ((install)); then
  "$repo/cmake/install-deps.sh" build-essential cmake python3 gnuplot-nox valgrind libbenchmark-dev \
    "${alloc_pkgs[@]}"
fi

# The shared library a package ships, found through dpkg so that any architecture works.
find_lib() { # find_lib <package> <file name pattern>
  { dpkg -L "$1" 2>/dev/null || true; } | grep -E "/$2\$" | head -n 1
}

# ---- build ----------------------------------------------------------------------------------
declare -A lib_of=() # allocator name -> library to preload ("" for glibc)
allocators=(glibc)
lib_of[glibc]=""
for name in "${all_baselines[@]}"; do # in this order, whatever the order given
  [[ " ${baseline_list[*]} " == *" $name "* ]] || continue
  pkg="${baseline_pkg[$name]}"
  lib="$(find_lib "$pkg" "${baseline_lib[$name]}")"
  if [[ -n "$lib" && -e "$lib" ]]; then
    allocators+=("$name"); lib_of[$name]="$lib"
  else
    log "skipping $name: package $pkg is not installed"
  fi
done

build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
build_preset() { # build_preset <preset> <targets...>
  local preset="$1"; shift
  build_starmalloc "preset $preset" "$repo/build/bench-$preset" "-DSTARMALLOC_HARDENING=$preset" "$@"
}
# build_starmalloc <what> <dir> <CMake options, one word> <targets...>
build_starmalloc() {
  local what="$1" dir="$2" options="$3"; shift 3
  log "building StarMalloc (Release, $what: $options) in ${dir#"$repo"/}"
  # shellcheck disable=SC2086 # the options are words on purpose
  if ! { cmake -S "$repo" -B "$dir" -DCMAKE_BUILD_TYPE=Release $options \
           -DSTARMALLOC_BUILD_BENCHMARKS=ON -DSTARMALLOC_BUILD_TESTS=OFF &&
         cmake --build "$dir" -j "$jobs" --target "$@"; } >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    echo "compare.sh: the build of $what failed (log above)" >&2
    exit 1
  fi
}
# The workloads are plain C, independent of the preset: built once, with the first preset.
first=1
for p in "${preset_list[@]}"; do
  targets=(starmalloc)
  ((micro)) && targets+=(starmalloc-micro)
  if ((first)); then
    build_preset "$p" "${targets[@]}" bench-workloads
    bindir="$repo/build/bench-$p/benchmarks"
    first=0
  else
    build_preset "$p" "${targets[@]}"
  fi
  allocators+=("sm-$p")
  lib_of[sm-$p]="$repo/build/bench-$p/shim/libstarmalloc.so"
done
for v in "${variant_names[@]}"; do
  dir="$repo/build/bench-variant-$v"
  # A fresh cache: options of an earlier variant of the same name must not linger in it.
  rm -f "$dir/CMakeCache.txt"
  targets=(starmalloc)
  ((first)) && targets+=(bench-workloads)
  build_starmalloc "variant $v" "$dir" "${variant_options[$v]}" "${targets[@]}"
  if ((first)); then
    bindir="$dir/benchmarks"
    first=0
  fi
  allocators+=("sm-$v")
  lib_of[sm-$v]="$dir/shim/libstarmalloc.so"
done

# ---- output ---------------------------------------------------------------------------------
rm -rf "$outdir"
mkdir -p "$outdir/logs"
raw="$outdir/raw.csv"
echo "rep,workload,allocator,status,time_s,ops_per_s,peak_rss_kb,final_rss_kb,checksum,extra" >"$raw"

version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
cpu="$(grep -m1 -E '^(model name|Hardware|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
[[ -n "$cpu" ]] || cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
# shellcheck source=/dev/null
os_name="$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
versions="glibc $(version_of libc6)"
declare -A baseline_label=([tcmalloc]="tcmalloc (gperftools)" [scudo]="scudo standalone, default options, LLVM")
for a in "${allocators[@]}"; do
  [[ -n "${baseline_pkg[$a]+set}" ]] || continue
  versions+=", ${baseline_label[$a]:-$a} $(version_of "${baseline_pkg[$a]}")"
done
versions+=", StarMalloc presets ${presets//,/ } (sm-<preset>)"
for v in "${variant_names[@]}"; do
  versions+=", sm-$v: ${variant_options[$v]}"
done
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
    [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]] && echo " (with uncommitted changes)")"
  echo "args=${args_text}"
  echo "mode=$( ((quick)) && echo quick || echo full)"
  echo "cpu=${cpu:-unknown}"
  echo "nproc=$(nproc)"
  echo "memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r) $(uname -m)"
  echo "os=$os_name"
  echo "compiler=$(cc --version | head -n1)"
  echo "reps=$reps"
  echo "scale=$scale"
  echo "versions=$versions"
  echo "workloads=${workloads[*]}"
  echo "allocators=${allocators[*]}"
  echo "presets=${preset_list[*]}"
  echo "note=$note"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$outdir/meta.txt"

# ---- runs -----------------------------------------------------------------------------------
# run_wl <log name> <allocator> <workload> <args...>: runs wl-<workload> once under the
# allocator. On success fills kv (the RESULT line's fields) and extra (the fields that are not
# common to every workload) and returns 0; on failure logs why, sets why and returns 1.
declare -A kv=()
extra="" why=""
run_wl() {
  local logname="$1" a="$2" w="$3"; shift 3
  local lib="${lib_of[$a]}" out rc=0 errf line field
  errf="$outdir/logs/$logname.stderr"
  out="$(env ${lib:+LD_PRELOAD="$lib"} timeout 600 "$bindir/workloads/wl-$w" "$@" 2>"$errf")" || rc=$?
  line="$(grep -m1 '^RESULT ' <<<"$out" || true)"
  if ((rc != 0)) || [[ -z "$line" ]]; then
    why="exit status $rc"
    ((rc == 124)) && why="timed out"
    ((rc > 128 && rc != 124)) && why="killed by signal $((rc - 128))"
    [[ -s "$errf" ]] && why+=": $(head -c 300 "$errf" | tr '\n,' '  ')"
    log "FAILED: $w $* under $a: $why"
    return 1
  fi
  [[ -s "$errf" ]] || rm -f "$errf"
  kv=() extra=""
  for field in ${line#RESULT }; do
    kv[${field%%=*}]="${field#*=}"
    case "${field%%=*}" in
      name|threads|scale|time_s|ops|ops_per_s|peak_rss_kb|final_rss_kb|checksum) ;;
      *) extra+="${extra:+ }$field" ;;
    esac
  done
}

# run_one <rep> <workload> <allocator>: one run, one row of raw.csv.
run_one() {
  local rep="$1" w="$2" a="$3"
  if ! run_wl "$w.$a.$rep" "$a" "$w" --scale "$scale"; then
    echo "$rep,$w,$a,$why,,,,,," >>"$raw"
    return
  fi
  echo "$rep,$w,$a,ok,${kv[time_s]},${kv[ops_per_s]},${kv[peak_rss_kb]},${kv[final_rss_kb]},${kv[checksum]},$extra" >>"$raw"
  printf '  %-14s %-12s %8ss  peak %7s KiB\n' "$w" "$a" "${kv[time_s]}" "${kv[peak_rss_kb]}" >&2
}

n_alloc=${#allocators[@]}
for ((rep = 1; rep <= reps; rep++)); do
  log "repetition $rep of $reps (scale $scale)"
  for w in "${workloads[@]}"; do
    for ((i = 0; i < n_alloc; i++)); do
      run_one "$rep" "$w" "${allocators[(i + rep - 1) % n_alloc]}"
    done
  done
done

# ---- two-thread scaling ---------------------------------------------------------------------
# wl-larson --per-thread: every thread does a whole run's work, so ops_per_s with 1 and with 2
# threads compare. Allocators interleaved as above; each allocator's 1- and 2-thread runs back
# to back (their order alternating between repetitions), so that a burst of load hits both.
# Two threads on 2 cores measure nothing while something else runs, so each run records the
# CPUs that other processes used meanwhile: (CPU time of the whole system - the run's own) /
# wall time, from /proc/stat and the shell's `times`.
hz="$(getconf CLK_TCK 2>/dev/null || echo 100)"
times_file="$outdir/.times"
cpu_sample() { # cpu_sample: sets busy_ms (whole system) and own_ms (this shell's children)
  local l
  read -r -a l </proc/stat
  busy_ms=$(((l[1] + l[2] + l[3] + l[6] + l[7] + l[8]) * 1000 / hz))
  times >"$times_file" # here, not in a subshell: a subshell's `times` knows none of our children
  own_ms="$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { m = $i; sub(/m.*/, "", m); t = $i
                 sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); ms += (m * 60 + t) * 1000 }
                 printf "%d\n", ms }' "$times_file")"
}
if ((scaling)); then
  scaling_raw="$outdir/scaling-raw.csv"
  echo "rep,allocator,threads,status,time_s,ops_per_s,checksum,other_cpus" >"$scaling_raw"
  for ((rep = 1; rep <= reps; rep++)); do
    log "scaling: repetition $rep of $reps (wl-larson --per-thread, 1 and 2 threads, scale $scale)"
    thread_order=(1 2)
    ((rep % 2 == 0)) && thread_order=(2 1)
    for ((i = 0; i < n_alloc; i++)); do
      a="${allocators[(i + rep - 1) % n_alloc]}"
      for t in "${thread_order[@]}"; do
        cpu_sample
        busy0="$busy_ms" own0="$own_ms" start="$EPOCHREALTIME"
        if run_wl "scaling.$a.t$t.$rep" "$a" larson --per-thread --threads "$t" --scale "$scale"; then
          end="$EPOCHREALTIME"
          cpu_sample
          other="$(awk -v o="$((busy_ms - busy0 - (own_ms - own0)))" -v s="$start" -v e="$end" \
                     'BEGIN { o = o < 0 ? 0 : o; printf "%.2f", o / 1000 / (e - s) }')"
          echo "$rep,$a,$t,ok,${kv[time_s]},${kv[ops_per_s]},${kv[checksum]},$other" >>"$scaling_raw"
          printf '  larson x%-5s %-12s %8ss  %10s ops/s  (other processes: %s CPUs)\n' "$t" "$a" \
            "${kv[time_s]}" "${kv[ops_per_s]}" "$other" >&2
        else
          echo "$rep,$a,$t,$why,,,," >>"$scaling_raw"
        fi
      done
    done
  done
fi
rm -f "$times_file"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$outdir/meta.txt"

# ---- micro: malloc/free pairs per size, each preset next to the C library ------------------
if ((micro)); then
  log "starmalloc-micro: BM_malloc_free per preset (3 repetitions, medians)"
  min_time=0.2
  ((quick)) && min_time=0.05
  for p in "${preset_list[@]}"; do
    "$repo/build/bench-$p/benchmarks/micro/starmalloc-micro" --benchmark_filter='^BM_malloc_free<' \
      --benchmark_min_time="$min_time" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_out="$outdir/micro-$p.json" --benchmark_out_format=json >/dev/null 2>&1 ||
      log "starmalloc-micro failed for preset $p"
  done
fi

# ---- callgrind ------------------------------------------------------------------------------
if ((callgrind)) && command -v valgrind >/dev/null; then
  log "callgrind: instructions per malloc/free pair ($pairs pairs per size)"
  cg="$outdir/callgrind.csv"
  echo "allocator,size,pairs,ir_total,ir_base,ir_per_pair" >"$cg"
  ir_of() { # ir_of <allocator> <pairs> <size>: instructions executed, or empty if the run failed
    local lib="${lib_of[$1]}" vlog rc=0
    vlog="$(mktemp)"
    env ${lib:+LD_PRELOAD="$lib"} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
      --log-file="$vlog" "$bindir/micro/starmalloc-pairs" "$2" "$3" >/dev/null 2>&1 || rc=$?
    # A run that died (scudo cannot map its regions under valgrind) still reports what it counted.
    ((rc == 0)) && sed -n 's/^==[0-9]*== Collected : *\([0-9]*\)$/\1/p' "$vlog" | head -n1
    rm -f "$vlog"
  }
  for a in "${allocators[@]}"; do
    for size in 16 64 256 1024; do
      base="$(ir_of "$a" 0 "$size")" total="$(ir_of "$a" "$pairs" "$size")"
      if [[ -n "$base" && -n "$total" ]]; then
        per="$(awk -v t="$total" -v b="$base" -v n="$pairs" 'BEGIN {printf "%.1f", (t - b) / n}')"
      else
        per="NaN"
        log "callgrind failed for $a, $size B"
      fi
      echo "$a,$size,$pairs,$total,$base,$per" >>"$cg"
      printf '  %-12s %5s B  %s instructions/pair\n' "$a" "$size" "$per" >&2
    done
  done
fi

# ---- report ---------------------------------------------------------------------------------
rmdir "$outdir/logs" 2>/dev/null || true
report_args=(--outdir "$outdir")
((doc)) && report_args+=(--doc "$repo/docs/performance.md")
python3 "$repo/benchmarks/report.py" "${report_args[@]}"
log "results: ${outdir#"$repo"/}/results.md$( ((doc)) && echo " and docs/performance.md")"
