#!/usr/bin/env bash
# Configures and builds one build folder: scripts/build.sh DIR [cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
grep -E '^-- moepack:' "$dir.configure.log" || true
cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1 || { tail -60 "$dir.build.log"; exit 1; }
