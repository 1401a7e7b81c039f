/* Portable scalar kernels: the reference every vector path is tested
 * against, and the fallback on any CPU. Straightforward loops in a fixed
 * order; speed is not a goal here. */
#include <math.h>

#include "kern_internal.h"
#include "mp_num.h"

static void gemm_q8_scalar(const mp_amx_int8_view *w, size_t m, const int8_t *xq, size_t ldxq, const float *xscale,
                           uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    const mp_amx_int8_layout *l = &w->lay;
    for (size_t r = 0; r < m; r++) {
        const int8_t *xr = xq + r * ldxq;
        for (uint32_t n = n0; n < n1; n++) {
            float acc = accumulate ? y[r * ldy + n] : 0.0f;
            for (uint32_t g = 0; g < l->groups; g++) {
                const int8_t *blk = w->data + mp_q8_block_offset(l, g, n / 16);
                uint32_t kbase = g * l->kg;
                uint32_t kpg = mp_amx_int8_group_kp(l, g);
                int32_t isum = 0;
                /* the padded tail of the activation row is zero: run to kp_g */
                for (uint32_t kk = 0; kk < kpg; kk++) {
                    int8_t wv = blk[(kk / 64) * 1024 + ((kk % 64) / 4) * 64 + (n % 16) * 4 + kk % 4];
                    isum += (int32_t)xr[kbase + kk] * wv;
                }
                acc = fmaf((float)isum, xscale[r * l->groups + g] * w->scale[(size_t)g * l->np + n], acc);
            }
            y[r * ldy + n] = acc;
        }
    }
}

static void gemm_bf16_amx_scalar(const mp_amx_bf16_view *w, size_t m, const float *x, size_t ldx, uint32_t n0,
                                 uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    const mp_amx_bf16_layout *l = &w->lay;
    for (size_t r = 0; r < m; r++) {
        const float *xr = x + r * ldx;
        for (uint32_t n = n0; n < n1; n++) {
            float sum = 0.0f;
            for (uint32_t g = 0; g < l->groups; g++) {
                uint32_t kbase = g * l->kg;
                uint32_t kpg = mp_amx_bf16_group_kp(l, g);
                const uint16_t *blk = w->data + (size_t)g * l->np * l->kg + (size_t)(n / 16) * kpg * 16;
                uint32_t kend = l->k - kbase < kpg ? l->k - kbase : kpg;
                for (uint32_t kk = 0; kk < kend; kk++) {
                    uint16_t b = blk[(kk / 32) * 512 + ((kk % 32) / 2) * 32 + (n % 16) * 2 + kk % 2];
                    sum += xr[kbase + kk] * mp_bf16_to_f32(b);
                }
            }
            y[r * ldy + n] = (accumulate ? y[r * ldy + n] : 0.0f) + sum;
        }
    }
}

static void gemm_bf16_rm_scalar(const uint16_t *w, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx,
                                uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    for (size_t r = 0; r < m; r++)
        for (uint32_t n = n0; n < n1; n++) {
            const uint16_t *wr = w + (size_t)n * ldw;
            float sum = 0.0f;
            for (uint32_t i = 0; i < k; i++)
                sum += x[r * ldx + i] * mp_bf16_to_f32(wr[i]);
            y[r * ldy + n] = (accumulate ? y[r * ldy + n] : 0.0f) + sum;
        }
}

static void gemm_int4_scalar(const mp_gpu_int4_view *w, size_t m, const float *x, size_t ldx, uint32_t n0,
                             uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    const mp_gpu_int4_layout *l = &w->lay;
    for (size_t r = 0; r < m; r++)
        for (uint32_t n = n0; n < n1; n++) {
            const uint8_t *row = w->data + (size_t)n * l->row_bytes;
            float sum = 0.0f;
            for (uint32_t i = 0; i < l->k; i++) {
                uint32_t g = i / MP_INT4_GROUP;
                float s = mp_f16_to_f32(w->scale[(size_t)n * l->groups + g]);
                float mn = w->min ? mp_f16_to_f32(w->min[(size_t)n * l->groups + g]) : 0.0f;
                uint8_t q = (uint8_t)((row[i / 2] >> ((i & 1) * 4)) & 15u);
                sum += x[r * ldx + i] * mp_int4_dequant(l->scheme, q, s, mn);
            }
            y[r * ldy + n] = (accumulate ? y[r * ldy + n] : 0.0f) + sum;
        }
}

static void gemm_f32_scalar(const float *w, size_t ldw, uint32_t k, size_t m, const float *x, size_t ldx,
                            uint32_t n0, uint32_t n1, float *y, size_t ldy, bool accumulate)
{
    for (size_t r = 0; r < m; r++)
        for (uint32_t n = n0; n < n1; n++) {
            float sum = 0.0f;
            for (uint32_t i = 0; i < k; i++)
                sum += x[r * ldx + i] * w[(size_t)n * ldw + i];
            y[r * ldy + n] = (accumulate ? y[r * ldy + n] : 0.0f) + sum;
        }
}

static void rmsnorm_scalar(size_t n, const float *x, const float *weight, float eps, float *y)
{
    float ss = 0.0f;
    for (size_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] * inv * weight[i];
}

static void silu_mul_scalar(size_t n, const float *gate, const float *up, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void softmax_scalar(size_t n, float *x)
{
    float mx = x[0];
    for (size_t i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

static float dot_scalar(size_t n, const float *a, const float *b)
{
    float s = 0.0f;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy_scalar(size_t n, float a, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void mp_kern_fill_scalar(mp_cpu_kernels *t)
{
    t->isa = MP_ISA_SCALAR;
    t->gemm_q8 = gemm_q8_scalar;
    t->gemm_bf16_amx = gemm_bf16_amx_scalar;
    t->gemm_bf16_rm = gemm_bf16_rm_scalar;
    t->gemm_int4 = gemm_int4_scalar;
    t->gemm_f32 = gemm_f32_scalar;
    t->quantize_act_q8 = mp_quant_act_int8;
    t->rmsnorm = rmsnorm_scalar;
    t->silu_mul = silu_mul_scalar;
    t->softmax = softmax_scalar;
    t->dot = dot_scalar;
    t->axpy = axpy_scalar;
}
