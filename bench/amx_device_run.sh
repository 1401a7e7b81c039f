#!/usr/bin/env bash
# The AMX int8 expert kernel on the GPU machine's CPU, in one go: build (CUDA
# off), test_kernels, bench_kernels (one thread, the current kernel and the
# first one, hot and cold), bench_amx with every thread (both kernels in the
# same process), then bench_amx at M = 256 and 1024 for other blockings of
# the current kernel (MOEPACK_AMX_TUNE), unpadded activation rows, and one
# thread per core.
#   bench/amx_device_run.sh OUTDIR [SECONDS]
# Needs .devdeps (shared/device/prepare-deps.sh) beside the sources.
# Logs: OUTDIR/{build,tests,kernels,amx,grid}.log.
set -uo pipefail
out=${1:?usage: amx_device_run.sh OUTDIR [SECONDS]}
budget=${2:-280}
mkdir -p "$out"
t0=$(date +%s)
left() { echo $(( t0 + budget - $(date +%s) )); }
. "$(dirname "$0")/device_env.sh"
{ date -u; lscpu | grep -E "^Model name|^CPU\(s\)|^Thread|^Core|^NUMA node\(s\)|^L1d|^L2|^L3"; } 2>&1 | tee "$out/env.log"
if ! cmake -S . -B build-dev -DMOEPACK_WITH_CUDA=OFF -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >"$out/build.log" 2>&1 ||
   ! cmake --build build-dev -j16 --target test_kernels bench_kernels bench_amx >>"$out/build.log" 2>&1; then
    grep -E "error|Error" "$out/build.log" | head -30
    exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s, warnings: $(grep -c -i 'warning' "$out/build.log")"
B=$PWD/build-dev
(cd build-dev && timeout 60 ./tests/test_kernels) >"$out/tests.log" 2>&1
echo "test_kernels: exit $?"; grep -E "checks|CHECK|REQUIRE" "$out/tests.log" | tail -6
echo "== bench_kernels --kind 0 --isa amx --v1 ($(left) s left)"
timeout 90 "$B/bench_kernels" --kind 0 --isa amx --v1 >"$out/kernels.log" 2>&1
grep -vE "^quantize_act" "$out/kernels.log"
echo "== bench_amx --min-time 0.3 --v1 ($(left) s left)"
timeout 100 "$B/bench_amx" --min-time 0.3 --v1 >"$out/amx.log" 2>&1
cat "$out/amx.log"
G=$out/grid.log
grid() { # label, env assignment or "", extra arguments
    local label=$1 envs=$2; shift 2
    [ "$(left)" -gt 25 ] || { echo "-- $label: skipped (time)" | tee -a "$G"; return; }
    echo "-- $label" | tee -a "$G"
    env $envs timeout 40 "$B/bench_amx" --min-time 0.2 --m 256,1024 "$@" 2>&1 | grep -E "peak|^ +[0-9]" | tee -a "$G"
}
grid "default" ""
grid "order=0" MOEPACK_AMX_TUNE=order=0
grid "ks=16" MOEPACK_AMX_TUNE=ks=16
grid "pf=0" MOEPACK_AMX_TUNE=pf=0
grid "mc=128" MOEPACK_AMX_TUNE=mc=128
grid "--ld-pad 0" "" --ld-pad 0
half=$(( $(nproc) / 2 ))
grid "--threads $half (half the vCPUs: one per core if they are hyperthread pairs)" "" --threads "$half"
grid "ks=4" MOEPACK_AMX_TUNE=ks=4
echo "done in $(( $(date +%s) - t0 )) s"
