/* int4 quantization in groups of 128 along K with f16 scales (and mins).
 *
 * Whatever the fit, q is always chosen against the f16 values that will be
 * stored, and the squared error that ranks candidates is measured on the f32
 * dequantized values the kernels compute (mp_int4_dequant). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mp_quant.h"

const char *mp_int4_fit_name(mp_int4_fit fit)
{
    switch (fit) {
    case MP_INT4_FIT_MINMAX:
        return "minmax";
    case MP_INT4_FIT_EXTREME8:
        return "extreme8";
    case MP_INT4_FIT_MSE:
        return "mse";
    }
    return "?";
}

/* ---- f16 helpers with directed rounding ---------------------------------- */

static uint16_t f16_step_up(uint16_t h) /* next f16 towards +inf */
{
    if (h == 0x8000u)
        return 0x0001u;
    return (h & 0x8000u) ? (uint16_t)(h - 1) : (uint16_t)(h + 1);
}

static uint16_t f16_step_down(uint16_t h) /* next f16 towards -inf */
{
    if (h == 0x0000u)
        return 0x8001u;
    return (h & 0x8000u) ? (uint16_t)(h + 1) : (uint16_t)(h - 1);
}

/* Smallest f16 >= v (v finite, |v| below the f16 range). */
static uint16_t f16_ceil(double v)
{
    uint16_t h = mp_f32_to_f16((float)v);
    while ((double)mp_f16_to_f32(h) < v)
        h = f16_step_up(h);
    return h;
}

/* Largest f16 <= v. */
static uint16_t f16_floor(double v)
{
    uint16_t h = mp_f32_to_f16((float)v);
    while ((double)mp_f16_to_f32(h) > v)
        h = f16_step_down(h);
    return h;
}

static bool f16_finite(uint16_t h)
{
    return (h & 0x7c00u) != 0x7c00u;
}

/* ---- one group ------------------------------------------------------------ */

typedef struct group_fit {
    uint16_t scale, min; /* f16 bits */
    double sse;
} group_fit;

/* Chooses q for the given f16 (scale, min) and returns the squared error. */
static double quantize_group(const float *w, uint32_t n, mp_int4_scheme scheme, uint16_t scale16, uint16_t min16,
                             uint8_t *q)
{
    float s = mp_f16_to_f32(scale16);
    float m = mp_f16_to_f32(min16);
    double sse = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        double r;
        if (s == 0.0f)
            r = scheme == MP_INT4_SYM ? 8.0 : 0.0;
        else if (scheme == MP_INT4_SYM)
            r = rint((double)w[i] / (double)s) + 8.0;
        else
            r = rint(((double)w[i] - (double)m) / (double)s);
        if (!(r >= 0.0))
            r = 0.0;
        if (r > 15.0)
            r = 15.0;
        q[i] = (uint8_t)r;
        double e = (double)w[i] - (double)mp_int4_dequant(scheme, q[i], s, m);
        sse += e * e;
    }
    return sse;
}

static void try_candidate(const float *w, uint32_t n, mp_int4_scheme scheme, uint16_t scale16, uint16_t min16,
                          uint8_t *tmp, group_fit *best)
{
    if (!f16_finite(scale16) || !f16_finite(min16))
        return;
    double sse = quantize_group(w, n, scheme, scale16, min16, tmp);
    if (sse < best->sse) { /* strict: the first of equal candidates wins */
        best->sse = sse;
        best->scale = scale16;
        best->min = min16;
    }
}

/* Least-squares refit on the q of the current best: sym fits s in
 * w = (q-8)s; asym fits (s, m) in w = q s + m. */
static void refit(const float *w, uint32_t n, mp_int4_scheme scheme, uint8_t *tmp, group_fit *best)
{
    quantize_group(w, n, scheme, best->scale, best->min, tmp);
    if (scheme == MP_INT4_SYM) {
        double sqq = 0.0, sqw = 0.0;
        for (uint32_t i = 0; i < n; i++) {
            double c = (double)tmp[i] - 8.0;
            sqq += c * c;
            sqw += c * (double)w[i];
        }
        if (sqq > 0.0 && fabs(sqw / sqq) < 65504.0)
            try_candidate(w, n, scheme, mp_f32_to_f16((float)(sqw / sqq)), 0, tmp, best);
        return;
    }
    double sq = 0.0, sqq = 0.0, sw = 0.0, sqw = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        double c = tmp[i];
        sq += c;
        sqq += c * c;
        sw += w[i];
        sqw += c * (double)w[i];
    }
    double det = (double)n * sqq - sq * sq;
    if (det <= 0.0)
        return;
    double s = ((double)n * sqw - sq * sw) / det;
    double m = (sw - s * sq) / (double)n;
    if (fabs(s) < 65504.0 && fabs(m) < 65504.0)
        try_candidate(w, n, scheme, mp_f32_to_f16((float)s), mp_f32_to_f16((float)m), tmp, best);
}

static int fit_group(const float *w, uint32_t n, mp_int4_scheme scheme, mp_int4_fit fit, uint8_t *q,
                     uint16_t *scale16, uint16_t *min16, mp_error *err)
{
    float lo = w[0], hi = w[0], ext = w[0];
    for (uint32_t i = 0; i < n; i++) {
        if (!isfinite(w[i]))
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "non-finite weight at column %u of the group", i);
        if (w[i] < lo)
            lo = w[i];
        if (w[i] > hi)
            hi = w[i];
        if (fabsf(w[i]) > fabsf(ext))
            ext = w[i];
    }
    double amax = fabs((double)ext);
    group_fit best = {0, 0, DBL_MAX};
    uint8_t tmp[MP_INT4_GROUP];

    /* the MINMAX choice: a guaranteed no-clipping fit, also the baseline of MSE */
    uint16_t s0, m0 = 0;
    if (scheme == MP_INT4_SYM) {
        if (fit == MP_INT4_FIT_EXTREME8)
            s0 = mp_f32_to_f16((float)((double)ext / -8.0));
        else
            s0 = f16_ceil(amax / 7.0);
    } else {
        m0 = f16_floor(lo);
        s0 = f16_ceil(((double)hi - (double)mp_f16_to_f32(m0)) / 15.0);
    }
    if (!f16_finite(s0) || !f16_finite(m0))
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "int4 group range [%g, %g] exceeds the f16 range of scales",
                       (double)lo, (double)hi);
    try_candidate(w, n, scheme, s0, m0, tmp, &best);

    if (fit == MP_INT4_FIT_MSE && hi > lo) {
        if (scheme == MP_INT4_SYM) {
            /* the extreme value maps to d: d in [-8.5, -6] uses the -8 side,
             * d in [6, 7.5] the +7 side; a |d| past the range clips it */
            for (int i = 0; i <= 10; i++) {
                double d = -8.5 + 0.25 * i;
                try_candidate(w, n, scheme, mp_f32_to_f16((float)((double)ext / d)), 0, tmp, &best);
            }
            for (int i = 0; i <= 6; i++) {
                double d = 6.0 + 0.25 * i;
                try_candidate(w, n, scheme, mp_f32_to_f16((float)((double)ext / d)), 0, tmp, &best);
            }
        } else {
            /* shrink or widen the range symmetrically around its centre */
            for (int i = 0; i <= 12; i++) {
                double d = 12.0 + 0.5 * i; /* scale = range / d */
                double s = ((double)hi - (double)lo) / d;
                double mid = 0.5 * ((double)hi + (double)lo);
                double m = mid - 7.5 * s;
                try_candidate(w, n, scheme, mp_f32_to_f16((float)s), mp_f32_to_f16((float)m), tmp, &best);
            }
        }
        refit(w, n, scheme, tmp, &best);
        refit(w, n, scheme, tmp, &best);
    }
    *scale16 = best.scale;
    *min16 = best.min;
    quantize_group(w, n, scheme, best.scale, best.min, q);
    return MP_OK;
}

int mp_quant_int4_row(const float *w, uint32_t k, mp_int4_scheme scheme, mp_int4_fit fit, uint8_t *q,
                      uint16_t *scale, uint16_t *min, mp_error *err)
{
    if (scheme == MP_INT4_ASYM && !min)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "int4_asym quantization needs a min array");
    uint32_t groups = mp_group_count(k, MP_INT4_GROUP);
    for (uint32_t g = 0; g < groups; g++) {
        uint32_t k0 = g * MP_INT4_GROUP;
        uint32_t n = k - k0 > MP_INT4_GROUP ? MP_INT4_GROUP : k - k0;
        uint16_t s16 = 0, m16 = 0;
        int rc = fit_group(w + k0, n, scheme, fit, q + k0, &s16, &m16, err);
        if (rc != MP_OK) {
            char where[64];
            snprintf(where, sizeof where, "columns %u..%u", k0, k0 + n - 1);
            return mp_error_prefix(err, where);
        }
        scale[g] = s16;
        if (scheme == MP_INT4_ASYM)
            min[g] = m16;
    }
    return MP_OK;
}
