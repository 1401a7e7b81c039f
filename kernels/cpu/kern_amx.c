/* AMX (TMUL) int8 kernel. Compiled with AMX + AVX-512 flags; only called when
 * the dispatcher found AMX and obtained the tile-data permission.
 *
 * The packed weight tiles are AMX B operands as stored (16 k-quads x 16
 * outputs x 4 bytes, stride 64), and the activation rows are the A operands
 * in place (row stride ldxq): nothing is repacked. Tiles: A0 A1 (rows m0..,
 * m0+16..), B0 B1 (two 16-output blocks), C00 C01 C10 C11: a 32x32 block of
 * outputs per k-step of 64 costs 4 tile loads and 4 TDPBSSD.
 *
 * A TDPBSSD takes 16 cycles, so a k-step needs 2 KiB of A and 2 KiB of B
 * every 64 cycles. Measured on Sapphire Rapids (docs/BENCHMARKS.md): with
 * both from L1 the loop runs at the TDPBSSD peak; one streamed from L2 (the
 * other in L1) costs 10-30%; both from L2 about half (L2 gives ~64 bytes a
 * cycle); weights from DRAM without prefetch, far more. Every weight byte
 * comes from memory once per MC (256) activation rows, every activation
 * byte from L3 once per NC (256) outputs:
 *   - "split-K" (gate/up: K = 7168 in one group): K is cut into superchunks
 *     of ks (8) k-steps. For a superchunk and a block of NC outputs, each
 *     32-row m-block's A chunk (16 KiB) stays in L1 while the block's output
 *     pairs' B panels (16 KiB each, together 128 KiB in L2) pass; C waits
 *     between superchunks in int32 slots (MC x NC x 4 = 256 KiB of stack).
 *     NC = 256 is the runner's gate/up item (a 256-row slice): the item's
 *     activations then come from L3 once per matrix, not twice (one
 *     thread: +5-8% at M = 256, +13-16% at M = 1024 against NC = 128).
 *   - "all-K" (K <= ALL_K_MAX k-steps: the down projection, K = 2048 in
 *     groups of 256; and any K for at most ALL_K_MAX_M rows, as in the
 *     prompt steps of many-expert models): for each output pair the B panel
 *     over all K (64 KiB for down) stays in L2 while every m-block runs the
 *     whole K with C in tiles. A
 *     group's integer sums (stored every 4 k-steps) go to f32 in a 32x32
 *     accumulator that stays in L1, while the tile unit works on the next
 *     group; that conversion costs as much as a third of the time on one
 *     thread, so between groups it is a lean loop (no masks, fixed strides).
 * The weights the next superchunk (or output pair) needs are prefetched into
 * L2, a few lines per k-step, while the current ones are used: routed
 * experts' weights come from DRAM. The block sizes are set once per process
 * (MOEPACK_AMX_TUNE overrides them, for benchmarks). Results are the
 * scalar's: the same integer sums per group, then the same f32 operations in
 * group order, whatever the blocking. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "amx_tiles.h"
#include "kern_internal.h"

/* Activation rows per block of the m loop: weights are read once per MC rows. */
#define MC 256
/* Outputs per block of the n loop in split-K: the int32 slots are MC x NC. */
#define NC 256
/* All-K (by default) when the padded K has at most this many k-steps of 64:
 * MC rows of it (768 KiB) and an output pair's B panel (192 KiB) fit L2. */
#define ALL_K_MAX 48
/* All-K whatever K for at most this many rows: the activations (128 rows of
 * K = 7168: 0.9 MiB) and a pair's B panel (224 KiB) still fit L2, and with so
 * few rows per weight byte the two long sequential weight streams of a pair
 * feed the tile unit better than split-K's short ones. On the device, the
 * rotating prefill steps of `bench_amx --active-m` read gate/up weights
 * 4-9% faster at M = 32-64 (settings alternated in one process), 1-2%
 * slower at M = 8-16 (docs/BENCHMARKS.md). */
#define ALL_K_MAX_M 128
/* One C block's int32 sums (row stride 32); 64 bytes longer than 4 KiB so
 * that consecutive slots do not alias in L1. */
#define SLOT MP_AMX_SLOT_INT32

/* The conversion of a finished group of one block, spread over the next
 * block's k-steps (AVX-512 work while the tile unit multiplies):
 * dst = fmaf((float)c, xs[i] * ws, src or 0), lanes of the masks only. */
typedef struct conv_job {
    const int32_t *c;  /* integer sums, row stride 32 */
    const float *src;  /* the addend rows (NULL: 0), row stride lds */
    float *dst;        /* row stride ldd */
    size_t lds, ldd;
    const float *xs;   /* activation scale of row 0 of the block; row stride ldxs */
    size_t ldxs;
    const float *ws;   /* weight scales of the block's first column */
    __mmask16 cm_src[2], cm_dst[2]; /* y's columns [n0, n1) where src or dst is y, else all */
    int rows;
    bool two;
    bool lean; /* src == dst == the acc block (row stride 32), every lane, two halves */
} conv_job;

static inline void convert_rows(const conv_job *j, int i0, int i1)
{
    const int32_t *c = j->c;
    const float *xs = j->xs;
    const size_t ldxs = j->ldxs;
    const __m512 w0 = _mm512_loadu_ps(j->ws);
    if (j->lean) { /* between groups of all-K: acc to acc, every lane, both halves */
        const __m512 w1 = _mm512_loadu_ps(j->ws + 16);
        float *a = j->dst;
        for (int i = i0; i < i1; i++) {
            __m512 x = _mm512_set1_ps(xs[i * ldxs]);
            __m512 s0 = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 32));
            __m512 s1 = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 32 + 16));
            _mm512_store_ps(a + i * 32, _mm512_fmadd_ps(s0, _mm512_mul_ps(x, w0), _mm512_load_ps(a + i * 32)));
            _mm512_store_ps(a + i * 32 + 16,
                            _mm512_fmadd_ps(s1, _mm512_mul_ps(x, w1), _mm512_load_ps(a + i * 32 + 16)));
        }
        return;
    }
    for (int h = 0; h < (j->two ? 2 : 1); h++) {
        __m512 ws = h ? _mm512_loadu_ps(j->ws + 16) : w0;
        for (int i = i0; i < i1; i++) {
            __m512 comb = _mm512_mul_ps(_mm512_set1_ps(xs[i * ldxs]), ws);
            __m512 isum = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 32 + h * 16));
            __m512 add =
                j->src ? _mm512_maskz_loadu_ps(j->cm_src[h], j->src + i * j->lds + h * 16) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(j->dst + i * j->ldd + h * 16, j->cm_dst[h], _mm512_fmadd_ps(isum, comb, add));
        }
    }
}

/* Blocking parameters, set once when the table is built (MOEPACK_AMX_TUNE
 * overrides them, for benchmarks; every setting gives the same bits). */
typedef struct amx_tune {
    int ks;    /* split-K: k-steps per superchunk */
    int all_k; /* all-K up to this many k-steps of padded K */
    int all_k_m; /* all-K whatever K for at most this many rows */
    int mc;    /* rows per m block (multiple of 32, <= MC) */
    int order; /* split-K: 0 = output pair outer, m-blocks inner; 1 = m-block outer */
    int pf;    /* prefetch the next region of B into L2 */
    int pf_m;  /* but not for at most this many rows */
} amx_tune;

#define AMX_TUNE_DEFAULT {8, ALL_K_MAX, ALL_K_MAX_M, MC, 1, 1, 0}
static amx_tune tune = AMX_TUNE_DEFAULT;

/* The next region of weights to prefetch into L2, a few lines per k-step:
 * ranges r < nr; split-K: the k-steps [kb0, kb1) of blocks nb0 + r of group
 * g0; all-K: every k-step of block nb0 + r % nbn of group r / nbn. */
typedef struct pf_cursor {
    const char *p, *end;
    uint32_t r, nr;
    uint32_t g0, nb0, nbn, kb0, kb1;
    bool all_k;
    int per_step;
} pf_cursor;

/* What one call works with. */
typedef struct q8_run {
    const mp_amx_int8_layout *l;
    const mp_amx_int8_view *w;
    const int8_t *xq;
    size_t ldxq;
    const float *xscale;
    uint32_t n0, n1, nb_begin, nb_end;
    float *y;
    size_t ldy;
    bool accumulate;
    int cfg[2]; /* rows of the loaded tile configuration */
    bool prefetch;  /* the next weights into L2 while these are used */
    conv_job pend;
    bool has_pend;
    unsigned flip;
    int32_t (*done)[SLOT]; /* two: a finished group's sums wait here for conversion */
    float *acc;            /* all-K: one block's f32 running sums, row stride 32 */
    int32_t (*part)[SLOT]; /* split-K: C between superchunks, [MC/32][NC/32] */
    pf_cursor pf;
} q8_run;

static void pf_next_range(q8_run *r)
{
    pf_cursor *c = &r->pf;
    const mp_amx_int8_layout *l = r->l;
    if (c->r >= c->nr) {
        c->p = c->end = NULL;
        return;
    }
    uint32_t g = c->g0, nb = c->nb0 + c->r, k0 = c->kb0, k1 = c->kb1;
    if (c->all_k) {
        g = c->r / c->nbn;
        nb = c->nb0 + c->r % c->nbn;
        k0 = 0;
        k1 = mp_amx_int8_group_kp(l, g) / 64;
    }
    c->p = (const char *)r->w->data + mp_q8_block_offset(l, g, nb) + (size_t)k0 * 1024;
    c->end = c->p + (size_t)(k1 - k0) * 1024;
    c->r++;
}

/* Plans the prefetch of a region of `lines` cache lines over `steps` k-steps. */
static void pf_start(q8_run *r, bool all_k, uint32_t g0, uint32_t nb0, uint32_t nbn, uint32_t kb0, uint32_t kb1,
                     uint64_t lines, uint64_t steps)
{
    pf_cursor *c = &r->pf;
    *c = (pf_cursor){.nr = r->prefetch ? (all_k ? r->l->groups * nbn : nbn) : 0,
                     .g0 = g0, .nb0 = nb0, .nbn = nbn, .kb0 = kb0, .kb1 = kb1, .all_k = all_k,
                     .per_step = (int)((lines + steps - 1) / (steps ? steps : 1))};
    pf_next_range(r);
}

static void pf_stop(q8_run *r)
{
    r->pf.p = r->pf.end = NULL;
    r->pf.r = r->pf.nr = 0;
}

static inline void pf_some(q8_run *r)
{
    pf_cursor *c = &r->pf;
    for (int i = 0; i < c->per_step && c->p; i++) {
        _mm_prefetch(c->p, _MM_HINT_T1);
        c->p += 64;
        if (c->p >= c->end)
            pf_next_range(r);
    }
}

/* k-steps [kb0, kb1) of a block with C in tiles: A rows at a0 (stride lda,
 * 64 bytes per k-step), B tiles at b0 and b0 + b_next (1 KiB per k-step);
 * converts the pending group and prefetches meanwhile. two: a second
 * 16-column block; lower: a second 16-row half. */
static inline __attribute__((always_inline)) void kloop(q8_run *r, const int8_t *a0, size_t lda, const int8_t *b0,
                                                        size_t b_next, uint32_t kb0, uint32_t kb1, const bool two,
                                                        const bool lower)
{
    const int8_t *b1 = b0 + b_next, *a1 = a0 + 16 * lda;
    const int n = (int)(kb1 - kb0);
    const int per = r->has_pend ? (r->pend.rows + n - 1) / n : 0;
    int prow = 0;
    for (uint32_t kb = kb0; kb < kb1; kb++) {
        pf_some(r);
        _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
        _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
        _tile_dpbssd(T_C00, T_A0, T_B0);
        if (two) {
            _tile_loadd(T_B1, b1 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C01, T_A0, T_B1);
        }
        if (lower) {
            _tile_loadd(T_A1, a1 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C10, T_A1, T_B0);
            if (two)
                _tile_dpbssd(T_C11, T_A1, T_B1);
        }
        if (prow < r->pend.rows && per) {
            int next = prow + per < r->pend.rows ? prow + per : r->pend.rows;
            convert_rows(&r->pend, prow, next);
            prow = next;
        }
    }
    if (r->has_pend && prow < r->pend.rows)
        convert_rows(&r->pend, prow, r->pend.rows);
    r->has_pend = false;
}

static inline void run_kloop(q8_run *r, const int8_t *a0, const int8_t *b0, size_t b_next, uint32_t kb0, uint32_t kb1,
                             bool two, bool lower)
{
    if (two && lower)
        kloop(r, a0, r->ldxq, b0, b_next, kb0, kb1, true, true);
    else if (two)
        kloop(r, a0, r->ldxq, b0, b_next, kb0, kb1, true, false);
    else if (lower)
        kloop(r, a0, r->ldxq, b0, b_next, kb0, kb1, false, true);
    else
        kloop(r, a0, r->ldxq, b0, b_next, kb0, kb1, false, false);
}

/* Stores C of group g of the block (m0, rows) x (nb, two) for conversion
 * from src into dst (row strides lds, ldd; masks of y's columns when one of
 * them is y). */
static inline void finish_group(q8_run *r, size_t m0, int rows, uint32_t nb, bool two, uint32_t g, const float *src,
                                size_t lds, float *dst, size_t ldd, bool dst_is_y)
{
    int32_t *c = r->done[r->flip++ & 1];
    amx_c_store(c, two, rows > 16);
    const mp_amx_int8_layout *l = r->l;
    conv_job *j = &r->pend;
    j->c = c;
    j->src = src;
    j->lds = lds;
    j->dst = dst;
    j->ldd = ldd;
    j->xs = r->xscale + m0 * l->groups + g;
    j->ldxs = l->groups;
    j->ws = r->w->scale + (size_t)g * l->np + (size_t)nb * 16;
    for (int h = 0; h < 2; h++) {
        __mmask16 cm = column_mask((nb + (uint32_t)h) * 16, r->n0, r->n1);
        j->cm_src[h] = src && src != r->acc ? cm : (__mmask16)0xffff;
        j->cm_dst[h] = dst_is_y ? cm : (__mmask16)0xffff;
    }
    j->rows = rows;
    j->two = two;
    j->lean = two && src == r->acc && dst == r->acc;
    r->has_pend = true;
}

/* Rows [m0, m0 + rows) of block row mb: sets the tile shape. */
static inline int block_rows(q8_run *r, size_t mcn, size_t mb)
{
    int rows = mcn - mb * 32 >= 32 ? 32 : (int)(mcn - mb * 32);
    amx_set_rows(r->cfg, rows);
    return rows;
}

/* All-K: rows [mc0, mc0 + mcn), every output pair, whole K per block. */
static void run_all_k(q8_run *r, size_t mc0, size_t mcn)
{
    const mp_amx_int8_layout *l = r->l;
    const uint32_t G = l->groups;
    const size_t nmb = (mcn + 31) / 32;
    for (uint32_t nb = r->nb_begin; nb < r->nb_end; nb += 2) {
        const bool two = nb + 1 < r->nb_end;
        /* while this pair runs, the next pair's panel comes into L2 */
        if (nb + 2 < r->nb_end) {
            uint32_t nbn = nb + 3 < r->nb_end ? 2 : 1;
            pf_start(r, true, 0, nb + 2, nbn, 0, 0, (uint64_t)nbn * l->kp / 4, (uint64_t)nmb * (l->kp / 64));
        } else {
            pf_stop(r);
        }
        for (size_t mb = 0; mb < nmb; mb++) {
            const size_t m0 = mc0 + mb * 32;
            const int rows = block_rows(r, mcn, mb);
            const bool lower = rows > 16;
            float *yb = r->y + m0 * r->ldy + (size_t)nb * 16;
            for (uint32_t g = 0; g < G; g++) {
                const uint32_t kpg = mp_amx_int8_group_kp(l, g);
                amx_c_zero(two, lower);
                run_kloop(r, r->xq + m0 * r->ldxq + (size_t)g * l->kg, r->w->data + mp_q8_block_offset(l, g, nb),
                          (size_t)kpg * 16, 0, kpg / 64, two, lower);
                /* the running sum: from y (or 0) at group 0, in acc between
                 * groups, into y at the last */
                const float *src = g ? r->acc : r->accumulate ? yb : NULL;
                const bool last = g + 1 == G;
                finish_group(r, m0, rows, nb, two, g, src, g ? 32 : r->ldy, last ? yb : r->acc, last ? r->ldy : 32,
                             last);
            }
        }
    }
}

/* One block of split-K: k-steps [kb0, kb1) of group g; C from (or to) its
 * slot between superchunks, to y (the running sum of the groups) after the
 * group's last. */
static inline void split_block(q8_run *r, size_t m0, int rows, uint32_t nb, bool two, uint32_t g, uint32_t kb0,
                               uint32_t kb1, int32_t *slot)
{
    const mp_amx_int8_layout *l = r->l;
    const uint32_t kpg = mp_amx_int8_group_kp(l, g), nk = kpg / 64;
    const bool lower = rows > 16;
    if (kb0)
        amx_c_load(slot, two, lower);
    else
        amx_c_zero(two, lower);
    run_kloop(r, r->xq + m0 * r->ldxq + (size_t)g * l->kg, r->w->data + mp_q8_block_offset(l, g, nb),
              (size_t)kpg * 16, kb0, kb1, two, lower);
    if (kb1 < nk) {
        amx_c_store(slot, two, lower);
    } else {
        float *yb = r->y + m0 * r->ldy + (size_t)nb * 16;
        finish_group(r, m0, rows, nb, two, g, g || r->accumulate ? yb : NULL, r->ldy, yb, r->ldy, true);
    }
}

/* Superchunks of group g: ceil(nk / ks), as even as possible. */
static inline uint32_t superchunks(const mp_amx_int8_layout *l, uint32_t g)
{
    uint32_t nk = mp_amx_int8_group_kp(l, g) / 64;
    return (nk + (uint32_t)tune.ks - 1) / (uint32_t)tune.ks;
}

/* Split-K: rows [mc0, mc0 + mcn), output blocks of NC, groups one at a time
 * in superchunks; the running f32 sum of a multi-group matrix lives in y. */
static void run_split_k(q8_run *r, size_t mc0, size_t mcn)
{
    const mp_amx_int8_layout *l = r->l;
    const uint32_t G = l->groups;
    const size_t nmb = (mcn + 31) / 32;
    for (uint32_t nc0 = r->nb_begin; nc0 < r->nb_end; nc0 += NC / 16) {
        const uint32_t nce = nc0 + NC / 16 < r->nb_end ? nc0 + NC / 16 : r->nb_end;
        const uint32_t npairs = (nce - nc0 + 1) / 2;
        for (uint32_t g = 0; g < G; g++) {
            const uint32_t nk = mp_amx_int8_group_kp(l, g) / 64, nsc = superchunks(l, g);
            for (uint32_t sc = 0; sc < nsc; sc++) {
                const uint32_t kb0 = nk * sc / nsc, kb1 = nk * (sc + 1) / nsc;
                /* while this superchunk runs, the next one's panels (or the
                 * next group's, or the next output block's) come into L2 */
                uint32_t pg = g, pk0 = kb1, pk1 = nk * (sc + 2) / nsc, pnb0 = nc0, pnbe = nce;
                bool have = true;
                if (sc + 1 == nsc) {
                    if (g + 1 < G) {
                        pg = g + 1;
                    } else if (nce < r->nb_end) {
                        pg = 0;
                        pnb0 = nce;
                        pnbe = nce + NC / 16 < r->nb_end ? nce + NC / 16 : r->nb_end;
                    } else {
                        have = false;
                    }
                    pk0 = 0;
                    pk1 = mp_amx_int8_group_kp(l, pg) / 64 / superchunks(l, pg);
                }
                if (have)
                    pf_start(r, false, pg, pnb0, pnbe - pnb0, pk0, pk1, (uint64_t)(pnbe - pnb0) * (pk1 - pk0) * 16,
                             (uint64_t)nmb * npairs * (kb1 - kb0));
                else
                    pf_stop(r);
                if (tune.order == 0) {
                    for (uint32_t nb = nc0; nb < nce; nb += 2)
                        for (size_t mb = 0; mb < nmb; mb++) {
                            const int rows = block_rows(r, mcn, mb);
                            split_block(r, mc0 + mb * 32, rows, nb, nb + 1 < nce, g, kb0, kb1,
                                        r->part[mb * (NC / 32) + (nb - nc0) / 2]);
                        }
                } else {
                    for (size_t mb = 0; mb < nmb; mb++) {
                        const int rows = block_rows(r, mcn, mb);
                        for (uint32_t nb = nc0; nb < nce; nb += 2)
                            split_block(r, mc0 + mb * 32, rows, nb, nb + 1 < nce, g, kb0, kb1,
                                        r->part[mb * (NC / 32) + (nb - nc0) / 2]);
                    }
                }
            }
        }
    }
}

static void gemm_q8_amx(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq, const float *xscale,
                        uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    if (n0 >= n1 || m == 0)
        return;
    if (m < MP_AMX_Q8_MIN_M) { /* too few rows to fill tiles: VNNI is faster */
        mp_gemm_q8_avx512(w, m, xq, ldxq, xscale, n0, n1, y, ldy, accumulate);
        return;
    }
    int32_t done[2][SLOT] __attribute__((aligned(64)));
    float acc[SLOT] __attribute__((aligned(64)));
    q8_run r = {.l = &w->lay,
                .w = w,
                .xq = xq,
                .ldxq = ldxq,
                .xscale = xscale,
                .n0 = n0,
                .n1 = n1,
                .nb_begin = n0 / 16,
                .nb_end = (n1 + 15) / 16,
                .y = y,
                .ldy = ldy,
                .accumulate = accumulate,
                .cfg = {-1, -1},
                .done = done,
                .acc = acc,
                .prefetch = tune.pf && m > (size_t)tune.pf_m};
    const size_t mc = (size_t)tune.mc;
    if (w->lay.kp / 64 <= (uint64_t)tune.all_k || m <= (size_t)tune.all_k_m) {
        for (size_t mc0 = 0; mc0 < m; mc0 += mc)
            run_all_k(&r, mc0, m - mc0 < mc ? m - mc0 : mc);
    } else {
        /* ~260 KiB of stack, split-K only (see the header comment) */
        int32_t slots[(MC / 32) * (NC / 32)][SLOT] __attribute__((aligned(64)));
        r.part = slots;
        for (size_t mc0 = 0; mc0 < m; mc0 += mc)
            run_split_k(&r, mc0, m - mc0 < mc ? m - mc0 : mc);
    }
    if (r.has_pend)
        convert_rows(&r.pend, 0, r.pend.rows);
    _tile_release();
}

void mp_amx_peak_loop(uint64_t iters)
{
    amx_peak_tiles();
    for (uint64_t i = 0; i < iters; i++) {
        _tile_dpbssd(T_C00, T_A0, T_B0);
        _tile_dpbssd(T_C01, T_A0, T_B1);
        _tile_dpbssd(T_C10, T_A1, T_B0);
        _tile_dpbssd(T_C11, T_A1, T_B1);
    }
    _tile_release();
}

void mp_amx_fed_loop(uint64_t iters, const int8_t *buf, int32_t *slots, int swap_every, int loads)
{
    /* A in buf[0, 16 KiB), B in buf[16, 32 KiB): eight k-steps of a 32-row
     * m-block and of an output pair, all in L1 after the first round */
    const int8_t *a = buf, *b = buf + 16384;
    load_tile_config(16, 16);
    _tile_zero(T_C00);
    _tile_zero(T_C01);
    _tile_zero(T_C10);
    _tile_zero(T_C11);
    _tile_loadd(T_B0, b, 64); /* the tiles not reloaded keep k-step 0 */
    _tile_loadd(T_B1, b + 1024, 64);
    _tile_loadd(T_A0, a, 64);
    _tile_loadd(T_A1, a + 1024, 64);
    unsigned slot = 0;
    int left = swap_every; /* k-steps to the next swap (a counter: a division per k-step would show) */
    for (uint64_t i = 0; i < iters; i++) {
        const size_t k = (size_t)(i & 7);
        if (loads >= 1)
            _tile_loadd(T_B0, b + k * 2048, 64);
        if (loads >= 3)
            _tile_loadd(T_A0, a + k * 2048, 64);
        _tile_dpbssd(T_C00, T_A0, T_B0);
        if (loads >= 2)
            _tile_loadd(T_B1, b + k * 2048 + 1024, 64);
        _tile_dpbssd(T_C01, T_A0, T_B1);
        if (loads >= 4)
            _tile_loadd(T_A1, a + k * 2048 + 1024, 64);
        _tile_dpbssd(T_C10, T_A1, T_B0);
        _tile_dpbssd(T_C11, T_A1, T_B1);
        if (swap_every > 0 && --left == 0) {
            /* as split-K between blocks: C out to one slot, the next in */
            amx_c_store(slots + (size_t)(slot & 3) * SLOT, true, true);
            slot++;
            amx_c_load(slots + (size_t)(slot & 3) * SLOT, true, true);
            left = swap_every;
        }
    }
    amx_c_store(slots, true, true);
    _tile_release();
}

void mp_amx_tune_set(const char *spec)
{
    /* "ks=8,allk=48,allkm=128,mc=256,order=1,pf=1,pfm=0"; from the defaults, out-of-range values ignored */
    tune = (amx_tune)AMX_TUNE_DEFAULT;
    int v;
    const char *q;
    if ((q = strstr(spec, "ks=")) && (v = atoi(q + 3)) >= 1 && v <= 1024)
        tune.ks = v;
    if ((q = strstr(spec, "allk=")) && (v = atoi(q + 5)) >= 0)
        tune.all_k = v;
    if ((q = strstr(spec, "allkm=")) && (v = atoi(q + 6)) >= 0)
        tune.all_k_m = v;
    if ((q = strstr(spec, "mc=")) && (v = atoi(q + 3)) >= 32 && v <= MC && v % 32 == 0)
        tune.mc = v;
    if ((q = strstr(spec, "order=")) && (v = atoi(q + 6)) >= 0 && v <= 1)
        tune.order = v;
    if ((q = strstr(spec, "pf=")) && (v = atoi(q + 3)) >= 0 && v <= 1)
        tune.pf = v;
    if ((q = strstr(spec, "pfm=")) && (v = atoi(q + 4)) >= 0)
        tune.pf_m = v;
}

void mp_kern_fill_amx(mp_cpu_kernels *t)
{
    /* MOEPACK_AMX_KERNEL=v1 (read once, when the table is built) gives the
     * first kernel, MOEPACK_AMX_PREFETCH=0 that one without its B prefetch:
     * for benchmarks; all give the same bits */
    const char *k = getenv("MOEPACK_AMX_KERNEL");
    const char *tn = getenv("MOEPACK_AMX_TUNE");
    if (tn)
        mp_amx_tune_set(tn);
    const char *pf = getenv("MOEPACK_AMX_PREFETCH");
    if (k && !strcmp(k, "v1"))
        t->gemm_q8 = pf && !strcmp(pf, "0") ? mp_gemm_q8_amx_v1_no_prefetch : mp_gemm_q8_amx_v1;
    else
        t->gemm_q8 = gemm_q8_amx;
}
