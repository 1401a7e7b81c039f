/* Random weights for `moepack synth`.
 *
 * Counter-based: element e of a tensor takes its randomness from
 * mp_splitmix64(key + e/4) (16 bits per element, four elements per draw), where
 * the key hashes the tensor's name under the seed. Any element can be computed
 * on its own, so the output is the same whatever the job split or thread
 * count, and a tensor keeps its values when other options (layer count,
 * sharding) change.
 *
 * 16 random bits index a table of normal quantiles: cheap enough to generate
 * faster than a disk writes, with tails to about 4.3 sigma. On top of the
 * gaussian, about 1% of the columns (input channels) are 3-8x larger and
 * about 0.5% of the rows 2-4x larger, as trained LLM weights have, so block
 * quantizers meet the outliers they meet in real checkpoints. */
#include <math.h>
#include <string.h>
#include <xxhash.h>

#include "mp_num.h"
#include "mp_rand.h"
#include "synth_internal.h"

uint64_t mp_synth_tensor_key(uint64_t seed, const char *name)
{
    return XXH3_64bits_withSeed(name, strlen(name), seed);
}

void mp_synth_values_init(mp_synth_values *v, uint64_t key, mp_synth_kind kind, uint32_t rows, uint32_t cols)
{
    v->key = key;
    v->kind = kind;
    v->rows = rows;
    v->cols = cols;
    /* Variance-preserving scales (1/sqrt(fan_in)) land in the 0.006-0.02
     * range of trained DeepSeek projections; outputs into the residual
     * stream are halved. */
    float fan = 1.0f / sqrtf((float)(cols ? cols : 1));
    switch (kind) {
    case MP_SYNTH_KIND_EMBED: v->std = 0.02f; break;
    case MP_SYNTH_KIND_LINEAR: v->std = fan; break;
    case MP_SYNTH_KIND_LINEAR_OUT: v->std = 0.5f * fan; break;
    case MP_SYNTH_KIND_ROUTER: v->std = fan; break;
    case MP_SYNTH_KIND_NORM: v->std = 0.05f; break; /* around 1, small spread */
    case MP_SYNTH_KIND_BIAS: v->std = 0.01f; break;
    }
}

/* Acklam's rational approximation of the inverse normal CDF, refined by one
 * Halley step on erfc: accurate to double rounding over (0, 1). */
static double normal_quantile(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double x;
    if (p < 0.02425) {
        double q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        double q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    double e = 0.5 * erfc(-x / sqrt(2.0)) - p;
    double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

void mp_synth_normal_table(float *table)
{
    for (int i = 0; i < MP_SYNTH_NORMAL_TABLE; i++)
        table[i] = (float)normal_quantile((i + 0.5) / MP_SYNTH_NORMAL_TABLE);
}

static float col_factor(uint64_t key, uint32_t c)
{
    uint64_t h = mp_splitmix64(key ^ 0xC0111A5Eull ^ ((uint64_t)c << 20));
    return (h & 1023) < 10 ? (float)(3 + (h >> 10) % 6) : 1.0f;
}

static float row_factor(uint64_t key, uint32_t r)
{
    uint64_t h = mp_splitmix64(key ^ 0x0A0B5A11ull ^ ((uint64_t)r << 24));
    return (h & 1023) < 5 ? (float)(2 + (h >> 10) % 3) : 1.0f;
}

static bool has_outliers(mp_synth_kind kind)
{
    return kind != MP_SYNTH_KIND_NORM && kind != MP_SYNTH_KIND_BIAS;
}

void mp_synth_col_factors(const mp_synth_values *v, float *colf)
{
    const bool outliers = has_outliers(v->kind) && v->rows > 1;
    for (uint32_t c = 0; c < v->cols; c++)
        colf[c] = outliers ? col_factor(v->key, c) : 1.0f;
}

static inline float one_value(const mp_synth_values *v, const float *normal, uint64_t e)
{
    uint64_t bits = mp_splitmix64(v->key + (e >> 2));
    return normal[(bits >> (16 * (e & 3))) & 0xffff];
}

void mp_synth_row_f32(const mp_synth_values *v, const float *normal, const float *colf, uint32_t r, float *out)
{
    const uint32_t cols = v->cols;
    const uint64_t first = (uint64_t)r * cols;
    const bool outliers = has_outliers(v->kind) && v->rows > 1;
    const float s = v->std * (outliers ? row_factor(v->key, r) : 1.0f);
    const float offset = v->kind == MP_SYNTH_KIND_NORM ? 1.0f : 0.0f;
    uint32_t c = 0;
    /* Elements up to the next multiple of 4, then four per random draw. */
    for (; c < cols && ((first + c) & 3); c++)
        out[c] = offset + s * colf[c] * one_value(v, normal, first + c);
    for (; c + 4 <= cols; c += 4) {
        uint64_t bits = mp_splitmix64(v->key + ((first + c) >> 2));
        out[c + 0] = offset + s * colf[c + 0] * normal[bits & 0xffff];
        out[c + 1] = offset + s * colf[c + 1] * normal[(bits >> 16) & 0xffff];
        out[c + 2] = offset + s * colf[c + 2] * normal[(bits >> 32) & 0xffff];
        out[c + 3] = offset + s * colf[c + 3] * normal[bits >> 48];
    }
    for (; c < cols; c++)
        out[c] = offset + s * colf[c] * one_value(v, normal, first + c);
}

void mp_synth_band_fp8(const mp_synth_values *v, const float *normal, const float *colf, uint32_t r0, uint32_t nrows,
                       float *work, uint8_t *q, float *scale_inv)
{
    const uint32_t cols = v->cols, ncb = (cols + 127) / 128;
    for (uint32_t i = 0; i < nrows; i++)
        mp_synth_row_f32(v, normal, colf, r0 + i, work + (size_t)i * cols);
    /* DeepSeek's block quantization: per 128x128 block, scale = amax / 448
     * (the largest E4M3 value), code = fp8(w / scale); the checkpoint stores
     * the scale as weight_scale_inv, the factor that dequantizes. Rows are
     * walked in order (amax first, then the codes) to stay cache-friendly. */
    for (uint32_t cb = 0; cb < ncb; cb++)
        scale_inv[cb] = 0.0f;
    for (uint32_t i = 0; i < nrows; i++) {
        const float *w = work + (size_t)i * cols;
        for (uint32_t cb = 0; cb < ncb; cb++) {
            uint32_t c1 = cb * 128u + 128u < cols ? cb * 128u + 128u : cols;
            float m = scale_inv[cb];
            for (uint32_t c = cb * 128u; c < c1; c++) {
                float a = fabsf(w[c]);
                m = a > m ? a : m;
            }
            scale_inv[cb] = m;
        }
    }
    for (uint32_t cb = 0; cb < ncb; cb++)
        scale_inv[cb] = scale_inv[cb] > 0.0f ? scale_inv[cb] / 448.0f : 1.0f;
    for (uint32_t i = 0; i < nrows; i++) {
        const float *w = work + (size_t)i * cols;
        uint8_t *out = q + (size_t)i * cols;
        for (uint32_t cb = 0; cb < ncb; cb++) {
            uint32_t c1 = cb * 128u + 128u < cols ? cb * 128u + 128u : cols;
            const float s = scale_inv[cb];
            for (uint32_t c = cb * 128u; c < c1; c++)
                out[c] = mp_synth_fp8_e4m3(w[c] / s);
        }
    }
}
