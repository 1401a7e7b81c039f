/* AVX2 + FMA kernels, for x86-64 machines without AVX-512 (and the base the
 * AVX-512 table overrides). Compiled with AVX2 flags; only called when the
 * dispatcher found AVX2 here. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern_internal.h"
#include "mp_num.h"

#define INLINE static inline __attribute__((always_inline))

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* An int mask vector enabling the first `left` (capped at 8) float lanes. */
static inline __m256i lane_mask8(size_t left)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int n = left >= 8 ? 8 : (int)left;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* Adds the 16 values t to y[c0 .. c0+16) restricted to [n0, n1). */
static inline void add_to_columns(float *yrow, uint32_t c0, uint32_t n0, uint32_t n1, const __m256 t[2])
{
    float *yp = yrow + c0;
    if (c0 >= n0 && c0 + 16 <= n1) {
        _mm256_storeu_ps(yp, _mm256_add_ps(_mm256_loadu_ps(yp), t[0]));
        _mm256_storeu_ps(yp + 8, _mm256_add_ps(_mm256_loadu_ps(yp + 8), t[1]));
        return;
    }
    float tmp[16];
    _mm256_storeu_ps(tmp, t[0]);
    _mm256_storeu_ps(tmp + 8, t[1]);
    for (uint32_t c = 0; c < 16; c++)
        if (c0 + c >= n0 && c0 + c < n1)
            yp[c] = yp[c] + tmp[c];
}

/* y[c0 .. c0+16) = fma(a, b, y) restricted to [n0, n1). */
static inline void fma_to_columns(float *yrow, uint32_t c0, uint32_t n0, uint32_t n1, const __m256 a[2],
                                  const __m256 b[2])
{
    float *yp = yrow + c0;
    if (c0 >= n0 && c0 + 16 <= n1) {
        _mm256_storeu_ps(yp, _mm256_fmadd_ps(a[0], b[0], _mm256_loadu_ps(yp)));
        _mm256_storeu_ps(yp + 8, _mm256_fmadd_ps(a[1], b[1], _mm256_loadu_ps(yp + 8)));
        return;
    }
    float ta[16], tb[16];
    _mm256_storeu_ps(ta, a[0]);
    _mm256_storeu_ps(ta + 8, a[1]);
    _mm256_storeu_ps(tb, b[0]);
    _mm256_storeu_ps(tb + 8, b[1]);
    for (uint32_t c = 0; c < 16; c++)
        if (c0 + c >= n0 && c0 + c < n1)
            yp[c] = fmaf(ta[c], tb[c], yp[c]);
}

static inline void init_columns(float *yrow, uint32_t c0, uint32_t n0, uint32_t n1, bool accumulate)
{
    if (accumulate)
        return;
    for (uint32_t c = 0; c < 16; c++)
        if (c0 + c >= n0 && c0 + c < n1)
            yrow[c0 + c] = 0.0f;
}

/* ---- int8 x int8 without VNNI ------------------------------------------------------
 * VPMADDUBSW multiplies u8 by s8 and adds pairs into saturating s16. With
 * |x| as the unsigned operand and sign(x)*w as the signed one, every product
 * is at most 127*127 and a pair at most 32258: nothing saturates. */
INLINE void q8_block(const mp_amx_int8_view *w, const int8_t *xq, size_t ldxq, const float *xscale, size_t m0,
                     const int mb, uint32_t nb0, const int nbk, uint32_t n0, uint32_t n1, float *y, size_t ldy,
                     bool accumulate)
{
    const mp_amx_int8_layout *l = &w->lay;
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int j = 0; j < nbk; j++)
#pragma GCC unroll 2
        for (int i = 0; i < mb; i++)
            init_columns(y + (m0 + i) * ldy, (nb0 + j) * 16, n0, n1, accumulate);
    for (uint32_t g = 0; g < l->groups; g++) {
        const int8_t *blk[4];
#pragma GCC unroll 4
        for (int j = 0; j < nbk; j++)
            blk[j] = w->data + mp_q8_block_offset(l, g, nb0 + j);
        const int8_t *xr[2];
#pragma GCC unroll 2
        for (int i = 0; i < mb; i++)
            xr[i] = xq + (m0 + i) * ldxq + (size_t)g * l->kg;
        __m256i acc[2][4][2];
#pragma GCC unroll 2
        for (int i = 0; i < mb; i++)
#pragma GCC unroll 4
            for (int j = 0; j < nbk; j++)
                acc[i][j][0] = acc[i][j][1] = _mm256_setzero_si256();
        uint32_t nq = mp_amx_int8_group_kp(l, g) / 4;
        for (uint32_t q = 0; q < nq; q++) {
            __m256i xs[2], xa[2];
#pragma GCC unroll 2
            for (int i = 0; i < mb; i++) {
                xs[i] = _mm256_set1_epi32(mp_load_i32(xr[i] + (size_t)q * 4));
                xa[i] = _mm256_abs_epi8(xs[i]);
            }
#pragma GCC unroll 4
            for (int j = 0; j < nbk; j++)
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(blk[j] + (size_t)q * 64 + h * 32));
#pragma GCC unroll 2
                    for (int i = 0; i < mb; i++) {
                        __m256i p = _mm256_maddubs_epi16(xa[i], _mm256_sign_epi8(wv, xs[i]));
                        acc[i][j][h] = _mm256_add_epi32(acc[i][j][h], _mm256_madd_epi16(p, ones));
                    }
                }
        }
#pragma GCC unroll 4
        for (int j = 0; j < nbk; j++) {
            size_t at = (size_t)g * l->np + (nb0 + j) * 16;
#pragma GCC unroll 2
            for (int i = 0; i < mb; i++) {
                __m256 xsv = _mm256_set1_ps(xscale[(m0 + i) * l->groups + g]);
                __m256 isum[2], comb[2];
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    comb[h] = _mm256_mul_ps(xsv, _mm256_loadu_ps(w->scale + at + h * 8));
                    isum[h] = _mm256_cvtepi32_ps(acc[i][j][h]);
                }
                fma_to_columns(y + (m0 + i) * ldy, (nb0 + j) * 16, n0, n1, isum, comb);
            }
        }
    }
}

static void gemm_q8_avx2(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq, const float *xscale,
                         uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    if (n0 >= n1 || m == 0)
        return;
    uint32_t nb_begin = n0 / 16, nb_end = (n1 + 15) / 16;
    if (m == 1) {
        uint32_t nb = nb_begin;
        for (; nb + 4 <= nb_end; nb += 4)
            q8_block(w, xq, ldxq, xscale, 0, 1, nb, 4, n0, n1, y, ldy, accumulate);
        for (; nb < nb_end; nb++)
            q8_block(w, xq, ldxq, xscale, 0, 1, nb, 1, n0, n1, y, ldy, accumulate);
        return;
    }
    for (uint32_t nb = nb_begin; nb < nb_end; nb += 2) {
        bool two = nb + 1 < nb_end;
        for (size_t m0 = 0; m0 < m; m0 += 2) {
            bool pair = m - m0 >= 2;
            if (pair && two)
                q8_block(w, xq, ldxq, xscale, m0, 2, nb, 2, n0, n1, y, ldy, accumulate);
            else if (pair)
                q8_block(w, xq, ldxq, xscale, m0, 2, nb, 1, n0, n1, y, ldy, accumulate);
            else if (two)
                q8_block(w, xq, ldxq, xscale, m0, 1, nb, 2, n0, n1, y, ldy, accumulate);
            else
                q8_block(w, xq, ldxq, xscale, m0, 1, nb, 1, n0, n1, y, ldy, accumulate);
        }
    }
}

/* ---- amx_bf16 x f32: the AVX-512 scheme on 8-lane halves ----------------------------- */
/* One k pair of a 16-output block for mb rows; the odd x is read only when
 * odd_ok (it lies past K at the end of an odd-width row). */
INLINE void bf16_pair(const uint16_t *blk, uint32_t p, const float *const *xr, const int mb, __m256 acc[4][2],
                      const bool odd_ok)
{
    const __m256i hi_mask = _mm256_set1_epi32((int32_t)0xffff0000u);
    __m256 we[2], wo[2];
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)p * 32 + h * 16));
        we[h] = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
        wo[h] = _mm256_castsi256_ps(_mm256_and_si256(raw, hi_mask));
    }
#pragma GCC unroll 4
    for (int i = 0; i < mb; i++) {
        __m256 xe = _mm256_set1_ps(xr[i][2 * p]);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            acc[i][h] = _mm256_fmadd_ps(xe, we[h], acc[i][h]);
        if (odd_ok) {
            __m256 xo = _mm256_set1_ps(xr[i][2 * p + 1]);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++)
                acc[i][h] = _mm256_fmadd_ps(xo, wo[h], acc[i][h]);
        }
    }
}

INLINE void bf16_amx_block(const mp_amx_bf16_view *w, const float *x, size_t ldx, size_t m0, const int mb,
                           uint32_t nb0, uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    const mp_amx_bf16_layout *l = &w->lay;
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < mb; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (uint32_t g = 0; g < l->groups; g++) {
        uint32_t kbase = g * l->kg;
        uint32_t kpg = mp_amx_bf16_group_kp(l, g);
        uint32_t kend = l->k - kbase < kpg ? l->k - kbase : kpg;
        const uint16_t *blk = w->data + (size_t)g * l->np * l->kg + (size_t)nb0 * kpg * 16;
        const float *xr[4];
#pragma GCC unroll 4
        for (int i = 0; i < mb; i++)
            xr[i] = x + (m0 + i) * ldx + kbase;
        for (uint32_t p = 0; p < kend / 2; p++)
            bf16_pair(blk, p, xr, mb, acc, true);
        if (kend & 1)
            bf16_pair(blk, kend / 2, xr, mb, acc, false);
    }
#pragma GCC unroll 4
    for (int i = 0; i < mb; i++) {
        init_columns(y + (m0 + i) * ldy, nb0 * 16, n0, n1, accumulate);
        add_to_columns(y + (m0 + i) * ldy, nb0 * 16, n0, n1, acc[i]);
    }
}

static void gemm_bf16_amx_avx2(const mp_amx_bf16_view *w, size_t m, const float *x, size_t ldx, uint32_t n0,
                               uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    if (n0 >= n1)
        return;
    for (uint32_t nb = n0 / 16; nb < (n1 + 15) / 16; nb++)
        for (size_t m0 = 0; m0 < m; m0 += 4) {
            switch (m - m0 >= 4 ? 4 : m - m0) {
            case 4:
                bf16_amx_block(w, x, ldx, m0, 4, nb, n0, n1, y, ldy, accumulate);
                break;
            case 3:
                bf16_amx_block(w, x, ldx, m0, 3, nb, n0, n1, y, ldy, accumulate);
                break;
            case 2:
                bf16_amx_block(w, x, ldx, m0, 2, nb, n0, n1, y, ldy, accumulate);
                break;
            default:
                bf16_amx_block(w, x, ldx, m0, 1, nb, n0, n1, y, ldy, accumulate);
                break;
            }
        }
}

/* ---- row-major bf16 / f32 x f32 ----------------------------------------------------------- */
INLINE __m256 load8(const void *w, const bool bf16, size_t at, __m256i mask, bool full)
{
    if (bf16) {
        const uint16_t *p = (const uint16_t *)w + at;
        __m128i h;
        if (full) {
            h = _mm_loadu_si128((const __m128i *)(const void *)p);
        } else {
            uint16_t tmp[8] = {0};
            int lanes[8];
            _mm256_storeu_si256((__m256i *)(void *)lanes, mask);
            for (int i = 0; i < 8; i++)
                if (lanes[i])
                    tmp[i] = p[i];
            h = _mm_loadu_si128((const __m128i *)(const void *)tmp);
        }
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return full ? _mm256_loadu_ps((const float *)w + at) : _mm256_maskload_ps((const float *)w + at, mask);
}

INLINE void rm_step(const void *w, const bool bf16, size_t ldw, uint32_t kk, const float *x, size_t ldx, size_t m0,
                    const int mb, uint32_t nrow0, const int nr, __m256 acc[2][4], const bool full, __m256i mask)
{
    __m256 wr[4];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++)
        wr[j] = load8(w, bf16, (size_t)(nrow0 + j) * ldw + kk, mask, full);
#pragma GCC unroll 2
    for (int i = 0; i < mb; i++) {
        const float *xp = x + (m0 + i) * ldx + kk;
        __m256 xv = full ? _mm256_loadu_ps(xp) : _mm256_maskload_ps(xp, mask);
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_fmadd_ps(xv, wr[j], acc[i][j]);
    }
}

INLINE void rm_block(const void *w, const bool bf16, size_t ldw, uint32_t k, const float *x, size_t ldx, size_t m0,
                     const int mb, uint32_t nrow0, const int nr, float *y, size_t ldy, bool accumulate)
{
    __m256 acc[2][4];
#pragma GCC unroll 2
    for (int i = 0; i < mb; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    uint32_t kk = 0;
    for (; kk + 8 <= k; kk += 8)
        rm_step(w, bf16, ldw, kk, x, ldx, m0, mb, nrow0, nr, acc, true, _mm256_setzero_si256());
    if (kk < k)
        rm_step(w, bf16, ldw, kk, x, ldx, m0, mb, nrow0, nr, acc, false, lane_mask8(k - kk));
#pragma GCC unroll 2
    for (int i = 0; i < mb; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            float *yp = y + (m0 + i) * ldy + nrow0 + j;
            *yp = (accumulate ? *yp : 0.0f) + hsum8(acc[i][j]);
        }
}

INLINE void gemm_rm(const void *w, const bool bf16, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx,
                    uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    for (uint32_t n = n0; n < n1; n += 4) {
        uint32_t nr = n1 - n >= 4 ? 4 : n1 - n;
        for (size_t m0 = 0; m0 < m; m0 += 2) {
            bool pair = m - m0 >= 2;
            switch (nr * 2 + pair) {
            case 9: rm_block(w, bf16, ldw, k, x, ldx, m0, 2, n, 4, y, ldy, accumulate); break;
            case 8: rm_block(w, bf16, ldw, k, x, ldx, m0, 1, n, 4, y, ldy, accumulate); break;
            case 7: rm_block(w, bf16, ldw, k, x, ldx, m0, 2, n, 3, y, ldy, accumulate); break;
            case 6: rm_block(w, bf16, ldw, k, x, ldx, m0, 1, n, 3, y, ldy, accumulate); break;
            case 5: rm_block(w, bf16, ldw, k, x, ldx, m0, 2, n, 2, y, ldy, accumulate); break;
            case 4: rm_block(w, bf16, ldw, k, x, ldx, m0, 1, n, 2, y, ldy, accumulate); break;
            case 3: rm_block(w, bf16, ldw, k, x, ldx, m0, 2, n, 1, y, ldy, accumulate); break;
            default: rm_block(w, bf16, ldw, k, x, ldx, m0, 1, n, 1, y, ldy, accumulate); break;
            }
        }
    }
}

static void gemm_bf16_rm_avx2(const uint16_t *w, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx,
                              uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    gemm_rm(w, true, ldw, k, m, x, ldx, n0, n1, y, ldy, accumulate);
}

static void gemm_f32_avx2(const float *w, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx, uint32_t n0,
                          uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    gemm_rm(w, false, ldw, k, m, x, ldx, n0, n1, y, ldy, accumulate);
}

/* ---- gpu_int4 x f32 ----------------------------------------------------------------------
 * 8 bytes = 16 k values per step. The bytes are reordered (0,1,4,5,2,3,6,7)
 * before zero extension so that their low/high nibbles line up with the
 * even/odd lanes SHUFPS makes of two 8-float loads of x. */
/* 16 k values [kk, kk+16); `full` false at the end of the row (masked x). */
INLINE void int4_step(const uint8_t *const *rows, uint32_t kk, const float *const *xr, const int mb, const int nr,
                      const __m256 *sc, const __m256 *off, __m256 acc[2][4], const bool full, size_t left)
{
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i low4 = _mm256_set1_epi32(15);
    __m256 xe[2], xo[2];
#pragma GCC unroll 2
    for (int i = 0; i < mb; i++) {
        const float *xp = xr[i] + kk;
        __m256 a, b;
        if (full) {
            a = _mm256_loadu_ps(xp);
            b = _mm256_loadu_ps(xp + 8);
        } else {
            a = _mm256_maskload_ps(xp, lane_mask8(left));
            b = _mm256_maskload_ps(xp + 8, lane_mask8(left > 8 ? left - 8 : 0));
        }
        xe[i] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        xo[i] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        __m128i raw = _mm_loadl_epi64((const __m128i *)(const void *)(rows[j] + kk / 2));
        __m256i v = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(raw, order));
        __m256 we = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, low4)), sc[j], off[j]);
        __m256 wo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), sc[j], off[j]);
#pragma GCC unroll 2
        for (int i = 0; i < mb; i++) {
            acc[i][j] = _mm256_fmadd_ps(xe[i], we, acc[i][j]);
            acc[i][j] = _mm256_fmadd_ps(xo[i], wo, acc[i][j]);
        }
    }
}

INLINE void int4_block(const mp_gpu_int4_view *w, const float *x, size_t ldx, size_t m0, const int mb,
                       uint32_t nrow0, const int nr, float *y, size_t ldy, bool accumulate)
{
    const mp_gpu_int4_layout *l = &w->lay;
    const bool asym = l->scheme == MP_INT4_ASYM;
    __m256 acc[2][4];
    const uint8_t *rows[4];
    const float *xr[2];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++)
        rows[j] = w->data + (size_t)(nrow0 + j) * l->row_bytes;
#pragma GCC unroll 2
    for (int i = 0; i < mb; i++) {
        xr[i] = x + (m0 + i) * ldx;
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    }
    for (uint32_t g = 0; g < l->groups; g++) {
        __m256 sc[4], off[4];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            size_t at = (size_t)(nrow0 + j) * l->groups + g;
            float s = mp_f16_to_f32(w->scale[at]);
            sc[j] = _mm256_set1_ps(s);
            off[j] = _mm256_set1_ps(asym ? mp_f16_to_f32(w->min[at]) : -8.0f * s);
        }
        uint32_t k0 = g * MP_INT4_GROUP;
        if (l->k - k0 >= MP_INT4_GROUP) {
            for (uint32_t c = 0; c < MP_INT4_GROUP; c += 16)
                int4_step(rows, k0 + c, xr, mb, nr, sc, off, acc, true, 16);
        } else {
            for (uint32_t kk = k0; kk < l->k; kk += 16) {
                if (l->k - kk >= 16)
                    int4_step(rows, kk, xr, mb, nr, sc, off, acc, true, 16);
                else
                    int4_step(rows, kk, xr, mb, nr, sc, off, acc, false, l->k - kk);
            }
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < mb; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            float *yp = y + (m0 + i) * ldy + nrow0 + j;
            *yp = (accumulate ? *yp : 0.0f) + hsum8(acc[i][j]);
        }
}

static void gemm_int4_avx2(const mp_gpu_int4_view *w, size_t m, const float *x, size_t ldx, uint32_t n0, uint32_t n1,
                           float *y, size_t ldy, bool accumulate)
{
    for (uint32_t n = n0; n < n1; n += 4) {
        uint32_t nr = n1 - n >= 4 ? 4 : n1 - n;
        for (size_t m0 = 0; m0 < m; m0 += 2) {
            bool pair = m - m0 >= 2;
            switch (nr * 2 + pair) {
            case 9: int4_block(w, x, ldx, m0, 2, n, 4, y, ldy, accumulate); break;
            case 8: int4_block(w, x, ldx, m0, 1, n, 4, y, ldy, accumulate); break;
            case 7: int4_block(w, x, ldx, m0, 2, n, 3, y, ldy, accumulate); break;
            case 6: int4_block(w, x, ldx, m0, 1, n, 3, y, ldy, accumulate); break;
            case 5: int4_block(w, x, ldx, m0, 2, n, 2, y, ldy, accumulate); break;
            case 4: int4_block(w, x, ldx, m0, 1, n, 2, y, ldy, accumulate); break;
            case 3: int4_block(w, x, ldx, m0, 2, n, 1, y, ldy, accumulate); break;
            default: int4_block(w, x, ldx, m0, 1, n, 1, y, ldy, accumulate); break;
            }
        }
    }
}

/* ---- activation quantization: the scalar's operations, 8 lanes at a time ----- */
static void quantize_act_q8_avx2(size_t m, const float *x, size_t ldx, uint32_t k, uint32_t kg, int8_t *xq, size_t ldq,
                                 float *xscale)
{
    uint32_t groups = mp_group_count(k, kg);
    uint64_t kp = mp_q8_padded_k(k, kg);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    for (size_t r = 0; r < m; r++) {
        const float *xr = x + r * ldx;
        int8_t *qr = xq + r * ldq;
        for (uint32_t g = 0; g < groups; g++) {
            uint32_t k0 = g * kg;
            uint32_t k1 = k - k0 > kg ? k0 + kg : k;
            __m256 amax = _mm256_setzero_ps();
            uint32_t i = k0;
            for (; i + 8 <= k1; i += 8)
                amax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xr + i), absmask), amax);
            float am[8];
            _mm256_storeu_ps(am, amax);
            float a = 0.0f;
            for (int j = 0; j < 8; j++)
                if (am[j] > a)
                    a = am[j];
            for (; i < k1; i++)
                if (fabsf(xr[i]) > a)
                    a = fabsf(xr[i]);
            float s = a / 127.0f;
            xscale[r * groups + g] = s;
            __m256 sv = _mm256_set1_ps(s);
            i = k0;
            if (s != 0.0f)
                for (; i + 8 <= k1; i += 8) {
                    __m256 v = _mm256_div_ps(_mm256_loadu_ps(xr + i), sv);
                    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi); /* max(NaN, lo) = lo */
                    __m256i q = _mm256_cvtps_epi32(v);
                    __m256i p16 = _mm256_packs_epi32(q, q);
                    __m256i p8 = _mm256_packs_epi16(p16, p16);
                    int32_t b0 = _mm_cvtsi128_si32(_mm256_castsi256_si128(p8));
                    int32_t b1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(p8, 1));
                    memcpy(qr + i, &b0, 4);
                    memcpy(qr + i + 4, &b1, 4);
                }
            for (; i < k1; i++)
                qr[i] = mp_quant_act_int8_one(xr[i], s);
        }
        if (kp > k)
            memset(qr + k, 0, (size_t)(kp - k));
    }
}

/* ---- elementwise helpers (the exp-based ones stay scalar on AVX2) ------------------ */
static float dot_avx2(size_t n, const float *a, const float *b)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy_avx2(size_t n, float a, const float *x, float *y)
{
    __m256 av = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

static void rmsnorm_avx2(size_t n, const float *x, const float *weight, float eps, float *y)
{
    float inv = 1.0f / sqrtf(dot_avx2(n, x, x) / (float)n + eps);
    __m256 iv = _mm256_set1_ps(inv);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), iv), _mm256_loadu_ps(weight + i)));
    for (; i < n; i++)
        y[i] = x[i] * inv * weight[i];
}

void mp_kern_fill_avx2(mp_cpu_kernels *t)
{
    t->gemm_q8 = gemm_q8_avx2;
    t->gemm_bf16_amx = gemm_bf16_amx_avx2;
    t->gemm_bf16_rm = gemm_bf16_rm_avx2;
    t->gemm_int4 = gemm_int4_avx2;
    t->gemm_f32 = gemm_f32_avx2;
    t->quantize_act_q8 = quantize_act_q8_avx2;
    t->rmsnorm = rmsnorm_avx2;
    t->dot = dot_avx2;
    t->axpy = axpy_avx2;
}
