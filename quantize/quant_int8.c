/* int8 symmetric quantization of weights (per row and K-group) and of
 * activations (per row and K-group, zero padded to the kernels' row width). */
#include <math.h>
#include <string.h>

#include "mp_quant.h"

int mp_quant_int8_row(const float *w, uint32_t k, uint32_t kg, int8_t *q, float *scale, mp_error *err)
{
    if (kg == 0)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "int8 quantization: group width 0");
    uint32_t groups = mp_group_count(k, kg);
    for (uint32_t g = 0; g < groups; g++) {
        uint32_t k0 = g * kg;
        uint32_t k1 = k - k0 > kg ? k0 + kg : k;
        float amax = 0.0f;
        for (uint32_t i = k0; i < k1; i++) {
            if (!isfinite(w[i]))
                return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "non-finite weight at column %u", i);
            float a = fabsf(w[i]);
            if (a > amax)
                amax = a;
        }
        float s = amax / 127.0f;
        scale[g] = s;
        if (s == 0.0f) { /* all zero (or too small for a nonzero f32 scale) */
            memset(q + k0, 0, k1 - k0);
            continue;
        }
        for (uint32_t i = k0; i < k1; i++) {
            double r = rint((double)w[i] / (double)s);
            if (r > 127.0)
                r = 127.0;
            if (r < -127.0)
                r = -127.0;
            q[i] = (int8_t)r;
        }
    }
    return MP_OK;
}

void mp_quant_act_int8(size_t m, const float *x, size_t ldx, uint32_t k, uint32_t kg, int8_t *xq, size_t ldq,
                       float *xscale)
{
    uint32_t groups = mp_group_count(k, kg);
    uint64_t kp = mp_q8_padded_k(k, kg);
    for (size_t r = 0; r < m; r++) {
        const float *xr = x + r * ldx;
        int8_t *qr = xq + r * ldq;
        for (uint32_t g = 0; g < groups; g++) {
            uint32_t k0 = g * kg;
            uint32_t k1 = k - k0 > kg ? k0 + kg : k;
            float amax = 0.0f;
            for (uint32_t i = k0; i < k1; i++) {
                float a = fabsf(xr[i]);
                if (a > amax) /* false for NaN: NaN never becomes the max */
                    amax = a;
            }
            float s = amax / 127.0f;
            xscale[r * groups + g] = s;
            for (uint32_t i = k0; i < k1; i++)
                qr[i] = mp_quant_act_int8_one(xr[i], s);
        }
        if (kp > k)
            memset(qr + k, 0, (size_t)(kp - k));
    }
}
