/* AMX (TMUL) int8 kernel. Compiled with AMX + AVX-512 flags; only called when
 * the dispatcher found AMX and obtained the tile-data permission.
 *
 * The packed weight tiles are AMX B operands as stored (16 k-quads x 16
 * outputs x 4 bytes, stride 64), and the activation rows are the A operands
 * in place (row stride ldxq): nothing is repacked. Tiles: A0 A1 (rows m0..,
 * m0+16..), B0 B1 (two 16-output blocks), C00 C01 C10 C11: each B tile is
 * loaded once per 32 activation rows, each A tile once per 32 outputs. */
#include <immintrin.h>
#include <string.h>

#include "kern_internal.h"

typedef struct __attribute__((packed, aligned(64))) tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tile numbers (macros: the tile intrinsics paste them into the asm text) */
#define T_A0 0
#define T_A1 1
#define T_B0 2
#define T_B1 3
#define T_C00 4
#define T_C01 5
#define T_C10 6
#define T_C11 7

/* A and C tiles have mr0 (first 16-row half) or mr1 (second half, may be 0:
 * then those tiles stay unconfigured and unused) rows. */
static void load_tile_config(int mr0, int mr1)
{
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    const int rows[8] = {mr0, mr1, 16, 16, mr0, mr0, mr1, mr1};
    for (int t = 0; t < 8; t++) {
        c.rows[t] = (uint8_t)rows[t];
        c.colsb[t] = rows[t] ? 64 : 0;
    }
    _tile_loadconfig(&c);
}

static inline __mmask16 column_mask(uint32_t c0, uint32_t n0, uint32_t n1)
{
    uint32_t lo = n0 > c0 ? n0 - c0 : 0;
    uint32_t hi = n1 - c0 >= 16 ? 16 : n1 - c0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* The integer dot products of one group for up to 32 rows x 32 outputs,
 * left in c[32][32] (row stride 32 int32). */
static inline void group_tiles(const int8_t *a0, size_t lda, const int8_t *b0, size_t b_next, uint32_t nk, bool two,
                               bool lower, int32_t *c)
{
    const int8_t *b1 = b0 + b_next;
    const int8_t *a1 = a0 + 16 * lda;
    _tile_zero(T_C00);
    if (two)
        _tile_zero(T_C01);
    if (lower) {
        _tile_zero(T_C10);
        if (two)
            _tile_zero(T_C11);
    }
    if (two && lower) {
        for (uint32_t kb = 0; kb < nk; kb++) {
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            _tile_loadd(T_B1, b1 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C01, T_A0, T_B1);
            _tile_loadd(T_A1, a1 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C10, T_A1, T_B0);
            _tile_dpbssd(T_C11, T_A1, T_B1);
        }
    } else if (two) {
        for (uint32_t kb = 0; kb < nk; kb++) {
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_loadd(T_B1, b1 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            _tile_dpbssd(T_C01, T_A0, T_B1);
        }
    } else if (lower) {
        for (uint32_t kb = 0; kb < nk; kb++) {
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_loadd(T_A1, a1 + (size_t)kb * 64, lda);
            _tile_dpbssd(T_C00, T_A0, T_B0);
            _tile_dpbssd(T_C10, T_A1, T_B0);
        }
    } else {
        for (uint32_t kb = 0; kb < nk; kb++) {
            _tile_loadd(T_A0, a0 + (size_t)kb * 64, lda);
            _tile_loadd(T_B0, b0 + (size_t)kb * 1024, 64);
            _tile_dpbssd(T_C00, T_A0, T_B0);
        }
    }
    _tile_stored(T_C00, c, 128);
    if (two)
        _tile_stored(T_C01, c + 16, 128);
    if (lower) {
        _tile_stored(T_C10, c + 16 * 32, 128);
        if (two)
            _tile_stored(T_C11, c + 16 * 32 + 16, 128);
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
    const mp_amx_int8_layout *l = &w->lay;
    /* two buffers so the conversion of one group overlaps the next's tiles */
    int32_t cbuf[2][32 * 32] __attribute__((aligned(64)));
    if (!accumulate) /* acc = 0, then + each group, as the scalar does */
        for (size_t r = 0; r < m; r++)
            memset(y + r * ldy + n0, 0, (size_t)(n1 - n0) * sizeof *y);
    int cur0 = -1, cur1 = -1;
    uint32_t nb_begin = n0 / 16, nb_end = (n1 + 15) / 16;
    unsigned flip = 0;
    for (uint32_t nb = nb_begin; nb < nb_end; nb += 2) {
        bool two = nb + 1 < nb_end;
        __mmask16 cm[2] = {column_mask(nb * 16, n0, n1), two ? column_mask(nb * 16 + 16, n0, n1) : 0};
        for (size_t m0 = 0; m0 < m; m0 += 32) {
            int mr0 = m - m0 >= 16 ? 16 : (int)(m - m0);
            int mr1 = m - m0 >= 32 ? 16 : (int)(m - m0 - (size_t)mr0);
            if (mr0 != cur0 || mr1 != cur1) {
                load_tile_config(mr0, mr1);
                cur0 = mr0;
                cur1 = mr1;
            }
            for (uint32_t g = 0; g < l->groups; g++) {
                uint32_t kpg = mp_amx_int8_group_kp(l, g);
                int32_t *c = cbuf[flip++ & 1];
                group_tiles(xq + m0 * ldxq + (size_t)g * l->kg, ldxq, w->data + mp_q8_block_offset(l, g, nb),
                            (size_t)kpg * 16, kpg / 64, two, mr1 > 0, c);
                for (int h = 0; h < (two ? 2 : 1); h++) {
                    size_t at = (size_t)g * l->np + (nb + h) * 16;
                    __m512 ws = _mm512_loadu_ps(w->scale + at);
                    for (int i = 0; i < mr0 + mr1; i++) {
                        __m512 comb = _mm512_mul_ps(_mm512_set1_ps(xscale[(m0 + i) * l->groups + g]), ws);
                        __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + i * 32 + h * 16)), comb);
                        float *yp = y + (m0 + i) * ldy + (nb + h) * 16;
                        _mm512_mask_storeu_ps(yp, cm[h], _mm512_add_ps(_mm512_maskz_loadu_ps(cm[h], yp), t));
                    }
                }
            }
        }
    }
    _tile_release();
}

void mp_kern_fill_amx(mp_cpu_kernels *t)
{
    t->gemm_q8 = gemm_q8_amx;
}
