#!/usr/bin/env bash
# The hybrid runner on the GPU machine, in one go: build, GPU tests (MLA
# shapes, hybrid vs CPU and vs the oracle), compare/run through the CLI,
# bench_amx (CPU experts vs the AMX peak and read bandwidth), and the start-up
# of a DeepSeek-V2-Lite-shaped container (3 layers, synthesized there):
# file read cold/warm, time to first token cold/warm with and without
# --prefault, decode with and without CUDA Graphs, hybrid vs CPU-only.
#   bench/hybrid_device_run.sh OUTDIR FIXTURES [SECONDS]
# Needs .devdeps (shared/device/prepare-deps.sh) beside the sources; runs as
# root there (drop_caches). Logs: OUTDIR/{build,tests,bench_amx,start}.log.
set -uo pipefail
out=${1:?usage: hybrid_device_run.sh OUTDIR FIXTURES [SECONDS]}
fix=${2:?usage: hybrid_device_run.sh OUTDIR FIXTURES [SECONDS]}
budget=${3:-480}
mkdir -p "$out"
t0=$(date +%s)
left() { echo $(( t0 + budget - $(date +%s) )); }
. "$(dirname "$0")/device_env.sh"
# CUDA's default lazy module loading: the runner runs one eager step before
# it captures a graph, so no module loads inside a capture (test_cuda_kernels
# gets EAGER as its own script does)
export MOEPACK_FIXTURES=$fix MOEPACK_TEST_TMP=/tmp/mp-test
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; lscpu | grep -E "^Model name|^CPU\(s\)|^Thread|^NUMA node\(s\)"; cat /sys/kernel/mm/transparent_hugepage/enabled; } 2>&1
# RelWithDebInfo: the Release (-O3) build stops on -Wmaybe-uninitialized in formats/gguf.c
if ! cmake -S . -B build-dev -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >"$out/build.log" 2>&1 ||
   ! cmake --build build-dev -j16 >>"$out/build.log" 2>&1; then
    grep -E "error|Error" "$out/build.log" | head -30
    exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s, warnings: $(grep -c -i 'warning' "$out/build.log")"
B=$PWD/build-dev
T=$out/tests.log
step() { echo "== $* ($(left) s left)" | tee -a "$T"; }

step "test_hybrid"
(cd build-dev && timeout 150 ./tests/test_hybrid) >>"$T" 2>&1; echo "exit $?" | tee -a "$T"
grep -E "^  |checks|CHECK|REQUIRE|SKIP" "$T" | tail -30
step "test_cuda_kernels --only mla"
(cd build-dev && CUDA_MODULE_LOADING=EAGER MP_TEST_VERBOSE=1 timeout 90 ./tests/test_cuda_kernels --only mla) >>"$T" 2>&1; echo "exit $?" | tee -a "$T"
grep -E "mla |test_mla|checks|CHECK" "$T" | tail -30
step "test_numa, test_runner_quant"
(cd build-dev && timeout 60 ./tests/test_numa | tail -4 && timeout 60 ./tests/test_runner_quant | tail -4) >>"$T" 2>&1
tail -8 "$T"

step "cli_hybrid"
MOEPACK_BIN=$B/moepack bash tests/cli/hybrid.sh >>"$T" 2>&1; echo "exit $?" | tee -a "$T"
step "CLI on tiny-v3"
tiny=/tmp/tiny.moepack
$B/moepack convert "$fix/tiny-v3" -o $tiny --quiet >>"$T" 2>&1
for mode in "" --cpu-only; do
    echo "-- compare $mode" | tee -a "$T"
    timeout 60 $B/moepack compare $tiny "$fix/tiny-v3.reference.safetensors" $mode --min-top1 0.75 --max-kl 0.05 2>&1 | tail -3 | tee -a "$T"
    echo "exit ${PIPESTATUS[0]}" | tee -a "$T"
    timeout 30 $B/moepack run $tiny -p "The quick brown fox" -n 24 $mode >/tmp/run$mode.txt 2>>"$T"
done
cmp -s /tmp/run.txt /tmp/run--cpu-only.txt && echo "run: hybrid and --cpu-only generate the same text" | tee -a "$T" ||
    { echo "run: texts differ" | tee -a "$T"; cat /tmp/run.txt /tmp/run--cpu-only.txt >>"$T"; }
grep -E "tok/s" "$T" | tail -2

step "bench_amx"
A=$out/bench_amx.log
if [ "$(left)" -gt 200 ]; then
    echo "\$ bench_amx --min-time 0.3" >>"$A"; timeout 90 $B/bench_amx --min-time 0.3 >>"$A" 2>&1
    echo "\$ bench_amx --min-time 0.3 --m 16,64,256,1024 --v1   (the first AMX kernel too)" >>"$A"
    timeout 60 $B/bench_amx --min-time 0.3 --m 16,64,256,1024 --v1 >>"$A" 2>&1
    echo "\$ bench_amx --min-time 0.3 --experts 1 --m 64,256,1024   (one expert: weights cache-resident)" >>"$A"
    timeout 30 $B/bench_amx --min-time 0.3 --experts 1 --m 64,256,1024 >>"$A" 2>&1
    echo "\$ bench_amx --min-time 0.3 --threads 1 --m 1,64,256" >>"$A"
    timeout 60 $B/bench_amx --min-time 0.3 --threads 1 --m 1,64,256 >>"$A" 2>&1
fi
cat "$A"

S=$out/start.log
step "V2-Lite-shaped container (3 layers, 1 dense)"
if [ "$(left)" -gt 100 ]; then
    ts=$(date +%s)
    $B/moepack synth --like deepseek-v2-lite --layers 3 --dense 1 -o /tmp/v2l -q >>"$S" 2>&1 &&
        $B/moepack convert /tmp/v2l -o /tmp/v2l.moepack --quiet >>"$S" 2>&1
    echo "synth + convert: $(( $(date +%s) - ts )) s, $(du -h /tmp/v2l.moepack | cut -f1)" | tee -a "$S"
    rm -rf /tmp/v2l
    F=/tmp/v2l.moepack
    drop() { sync; echo 3 >/proc/sys/vm/drop_caches || echo "(could not drop caches)"; }
    drop; a=$(date +%s.%N); cat $F >/dev/null; b=$(date +%s.%N); cat $F >/dev/null; c=$(date +%s.%N)
    sz=$(stat -c %s $F)
    awk -v a=$a -v b=$b -v c=$c -v sz=$sz 'BEGIN { printf "cat FILE >/dev/null (%.2f GB): cold %.3f s (%.2f GB/s), warm %.3f s (%.2f GB/s)\n", sz/1e9, b-a, sz/1e9/(b-a), c-b, sz/1e9/(c-b) }' | tee -a "$S"
    run() { timeout 60 $B/bench_start $F "$@" 2>&1 | tee -a "$S"; }
    drop; run --label "cold: " --prompt 128 --decode 32 --eager-too --check-cpu
    run --label "warm: " --prompt 128 --decode 32
    drop; run --label "cold: " --prompt 128 --decode 32 --prefault
    run --label "warm: " --prompt 128 --decode 32 --prefault
    drop; run --label "cold, cpu-only: " --prompt 128 --decode 32 --cpu-only
    run --label "warm: " --prompt 512 --decode 32 --cpu-only
    run --label "warm: " --prompt 512 --decode 0
    CUDA_MODULE_LOADING=EAGER run --label "warm, CUDA_MODULE_LOADING=EAGER: " --prompt 128 --decode 0
fi
echo "total: $(( $(date +%s) - t0 )) s"
