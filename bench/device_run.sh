#!/usr/bin/env bash
# Build, test and benchmark the CUDA kernels on the GPU machine in one go
# (the device tool runs this; see docs/CUDA.md). Needs .devdeps (from
# shared/device/prepare-deps.sh) beside the sources.
#   bench/device_run.sh OUTDIR [--quick]
set -uo pipefail
out=${1:?usage: bench/device_run.sh OUTDIR [--quick]}
shift
mkdir -p "$out"
. "$(dirname "$0")/device_env.sh"
# load every kernel at start-up, so no module load happens inside a graph capture
export CUDA_MODULE_LOADING=EAGER
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; nvcc --version | tail -2; } \
    >"$out/env.log" 2>&1
cat "$out/env.log"
# (at most 8 files come back from the device: env, build, uploads, bench, test + the caller's run log)
t0=$(date +%s)
if ! cmake -S . -B build-dev -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed \
    >"$out/build.log" 2>&1; then
    tail -30 "$out/build.log"
    exit 1
fi
if ! cmake --build build-dev -j16 >>"$out/build.log" 2>&1; then
    grep -E "error|warning" "$out/build.log" | head -40
    exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s, warnings: $(grep -c -i warning "$out/build.log")"
deadline=$(( t0 + ${DEVICE_RUN_SECONDS:-450} ))
left() { echo $(( deadline - $(date +%s) )); }
export MOEPACK_TEST_TMP=/tmp/mp-test
# uploads first, one case per process: a driver that stalls on one kind of
# pinning only costs that case
for c in 1 2 3 4 5 6 7; do
    [ "$(left)" -gt 20 ] || break
    log=/tmp/upload$c.log
    timeout 15 ./build-dev/tests/test_cuda_kernels --upload $c >"$log" 2>&1
    rc=$?
    { echo "== upload case $c: exit $rc"; cat "$log"; } >>"$out/uploads.log"
    echo "upload case $c: exit $rc"
    grep -E "^upload case|raw:|CHECK" "$log"
    tail -1 "$log" | grep -q "upload:" && echo "  stopped at: $(tail -1 "$log")"
done
t1=$(date +%s)
timeout $(( $(left) - 60 )) ./build-dev/bench_cuda "$@" >"$out/bench.log" 2>&1
echo "bench_cuda: exit $? in $(( $(date +%s) - t1 )) s"
cat "$out/bench.log"
(cd build-dev && MP_TEST_VERBOSE=1 timeout $(( $(left) )) ./tests/test_cuda_kernels --no-upload) >"$out/test.log" 2>&1
echo "test_cuda_kernels --no-upload: exit $?"
grep -vE "^  " "$out/test.log" | tail -20
