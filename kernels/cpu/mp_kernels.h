/* mp_kernels: the CPU compute kernels and their runtime dispatch.
 *
 * Every matmul computes, for rows m in [0, M) and output columns n in
 * [n0, n1):   y[m*ldy + n] (+)= sum_k x[m][k] * W[n][k]
 * with W [N, K] as in nn.Linear (docs/LAYOUTS.md), 0 <= n0 < n1 <= N (not
 * checked: the hot path trusts its caller). n indexes the whole output row
 * (not n1 - n0 wide); columns outside [n0, n1) are never written.
 * `accumulate` adds to y instead of overwriting it. Kernels are
 * single-threaded, allocate nothing, keep no state (the AMX ones load their own
 * tile configurations on entry and release the tiles on exit; each uses ~280 KiB
 * of stack), and may be called from many threads at once on disjoint outputs:
 * the runner parallelizes over experts and row ranges. For speed give n0 (and
 * n1 unless it is N) as multiples of 16 (32 for AMX).
 *
 * One table per instruction set; entries an ISA does not speed up point to
 * the next lower ISA's function. All int8 paths return bit-identical results
 * (integer dot products per K-group, then the same f32 operations in the same
 * order); the f32/bf16/int4 paths agree to rounding (see each entry). */
#ifndef MP_KERNELS_H
#define MP_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"
#include "mp_layout.h"

typedef enum {
    MP_ISA_SCALAR = 0,
    MP_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    MP_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ + VNNI */
    MP_ISA_AMX = 3,    /* the AVX-512 set + AMX-TILE/INT8/BF16 (and the kernel's permission) */
    MP_ISA_COUNT
} mp_isa;

typedef struct mp_cpu_kernels {
    mp_isa isa;

    /* amx_int8 weights x int8 activations (mp_quant_act_int8 / quantize_act_q8
     * output: rows of lay.kp bytes zero-padded after K, stride ldxq; scales
     * xscale[m*G + g]). Per group g: isum = exact integer dot product, then
     * acc = fmaf((float)isum, xscale[m][g] * scale[g][n], acc) in group
     * order, from acc = 0 (or y when accumulating). For AMX speed, xq and
     * ldxq should be multiples of 64 bytes (tile rows then never straddle
     * cache lines) and ldxq not a multiple of 1024 (the 16 rows of a tile
     * then spread over L1's sets: the runner uses padded K + 64). */
    void (*gemm_q8)(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq, const float *xscale,
                    uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate);

    /* amx_bf16 weights x f32 activations, f32 products and sums ("exact
     * mode": agrees with an f32 computation to ~1e-6 of sum|x*w|). x rows are
     * K floats (nothing is read past K). */
    void (*gemm_bf16_amx)(const mp_amx_bf16_view *w, size_t m, const float *x, size_t ldx, uint32_t n0,
                          uint32_t n1, float *y, size_t ldy, bool accumulate);

    /* amx_bf16 weights x activations split in two bf16 (AMX only; NULL on
     * the other tables). split_act_bf16 writes row i of x (k values, ldx
     * apart) as hi = bf16(x) at out + i*ldo and lo = bf16(x - hi) at
     * out + i*ldo + lo_off, zeros from k to kp (lo is 0 where hi is not
     * finite); hi + lo is within 2^-16 |x| of x for normal x below bf16's
     * largest value (denormals become 0, as in the tile unit). gemm_bf16_split reads
     * such rows (hi at xh + i*ldx, lo lo_off further; kp = w->lay.kp values
     * each) with AMX BF16 tiles: f32 sums of the exact products, so it
     * agrees with an f32 computation to ~1e-6 + 2^-16 of sum|x*w|. For
     * speed: rows 64-byte aligned, ldx*2 not a multiple of 1024
     * (mp_bf16_split_ld), and at least bf16_split_min_m rows (fewer:
     * gemm_bf16_amx is faster).
     * lo_off 0 (both functions): hi only, x rounded to bf16 (within 2^-9
     * |x|), and one tile product per weight tile instead of two; the sums
     * are then f32 sums of the exact products bf16(x) * w. */
    void (*split_act_bf16)(size_t m, const float *x, size_t ldx, uint32_t k, uint64_t kp, uint16_t *out, size_t ldo,
                           size_t lo_off);
    void (*gemm_bf16_split)(const mp_amx_bf16_view *w, size_t m, const uint16_t *xh, size_t ldx, size_t lo_off,
                            uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate);
    uint32_t bf16_split_min_m;

    /* row_major bf16 W [N, K] (row stride ldw elements) x f32, as exact as above. */
    void (*gemm_bf16_rm)(const uint16_t *w, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx,
                         uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate);

    /* gpu_int4 (sym or asym) x f32: the f32 dequantized weights
     * (mp_int4_dequant) times x, f32 sums. */
    void (*gemm_int4)(const mp_gpu_int4_view *w, size_t m, const float *x, size_t ldx, uint32_t n0, uint32_t n1,
                      float *y, size_t ldy, bool accumulate);

    /* row_major f32 W [N, K] x f32. */
    void (*gemm_f32)(const float *w, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx, uint32_t n0,
                     uint32_t n1, float *y, size_t ldy, bool accumulate);

    /* mp_quant_act_int8, bit-identical on every path. */
    void (*quantize_act_q8)(size_t m, const float *x, size_t ldx, uint32_t k, uint32_t kg, int8_t *xq, size_t ldq,
                            float *xscale);

    /* y = x / sqrt(mean(x^2) + eps) * weight (y may alias x). */
    void (*rmsnorm)(size_t n, const float *x, const float *weight, float eps, float *y);
    /* out = silu(gate) * up = gate / (1 + exp(-gate)) * up (out may alias either). */
    void (*silu_mul)(size_t n, const float *gate, const float *up, float *out);
    /* in place, max-subtracted; n >= 1. */
    void (*softmax)(size_t n, float *x);
    float (*dot)(size_t n, const float *a, const float *b);
    /* y += a * x */
    void (*axpy)(size_t n, float a, const float *x, float *y);
} mp_cpu_kernels;

const char *mp_isa_name(mp_isa isa);
/* Parses "scalar", "avx2", "avx512", "amx"; false for anything else. */
bool mp_isa_parse(const char *name, mp_isa *out);
/* Whether this CPU and OS can run the ISA's kernels (for AMX this requests the
 * tile-data permission from the kernel once per process). Detection runs once
 * per process; MOEPACK_ISA_MAX=scalar|avx2|avx512 set before it makes the
 * ISAs above it count as absent (an unknown value is ignored). */
bool mp_isa_available(mp_isa isa);
/* The best available ISA, ignoring MOEPACK_ISA. */
mp_isa mp_isa_best(void);

/* The table of one ISA; NULL with an error when it is not available here.
 * For benchmarks, read when the AMX table is built (all give the same bits):
 * MOEPACK_AMX_TUNE="ks=8,allk=48,mc=256,order=1,pf=1" sets the AMX int8
 * kernel's blocking (kern_amx.c); MOEPACK_AMX_KERNEL=v1 gives the first AMX
 * int8 kernel instead (kern_q8v1_amx.c), MOEPACK_AMX_PREFETCH=0 that one
 * without its B-tile prefetch. */
const mp_cpu_kernels *mp_cpu_kernels_get(mp_isa isa, mp_error *err);
/* The table to use: MOEPACK_ISA when set (an unknown or unavailable one is an
 * MP_ERR_USAGE error naming what this machine has), else the best. */
const mp_cpu_kernels *mp_cpu_kernels_best(mp_error *err);

/* A row stride (elements) for split_act_bf16 rows of kp values with the lo
 * half kp after the hi: 64 bytes more than both, so that the stride in
 * bytes is never a multiple of 1024 (kp is a multiple of 32). */
static inline size_t mp_bf16_split_ld(uint64_t kp)
{
    return (size_t)(2 * kp + 32);
}

/* From which M the AMX table's gemm_q8 uses tiles (below: AVX-512 VNNI). */
#define MP_AMX_Q8_MIN_M 5

#endif
