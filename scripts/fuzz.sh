#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/fuzz_NAME.c) in build-fuzz/ with clang and runs each for
# SECONDS seconds (default 30), starting from its seed corpus fuzz/corpus/NAME (read only) plus
# what earlier runs found (build-fuzz/corpus/NAME), with fuzz/dict/NAME.dict when there is one.
# Fails when any harness crashes, leaks, hangs (-timeout) or runs out of memory, printing the
# report and the input that reproduces it (kept in build-fuzz/findings/). docs/FUZZING.md.
# Exits 77 without fuzzing when clang or its libFuzzer runtime or OpenMP is missing.
#
# usage: scripts/fuzz.sh [SECONDS] [NAME...]      (NAMEs: e.g. gguf tok_json; default: all)
# env:   MOEPACK_FUZZ_JOBS  harnesses run at once (default: the number of cores, at most 2)
#        MOEPACK_FIXTURES   the fixtures folder (default ../shared/fixtures); tok_encode needs it
#        MOEPACK_FUZZ_FLAGS more libFuzzer flags (e.g. -use_value_profile=1 -max_len=65536)
#        CC                 the clang to use (default clang)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
[ $# -gt 0 ] && shift
case $secs in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [NAME...]" >&2; exit 1 ;; esac
fixtures=${MOEPACK_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
cores=$(nproc 2>/dev/null || echo 2)
jobs=${MOEPACK_FUZZ_JOBS:-$((cores < 2 ? cores : 2))}
cc=${CC:-clang}
# Exit 77 (scripts/test.sh: skip) when the toolchain cannot build a harness: clang, its libFuzzer
# and sanitizer runtimes (libclang-rt-N-dev on Debian 12 / Ubuntu 24.04, libclang-common-N-dev on
# older releases) and its OpenMP (libomp-N-dev). A one-line probe is quicker and clearer than
# CMake's failure halfway through the build.
if ! command -v "$cc" >/dev/null; then
    echo "fuzz: $cc not found (scripts/deps.sh --test installs clang); not fuzzing" >&2
    exit 77
fi
probe=$(mktemp -d "${TMPDIR:-/tmp}/moepack-fuzz-probe.XXXXXX")
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$probe/p.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >"$probe/log" 2>&1; then
    echo "fuzz: $cc cannot link a libFuzzer harness (its fuzzer/sanitizer runtime is missing:" \
        "scripts/deps.sh --test installs it); not fuzzing. $cc said:" >&2
    head -5 "$probe/log" >&2
    rm -rf "$probe"
    exit 77
fi
printf '%s\n' '#include <omp.h>' 'int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }' >"$probe/omp.c"
if ! "$cc" -fopenmp "$probe/omp.c" -o "$probe/omp" >"$probe/log" 2>&1; then
    echo "fuzz: $cc has no OpenMP (libomp-dev; scripts/deps.sh --test installs it); not fuzzing" >&2
    rm -rf "$probe"
    exit 77
fi
rm -rf "$probe"

dir=build-fuzz
CC=$cc cmake -S . -B $dir -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEPACK_FUZZ=ON -DMOEPACK_WITH_CUDA=OFF \
    -DMOEPACK_FIXTURES="$fixtures" >$dir.configure.log 2>&1 || { cat $dir.configure.log; exit 1; }
cmake --build $dir --target fuzz -j"$cores" >$dir.build.log 2>&1 || { tail -60 $dir.build.log; exit 1; }

if [ $# -gt 0 ]; then
    names=("$@")
else
    names=()
    for f in fuzz/fuzz_*.c; do n=${f#fuzz/fuzz_}; names+=("${n%.c}"); done
fi
mkdir -p $dir/logs $dir/findings
export MOEPACK_FIXTURES=$fixtures
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/moepack-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# run_one NAME: one harness; writes its exit status (0: nothing found) to $scratch/NAME.rc
run_one() {
    local name=$1 exe=$dir/fuzz/fuzz_$1 rc=0
    local dict=() corpus=$dir/corpus/$1
    [ -x "$exe" ] || { echo "fuzz: no harness named $name" >$dir/logs/$name.log; echo 2 >"$scratch/$name.rc"; return; }
    [ -f fuzz/dict/$name.dict ] && dict=(-dict=fuzz/dict/$name.dict)
    mkdir -p "$corpus" "$scratch/$name"
    # error/timeout exit codes other than 77, which a harness uses for "fixtures missing"
    # shellcheck disable=SC2086 # MOEPACK_FUZZ_FLAGS is a list of flags
    TMPDIR=$scratch/$name "$exe" "$corpus" fuzz/corpus/"$name" "${dict[@]}" ${MOEPACK_FUZZ_FLAGS:-} -max_total_time="$secs" \
        -timeout=10 -rss_limit_mb=2048 -error_exitcode=99 -timeout_exitcode=98 -print_final_stats=1 \
        -artifact_prefix=$dir/findings/"$name"- >$dir/logs/"$name".log 2>&1 || rc=$?
    echo $rc >"$scratch/$name.rc"
}

echo "fuzz: ${#names[@]} harnesses, ${secs} s each, $jobs at a time"
running=0
for name in "${names[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$name" &
    running=$((running + 1))
done
wait

status=0
for name in "${names[@]}"; do
    rc=$(cat "$scratch/$name.rc" 2>/dev/null || echo 2)
    log=$dir/logs/$name.log
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 |
        sed -E 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+/\1 runs, /; s/[[:space:]]+(lim|exec\/s|rss|L):.*//' || true)
    if [ "$rc" -eq 0 ]; then
        printf '  %-12s ok     %s\n' "$name" "${stats:-(no stats)}"
    elif [ "$rc" -eq 77 ]; then
        printf '  %-12s skip   (fixtures missing)\n' "$name"
    else
        status=1
        printf '  %-12s FOUND  something (exit %d); report:\n' "$name" "$rc"
        grep -E 'ERROR: |SUMMARY: |invariant broken|runtime error|Test unit written|^ +#[0-9]+ 0x.*\.c:[0-9]' "$log" | head -40 |
            sed 's/^/      /' || true
        echo "      full log: $log; replay: build/tests/replay_$name FILE (or $dir/fuzz/fuzz_$name FILE);"
        echo "      once fixed, keep the input as tests/data/regress/$name/NAME"
    fi
done
exit $status
