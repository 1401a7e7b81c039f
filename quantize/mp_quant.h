/* mp_quant: deterministic scalar quantizers.
 *
 * Every function here is plain scalar C with a fixed evaluation order, so the
 * same input gives the same bits whatever the thread count, ISA or caller:
 * a converted container is reproducible byte for byte.
 *
 * K-groups: a row of K values is cut into G = ceil(K / Kg) groups of Kg
 * consecutive values (the last one may be shorter); Kg >= K means one group.
 * Each group gets its own scale. */
#ifndef MP_QUANT_H
#define MP_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"
#include "mp_num.h"

/* Number of K-groups of width kg covering k values (kg > 0). */
static inline uint32_t mp_group_count(uint32_t k, uint32_t kg)
{
    return k == 0 ? 0 : (uint32_t)(((uint64_t)k + kg - 1) / kg);
}

/* Width of an int8 activation row as the amx_int8 kernels read it: every
 * group but the last is Kg wide, the last is rounded up to 64 (zero filled).
 * Equals the packed weights' sum of Kp_g. kg must be a multiple of 64. */
static inline uint64_t mp_q8_padded_k(uint32_t k, uint32_t kg)
{
    uint32_t g = mp_group_count(k, kg);
    if (g == 0)
        return 0;
    uint64_t head = (uint64_t)(g - 1) * kg;
    return head + mp_align_up((uint64_t)k - head, 64);
}

/* ---- int8, symmetric, per (row, K-group) ---------------------------------
 * scale = max|w| / 127 over the group (f32), q = round-half-even(w / scale)
 * clamped to [-127, 127]; an all-zero group gets scale 0 and q = 0. The
 * quotient is taken in double so that |w - q*scale| <= scale/2 holds exactly.
 * q: K values (no padding); scale: G = ceil(K/Kg) values. Non-finite input
 * is an MP_ERR_INPUT (the caller prefixes file and tensor). */
int mp_quant_int8_row(const float *w, uint32_t k, uint32_t kg, int8_t *q, float *scale, mp_error *err);

/* Activations: M rows of x (row stride ldx floats) to int8 per (row, group),
 * symmetric, scale = max|x|/127 (f32), q = round-half-even(x / scale) in f32
 * arithmetic (what the vector versions compute too, bit for bit), clamped to
 * [-127, 127]. Each output row (stride ldq bytes >= mp_q8_padded_k) is
 * written up to mp_q8_padded_k(k, kg) with zeros after column k; xscale is
 * [M][G] with row stride G. NaN becomes -127 (never UB), and no error is
 * reported: activations are not checked in the hot loop. */
void mp_quant_act_int8(size_t m, const float *x, size_t ldx, uint32_t k, uint32_t kg, int8_t *xq, size_t ldq,
                       float *xscale);

/* One value of mp_quant_act_int8 given its group's scale s. The vector
 * versions quantize their tail lanes with it, so every path rounds and clamps
 * by this one definition. */
static inline int8_t mp_quant_act_int8_one(float v, float s)
{
    float r = s == 0.0f ? 0.0f : rintf(v / s);
    if (!(r >= -127.0f)) /* also catches NaN */
        r = -127.0f;
    if (r > 127.0f)
        r = 127.0f;
    return (int8_t)r;
}

/* ---- int4, groups of 128 along K, f16 scales (docs/LAYOUTS.md §5) -------- */
#define MP_INT4_GROUP 128

typedef enum {
    MP_INT4_SYM = 0,  /* w = (q - 8) * scale, q in [0, 15] */
    MP_INT4_ASYM = 1, /* w = q * scale + min */
} mp_int4_scheme;

typedef enum {
    /* sym: scale = max|w| / 7 (f16 rounded up, so nothing clips);
     * asym: min rounded down to f16, scale = (max - min) / 15 rounded up. */
    MP_INT4_FIT_MINMAX = 0,
    /* sym only: scale = w_ext / -8 where w_ext is the value of largest
     * magnitude, so it maps exactly to q = 0 (ggml Q4_0's choice); the scale
     * may be negative. For asym it is the same as MINMAX. */
    MP_INT4_FIT_EXTREME8 = 1,
    /* search a grid of candidate scales around the MINMAX choice (both signs
     * for sym), plus a least-squares refit of (scale[, min]) on the best q,
     * keeping the candidate of least squared error after f16 rounding. */
    MP_INT4_FIT_MSE = 2,
} mp_int4_fit;

/* Quantizes one row of k values. q: k values in [0, 15] (one per byte, no
 * packing, no padding); scale (and, for asym, min): ceil(k/128) f16 values,
 * exactly the ones the kernels will use (q is chosen against them). The last
 * group only looks at its real values. min may be NULL for sym. */
int mp_quant_int4_row(const float *w, uint32_t k, mp_int4_scheme scheme, mp_int4_fit fit, uint8_t *q,
                      uint16_t *scale, uint16_t *min, mp_error *err);

/* The dequantized value every kernel's reference uses: (q - 8) * s is exact in
 * f32; q * s is exact and the one addition rounds once. */
static inline float mp_int4_dequant(mp_int4_scheme scheme, uint8_t q, float scale, float min)
{
    if (scheme == MP_INT4_SYM)
        return (float)((int)q - 8) * scale;
    return (float)q * scale + min;
}

const char *mp_int4_fit_name(mp_int4_fit fit);

#endif
