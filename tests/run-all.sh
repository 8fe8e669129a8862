#!/usr/bin/env bash
# Runs StarMalloc's whole test suite from a clean checkout on Debian: installs the packages
# the tests need when they are missing, builds every configuration the suite covers, and
# runs CTest. Usage: tests/run-all.sh [build-directory-prefix]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${1:-$repo/build}"
jobs="$(nproc 2>/dev/null || echo 2)"

"$repo/cmake/install-deps.sh" build-essential cmake pkg-config clang libcmocka-dev python3 perl git \
  libbenchmark-dev

build() { # build <dir> <cmake args...>
  local dir="$1"; shift
  cmake -S "$repo" -B "$dir" -DSTARMALLOC_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

# Release with gcc (IPO): the configuration users get. Runs the whole suite.
build "$prefix/release" -DCMAKE_BUILD_TYPE=Release -DSTARMALLOC_BUILD_BENCHMARKS=ON
(cd "$prefix/release" && ctest --output-on-failure -j "$jobs")

# Debug with clang: the same code must be warning-free under the other compiler too. Built
# without guard markers, so that the PROT_NONE guards (older kernels) stay tested as well.
build "$prefix/clang-debug" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DSTARMALLOC_BUILD_BENCHMARKS=ON -DSTARMALLOC_GUARD_MARKERS=OFF
(cd "$prefix/clang-debug" && ctest --output-on-failure -j "$jobs" -L "^(unit|abi|security|stress|bench-smoke)$")

# Reliability: presets matrix, sanitizers, fuzzing, valgrind, clang-tidy, cppcheck.
"$repo/tests/run-reliability.sh" "$prefix"

echo "run-all: all tests passed"
