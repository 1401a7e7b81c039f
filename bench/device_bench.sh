#!/usr/bin/env bash
# `moepack bench` at real widths on the GPU machine (16 cores, one H100, 128 GB
# RAM, ~60 GB free disk). Two parts, one device call each (each fits in 9
# minutes; docs/BENCHMARKS.md has the estimate):
#
#   bench/device_bench.sh OUTDIR v3      DeepSeek-V3 width, 2 layers (1 dense + 1 MoE,
#                                        256 experts), BF16 source ~28 GB, container ~16 GB
#   bench/device_bench.sh OUTDIR v2lite  DeepSeek-V2-Lite width: a 2- and a 3-layer model
#                                        converted (peak RSS must not grow), the 3-layer
#                                        one benched (its extrapolation to 27 layers), then
#                                        the real 27 layers (source ~31 GB, container ~16 GB)
#   bench/device_bench.sh OUTDIR topk    DeepSeek-V3 width, 2 layers: the cost of fewer routed
#                                        experts per token on the hybrid path: a reference of
#                                        the model's own 8-expert outputs (`moepack reference`),
#                                        `compare --experts-per-token 7|6|4` against it (KL,
#                                        top-1, greedy) and `bench --experts-per-token 8|6|4`
#   bench/device_bench.sh OUTDIR tiny    the v2lite steps on the tiny preset, small prompts,
#                                        page cache kept: a smoke test of this script on any
#                                        machine (MOEPACK_BIN=path skips the build)
#
# Each model: synth (GB/s), convert (input GB/s and peak RSS, the converter's
# own and /usr/bin/time's when there), the source deleted, `cat FILE
# >/dev/null` cold (after echo 3 > /proc/sys/vm/drop_caches) and warm, bench
# hybrid cold (prompts 512 and 2048, 64 decode steps, the limits measured),
# hybrid warm, --cpu-only warm, --cpu-only cold (load + first token), then the
# container deleted. A step that would not fit in the time left is skipped
# and says so (DEVICE_BENCH_SECONDS, default 540, counts from the start).
#
# Comes back (at most 8 files): summary.log (everything printed), PART.tgz
# (every bench JSON and text report, convert/synth logs, build log), and the
# SVGs of the full runs. Models live in MP_BENCH_WORK (default /tmp/mpbench).
# Needs .devdeps (shared/device/prepare-deps.sh) beside the sources, as
# bench/device_run.sh; runs as root (drop_caches). The "hybrid" runs are
# hybrid when the GPU is usable ("hybrid": true in their JSON).
set -uo pipefail
out=${1:?usage: bench/device_bench.sh OUTDIR v3|v2lite|topk|tiny}
part=${2:?usage: bench/device_bench.sh OUTDIR v3|v2lite|topk|tiny}
case $part in v3 | v2lite | topk | tiny) ;; *) echo "unknown part '$part' (v3, v2lite, topk or tiny)"; exit 1 ;; esac
# prompt lengths and decode steps of the full and the quick bench runs
full=(--prompt 512,2048 --gen 64)
quick=(--prompt 512 --gen 16)
coldq=(--prompt 512 --gen 8)
[ "$part" = tiny ] && full=(--prompt 16,64 --gen 8) quick=(--prompt 16 --gen 4) coldq=(--prompt 16 --gen 2)
budget=${DEVICE_BENCH_SECONDS:-540}
t0=$(date +%s)
W=${MP_BENCH_WORK:-/tmp/mpbench}
L=$out/$part # small files, tarred at the end
mkdir -p "$out" "$L" "$W"

main() {
left() { echo $(( t0 + budget - $(date +%s) )); }
# need SECONDS WHAT: false (and says so) when fewer seconds are left
need() {
    if [ "$(left)" -lt "$1" ]; then
        echo "SKIPPED: $2 (needs ~$1 s, $(left) s left)"
        return 1
    fi
    echo "== $2 ($(left) s left)"
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
drop() {
    sync
    if [ "$part" = tiny ]; then echo "(page cache kept: tiny)"; return; fi
    if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then echo "(page cache dropped)"; else echo "(could not drop the page cache: 'cold' is warm)"; fi
}
have_time=0
[ -x /usr/bin/time ] && have_time=1

# ---- build (reused when the machine is still warm) --------------------------
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; lscpu | grep -E "^Model name|^CPU\(s\)|^Thread|^NUMA node\(s\)|^L3"; free -g | head -2; df -h "$W" | tail -1; uname -r; } 2>&1
if [ -n "${MOEPACK_BIN:-}" ]; then
    M=$MOEPACK_BIN
else
    . "$(dirname "$0")/device_env.sh"
    # CUDA's lazy module loading (the default): eager loading adds ~2 s to every context
    unset CUDA_MODULE_LOADING
    # RelWithDebInfo: the Release (-O3) build stops on -Wmaybe-uninitialized in formats/gguf.c
    if ! cmake -S . -B build-dev -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >"$L/build.log" 2>&1 ||
       ! cmake --build build-dev -j16 --target moepack >>"$L/build.log" 2>&1; then
        grep -E "error|Error" "$L/build.log" | head -30
        return 1
    fi
    M=$PWD/build-dev/moepack
fi
echo "build: $(( $(date +%s) - t0 )) s; $($M version | head -1)"
# DEVICE_TESTS=1: first the tests that need the GPU (CUDA kernels, hybrid
# runner against the CPU path and the oracle, bench on the hybrid path)
if [ "${DEVICE_TESTS:-0}" = 1 ] && [ -z "${MOEPACK_BIN:-}" ]; then
    fx=${MOEPACK_FIXTURES:-$PWD/.devfix}
    cmake -S . -B build-dev -DMOEPACK_FIXTURES="$fx" >>"$L/build.log" 2>&1
    if cmake --build build-dev -j16 >>"$L/build.log" 2>&1; then
        (cd build-dev && timeout 240 ctest -R "cuda|hybrid|bench|runner_exact" -V >"$L/device-tests.log" 2>&1)
        grep -E "Test +#|tests passed|FAILED|CHECK failed" "$L/device-tests.log"
        grep -E "backends|max \|hybrid|greedy decode|experts per token|graphs vs eager|layer [0-9]+ \(|too large|checks passed" "$L/device-tests.log" | head -20
    else
        echo "test build failed"; grep -E "error" "$L/build.log" | head -10
    fi
    echo "tests: $(( $(date +%s) - t0 )) s"
fi

# ---- steps ---------------------------------------------------------------------
# synth_model NAME ARGS...: writes $W/NAME-src, prints its size and speed
synth_model() {
    local name=$1; shift
    rm -rf "$W/$name-src"
    local a b
    a=$(now)
    if ! timeout $(( $(left) - 20 )) $M synth "$@" -o "$W/$name-src" -q >"$L/$name-synth.log" 2>&1; then
        echo "synth $name failed:"; tail -5 "$L/$name-synth.log"; return 1
    fi
    b=$(now)
    local bytes
    bytes=$(du -sb "$W/$name-src" | cut -f1)
    echo "synth $name ($*): $(awk -v s="$bytes" 'BEGIN { printf "%.2f GB", s / 1e9 }') in $(secs "$a" "$b") s" \
         "($(awk -v s="$bytes" -v a="$a" -v b="$b" 'BEGIN { printf "%.2f GB/s", s / 1e9 / (b - a) }'))"
}
# convert_model NAME: $W/NAME-src -> $W/NAME.moepack; the summary's time,
# input GB/s and peak RSS (and /usr/bin/time -v's maximum RSS)
convert_model() {
    local name=$1 pre=(timeout $(( $(left) - 20 )))
    [ $have_time = 1 ] && pre+=(/usr/bin/time -v -o "$L/$name-convert.time")
    if ! "${pre[@]}" $M convert "$W/$name-src" -o "$W/$name.moepack" >"$L/$name-convert.log" 2>"$L/$name-convert.err"; then
        echo "convert $name failed:"; tail -5 "$L/$name-convert.err"; return 1
    fi
    grep -E "sections:|time .* input" "$L/$name-convert.log" | sed "s/^/  convert $name:/"
    [ $have_time = 1 ] && grep -E "Maximum resident|Elapsed" "$L/$name-convert.time" | sed "s/^\s*/  convert $name: (time -v) /"
    return 0
}
# cat_cold_warm FILE: read speed of the file from disk and from the page cache
cat_cold_warm() {
    local f=$1 a b c sz
    sz=$(stat -c %s "$f")
    drop
    a=$(now); cat "$f" >/dev/null; b=$(now); cat "$f" >/dev/null; c=$(now)
    awk -v a="$a" -v b="$b" -v c="$c" -v sz="$sz" 'BEGIN { printf "cat FILE >/dev/null (%.2f GB): cold %.2f s (%.2f GB/s), warm %.2f s (%.2f GB/s)\n", sz/1e9, b-a, sz/1e9/(b-a), c-b, sz/1e9/(c-b) }'
}
# bench_run NAME LIMIT ARGS...: one `moepack bench`, JSON + text (+ SVG when asked) kept
bench_run() {
    local name=$1 limit=$2; shift 2
    [ "$limit" -lt $(( $(left) - 10 )) ] || limit=$(( $(left) - 10 ))
    timeout "$limit" $M bench "$@" --json-file "$L/$name.json" >"$L/$name.txt" 2>"$L/$name.err"
    local rc=$?
    echo "-- bench $name ($*): exit $rc"
    [ $rc = 0 ] || tail -5 "$L/$name.err"
    # the headline lines of the text report
    grep -E "^backend|open \+ map|GPU upload|first token|peak RSS|prompt +[0-9]+:|memory read|AMX int8|GPU .*host-to-device|decode:|prefill:|upload:|^real size|-> [0-9.]+ tok/s|RAM|no per-layer" "$L/$name.txt"
}
# bench_model NAME: the runs on $W/NAME.moepack
bench_model() {
    local name=$1 f=$W/$1.moepack
    need 40 "$name: cat cold/warm" && cat_cold_warm "$f"
    if need 70 "$name: bench hybrid, cold"; then
        drop
        bench_run "$name-hybrid-cold" 150 "$f" "${full[@]}" --svg "$out/$name-hybrid.svg"
    fi
    need 30 "$name: bench hybrid, warm" && bench_run "$name-hybrid-warm" 60 "$f" "${quick[@]}" --no-limits
    need 100 "$name: bench --cpu-only, warm" &&
        bench_run "$name-cpu" 200 "$f" --cpu-only "${full[@]}" --svg "$out/$name-cpu.svg"
    if need 45 "$name: bench --cpu-only, cold"; then
        drop
        bench_run "$name-cpu-cold" 60 "$f" --cpu-only "${coldq[@]}" --no-limits
    fi
    return 0
}

# topk_model NAME: fewer experts per token against the model's own top-k
topk_model() {
    local name=$1 f=$W/$1.moepack ref=$W/$1.ref.safetensors k
    local kfull
    kfull=$($M inspect "$f" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["num_experts_per_tok"])')
    need 60 "$name: reference of its own $kfull-expert outputs" || return 0
    timeout $(( $(left) - 10 )) $M reference "$f" -o "$ref" --prompts 4 --len 256 --greedy 16 --seed 1 \
        >"$L/$name-reference.txt" 2>&1
    echo "-- reference: exit $?"; cat "$L/$name-reference.txt"
    for k in "$kfull" 7 6 4; do
        need 40 "$name: compare --experts-per-token $k" || break
        timeout $(( $(left) - 10 )) $M compare "$f" "$ref" --experts-per-token "$k" \
            >"$L/$name-compare-k$k.txt" 2>&1
        echo "-- compare k=$k: exit $?"; cat "$L/$name-compare-k$k.txt"
    done
    # twice each, interleaved, so that a drift of the machine shows as spread
    local run=0
    for k in "$kfull" 6 4 "$kfull" 6 4; do
        run=$((run + 1))
        need 50 "$name: bench --experts-per-token $k" || break
        bench_run "$name-k$k-$run" 90 "$f" --prompt 512 --gen 64 --experts-per-token "$k" --no-limits
    done
    rm -f "$ref"
}

if [ "$part" = topk ]; then
    if need 150 "V3 width, 2 layers (1 dense + 1 MoE), BF16: synth + convert"; then
        # TOPK_LIKE=tiny: a smoke test of this part on any machine
        synth_model v3l2 --like "${TOPK_LIKE:-deepseek-v3}" --layers 2 --dense 1 --dtype bf16 &&
            convert_model v3l2
        rm -rf "$W/v3l2-src"
        [ -f "$W/v3l2.moepack" ] && topk_model v3l2
        rm -f "$W/v3l2.moepack"
    fi
elif [ "$part" = v3 ]; then
    # ~28 GB of source and ~16 GB of container at once: the disk holds ~60 GB
    if need 150 "V3 width, 2 layers (1 dense + 1 MoE), BF16: synth + convert"; then
        synth_model v3l2 --like deepseek-v3 --layers 2 --dense 1 --dtype bf16 &&
            convert_model v3l2
        rm -rf "$W/v3l2-src"
        [ -f "$W/v3l2.moepack" ] && bench_model v3l2
        rm -f "$W/v3l2.moepack"
    fi
else
    like=deepseek-v2-lite
    [ "$part" = tiny ] && like=tiny
    # peak RSS of conversion: 2 and 3 layers of one width (it must not grow)
    if need 60 "V2-Lite width, 2 and 3 layers: convert peak RSS"; then
        synth_model v2l2 --like $like --layers 2 --dense 1 && convert_model v2l2
        synth_model v2l3 --like $like --layers 3 --dense 1 && convert_model v2l3
        rm -rf "$W/v2l2-src" "$W/v2l3-src" "$W/v2l2.moepack"
    fi
    # the 3-layer model's extrapolation, to set against the real 27 layers below
    if [ -f "$W/v2l3.moepack" ] && need 60 "V2-Lite 3 layers: bench (extrapolated to 27)"; then
        bench_run v2l3-hybrid 50 "$W/v2l3.moepack" "${full[@]}"
        bench_run v2l3-cpu 70 "$W/v2l3.moepack" --cpu-only "${full[@]}"
    fi
    rm -f "$W/v2l3.moepack"
    if need 150 "V2-Lite, the real 27 layers, BF16: synth + convert"; then
        if [ "$part" = tiny ]; then
            synth_model v2l27 --like tiny --layers 27 --dense 1
        else
            synth_model v2l27 --like deepseek-v2-lite
        fi && convert_model v2l27
        rm -rf "$W/v2l27-src"
        [ -f "$W/v2l27.moepack" ] && bench_model v2l27
        rm -f "$W/v2l27.moepack"
    fi
fi

# one line per JSON: the figures to compare (python3 is there; skipped if not)
python3 - "$L" <<'EOF' || true
import glob, json, os, sys
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    r = json.load(open(p))
    ld, q, e = r["load"], r["ratios"], r["extrapolation"]
    runs = "; ".join("p%d %.1f/%s tok/s" % (u["prompt_tokens"], u["prefill"]["tokens_per_second"],
                     "%.2f" % u["decode"]["tokens_per_second"] if u["decode"] else "-") for u in r["runs"])
    ex = ""
    if e["scaled"] and e["time"]["available"]:
        ex = " | at %d layers: " % e["real"]["layers"] + "; ".join(
            "p%d %.1f/%s" % (u["prompt_tokens"], u["prefill"]["tokens_per_second"],
                             "%.2f" % u["decode"]["tokens_per_second"] if u["decode"] else "-") for u in e["time"]["runs"])
    print("%-22s %-22s load %.2f s, first token %.2f s, RSS %.1f GB%s | %s | decode %s of read bw, experts %s of AMX%s" % (
        os.path.basename(p)[:-5], r["backend"], ld["load_seconds"], ld["first_token_seconds"],
        r["memory"]["peak_rss_bytes"] / 1e9,
        ", GPU %.1f GB" % (r["memory"]["gpu_model_bytes"] / 1e9) if r["memory"]["gpu_model_bytes"] is not None else "",
        runs, "%.0f%%" % (100 * q["decode_cpu_vs_read_bandwidth"]) if q["decode_cpu_vs_read_bandwidth"] else "-",
        "%.0f%%" % (100 * q["prefill_vs_amx_peak"]) if q["prefill_vs_amx_peak"] else "-", ex))
EOF
rmdir "$W" 2>/dev/null || true # only what this script made, already deleted
echo "total: $(( $(date +%s) - t0 )) s"
}

main 2>&1 | tee "$out/summary.log"
rc=${PIPESTATUS[0]}
tar -czf "$out/$part.tgz" -C "$out" "$part" && rm -rf "${L:?}"
ls -la "$out"
exit "$rc"
