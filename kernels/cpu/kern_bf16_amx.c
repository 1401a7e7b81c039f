/* AMX BF16 (TDPBF16PS) kernel for amx_bf16 weights x f32 activations.
 * Compiled with the AMX flags; only called when the dispatcher found AMX
 * (TILE, INT8 and BF16) and obtained the tile-data permission.
 *
 * The container's 1 KiB blocks (16 k pairs x 16 outputs x 2 bf16) are AMX
 * B tiles as stored. The activations are the A operand. TDPBF16PS
 * multiplies bf16 by bf16, and rounding x to bf16 would give up the "exact
 * mode" of the bf16 kernels (mp_kernels.h). So each x is split into two
 * bf16, hi = bf16(x) and lo = bf16(x - hi) (x - hi is exact in f32), and
 * every tile of weights is multiplied by both: hi + lo is within 2^-16 |x|
 * of x (bf16 keeps 8 significant bits; rounding x to hi alone errs by up
 * to 2^-8 |x|), products of bf16 are exact in f32, and the tile unit sums them in
 * f32 like the vector kernels. Twice the tile work of a plain bf16 GEMM buys
 * that; the A tiles are reloaded for the lo half while B stays, so a k-step
 * of a 32x32 block is 6 tile loads for 8 TDPBF16PS (the int8 kernel's is 4
 * for 4).
 *
 * With lo_off 0 the rows are hi only, x rounded to bf16 (2^-9 |x|), and
 * each weight tile is multiplied once: half the tile work, for callers that
 * accept the rounding (`--bf16-activations`).
 *
 * The split rows are the kernel's input (gemm_bf16_split), made once per
 * row by split_act_bf16: the runner splits a token's row once for all the
 * slices and both matrices that read it. Splitting inside the GEMM, per
 * superchunk and output block, took more time than the tile work on the
 * development machine (the f32 rows come from L3 in short runs).
 *
 * Blocking (the int8 kernel's split-K, kern_amx.c): the output range is cut
 * into blocks of NC outputs, K into superchunks of KS tiles (32 k each)
 * that stay inside one K-group, and rows into blocks of MC. For a
 * superchunk and a 32-row m-block the hi and lo rows (2 x 16 KiB) stay in
 * L1 while the block's output pairs' B panels (2 x 8 KiB each, 128 KiB
 * for NC = 256) pass from L2; the C tiles wait in f32 slots between
 * superchunks, and go to y after the last. The weights of the next
 * superchunk are prefetched into L2 while these are used: routed experts'
 * weights come from DRAM. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "amx_tiles.h"
#include "kern_internal.h"

/* Rows per m block: the weights of a superchunk come from memory once per MC rows. */
#define MC 256
/* Outputs per n block: the runner's items are 256-row slices. */
#define NC 256
/* k tiles (32 k values) per superchunk: a 32-row m-block's hi and lo take
 * 32 KiB of L1, an output pair's B 16 KiB. 8 is what the device (16
 * threads, V3 shapes, docs/BENCHMARKS.md) ran fastest: against 4, faster
 * at M = 256 and 1024 in all 30 paired figures of five alternated rounds
 * (+2% to +32%, median +10%), the same at M = 64; 12 was no better and 16
 * worse. On the development machine 4 runs 15-28% faster, with one thread
 * and with both of its two (M = 256): the machines differ, for a reason not
 * found, and the default follows the device, the kind of machine the
 * runner is for.
 * MOEPACK_AMX_BF16_TUNE ("ks=N,pf=0|1"), read once when the table is built,
 * overrides this and the L2 prefetch, for benchmarks: every setting gives
 * the same bits. */
#define KS 8
static int bf16_ks = KS, bf16_pf = 1;
/* One 32x32 block of f32 sums (row stride 32), 64 bytes longer than 4 KiB
 * so that consecutive slots do not alias in L1. */
#define SLOT (32 * 32 + 16)

/* VCVTNEPS2BF16 (AVX512-BF16, which every AMX CPU has) rounds to nearest even. */
static void split_act_bf16(size_t m, const float *x, size_t ldx, uint32_t k, uint64_t kp, uint16_t *out, size_t ldo,
                           size_t lo_off)
{
    for (size_t i = 0; i < m; i++) {
        const float *xr = x + i * ldx;
        uint16_t *hi = out + i * ldo, *lo = hi + lo_off;
        for (uint64_t j = 0; j < kp; j += 16) {
            /* the last 16 may be partial (kp - j < 16) and may reach past k: masked */
            const __mmask16 in = j >= k ? 0 : k - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - j)) - 1);
            const __mmask16 keep = kp - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (kp - j)) - 1);
            const __m512 v = _mm512_maskz_loadu_ps(in, xr + (j < k ? j : 0));
            const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
            _mm256_mask_storeu_epi16(hi + j, keep, h);
            if (!lo_off) /* hi only */
                continue;
            const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            const __m512 rest = _mm512_sub_ps(v, hf);
            /* x infinite or NaN (or rounded up to infinity): hi carries it,
             * and lo (inf - inf, x - inf) is 0 */
            const __mmask16 special = _mm512_fpclass_ps_mask(rest, 0x99); /* NaN, +inf, -inf */
            const __m256i l = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_mov_ps((__mmask16)~special, rest));
            _mm256_mask_storeu_epi16(lo + j, keep, l);
        }
    }
}

/* What one call works with. */
typedef struct bf16_run {
    const mp_amx_bf16_layout *l;
    const uint16_t *wd;
    const uint16_t *xh; /* split rows: hi at xh + i * ldx, lo lo_off further */
    size_t ldx, lo_off;
    uint32_t n0, n1;
    float *y;
    size_t ldy;
    bool accumulate;
    int cfg[2]; /* rows of the loaded tile configuration */
    float (*slots)[SLOT]; /* C between superchunks, [MC/32][NC/32] */
    /* the L2 prefetch of the next superchunk's weights: nr ranges of `len`
     * bytes, `stride` apart, from `base`, a few lines per k-step */
    const char *pf_p, *pf_end, *pf_base;
    size_t pf_stride, pf_len;
    uint32_t pf_r, pf_nr;
    int pf_per_step;
} bf16_run;

static void pf_next_range(bf16_run *r)
{
    if (r->pf_r >= r->pf_nr) {
        r->pf_p = r->pf_end = NULL;
        return;
    }
    r->pf_p = r->pf_base + (size_t)r->pf_r * r->pf_stride;
    r->pf_end = r->pf_p + r->pf_len;
    r->pf_r++;
}

static inline void pf_some(bf16_run *r)
{
    for (int i = 0; i < r->pf_per_step && r->pf_p; i++) {
        _mm_prefetch(r->pf_p, _MM_HINT_T1);
        r->pf_p += 64;
        if (r->pf_p >= r->pf_end)
            pf_next_range(r);
    }
}

/* nt k-steps of a block with C in tiles: B tiles from b0 and b0 + b_next,
 * A (hi) from a (row stride lda bytes), lo lo_off bytes further. two: a
 * second 16-column block; lower: a second 16-row half; with_lo: the lo
 * products too (else hi only). */
static inline __attribute__((always_inline)) void kloop(bf16_run *r, const char *a, size_t lda, size_t lo_off,
                                                        const char *b0, size_t b_next, uint32_t nt, const bool two,
                                                        const bool lower, const bool with_lo)
{
    const char *b1 = b0 + b_next;
    const char *hi0 = a, *hi1 = a + 16 * lda, *lo0 = a + lo_off, *lo1 = hi1 + lo_off;
    /* each C is updated every fourth TDPBF16PS at most: the hi and lo
     * products of one C are not back to back */
    for (uint32_t t = 0; t < nt; t++) {
        pf_some(r);
        _tile_loadd(T_B0, b0 + (size_t)t * 1024, 64);
        _tile_loadd(T_A0, hi0 + (size_t)t * 64, lda);
        _tile_dpbf16ps(T_C00, T_A0, T_B0);
        if (two) {
            _tile_loadd(T_B1, b1 + (size_t)t * 1024, 64);
            _tile_dpbf16ps(T_C01, T_A0, T_B1);
        }
        if (lower) {
            _tile_loadd(T_A1, hi1 + (size_t)t * 64, lda);
            _tile_dpbf16ps(T_C10, T_A1, T_B0);
            if (two)
                _tile_dpbf16ps(T_C11, T_A1, T_B1);
        }
        if (!with_lo)
            continue;
        _tile_loadd(T_A0, lo0 + (size_t)t * 64, lda);
        _tile_dpbf16ps(T_C00, T_A0, T_B0);
        if (two)
            _tile_dpbf16ps(T_C01, T_A0, T_B1);
        if (lower) {
            _tile_loadd(T_A1, lo1 + (size_t)t * 64, lda);
            _tile_dpbf16ps(T_C10, T_A1, T_B0);
            if (two)
                _tile_dpbf16ps(T_C11, T_A1, T_B1);
        }
    }
}

/* The finished sums of a block (in its slot, row stride 32) into y: rows
 * [m0, m0 + rows), outputs [nb * 16, +32) inside [n0, n1). */
static void c_to_y(const bf16_run *r, const float *c, size_t m0, int rows, uint32_t nb, bool two)
{
    for (int h = 0; h < (two ? 2 : 1); h++) {
        const __mmask16 cm = column_mask((nb + (uint32_t)h) * 16, r->n0, r->n1);
        for (int i = 0; i < rows; i++) {
            float *yp = r->y + (m0 + (size_t)i) * r->ldy + (size_t)(nb + (uint32_t)h) * 16;
            __m512 v = _mm512_load_ps(c + i * 32 + h * 16);
            if (r->accumulate)
                v = _mm512_add_ps(_mm512_maskz_loadu_ps(cm, yp), v);
            _mm512_mask_storeu_ps(yp, cm, v);
        }
    }
}

/* The four block shapes, the lo products on or off (with_lo a constant
 * at each call: kloop is made once per combination). */
static inline __attribute__((always_inline)) void run_block_shape(bf16_run *r, const char *a, size_t lda, size_t lo,
                                                                  const char *b0, size_t b_next, uint32_t nt,
                                                                  bool two, bool lower, const bool with_lo)
{
    if (two && lower)
        kloop(r, a, lda, lo, b0, b_next, nt, true, true, with_lo);
    else if (two)
        kloop(r, a, lda, lo, b0, b_next, nt, true, false, with_lo);
    else if (lower)
        kloop(r, a, lda, lo, b0, b_next, nt, false, true, with_lo);
    else
        kloop(r, a, lda, lo, b0, b_next, nt, false, false, with_lo);
}

static inline void run_block(bf16_run *r, const char *a, const char *b0, size_t b_next, uint32_t nt, bool two,
                             bool lower)
{
    const size_t lda = r->ldx * 2, lo = r->lo_off * 2;
    if (lo)
        run_block_shape(r, a, lda, lo, b0, b_next, nt, two, lower, true);
    else
        run_block_shape(r, a, lda, lo, b0, b_next, nt, two, lower, false);
}

/* Rows [mc0, mc0 + mcn): every output block, every superchunk of every group. */
static void run_rows(bf16_run *r, size_t mc0, size_t mcn)
{
    const mp_amx_bf16_layout *l = r->l;
    const uint32_t G = l->groups, nb_begin = r->n0 / 16, nb_end = (r->n1 + 15) / 16;
    const size_t nmb = (mcn + 31) / 32;
    for (uint32_t nc0 = nb_begin; nc0 < nb_end; nc0 += NC / 16) {
        const uint32_t nce = nc0 + NC / 16 < nb_end ? nc0 + NC / 16 : nb_end;
        /* the superchunks of this output block in order: (g, t0) */
        for (uint32_t g = 0; g < G; g++) {
            const uint32_t kpg = mp_amx_bf16_group_kp(l, g), ntg = kpg / 32;
            const char *gbase = (const char *)r->wd + (size_t)g * l->np * l->kg * 2;
            for (uint32_t t0 = 0; t0 < ntg; t0 += (uint32_t)bf16_ks) {
                const uint32_t nt = ntg - t0 < (uint32_t)bf16_ks ? ntg - t0 : (uint32_t)bf16_ks;
                const bool first = g == 0 && t0 == 0, last = g + 1 == G && t0 + nt == ntg;
                /* the next superchunk's weights (this block's outputs), or
                 * the next output block's first, come into L2 meanwhile */
                uint32_t pg = g, pt0 = t0 + nt, pnb0 = nc0, pnbe = nce;
                bool have = bf16_pf;
                if (pt0 >= ntg) {
                    pt0 = 0;
                    if (g + 1 < G) {
                        pg = g + 1;
                    } else if (nce < nb_end) {
                        pg = 0;
                        pnb0 = nce;
                        pnbe = nce + NC / 16 < nb_end ? nce + NC / 16 : nb_end;
                    } else {
                        have = false;
                    }
                }
                r->pf_r = r->pf_nr = 0;
                r->pf_p = NULL;
                if (have) {
                    const uint32_t pkpg = mp_amx_bf16_group_kp(l, pg);
                    const uint32_t pnt = pkpg / 32 - pt0 < (uint32_t)bf16_ks ? pkpg / 32 - pt0 : (uint32_t)bf16_ks;
                    r->pf_base = (const char *)r->wd + (size_t)pg * l->np * l->kg * 2 + (size_t)pnb0 * pkpg * 32 +
                                 (size_t)pt0 * 1024;
                    r->pf_stride = (size_t)pkpg * 32;
                    r->pf_len = (size_t)pnt * 1024;
                    r->pf_nr = pnbe - pnb0;
                    const uint64_t lines = (uint64_t)r->pf_nr * pnt * 16, steps = (uint64_t)nmb * ((nce - nc0 + 1) / 2) * nt;
                    r->pf_per_step = (int)((lines + steps - 1) / steps);
                    pf_next_range(r);
                }
                for (size_t mb = 0; mb < nmb; mb++) {
                    const size_t m0 = mc0 + mb * 32;
                    const int rows = mcn - mb * 32 >= 32 ? 32 : (int)(mcn - mb * 32);
                    const bool lower = rows > 16;
                    const char *a = (const char *)(r->xh + m0 * r->ldx + (size_t)g * l->kg + (size_t)t0 * 32);
                    amx_set_rows(r->cfg, rows);
                    for (uint32_t nb = nc0; nb < nce; nb += 2) {
                        const bool two = nb + 1 < nce;
                        float *slot = r->slots[mb * (NC / 32) + (nb - nc0) / 2];
                        if (first)
                            amx_c_zero(two, lower);
                        else
                            amx_c_load(slot, two, lower);
                        run_block(r, a, gbase + (size_t)nb * kpg * 32 + (size_t)t0 * 1024, (size_t)kpg * 32, nt, two,
                                  lower);
                        amx_c_store(slot, two, lower);
                        if (last)
                            c_to_y(r, slot, m0, rows, nb, two);
                    }
                }
            }
        }
    }
}

static void gemm_bf16_split_tiles(const mp_amx_bf16_view *w, size_t m, const uint16_t *xh, size_t ldx,
                                  size_t lo_off, uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    if (n0 >= n1 || m == 0)
        return;
    /* ~260 KiB of stack, as the int8 kernel's split-K */
    float slots[(MC / 32) * (NC / 32)][SLOT] __attribute__((aligned(64)));
    bf16_run r = {.l = &w->lay,
                  .wd = w->data,
                  .xh = xh,
                  .ldx = ldx,
                  .lo_off = lo_off,
                  .n0 = n0,
                  .n1 = n1,
                  .y = y,
                  .ldy = ldy,
                  .accumulate = accumulate,
                  .cfg = {-1, -1},
                  .slots = slots};
    for (size_t mc0 = 0; mc0 < m; mc0 += MC)
        run_rows(&r, mc0, m - mc0 < MC ? m - mc0 : MC);
    _tile_release();
}

void mp_amx_bf16_peak_loop(uint64_t iters)
{
    amx_peak_tiles();
    for (uint64_t i = 0; i < iters; i++) {
        _tile_dpbf16ps(T_C00, T_A0, T_B0);
        _tile_dpbf16ps(T_C01, T_A0, T_B1);
        _tile_dpbf16ps(T_C10, T_A1, T_B0);
        _tile_dpbf16ps(T_C11, T_A1, T_B1);
    }
    _tile_release();
}

void mp_kern_fill_bf16_amx(mp_cpu_kernels *t)
{
    const char *spec = getenv("MOEPACK_AMX_BF16_TUNE"), *q;
    int v;
    if (spec && (q = strstr(spec, "ks=")) && (v = atoi(q + 3)) >= 1 && v <= 64)
        bf16_ks = v;
    if (spec && (q = strstr(spec, "pf=")) && (v = atoi(q + 3)) >= 0 && v <= 1)
        bf16_pf = v;
    t->split_act_bf16 = split_act_bf16;
    t->gemm_bf16_split = gemm_bf16_split_tiles;
    t->bf16_split_min_m = MP_AMX_BF16_MIN_M;
}
