/* The first AMX (TMUL) int8 kernel, kept for comparison: MOEPACK_AMX_KERNEL=v1
 * selects it (bench/bench_amx measures both in one run; kern_amx.c has the
 * kernel in use and says why it is faster). Compiled with AMX + AVX-512 flags;
 * only called when the dispatcher found AMX and obtained the tile-data
 * permission.
 *
 * The packed weight tiles are AMX B operands as stored (16 k-quads x 16
 * outputs x 4 bytes, stride 64), and the activation rows are the A operands
 * in place (row stride ldxq): nothing is repacked. Tiles: A0 A1 (rows m0..,
 * m0+16..), B0 B1 (two 16-output blocks), C00 C01 C10 C11: each B tile is
 * loaded once per 32 activation rows, each A tile once per 32 outputs.
 *
 * Loop nest: passes of M_CHUNK rows; in a pass, for each output pair, each
 * group and each K_CHUNK of it, every 32-row m-block (the B panel stays in
 * L1, A comes from L2). Integer partial sums wait between K-chunks in a
 * stack buffer; a finished group's conversion to f32 is spread over the next
 * block's k-steps (AVX-512 work while the tile unit multiplies). */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "amx_tiles.h"
#include "kern_internal.h"

/* Rows of activations per pass, so that their K-chunks stay in L2 while
 * every 32-output pair of weights streams by once per pass. */
#define M_CHUNK 128
/* k values per chunk: a 32-output B panel of 16 KiB stays in L1 while the
 * pass's m-blocks use it; C tiles are saved and reloaded between chunks. */
#define K_CHUNK 512

/* A finished group of one block, waiting to be scaled into y. */
typedef struct pending_block {
    const int32_t *c; /* integer sums, row stride 32 */
    float *acc;       /* the block's f32 accumulators, row stride ACC_STRIDE */
    size_t m0;
    int rows;
    uint32_t g, nb;
    bool two;
} pending_block;

/* What the conversion needs besides the block. */
typedef struct out_ctx {
    const mp_amx_int8_view *w;
    const float *xscale;
} out_ctx;

/* f32 accumulators of a 32x32 block live in a small contiguous buffer, not
 * in y: y's row stride is often a multiple of 4 KiB (N = 7168), which would
 * put all 32 rows in one L1 set. */
#define ACC_STRIDE 32

/* Rows [i0, i1) of a finished block: acc = fma((float)isum, xscale * wscale,
 * acc): the scalar's operations in the scalar's group order. */
static inline void convert_rows(const pending_block *p, int i0, int i1, const out_ctx *o)
{
    const mp_amx_int8_layout *l = &o->w->lay;
    const float *xs = o->xscale + p->m0 * l->groups + p->g;
    size_t groups = l->groups;
    for (int h = 0; h < (p->two ? 2 : 1); h++) {
        __m512 ws = _mm512_loadu_ps(o->w->scale + (size_t)p->g * l->np + (p->nb + h) * 16);
        for (int i = i0; i < i1; i++) {
            __m512 comb = _mm512_mul_ps(_mm512_set1_ps(xs[i * groups]), ws);
            __m512 isum = _mm512_cvtepi32_ps(_mm512_load_si512(p->c + i * 32 + h * 16));
            float *ap = p->acc + i * ACC_STRIDE + h * 16;
            _mm512_store_ps(ap, _mm512_fmadd_ps(isum, comb, _mm512_load_ps(ap)));
        }
    }
}

/* One m-block (up to 32 rows) x one output pair (or single block) x the
 * k-steps [kb0, kb1) of a group: C tiles start from zero or from c_in, end
 * in c_out (row stride 32 int32). */
/* B tiles this many k-steps ahead are prefetched while the first m-block of
 * a pass streams the panel from memory (the later m-blocks find it in L1):
 * routed-expert weights are read once per pass and come from DRAM, where
 * TILELOADD alone waits for every miss. */
#define B_PREFETCH 4

static inline void prefetch_tile(const int8_t *t)
{
    for (int i = 0; i < 1024; i += 64)
        _mm_prefetch((const char *)t + i, _MM_HINT_T0);
}

static inline void block_tiles(const int8_t *a0, size_t lda, const int8_t *b0, size_t b_next, uint32_t kb0,
                               uint32_t kb1, bool two, bool lower, const int32_t *c_in, int32_t *c_out,
                               const pending_block *pend, const out_ctx *o, bool prefetch_b)
{
    /* the previous block's conversion (AVX-512) is spread over this block's
     * k-steps, so it runs while the tile unit works */
    int prow = 0, per = 0;
    if (pend)
        per = (pend->rows + (int)(kb1 - kb0) - 1) / (int)(kb1 - kb0);
#define CONVERT_SOME()                                                                                         \
    if (pend && prow < pend->rows) {                                                                           \
        int next = prow + per < pend->rows ? prow + per : pend->rows;                                          \
        convert_rows(pend, prow, next, o);                                                                     \
        prow = next;                                                                                           \
    }
    const int8_t *b1 = b0 + b_next;
    const int8_t *a1 = a0 + 16 * lda;
#define PREFETCH_B()                                                                                            \
    if (prefetch_b) {                                                                                          \
        prefetch_tile(b0 + (size_t)(kb + B_PREFETCH) * 1024);                                                  \
        if (two)                                                                                               \
            prefetch_tile(b1 + (size_t)(kb + B_PREFETCH) * 1024);                                              \
    }
    if (c_in)
        amx_c_load(c_in, two, lower);
    else
        amx_c_zero(two, lower);
    if (two && lower) {
        for (uint32_t kb = kb0; kb < kb1; kb++) {
            PREFETCH_B();
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            _tile_loadd(T_B1, b1 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C01, T_A0, T_B1);
            _tile_loadd(T_A1, a1 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C10, T_A1, T_B0);
            _tile_dpbssd(T_C11, T_A1, T_B1);
            CONVERT_SOME();
        }
    } else if (two) {
        for (uint32_t kb = kb0; kb < kb1; kb++) {
            PREFETCH_B();
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_loadd(T_B1, b1 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            _tile_dpbssd(T_C01, T_A0, T_B1);
            CONVERT_SOME();
        }
    } else if (lower) {
        for (uint32_t kb = kb0; kb < kb1; kb++) {
            PREFETCH_B();
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_loadd(T_A1, a1 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            _tile_dpbssd(T_C10, T_A1, T_B0);
            CONVERT_SOME();
        }
    } else {
        for (uint32_t kb = kb0; kb < kb1; kb++) {
            PREFETCH_B();
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            CONVERT_SOME();
        }
    }
#undef CONVERT_SOME
#undef PREFETCH_B
    if (pend && prow < pend->rows)
        convert_rows(pend, prow, pend->rows, o);
    amx_c_store(c_out, two, lower);
}

/* Loads (or zeroes) the accumulators of the rows [m0, m0+rows) x columns
 * [nb*16, nb*16 + 16*(1+two)), or stores them back to y, lanes [n0, n1) only. */
static void acc_from_y(float *acc, const float *y, size_t ldy, size_t m0, int rows, uint32_t nb, bool two,
                       uint32_t n0, uint32_t n1, bool accumulate)
{
    for (int h = 0; h < (two ? 2 : 1); h++) {
        __mmask16 cm = accumulate ? column_mask((nb + h) * 16, n0, n1) : 0;
        for (int i = 0; i < rows; i++)
            _mm512_store_ps(acc + i * ACC_STRIDE + h * 16,
                            _mm512_maskz_loadu_ps(cm, y + (m0 + i) * ldy + (nb + h) * 16));
    }
}

static void acc_to_y(const float *acc, float *y, size_t ldy, size_t m0, int rows, uint32_t nb, bool two,
                     uint32_t n0, uint32_t n1)
{
    for (int h = 0; h < (two ? 2 : 1); h++) {
        __mmask16 cm = column_mask((nb + h) * 16, n0, n1);
        for (int i = 0; i < rows; i++)
            _mm512_mask_storeu_ps(y + (m0 + i) * ldy + (nb + h) * 16, cm, _mm512_load_ps(acc + i * ACC_STRIDE + h * 16));
    }
}

static inline void gemm_q8_amx_impl(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq,
                                    const float *xscale, uint32_t n0, uint32_t n1, float *y, size_t ldy,
                                    bool accumulate, bool prefetch)
{
    if (n0 >= n1 || m == 0)
        return;
    if (m < MP_AMX_Q8_MIN_M) { /* too few rows to fill tiles: VNNI is faster */
        mp_gemm_q8_avx512(w, m, xq, ldxq, xscale, n0, n1, y, ldy, accumulate);
        return;
    }
    const mp_amx_int8_layout *l = &w->lay;
    /* ~40 KiB of stack: integer partial sums between K-chunks and the f32
     * accumulators, one slot per m-block of the pass; two buffers of finished
     * groups, so one group's conversion overlaps the next block's tile work.
     * Slots are 64 bytes longer than 4 KiB so they do not alias each other. */
    int32_t partial[M_CHUNK / 32][32 * 32 + 16] __attribute__((aligned(64)));
    float acc[M_CHUNK / 32][32 * ACC_STRIDE + 16] __attribute__((aligned(64)));
    int32_t done[2][32 * 32 + 16] __attribute__((aligned(64)));
    int cfg[2] = {-1, -1}; /* rows of the loaded tile configuration */
    unsigned flip = 0;
    pending_block pend = {0};
    bool has_pend = false;
    const out_ctx oc = {w, xscale};
    uint32_t nb_begin = n0 / 16, nb_end = (n1 + 15) / 16;
    for (size_t mc0 = 0; mc0 < m; mc0 += M_CHUNK) {
        size_t mcn = m - mc0 < M_CHUNK ? m - mc0 : M_CHUNK;
        for (uint32_t nb = nb_begin; nb < nb_end; nb += 2) {
            bool two = nb + 1 < nb_end;
            for (size_t mb = 0; mb * 32 < mcn; mb++) {
                size_t m0 = mc0 + mb * 32;
                acc_from_y(acc[mb], y, ldy, m0, m - m0 >= 32 ? 32 : (int)(m - m0), nb, two, n0, n1, accumulate);
            }
            for (uint32_t g = 0; g < l->groups; g++) {
                uint32_t kpg = mp_amx_int8_group_kp(l, g);
                uint32_t nk = kpg / 64;
                const int8_t *b0 = w->data + mp_q8_block_offset(l, g, nb);
                for (uint32_t kb0 = 0; kb0 < nk; kb0 += K_CHUNK / 64) {
                    uint32_t kb1 = nk - kb0 > K_CHUNK / 64 ? kb0 + K_CHUNK / 64 : nk;
                    bool last = kb1 == nk;
                    for (size_t mb = 0; mb * 32 < mcn; mb++) {
                        size_t m0 = mc0 + mb * 32;
                        const int rows = m - m0 >= 32 ? 32 : (int)(m - m0);
                        amx_set_rows(cfg, rows);
                        const int mr1 = rows - (rows >= 16 ? 16 : rows);
                        int32_t *out = last ? done[flip++ & 1] : partial[mb];
                        block_tiles(xq + m0 * ldxq + (size_t)g * l->kg, ldxq, b0, (size_t)kpg * 16, kb0, kb1, two,
                                    mr1 > 0, kb0 ? partial[mb] : NULL, out, has_pend ? &pend : NULL, &oc, prefetch && mb == 0);
                        has_pend = last;
                        if (last)
                            pend = (pending_block){out, acc[mb], m0, rows, g, nb, two};
                    }
                }
            }
            if (has_pend)
                convert_rows(&pend, 0, pend.rows, &oc);
            has_pend = false;
            for (size_t mb = 0; mb * 32 < mcn; mb++) {
                size_t m0 = mc0 + mb * 32;
                acc_to_y(acc[mb], y, ldy, m0, m - m0 >= 32 ? 32 : (int)(m - m0), nb, two, n0, n1);
            }
        }
    }
    _tile_release();
}

void mp_gemm_q8_amx_v1(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq, const float *xscale,
                       uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    gemm_q8_amx_impl(w, m, xq, ldxq, xscale, n0, n1, y, ldy, accumulate, true);
}

void mp_gemm_q8_amx_v1_no_prefetch(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq,
                                   const float *xscale, uint32_t n0, uint32_t n1, float *y, size_t ldy,
                                   bool accumulate)
{
    gemm_q8_amx_impl(w, m, xq, ldxq, xscale, n0, n1, y, ldy, accumulate, false);
}
