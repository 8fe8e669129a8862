#!/usr/bin/env bash
# Quick start: builds StarMalloc (Release) into ./build when needed, then runs the given
# program with it preloaded. Usage: shim/build-and-run.sh <program> [args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/cmake/install-deps.sh" build-essential cmake
cmake -S "$repo" -B "$repo/build/release" -DCMAKE_BUILD_TYPE=Release -DSTARMALLOC_BUILD_TESTS=OFF >/dev/null
cmake --build "$repo/build/release" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
exec "$repo/build/release/shim/starmalloc-run" "$@"
