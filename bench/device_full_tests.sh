#!/usr/bin/env bash
# Every test on the GPU machine: a Release build with the fixtures in .devfix (a copy of
# shared/fixtures beside the sources), test_cuda_kernels without its upload cases, then the whole
# ctest suite with DEVICE_TESTS=1. Logs go to OUT (env, build, test_cuda, ctest).
#   bash bench/device_full_tests.sh OUT
set -uo pipefail
mkdir -p "${1:?usage: bench/device_full_tests.sh OUT}"
out=$(cd "$1" && pwd)
. "$(dirname "$0")/device_env.sh"
export MOEPACK_FIXTURES=$PWD/.devfix MOEPACK_TEST_TMP=/tmp/mp-test
{ lscpu | grep -E "Model name|^CPU\(s\)"; echo "AMX flags: $(grep -o 'amx[a-z0-9_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"; nvidia-smi -L; } >"$out/env.log"
cmake -S . -B build-dev -DMOEPACK_FIXTURES="$PWD/.devfix" -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >"$out/build.log" 2>&1
cmake --build build-dev -j16 >>"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head; exit 1; }
echo "warnings: $(grep -c -i warning "$out/build.log")"
cd build-dev
CUDA_MODULE_LOADING=EAGER timeout 200 ./tests/test_cuda_kernels --no-upload >"$out/test_cuda.log" 2>&1
echo "test_cuda_kernels --no-upload: exit $?, $(tail -1 "$out/test_cuda.log")"
DEVICE_TESTS=1 timeout 420 ctest -j8 --timeout 300 --output-on-failure >"$out/ctest.log" 2>&1
echo "ctest (all, DEVICE_TESTS=1, -j8): exit $?"
grep -E "tests passed|Failed|Skipped|\*\*\*" "$out/ctest.log" | head -20
