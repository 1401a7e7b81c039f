#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds a
# normal and an ASan+UBSan build, and runs every test in both through ctest.
# Tests read ../shared/fixtures when it exists (override: MOEPACK_FIXTURES=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test
fixtures=${MOEPACK_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (ASan+UBSan)"
bash scripts/build.sh build-asan -DMOEPACK_SANITIZE=ON -DMOEPACK_WITH_CUDA=OFF -DMOEPACK_FIXTURES="$fixtures"
echo "== build"
bash scripts/build.sh build -DMOEPACK_FIXTURES="$fixtures"

echo "== tests under ASan+UBSan"
(cd build-asan && ctest -j"$jobs" --output-on-failure -L '' -LE no-sanitize) | tee build-asan.ctest.log | grep -vE '^\s+Start ' || true
asan_summary=$(grep -E 'tests passed' build-asan.ctest.log | tail -1)
# libFuzzer: every harness for MOEPACK_FUZZ_SECONDS (default 20) seconds, two at a time
# (scripts/fuzz.sh, docs/FUZZING.md); 0 skips it, and so does a machine whose clang lacks the
# libFuzzer runtime (fuzz.sh exits 77 and says why): the harnesses still replay their corpora
# in both ctest runs. Before the last ctest so that its summary stays the last line.
fuzz_secs=${MOEPACK_FUZZ_SECONDS:-20}
fuzz_rc=0
echo "== fuzz"
if [ "$fuzz_secs" = 0 ]; then
    echo "fuzz: skipped (MOEPACK_FUZZ_SECONDS=0)"
else
    bash scripts/fuzz.sh "$fuzz_secs" || fuzz_rc=$?
    if [ "$fuzz_rc" -eq 77 ]; then
        echo "fuzz: skipped (see above); the corpus replay tests still run"
        fuzz_rc=0
    fi
fi
echo "== tests"
set +e
(cd build && ctest -j"$jobs" --output-on-failure) > build.ctest.log 2>&1
rc=$?
set -e
grep -vE '^\s+Start ' build.ctest.log
echo "ASan+UBSan: ${asan_summary:-no summary}"
grep -q '100% tests passed' build-asan.ctest.log || rc=1
[ "$fuzz_rc" -eq 0 ] || { echo "fuzz: failed or a harness found something (see above)"; rc=1; }
summary=$(grep -E 'tests passed' build.ctest.log | tail -1)
echo "${summary:-ctest printed no summary}"
exit $rc
